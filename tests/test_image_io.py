"""read_image: every PIL mode to the right 8-bit RGB pixels, upright, and one error line per kind of bad file."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from glsim_pl.data.image_io import BACKGROUND, check_image_file, decode_image, read_image
from glsim_pl.errors import UserError


def _pixels(path) -> np.ndarray:
    image = read_image(path)
    assert image.mode == "RGB"
    return np.asarray(image)


def test_16bit_grey_png_scales_from_its_range(tmp_path):
    values = np.array([[0, 1000, 32768, 65535]], dtype=np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")  # I;16 (or I on older PIL): the case that used to load as pure white
    got = _pixels(path)[0, :, 0]
    assert got.tolist() == [0, 4, 128, 255]  # round(v * 255 / 65535), not clipped to 255


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_16bit_modes_in_memory(tmp_path, mode):
    image = Image.new(mode, (2, 1))
    image.putpixel((0, 0), 257 * 100)
    image.putpixel((1, 0), 65535)
    path = tmp_path / f"{mode.replace(';', '_')}.tif"
    image.save(path)
    assert _pixels(path)[0, :, 1].tolist() == [100, 255]


def test_32bit_int_outside_16bit_range_is_stretched(tmp_path):
    path = tmp_path / "int32.tif"
    Image.fromarray(np.array([[-100000, 0, 100000]], dtype=np.int32), mode="I").save(path)
    assert _pixels(path)[0, :, 2].tolist() == [0, 128, 255]


def test_float_images(tmp_path):
    unit, wide = tmp_path / "unit.tif", tmp_path / "wide.tif"
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F").save(unit)
    Image.fromarray(np.array([[-2.0, 0.0, 2.0]], dtype=np.float32), mode="F").save(wide)
    assert _pixels(unit)[0, :, 0].tolist() == [0, 128, 255]
    assert _pixels(wide)[0, :, 0].tolist() == [0, 128, 255]


def test_exif_orientation_is_applied(tmp_path):
    # 4 wide x 2 high, left half red; orientation 6 = "rotate 90 clockwise to display"
    array = np.zeros((2, 4, 3), dtype=np.uint8)
    array[:, :2] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.png"
    Image.fromarray(array).save(path, exif=exif)
    got = _pixels(path)
    assert got.shape == (4, 2, 3)  # displayed upright: 2 wide x 4 high
    assert got[0, :, 0].tolist() == [255, 255] and got[-1, :, 0].tolist() == [0, 0]  # the left half is now on top


def test_rgba_and_la_composited_on_background(tmp_path):
    rgba = np.array([[[10, 20, 30, 0], [10, 20, 30, 255], [200, 0, 0, 128]]], dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    got = _pixels(tmp_path / "rgba.png")[0]
    assert tuple(got[0]) == BACKGROUND  # fully transparent: the background, not the stored (10, 20, 30)
    assert tuple(got[1]) == (10, 20, 30)
    assert abs(int(got[2, 0]) - 228) <= 1 and abs(int(got[2, 1]) - 127) <= 1  # half over white
    Image.fromarray(np.array([[[50, 0], [50, 255]]], dtype=np.uint8), mode="LA").save(tmp_path / "la.png")
    assert _pixels(tmp_path / "la.png")[0].tolist() == [[255, 255, 255], [50, 50, 50]]


def test_palette_with_transparency(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    path = tmp_path / "pal.gif"
    image.save(path, transparency=0)
    assert _pixels(path)[0].tolist() == [[255, 255, 255], [0, 255, 0]]


def test_cmyk_bilevel_and_first_frame(tmp_path):
    Image.new("CMYK", (1, 1), (0, 255, 255, 0)).save(tmp_path / "cmyk.tif")  # pure red in CMYK
    assert _pixels(tmp_path / "cmyk.tif")[0, 0].tolist() == [255, 0, 0]
    bilevel = Image.new("1", (2, 1), 0)
    bilevel.putpixel((1, 0), 1)
    bilevel.save(tmp_path / "bw.png")
    assert _pixels(tmp_path / "bw.png")[0].tolist() == [[0, 0, 0], [255, 255, 255]]
    frames = [Image.new("RGB", (2, 2), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert _pixels(tmp_path / "anim.gif")[0, 0].tolist() == [255, 0, 0]


def test_decompression_bomb_limit_names_the_file(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (100, 100)).save(path)
    with pytest.raises(UserError, match=r"big\.png: 100x100 = 10000 pixels exceeds the limit of 9999"):
        read_image(path, max_pixels=9999)
    assert read_image(path, max_pixels=10000).size == (100, 100)
    with pytest.raises(UserError, match="exceeds the limit"):
        check_image_file(path, max_pixels=9999)


def _truncated_jpeg(path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


def test_bad_files_are_one_line_naming_the_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "folder.jpg").mkdir()
    os.symlink(tmp_path / "gone.jpg", tmp_path / "dangling.jpg")
    (tmp_path / "text.png").write_text("not an image")
    _truncated_jpeg(tmp_path / "cut.jpg")
    expected = {"empty.jpg": "empty file", "folder.jpg": "is a folder", "dangling.jpg": "broken symbolic link",
                "text.png": "not an image format", "missing.png": "no such file", "cut.jpg": "cannot read image"}
    for name, reason in expected.items():
        with pytest.raises(UserError) as info:
            read_image(tmp_path / name)
        message = str(info.value)
        assert message.startswith(str(tmp_path / name)) and reason in message and "\n" not in message


def test_fast_check_finds_truncation_without_decoding(tmp_path):
    _truncated_jpeg(tmp_path / "cut.jpg")
    with pytest.raises(UserError, match="truncated JPEG"):
        check_image_file(tmp_path / "cut.jpg")
    Image.new("RGB", (5, 3)).save(tmp_path / "ok.jpg")
    assert check_image_file(tmp_path / "ok.jpg") == (5, 3)
    motion = tmp_path / "motion.jpg"  # a valid JPEG with 8 KB appended after its end marker, as phones write
    motion.write_bytes((tmp_path / "ok.jpg").read_bytes() + b"ftypmp42" + bytes(8192))
    assert check_image_file(motion) == (5, 3)
    assert check_image_file(tmp_path / "ok.jpg", full=True) == (5, 3)


def test_draft_reports_the_stored_size(tmp_path):
    path = tmp_path / "large.jpg"
    Image.new("RGB", (800, 400), (0, 128, 0)).save(path)
    image, stored = decode_image(path, draft=100)
    assert stored == (800, 400) and image.size == (200, 100)  # JPEG draft: 1/4 scale, still >= 100 per side
