"""Byte-level and constant shapes of the ComfyUI protocol, as recorded from 0.33.

Binary WebSocket frames start with a big-endian u32 event type:

- 1 ``PREVIEW_IMAGE``: ``u32 format (1=JPEG, 2=PNG)`` + image bytes (legacy previews);
- 3 ``TEXT``: ``u32 len(node_id)`` + node_id + UTF-8 text (progress text);
- 4 ``PREVIEW_IMAGE_WITH_METADATA``: ``u32 len(json)`` + JSON metadata + image bytes, only
  to clients that sent ``feature_flags`` with ``supports_preview_metadata``.

The JSON payloads here (features, system_stats, model folders) keep the recorded keys and
value types; where a value would claim to be something we are not (versions, torch, argv)
it names the dev server instead.
"""

from __future__ import annotations

import io
import json
import os
import struct
import sys
from typing import Any

import PIL
from PIL import Image, ImageOps

PREVIEW_IMAGE = 1
TEXT = 3
PREVIEW_IMAGE_WITH_METADATA = 4
FORMAT_JPEG = 1
FORMAT_PNG = 2

COMFYUI_VERSION = "0.33.0+comfyui-devserver"
DEVSERVER_VERSION = "0.1.0"

MODEL_FOLDERS = [
    "checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models",
    "clip_vision", "style_models", "embeddings", "diffusers", "vae_approx", "controlnet",
    "gligen", "upscale_models", "latent_upscale_models", "custom_nodes", "datasets",
    "hypernetworks", "photomaker", "classifiers", "model_patches", "audio_encoders",
    "background_removal", "frame_interpolation", "geometry_estimation", "optical_flow",
    "detection",
]


def encode_png(img: Image.Image, compress_level: int = 1, max_size: int | None = None) -> bytes:
    if max_size is not None and max(img.size) > max_size:
        img = ImageOps.contain(img, (max_size, max_size), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def legacy_preview_frame(png: bytes, fmt: int = FORMAT_PNG) -> bytes:
    return struct.pack(">II", PREVIEW_IMAGE, fmt) + png


def metadata_preview_frame(png: bytes, metadata: dict[str, Any]) -> bytes:
    meta = json.dumps(metadata).encode()
    return struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(meta)) + meta + png


def progress_text_frame(node_id: str, text: str) -> bytes:
    node = node_id.encode()
    return struct.pack(">II", TEXT, len(node)) + node + text.encode()


def preview_metadata(node_id: str, prompt_id: str, image_type: str = "image/png"
                     ) -> dict[str, Any]:
    return {"node_id": node_id, "prompt_id": prompt_id, "display_node_id": node_id,
            "parent_node_id": None, "real_node_id": node_id, "image_type": image_type}


def server_features(max_upload_size: int) -> dict[str, Any]:
    """``GET /features`` and the ``feature_flags`` answer (recorded shape)."""
    return {"supports_preview_metadata": True, "supports_model_type_tags": True,
            "max_upload_size": max_upload_size, "extension": {"manager": {"supports_v4": True}},
            "node_replacements": True, "assets": False}


def _memory() -> tuple[int, int]:
    total = free = 0
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key == "MemTotal":
                    total = int(rest.split()[0]) * 1024
                elif key == "MemAvailable":
                    free = int(rest.split()[0]) * 1024
    except OSError:
        pass
    if not total:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            total = free = 0
    return total, free


def system_stats(name: str) -> dict[str, Any]:
    """``GET /system_stats``: recorded keys and types; the values say "dev server"."""
    total, free = _memory()
    return {
        "system": {
            "os": sys.platform,
            "ram_total": total,
            "ram_free": free,
            "comfyui_version": COMFYUI_VERSION,
            "required_frontend_version": "none",
            "installed_templates_version": "none",
            "required_templates_version": "none",
            "comfy_package_versions": [
                {"name": "comfyui-devserver", "installed": DEVSERVER_VERSION,
                 "required": DEVSERVER_VERSION},
            ],
            "python_version": sys.version,
            "pytorch_version": f"none (comfyui-devserver on Pillow {PIL.__version__})",
            "embedded_python": False,
            "deploy_environment": "comfyui-devserver",
            "argv": ["comfyui_devserver", "--name", name],
        },
        "devices": [{
            "name": "cpu", "type": "cpu", "index": None,
            "vram_total": total, "vram_free": free,
            "torch_vram_total": total, "torch_vram_free": free,
        }],
    }
