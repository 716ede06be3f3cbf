"""Raw sample sources: indexable collections of (PIL image, label, box | None) with their labels known up front.

A source knows nothing about transforms or splits; :mod:`glsim_pl.data.base` adds both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from glsim_pl.data.image_io import MAX_PIXELS, decode_image
from glsim_pl.data.jpeg import MAX_PIXELS as PLAIN_JPEG_MAX_PIXELS
from glsim_pl.data.jpeg import read_plain_jpeg
from glsim_pl.errors import UserError

__all__ = ["Box", "ImageFileList", "Sample"]

Box = tuple[float, float, float, float]  # pixel (x1, y1, x2, y2) in the original image, end exclusive


@dataclass(frozen=True)
class Sample:
    """One labelled image file; ``box`` is the ground-truth object box where the dataset ships one."""

    path: Path
    label: int
    box: Box | None = None


class ImageFileList(Dataset):
    """Images read from files; decode errors name the file.

    Args:
        samples: the files with their 0-based labels, in the dataset's official order.
        draft: let PIL decode JPEGs at a reduced scale no smaller than ``draft`` pixels per side (fast path).
        max_pixels: refuse larger images (decompression bombs); None: no limit.
    """

    def __init__(
        self, samples: Sequence[Sample], draft: int | None = None, max_pixels: int | None = MAX_PIXELS
    ) -> None:
        self.samples = list(samples)
        self.targets = [s.label for s in self.samples]
        self.boxes = [s.box for s in self.samples] if all(s.box is not None for s in self.samples) else None
        self.draft, self.max_pixels = draft, max_pixels

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[Image.Image, float]:
        """Decode as RGB (:func:`~glsim_pl.data.image_io.read_image`) -> (image, decoded side / stored side)."""
        path = self.samples[index].path
        try:
            image, stored = decode_image(path, self.max_pixels, self.draft)
        except UserError as exc:
            raise UserError(f"{exc}. Replace the file, or set dataset.skip_corrupt=true to leave unreadable images "
                            "out of their split") from None  # fmt: skip
        return image, max(image.size) / max(stored)  # max: the same for an EXIF-rotated image

    def __getitem__(self, index: int) -> tuple[Image.Image, int, Box | None]:
        sample = self.samples[index]
        image, scale = self.load(index)
        box = sample.box if sample.box is None or scale == 1 else tuple(v * scale for v in sample.box)
        return image, sample.label, box

    def fast_item(self, index: int) -> tuple[Image.Image | torch.Tensor, int, Box | None]:
        """``self[index]``, with a plain JPEG as a (3, H, W) uint8 tensor: the same pixels, about twice as fast
        (:mod:`glsim_pl.data.jpeg`); the transforms take either. Anything else goes through ``read_image``."""
        sample = self.samples[index]
        within_limit = self.max_pixels is None or self.max_pixels >= PLAIN_JPEG_MAX_PIXELS
        if self.draft is None and within_limit and (image := read_plain_jpeg(sample.path)) is not None:
            return image, sample.label, sample.box
        return self[index]
