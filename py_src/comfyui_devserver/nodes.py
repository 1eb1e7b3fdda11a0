"""The model-free ComfyUI nodes, executed for real on pixels with Pillow.

Each node is described the way ComfyUI describes it (``INPUT_TYPES``-shaped inputs, return
types, output node flag, display name, category) so validation, ``/object_info`` and
execution all read one table. Images travel as batches: ``list[PIL.Image]`` in RGB for
``IMAGE`` and mode ``L`` (255 = 1.0) for ``MASK``; ComfyUI's float tensors become 8-bit
pixels, so an invert is exactly ``255 - x``.

The run functions are synchronous and pure apart from file I/O: the executor calls them in
a worker thread and does every WebSocket send itself, which keeps the event order in one
place (``executor.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageFilter, ImageOps, ImageSequence
from PIL.PngImagePlugin import PngInfo

MAX_RESOLUTION = 16384
UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
CROP_METHODS = ["disabled", "center"]
_RESAMPLE = {
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "area": Image.Resampling.BOX,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}

Batch = list[Image.Image]


@dataclass
class Dirs:
    """The three folders of one server instance (ComfyUI's input/output/temp)."""

    input: Path
    output: Path
    temp: Path

    def by_type(self, kind: str | None) -> Path | None:
        return {"input": self.input, "output": self.output, "temp": self.temp}.get(
            kind or "input")

    def annotated(self, name: str, default: str = "input") -> Path:
        """``"x.png [output]"`` -> output/x.png, plain names -> the default folder."""
        kind = default
        for tag in ("input", "output", "temp"):
            if name.endswith(f" [{tag}]"):
                name, kind = name[: -len(tag) - 3], tag
                break
        base = self.by_type(kind)
        assert base is not None
        return base / name


@dataclass
class RunContext:
    """What a node may look at besides its inputs."""

    dirs: Dirs
    node_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    state: dict[str, Any] = field(default_factory=dict)  # survives across prompts, per node


@dataclass
class NodeResult:
    outputs: tuple[Any, ...] = ()
    ui: dict[str, Any] | None = None
    # (value, max, image) progress updates with a preview, sent in order by the executor
    previews: list[tuple[int, int, Image.Image]] = field(default_factory=list)


@dataclass(frozen=True)
class NodeDef:
    name: str
    display_name: str
    category: str
    input_types: Callable[[Dirs], dict[str, dict[str, Any]]]
    return_types: tuple[str, ...]
    run: Callable[..., NodeResult]
    return_names: tuple[str, ...] | None = None
    output_node: bool = False
    description: str = ""
    # ComfyUI's VALIDATE_INPUTS: the inputs it takes over, and the check (True or a reason)
    validate_inputs: tuple[str, ...] = ()
    validate: Callable[..., bool | str] | None = None
    is_changed: Callable[[Dirs, dict[str, Any]], Any] | None = None
    search_aliases: tuple[str, ...] = ()
    essentials_category: str | None = None
    sampler_like: bool = False  # takes part in the simulated-sampler progress knob

    def object_info(self, dirs: Dirs) -> dict[str, Any]:
        """The ``/object_info/{class}`` entry, keys in the recorded order."""
        inputs = self.input_types(dirs)
        info: dict[str, Any] = {
            "input": inputs,
            "input_order": {k: list(v) for k, v in inputs.items()},
            "is_input_list": False,
            "output": list(self.return_types),
            "output_is_list": [False] * len(self.return_types),
            "output_name": list(self.return_names or self.return_types),
            "name": self.name,
            "display_name": self.display_name,
            "description": self.description,
            "python_module": "nodes",
            "category": self.category,
            "output_node": self.output_node,
            "has_intermediate_output": False,
            "search_aliases": list(self.search_aliases),
        }
        if self.essentials_category:
            info["essentials_category"] = self.essentials_category
        return info


# --------------------------------------------------------------------------- helpers


def _int_spec(default: int, lo: int, hi: int) -> tuple[str, dict[str, int]]:
    return ("INT", {"default": default, "min": lo, "max": hi, "step": 1})


def input_files(dirs: Dirs) -> list[str]:
    """LoadImage's combo: the image files directly in the input folder, sorted."""
    try:
        names = os.listdir(dirs.input)
    except FileNotFoundError:
        return []
    return sorted(
        n for n in names
        if (dirs.input / n).is_file() and Path(n).suffix.lower() in IMAGE_EXTENSIONS
    )


def _inside(base: Path, path: Path) -> bool:
    base_abs = os.path.abspath(base)
    return os.path.commonpath((base_abs, os.path.abspath(path))) == base_abs


def _with_ops(batch: Batch, fn: Callable[[Image.Image], Image.Image]) -> Batch:
    return [fn(img) for img in batch]


# --------------------------------------------------------------------------- LoadImage


def _load_image_inputs(dirs: Dirs) -> dict[str, dict[str, Any]]:
    return {"required": {"image": (input_files(dirs), {"image_upload": True})}}


def _load_image_validate(dirs: Dirs, image: Any) -> bool | str:
    path = dirs.annotated(str(image))
    if not (_inside(dirs.input.parent, path) and path.exists()):
        return f"Invalid image file: {image}"
    return True


def _load_image_changed(dirs: Dirs, inputs: dict[str, Any]) -> str:
    """ComfyUI re-runs LoadImage when the file's bytes change (sha256 of the file)."""
    try:
        return hashlib.sha256(dirs.annotated(str(inputs["image"])).read_bytes()).hexdigest()
    except OSError:
        return f"unreadable:{time.time()}"


def _load_image(ctx: RunContext, image: str) -> NodeResult:
    path = ctx.dirs.annotated(image)
    images: Batch = []
    masks: Batch = []
    with Image.open(path) as img:
        size = None
        for frame in ImageSequence.Iterator(img):
            frame = ImageOps.exif_transpose(frame) or frame
            if frame.mode == "I":
                frame = frame.point(lambda v: v * (1 / 255))
            rgb = frame.convert("RGB")
            if size is None:
                size = rgb.size
            if rgb.size != size:
                continue
            if "A" in frame.getbands():
                mask = ImageOps.invert(frame.getchannel("A"))
            elif frame.mode == "P" and "transparency" in frame.info:
                mask = ImageOps.invert(frame.convert("RGBA").getchannel("A"))
            else:
                mask = Image.new("L", (64, 64), 0)
            images.append(rgb)
            masks.append(mask)
            if img.format == "MPO":
                break
    return NodeResult((images, masks))


# --------------------------------------------------------------------------- image ops


def _image_only() -> Callable[[Dirs], dict[str, dict[str, Any]]]:
    return lambda _dirs: {"required": {"image": ("IMAGE",)}}


def _invert(ctx: RunContext, image: Batch) -> NodeResult:
    return NodeResult((_with_ops(image, ImageOps.invert),))


def _blur_inputs(_dirs: Dirs) -> dict[str, dict[str, Any]]:
    return {"required": {
        "image": ("IMAGE",),
        "blur_radius": ("INT", {"default": 1, "min": 1, "max": 31, "step": 1}),
        "sigma": ("FLOAT", {"default": 1.0, "min": 0.1, "max": 10.0, "step": 0.1}),
    }}


def _blur(ctx: RunContext, image: Batch, blur_radius: int, sigma: float) -> NodeResult:
    """Gaussian blur with standard deviation ``sigma``.

    ComfyUI convolves with a (2*radius+1) kernel; Pillow's Gaussian has no explicit
    truncation, so the two agree whenever the radius covers about 3 sigma.
    """
    if blur_radius == 0:
        return NodeResult((image,))
    return NodeResult((_with_ops(image, lambda im: im.filter(ImageFilter.GaussianBlur(sigma))),))


def _scale_inputs(_dirs: Dirs) -> dict[str, dict[str, Any]]:
    return {"required": {
        "image": ("IMAGE",),
        "upscale_method": (UPSCALE_METHODS,),
        "width": _int_spec(512, 0, MAX_RESOLUTION),
        "height": _int_spec(512, 0, MAX_RESOLUTION),
        "crop": (CROP_METHODS,),
    }}


def _center_crop_box(w: int, h: int, width: int, height: int) -> tuple[int, int, int, int]:
    """ComfyUI's common_upscale(crop="center"): cut the source to the target aspect first."""
    old_aspect, new_aspect = w / h, width / height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((w - w * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((h - h * (old_aspect / new_aspect)) / 2)
    return x, y, w - x, h - y


def _resize(img: Image.Image, method: str, width: int, height: int, crop: str) -> Image.Image:
    if crop == "center":
        img = img.crop(_center_crop_box(img.width, img.height, width, height))
    return img.resize((width, height), _RESAMPLE[method])


def _scale(ctx: RunContext, image: Batch, upscale_method: str, width: int, height: int,
           crop: str) -> NodeResult:
    if width == 0 and height == 0:
        return NodeResult((image,))
    w, h = image[0].size
    if width == 0:
        width = max(1, round(w * height / h))
    elif height == 0:
        height = max(1, round(h * width / w))
    return NodeResult((_with_ops(image, lambda im: _resize(im, upscale_method, width, height,
                                                           crop)),))


def _scale_by_inputs(_dirs: Dirs) -> dict[str, dict[str, Any]]:
    return {"required": {
        "image": ("IMAGE",),
        "upscale_method": (UPSCALE_METHODS,),
        "scale_by": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01}),
    }}


def _scale_by(ctx: RunContext, image: Batch, upscale_method: str, scale_by: float) -> NodeResult:
    w, h = image[0].size
    width, height = round(w * scale_by), round(h * scale_by)
    return NodeResult((_with_ops(image, lambda im: _resize(im, upscale_method, width, height,
                                                           "disabled")),))


def _empty_inputs(_dirs: Dirs) -> dict[str, dict[str, Any]]:
    return {"required": {
        "width": _int_spec(512, 1, MAX_RESOLUTION),
        "height": _int_spec(512, 1, MAX_RESOLUTION),
        "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
        "color": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1,
                          "display": "color"}),
    }}


