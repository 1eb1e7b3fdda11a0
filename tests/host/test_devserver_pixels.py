"""The nodes really compute on the uploaded pixels (no canned outputs).

Every graph goes through the server (upload -> /prompt -> WS -> history -> /view) and the
downloaded PNG is checked against the operation done independently here with Pillow.
"""

from __future__ import annotations

import io

from devserver_testkit import (
    Api,
    WsRecorder,
    empty_save,
    gradient,
    noise,
    png_bytes,
    run,
    session,
    unique,
)
from PIL import Image, ImageChops, ImageFilter, ImageOps

from comfyui_devserver import ServerGroup
from comfyui_devserver.nodes import NODES, Dirs, RunContext


def _load(name: str, then: dict, prefix: str) -> dict:
    """LoadImage(name) -> <then as node "2" reading node 1> -> SaveImage."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": name}},
        "2": {"class_type": then["class_type"], "inputs": {"image": ["1", 0],
                                                           **then.get("inputs", {})}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0],
                                                    "filename_prefix": prefix}},
    }


def _process(group: ServerGroup, src: Image.Image, node: dict) -> Image.Image:
    async def body() -> Image.Image:
        async with session() as s:
            api = Api(s, group.urls[0])
            name = f"px_{unique()}.png"
            status, up = await api.upload(name, png_bytes(src), overwrite="true")
            assert status == 200 and up["name"] == name
            cid = f"pixels{unique()}"
            ws = await WsRecorder.open(s, f"{group.urls[0]}/ws?clientId={cid}")
            _, entry = await api.run(_load(name, node, f"px{unique()}"), ws, cid)
            assert entry["status"]["status_str"] == "success", entry["status"]
            img = await api.image(entry, "3")
            await ws.close()
            return img.convert("RGB")
    return run(body())


def test_invert_is_255_minus_x(group: ServerGroup) -> None:
    src = gradient(96, 64)
    out = _process(group, src, {"class_type": "ImageInvert"})
    assert out.size == src.size
    assert out.getpixel((0, 0)) == tuple(255 - v for v in src.getpixel((0, 0)))
    assert ImageChops.difference(out, ImageOps.invert(src)).getbbox() is None


def test_blur_is_a_gaussian_of_the_input(group: ServerGroup) -> None:
    src = noise(80, 60, seed=7)
    out = _process(group, src, {"class_type": "ImageBlur",
                                "inputs": {"blur_radius": 9, "sigma": 2.0}})
    assert out.size == src.size
    assert ImageChops.difference(out, src.filter(ImageFilter.GaussianBlur(2.0))).getbbox() is None
    # and it really smooths: neighbouring pixels are much closer than in the noise
    def roughness(img: Image.Image) -> int:
        return sum(abs(a - b) for a, b in zip(img.convert("L").tobytes()[:-1],
                                              img.convert("L").tobytes()[1:], strict=True))
    assert roughness(out) < roughness(src) / 3


def test_scale_sizes_and_center_crop(group: ServerGroup) -> None:
    src = gradient(120, 60)
    out = _process(group, src, {"class_type": "ImageScale", "inputs": {
        "upscale_method": "bilinear", "width": 50, "height": 40, "crop": "disabled"}})
    assert out.size == (50, 40)
    assert ImageChops.difference(out, src.resize((50, 40), Image.Resampling.BILINEAR)
                                 ).getbbox() is None
    keep_aspect = _process(group, src, {"class_type": "ImageScale", "inputs": {
        "upscale_method": "nearest-exact", "width": 0, "height": 30, "crop": "disabled"}})
    assert keep_aspect.size == (60, 30)
    cropped = _process(group, src, {"class_type": "ImageScale", "inputs": {
        "upscale_method": "lanczos", "width": 30, "height": 30, "crop": "center"}})
    expected = src.crop((30, 0, 90, 60)).resize((30, 30), Image.Resampling.LANCZOS)
    assert cropped.size == (30, 30)
    assert ImageChops.difference(cropped, expected).getbbox() is None


def test_scale_by_and_crop(group: ServerGroup) -> None:
    src = gradient(64, 40)
    half = _process(group, src, {"class_type": "ImageScaleBy", "inputs": {
        "upscale_method": "area", "scale_by": 0.5}})
    assert half.size == (32, 20)
    crop = _process(group, src, {"class_type": "ImageCrop", "inputs": {
        "width": 20, "height": 100, "x": 10, "y": 5}})
    assert crop.size == (20, 35)  # the far edge is clamped to the image, like a slice
    assert ImageChops.difference(crop, src.crop((10, 5, 30, 40))).getbbox() is None


def test_empty_image_colour_size_and_batch(group: ServerGroup) -> None:
    async def body() -> None:
        async with session() as s:
            api = Api(s, group.urls[1])
            ws = await WsRecorder.open(s, f"{group.urls[1]}/ws?clientId=emptycolour")
            prefix = f"empty{unique()}"
            _, entry = await api.run(empty_save(prefix, 64, 48, 0xFF8000, batch=2), ws,
                                     "emptycolour")
            images = entry["outputs"]["2"]["images"]
            assert [i["filename"] for i in images] == [f"{prefix}_00001_.png",
                                                       f"{prefix}_00002_.png"]
            for index in range(2):
                img = await api.image(entry, "2", index)
                assert img.size == (64, 48)
                assert img.convert("RGB").getcolors() == [(64 * 48, (255, 128, 0))]
                assert "prompt" in img.info  # SaveImage embeds the prompt like ComfyUI
            # the counter continues in the same folder on the next prompt
            _, again = await api.run(empty_save(prefix, 8, 8), ws, "emptycolour")
            assert again["outputs"]["2"]["images"][0]["filename"] == f"{prefix}_00003_.png"
            await ws.close()
    run(body())


def test_preview_image_goes_to_temp_and_view_variants(group: ServerGroup) -> None:
    async def body() -> None:
        async with session() as s:
            api = Api(s, group.urls[0])
            ws = await WsRecorder.open(s, f"{group.urls[0]}/ws?clientId=previewer")
            prompt = empty_save(f"pv{unique()}", 40, 30, 0x102030)
            prompt["3"] = {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}
            _, entry = await api.run(prompt, ws, "previewer")
            ref = entry["outputs"]["3"]["images"][0]
            assert ref["type"] == "temp" and ref["filename"].startswith("ComfyUI_temp_")
            status, data, headers = await api.view(ref, preview="webp;50")
            assert status == 200 and headers["Content-Type"] == "image/webp"
            assert Image.open(io.BytesIO(data)).size == (40, 30)
            status, data, _ = await api.view(ref, channel="a")
            alpha = Image.open(io.BytesIO(data))
            assert alpha.mode == "RGBA" and alpha.getchannel("A").getextrema() == (255, 255)
            await ws.close()
    run(body())


def test_load_image_mask_is_inverted_alpha(tmp_path) -> None:
    """LoadImage's MASK output (1 - alpha) and IMAGE output (RGB), called directly."""
    dirs = Dirs(tmp_path, tmp_path, tmp_path)
    rgba = Image.new("RGBA", (4, 2), (10, 20, 30, 0))
    rgba.putpixel((1, 1), (10, 20, 30, 200))
    rgba.save(tmp_path / "a.png")
    result = NODES["LoadImage"].run(RunContext(dirs, "1", {}, {}), image="a.png")
    (images, masks) = result.outputs
    assert images[0].mode == "RGB" and images[0].getpixel((0, 0)) == (10, 20, 30)
    assert masks[0].getpixel((0, 0)) == 255 and masks[0].getpixel((1, 1)) == 55
    Image.new("RGB", (3, 3)).save(tmp_path / "b.png")
    (_, masks) = NODES["LoadImage"].run(RunContext(dirs, "1", {}, {}), image="b.png").outputs
    assert masks[0].size == (64, 64) and masks[0].getextrema() == (0, 0)
