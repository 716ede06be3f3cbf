"""The stored image cells of a Hugging Face dataset: byte decoding, the per-cell data check, the row Dataset."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

from glsim_pl.data.image_io import MAX_PIXELS, decode_image, to_rgb
from glsim_pl.data.jpeg import MAX_PIXELS as PLAIN_JPEG_MAX_PIXELS
from glsim_pl.data.jpeg import decode_plain_jpeg, read_plain_jpeg
from glsim_pl.data.sources import Box
from glsim_pl.errors import UserError

__all__ = ["HFImageSource", "ImageCell", "check_image_bytes", "column_values", "decode_image_bytes"]

_END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND"}


def decode_image_bytes(data: bytes, where: str, max_pixels: int | None = MAX_PIXELS,
                       draft: int | None = None) -> tuple[Image.Image, tuple[int, int]]:  # fmt: skip
    """Stored image bytes -> (upright 8-bit RGB image, stored (width, height)) by the rules of
    :mod:`glsim_pl.data.image_io`; any failure is one :class:`UserError` naming ``where`` (split, row, column)."""
    if not data:
        raise UserError(f"{where}: empty image cell (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise UserError(f"{where}: not an image format PIL can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{where}: cannot read image ({exc})") from None
    with image:
        width, height = image.size
        if max_pixels is not None and width * height > max_pixels:
            raise UserError(f"{where}: {width}x{height} pixels exceeds the limit of {max_pixels}; raise "
                            "dataset.max_image_pixels if the image is genuine")  # fmt: skip
        try:
            if draft is not None and image.format == "JPEG":
                image.draft("RGB", (draft, draft))
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise UserError(f"{where}: cannot read image ({exc})") from None
        return to_rgb(image), (width, height)


def check_image_bytes(data: bytes, where: str, full: bool, max_pixels: int | None) -> None:
    """The data check of one cell, as :func:`glsim_pl.data.image_io.check_image_file` checks a file: ``full=False``
    parses the header and looks for the JPEG / PNG end marker (decoding only when it is missing)."""
    if full or not data:
        decode_image_bytes(data, where, max_pixels)
        return
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt, (width, height) = image.format, image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        decode_image_bytes(data, where, max_pixels)  # raises the one-line reason
        return
    if (
        max_pixels is not None
        and width * height > max_pixels
        or (fmt in _END_MARKERS and _END_MARKERS[fmt] not in data[-4096:])
    ):
        decode_image_bytes(data, where, max_pixels)


class ImageCell:
    """Reads the stored (undecoded) image of one row of one split; pickles as the memory-mapped Arrow table."""

    def __init__(self, split: str, table: Any, column: str) -> None:
        self.split, self.table, self.column = split, table, column

    def where(self, row: int) -> str:
        return f"split '{self.split}', row {row}, column '{self.column}'"

    def payload(self, row: int) -> tuple[str | None, Any]:
        """The row's stored image: (local file path, None) or (None, the cell's bytes as stored)."""
        return stored_image(self.table[row][self.column])

    def read(self, row: int, max_pixels: int | None, draft: int | None,
             payload: tuple[str | None, Any] | None = None) -> tuple[Image.Image, tuple[int, int]]:  # fmt: skip
        path, data = payload or self.payload(row)
        if path:
            return decode_image(path, max_pixels, draft)  # an Image feature that points to a local file
        if not isinstance(data, bytes | bytearray | None):
            raise UserError(f"{self.where(row)}: expected image bytes, found {type(data).__name__}")
        return decode_image_bytes(bytes(data or b""), self.where(row), max_pixels, draft)

    @staticmethod
    def read_plain_jpeg(payload: tuple[str | None, Any]) -> torch.Tensor | None:
        """A plain JPEG cell as a (3, H, W) uint8 tensor, as an image file's (:mod:`glsim_pl.data.jpeg`); else None."""
        path, data = payload
        if path:
            return read_plain_jpeg(path)
        return decode_plain_jpeg(data) if isinstance(data, bytes) and data else None


def stored_image(value: Any) -> tuple[str | None, Any]:
    """An image cell's value as (local file path, None) for an Image feature that points to a file, else (None, the
    stored bytes, or whatever the cell holds instead)."""
    if isinstance(value, dict) and value.get("bytes") is None and value.get("path"):
        return value["path"], None
    return None, (value.get("bytes") if isinstance(value, dict) else value)


class HFImageSource(Dataset):
    """Rows of one or more splits of a Hugging Face dataset as (PIL image, label, box | None).

    Args:
        rows: (cell reader, row index) per sample, in the dataset's order.
        targets: 0-based label per sample.
        boxes: pixel (x1, y1, x2, y2) per sample, or None when the dataset has no boxes.
        draft: decode JPEGs at a reduced scale no smaller than ``draft`` pixels per side.
    """

    def __init__(self, rows: Sequence[tuple[ImageCell, int]], targets: Sequence[int], boxes: Sequence[Box] | None,
                 draft: int | None = None) -> None:  # fmt: skip
        self.rows, self.targets = list(rows), list(targets)
        self.boxes = list(boxes) if boxes is not None else None
        self.draft, self.max_pixels = draft, MAX_PIXELS

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[Image.Image, int, Box | None]:
        return self._item(index)

    def _item(self, index: int, payload: tuple[str | None, Any] | None = None) -> tuple[Image.Image, int, Box | None]:
        cell, row = self.rows[index]
        image, stored = cell.read(row, self.max_pixels, self.draft, payload)
        box = self.boxes[index] if self.boxes is not None else None
        scale = max(image.size) / max(stored)  # a draft decode is smaller than the stored image
        if box is not None and scale != 1:
            box = tuple(v * scale for v in box)
        return image, self.targets[index], box

    def fast_item(self, index: int) -> tuple[Image.Image | torch.Tensor, int, Box | None]:
        """``self[index]``, with a plain JPEG as a (3, H, W) uint8 tensor: the same pixels and the same decoder as
        an image file's fast path (``ImageFileList.fast_item``), so parquet reads no slower than files."""
        cell, row = self.rows[index]
        payload = cell.payload(row)  # one Arrow read, for the fast path and the fallback
        within_limit = self.max_pixels is None or self.max_pixels >= PLAIN_JPEG_MAX_PIXELS
        if self.draft is None and within_limit and (image := cell.read_plain_jpeg(payload)) is not None:
            return image, self.targets[index], self.boxes[index] if self.boxes is not None else None
        return self._item(index, payload)


def column_values(table: Any, column: str, rows: list[int], chunk: int = 1024) -> Iterator[Any]:
    """The cells of ``rows`` (ascending), read a slice at a time: one Arrow read per chunk, not per row."""
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        values = table[part[0] : part[-1] + 1][column]
        yield from (values[r - part[0]] for r in part)