def _empty(ctx: RunContext, width: int, height: int, batch_size: int, color: int) -> NodeResult:
    rgb = ((color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF)
    return NodeResult(([Image.new("RGB", (width, height), rgb) for _ in range(batch_size)],))


def _crop_inputs(_dirs: Dirs) -> dict[str, dict[str, Any]]:
    return {"required": {
        "image": ("IMAGE",),
        "width": _int_spec(512, 1, MAX_RESOLUTION),
        "height": _int_spec(512, 1, MAX_RESOLUTION),
        "x": _int_spec(0, 0, MAX_RESOLUTION),
        "y": _int_spec(0, 0, MAX_RESOLUTION),
    }}


def _crop(ctx: RunContext, image: Batch, width: int, height: int, x: int, y: int) -> NodeResult:
    """Like ComfyUI's tensor slice: the origin is clamped inside, the far edge to the image."""
    w, h = image[0].size
    x, y = min(x, w - 1), min(y, h - 1)
    box = (x, y, min(x + width, w), min(y + height, h))
    return NodeResult((_with_ops(image, lambda im: im.crop(box)),))


# --------------------------------------------------------------------------- saving


def _compute_vars(prefix: str, width: int, height: int) -> str:
    now = time.localtime()
    for key, value in (
        ("%width%", str(width)), ("%height%", str(height)),
        ("%year%", str(now.tm_year)), ("%month%", f"{now.tm_mon:02}"),
        ("%day%", f"{now.tm_mday:02}"), ("%hour%", f"{now.tm_hour:02}"),
        ("%minute%", f"{now.tm_min:02}"), ("%second%", f"{now.tm_sec:02}"),
    ):
        prefix = prefix.replace(key, value)
    return prefix


def save_image_path(prefix: str, base: Path, width: int, height: int
                    ) -> tuple[Path, str, int, str]:
    """ComfyUI's get_save_image_path: folder, file stem, next counter, subfolder.

    The counter is one past the highest ``<stem>_NNNNN_`` already in the folder, so files
    are never overwritten and numbering continues across prompts and restarts.
    """
    prefix = _compute_vars(prefix, width, height)
    norm = os.path.normpath(prefix)
    subfolder, stem = os.path.dirname(norm), os.path.basename(norm)
    folder = base / subfolder
    if not _inside(base, folder):
        raise ValueError(
            "**** ERROR: Saving image outside the output folder is not allowed."
            f"\n full_output_folder: {os.path.abspath(folder)}"
            f"\n         output_dir: {base}"
            f"\n         commonpath: {os.path.commonpath((str(base), os.path.abspath(folder)))}")
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        folder.mkdir(parents=True, exist_ok=True)
        names = []
    best = 0
    for name in names:
        head = name[: len(stem) + 1]
        if os.path.normcase(head[:-1]) == os.path.normcase(stem) and head[-1:] == "_":
            try:
                best = max(best, int(name[len(stem) + 1:].split("_")[0]))
            except ValueError:
                continue
    counter = best + 1 if best else 1
    return folder, stem, counter, subfolder


def _save_batch(ctx: RunContext, images: Batch, prefix: str, base: Path, kind: str,
                compress_level: int) -> dict[str, Any]:
    folder, stem, counter, subfolder = save_image_path(prefix, base, images[0].width,
                                                       images[0].height)
    results = []
    for batch_number, img in enumerate(images):
        meta = PngInfo()
        meta.add_text("prompt", json.dumps(ctx.prompt))
        for key, value in (ctx.extra_data.get("extra_pnginfo") or {}).items():
            meta.add_text(key, json.dumps(value))
        name = f"{stem.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
        img.save(folder / name, pnginfo=meta, compress_level=compress_level)
        results.append({"filename": name, "subfolder": subfolder, "type": kind})
        counter += 1
    return {"images": results}


def _save_inputs(_dirs: Dirs) -> dict[str, dict[str, Any]]:
    return {
        "required": {
            "images": ("IMAGE", {"tooltip": "The images to save."}),
            "filename_prefix": ("STRING", {
                "default": "ComfyUI",
                "tooltip": "The prefix for the file to save. This may include formatting "
                           "information such as %date:yyyy-MM-dd% or %Empty Latent Image.width% "
                           "to include values from nodes.",
            }),
        },
        "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
    }


def _save(ctx: RunContext, images: Batch, filename_prefix: str) -> NodeResult:
    ui = _save_batch(ctx, images, filename_prefix, ctx.dirs.output, "output", 4)
    return NodeResult((images,), ui)


def _preview_inputs(_dirs: Dirs) -> dict[str, dict[str, Any]]:
    return {"required": {"images": ("IMAGE",)},
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}


def _preview(ctx: RunContext, images: Batch) -> NodeResult:
    """PreviewImage: a SaveImage into temp/ with a random 5-letter tag per node instance."""
    suffix = ctx.state.setdefault(
        "temp_suffix", "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5)))
    ui = _save_batch(ctx, images, f"ComfyUI_temp_{suffix}", ctx.dirs.temp, "temp", 1)
    return NodeResult((), ui)


def _ws_save_inputs(_dirs: Dirs) -> dict[str, dict[str, Any]]:
    return {"required": {"images": ("IMAGE",)}}


def _ws_save(ctx: RunContext, images: Batch) -> NodeResult:
    """SaveImageWebsocket: every image goes out as a preview frame, nothing is written."""
    total = len(images)
    return NodeResult((), None, [(step, total, img) for step, img in enumerate(images)])


def _always_changed(_dirs: Dirs, _inputs: dict[str, Any]) -> float:
    return time.time()


# --------------------------------------------------------------------------- the table

NODES: dict[str, NodeDef] = {n.name: n for n in (
    NodeDef("LoadImage", "Load Image", "image", _load_image_inputs, ("IMAGE", "MASK"),
            _load_image, validate_inputs=("image",), validate=_load_image_validate,
            is_changed=_load_image_changed,
            search_aliases=("load image", "open image", "import image", "image input",
                            "upload image", "read image", "image loader"),
            essentials_category="Basics"),
    NodeDef("ImageInvert", "Invert Image Colors", "image/color", _image_only(), ("IMAGE",),
            _invert, search_aliases=("reverse colors",), essentials_category="Image Tools",
            sampler_like=True),
    NodeDef("ImageBlur", "Image Blur", "image/postprocessing", _blur_inputs, ("IMAGE",), _blur,
            sampler_like=True),
    NodeDef("ImageScale", "Upscale Image", "image/upscaling", _scale_inputs, ("IMAGE",), _scale,
            sampler_like=True),
    NodeDef("ImageScaleBy", "Upscale Image By", "image/upscaling", _scale_by_inputs,
            ("IMAGE",), _scale_by),
    NodeDef("EmptyImage", "EmptyImage", "image", _empty_inputs, ("IMAGE",), _empty),
    NodeDef("ImageCrop", "Image Crop", "image/transform", _crop_inputs, ("IMAGE",), _crop),
    NodeDef("SaveImage", "Save Image", "image", _save_inputs, ("IMAGE",), _save,
            return_names=("images",), output_node=True,
            description="Saves the input images to your ComfyUI output directory.",
            search_aliases=("save", "save image", "export image", "output image",
                            "write image", "download"),
            essentials_category="Basics"),
    NodeDef("PreviewImage", "Preview Image", "image", _preview_inputs, (), _preview,
            output_node=True, description="Saves the input images to your ComfyUI output "
            "directory."),
    NodeDef("SaveImageWebsocket", "SaveImageWebsocket", "api node/image", _ws_save_inputs,
            (), _ws_save, output_node=True, is_changed=_always_changed),
)}


def hidden_values(node: NodeDef, dirs: Dirs, prompt: dict[str, Any],
                  extra_data: dict[str, Any]) -> dict[str, Any]:
    """The hidden inputs ComfyUI fills in (PROMPT, EXTRA_PNGINFO) for a node call."""
    hidden = node.input_types(dirs).get("hidden", {})
    out: dict[str, Any] = {}
    for name, kind in hidden.items():
        if kind == "PROMPT":
            out[name] = prompt
        elif kind == "EXTRA_PNGINFO" and "extra_pnginfo" in extra_data:
            out[name] = extra_data["extra_pnginfo"]
    return out
