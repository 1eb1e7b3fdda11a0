"""File rules of ``/view`` and ``/upload/image`` (ComfyUI's, as recorded).

- ``/view``: a filename starting with ``/`` or containing ``..`` is 400, an unknown type
  400, a subfolder leaving the type's folder 403, a missing file 404; ``preview=fmt;q``
  re-encodes (webp unless jpeg is asked and no alpha wanted), ``channel=rgb|a`` splits.
- upload: the target must stay inside the type's folder (else 400); without
  ``overwrite=true|1`` an existing name with the same bytes is reused (dedupe) and one with
  other bytes becomes ``name (1).ext``, ``name (2).ext``, ...
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from PIL import Image

from .nodes import Dirs


def inside(base: Path | str, path: Path | str) -> bool:
    base_abs = os.path.abspath(base)
    return os.path.commonpath((base_abs, os.path.abspath(path))) == base_abs


def view_target(dirs: Dirs, filename: str, kind: str, subfolder: str | None
                ) -> tuple[int, Path | None, str, str]:
    """``(status, file, kind, basename)``; status 200 means "serve ``file``"."""
    if not filename or filename[0] == "/" or ".." in filename:
        return 400, None, kind, filename
    for tag in ("input", "output", "temp"):
        if filename.endswith(f" [{tag}]"):
            filename, kind = filename[: -len(tag) - 3], tag
            break
    base = dirs.by_type(kind) if kind in ("input", "output", "temp") else None
    if base is None:
        return 400, None, kind, filename
    if subfolder is not None:
        full = base / subfolder
        if not inside(base, full):
            return 403, None, kind, filename
        base = full
    filename = os.path.basename(filename)
    file = base / filename
    return (200 if file.is_file() else 404), file, kind, filename


def preview_bytes(file: Path, spec: str, channel: str) -> tuple[bytes, str]:
    """``/view?preview=webp;90``: re-encode (webp unless jpeg asked, and no alpha wanted)."""
    parts = spec.split(";")
    fmt = parts[0]
    if fmt not in ("webp", "jpeg") or "a" in channel:
        fmt = "webp"
    quality = int(parts[-1]) if parts[-1].isdigit() else 90
    with Image.open(file) as img:
        out = img.convert("RGB") if fmt == "jpeg" or channel == "rgb" else img.copy()
    buf = io.BytesIO()
    out.save(buf, format=fmt, quality=quality)
    return buf.getvalue(), f"image/{fmt}"


def channel_png(file: Path, channel: str) -> bytes:
    """``channel=rgb`` drops alpha; ``channel=a`` is the alpha alone (opaque if none)."""
    with Image.open(file) as img:
        if channel == "rgb":
            out = (Image.merge("RGB", img.split()[:3]) if img.mode == "RGBA"
                   else img.convert("RGB"))
        else:
            alpha = img.getchannel("A") if img.mode == "RGBA" else Image.new("L", img.size, 255)
            out = Image.new("RGBA", img.size)
            out.putalpha(alpha)
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    return buf.getvalue()


def upload_target(base: Path, subfolder: str, filename: str, data: bytes, overwrite: bool
                  ) -> tuple[Path, str, bool] | None:
    """Where an upload goes: ``(path, final name, already there)`` or None if it escapes."""
    folder = os.path.join(base, os.path.normpath(subfolder))
    filepath = os.path.abspath(os.path.join(folder, filename))
    if not inside(base, filepath):
        return None
    os.makedirs(folder, exist_ok=True)
    if overwrite:
        return Path(filepath), filename, False
    stem, ext = os.path.splitext(filename)
    digest = hashlib.sha256(data).hexdigest()
    i = 1
    while os.path.exists(filepath):
        with open(filepath, "rb") as fh:
            if hashlib.sha256(fh.read()).hexdigest() == digest:
                return Path(filepath), filename, True
        filename = f"{stem} ({i}){ext}"
        filepath = os.path.join(folder, filename)
        i += 1
    return Path(filepath), filename, False


def write_example_png(path: Path) -> None:
    """ComfyUI ships input/example.png; recorded prompts refer to it, so we make one."""
    img = Image.new("RGB", (128, 128))
    img.putdata([(x * 2, y * 2, 128) for y in range(128) for x in range(128)])
    img.save(path)
