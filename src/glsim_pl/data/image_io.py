"""The one way an image file becomes pixels: 8-bit RGB, the right way up, or a :class:`UserError` naming the file.

Rules (every dataset, ``predict``, ``eval``, the visualisations and the demo read images through :func:`read_image`):

- EXIF orientation is applied (``ImageOps.exif_transpose``): a phone photo is seen as its owner sees it.
- 16-bit integer images (``I;16``, ``I;16B``, ``I;16L``) are scaled from the full 16-bit range, 0..65535 -> 0..255.
  32-bit integer images (``I``) whose values lie in 0..65535 are 16-bit data (how PIL opens some 16-bit PNGs/TIFFs)
  and scale the same way; others, and 32-bit float images (``F``) outside 0..1, are stretched from their own
  min..max to 0..255. ``F`` images within 0..1 are scaled by 255. Nothing is clipped.
- Transparency (``RGBA``, ``LA``, ``PA``, palette images with a transparent colour) is composited on
  :data:`BACKGROUND` (white), so transparent pixels do not show whatever colour the file stored under them.
- ``CMYK``, ``YCbCr``, ``L``, 1-bit and palette images are converted by PIL; multi-frame files (GIF, TIFF, WebP)
  give their first frame.
- Images larger than ``max_pixels`` (default :data:`MAX_PIXELS`, twice PIL's warning limit, where PIL itself errors)
  are refused before decoding: a decompression bomb or a scan far larger than any model input.
- Missing files, dangling links, folders named like images, empty files and undecodable files are one error line.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from glsim_pl.errors import UserError

__all__ = [
    "BACKGROUND",
    "DECODE_RULES",
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "check_image_file",
    "decode_image",
    "read_image",
    "to_rgb",
]

BACKGROUND = (255, 255, 255)  # what transparent pixels become
# The version of the rules by which a file becomes pixels, here and in the JPEG fast path (data/jpeg.py). Stored
# pixels (the dataset.cache=disk files) carry it and are rebuilt when it changes: raise it with any change to what
# pixels a file gives. 2: the fast path defers to PIL for an orientation stored in XMP.
DECODE_RULES = 2
# What a dataset folder counts as an image (any case): torchvision's ImageFolder extensions and every format
# predict reads (GIF: its first frame, as read_image gives it).
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
MAX_PIXELS = 2 * 89_478_485  # PIL's own error threshold (2 x Image.MAX_IMAGE_PIXELS)

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error we report, not grey pixels we train on
# The size limit is read_image's max_pixels (an error naming the file); PIL's global one would only warn below
# twice its value and raise its own message above, so it is turned off for the images read here.
Image.MAX_IMAGE_PIXELS = None

_END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND"}  # a file cut short lacks its end marker
_TAIL_BYTES = 4096  # some writers pad after the marker; the marker still lies within the last few KB


def _existing_file(path: Path) -> int:
    """The file's size; a missing file, dangling link, folder or empty file is a UserError."""
    if not path.exists():
        if os.path.islink(path):
            raise UserError(f"{path}: broken symbolic link (points to {os.readlink(path)}, which does not exist)")
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not an image file")
    size = path.stat().st_size
    if size == 0:
        raise UserError(f"{path}: empty file (0 bytes)")
    return size


def _open(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image format PIL can read") from None
    except PermissionError:
        raise UserError(f"{path}: cannot read (permission denied)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{path}: cannot read image ({exc})") from None


def _check_pixels(path: Path, image: Image.Image, max_pixels: int | None) -> None:
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise UserError(f"{path}: {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} "
                        "(a decompression bomb or an oversized scan); raise dataset.max_image_pixels if the file is "
                        "genuine")  # fmt: skip


def _scaled(values: np.ndarray, low: float, high: float) -> np.ndarray:
    span = high - low
    scaled = (values - low) * (255.0 / span) if span > 0 else np.zeros_like(values)
    return np.rint(scaled).clip(0, 255).astype(np.uint8)  # clip only guards rounding at the ends


def _gray_to_l(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float grey image -> 8-bit ``L`` by the module's scaling rules."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16"):
        return Image.fromarray(_scaled(values, 0, 65535))
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if image.mode == "I" and low >= 0 and high <= 65535:
        return Image.fromarray(_scaled(values, 0, 65535))
    if image.mode == "F" and low >= 0 and high <= 1:
        return Image.fromarray(_scaled(values, 0, 1))
    return Image.fromarray(_scaled(values, low, high))


def to_rgb(image: Image.Image, background: tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """Any decoded PIL image -> 8-bit RGB (the rules in this module's docstring)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I") or mode == "F":
        return _gray_to_l(image).convert("RGB")
    if mode == "P" and "transparency" in image.info or mode == "PA":
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def read_image(
    path: str | Path, max_pixels: int | None = MAX_PIXELS, draft: int | None = None,
    background: tuple[int, int, int] = BACKGROUND,
) -> Image.Image:  # fmt: skip
    """Decode ``path`` as an upright 8-bit RGB image; any failure is one :class:`UserError` line naming the file.

    Args:
        path: the image file.
        max_pixels: refuse images with more pixels (None: no limit).
        draft: let PIL decode JPEGs at a reduced scale no smaller than ``draft`` pixels per side (fast path).
        background: colour transparent pixels are composited on.
    """
    return decode_image(path, max_pixels, draft, background)[0]


def decode_image(
    path: str | Path, max_pixels: int | None = MAX_PIXELS, draft: int | None = None,
    background: tuple[int, int, int] = BACKGROUND,
) -> tuple[Image.Image, tuple[int, int]]:  # fmt: skip
    """:func:`read_image` plus the (width, height) stored in the file (a draft decode is smaller)."""
    path = Path(path)
    _existing_file(path)
    with _open(path) as image:
        _check_pixels(path, image, max_pixels)
        stored = image.size
        try:
            if draft is not None and image.format == "JPEG":
                image.draft("RGB", (draft, draft))
            image.load()  # the first frame of a multi-frame file
            ImageOps.exif_transpose(image, in_place=True)
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise UserError(f"{path}: cannot read image ({exc})") from None
        return to_rgb(image, background), stored


def check_image_file(path: str | Path, full: bool = False, max_pixels: int | None = MAX_PIXELS) -> tuple[int, int]:
    """The data check of one file -> (width, height) as stored; a bad file is a UserError naming it.

    ``full=False``: the file exists, is not empty, its header parses, its size is within ``max_pixels`` and a JPEG or
    PNG ends with its end marker (a file cut short by a copy or download does not; a file without one is decoded, as
    phones append data after a valid image). ``full=True``: decodes it all.
    """
    path = Path(path)
    if full:
        return read_image(path, max_pixels).size
    size = _existing_file(path)
    with _open(path) as image:
        _check_pixels(path, image, max_pixels)
        marker = _END_MARKERS.get(image.format or "")
        dims = image.size
    if marker is not None:
        try:
            with path.open("rb") as f:
                f.seek(max(0, size - _TAIL_BYTES))
                tail = f.read()
        except OSError as exc:
            raise UserError(f"{path}: cannot read ({exc})") from None
        if marker not in tail:  # cut short, or data appended after the image (phone "motion photos"): decode decides
            try:
                read_image(path, max_pixels)
            except UserError as exc:
                reason = str(exc).removeprefix(f"{path}: ")
                raise UserError(f"{path}: truncated {image.format} file (no end marker, and it does not decode: "
                                f"{reason})") from None  # fmt: skip
    return dims
