"""Raw sample sources: indexable collections of (PIL image, label, box | None) with their labels known up front.

A source knows nothing about transforms or splits; :mod:`glsim_pl.data.base` adds both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageFile
from torch.utils.data import Dataset

from ..errors import UserError
from .jpeg import read_plain_jpeg

__all__ = ["Box", "ImageFileList", "Sample"]

Box = tuple[float, float, float, float]  # pixel (x1, y1, x2, y2) in the original image, end exclusive

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated JPEG is an error we report, not grey pixels we train on


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
    """

    def __init__(self, samples: Sequence[Sample], draft: int | None = None) -> None:
        self.samples = list(samples)
        self.targets = [s.label for s in self.samples]
        self.boxes = [s.box for s in self.samples] if all(s.box is not None for s in self.samples) else None
        self.draft = draft

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[Image.Image, float]:
        """Decode as RGB -> (image, decoded width / stored width); a decode failure is a UserError naming the file."""
        path = self.samples[index].path
        try:
            with Image.open(path) as image:
                full_width = image.size[0]
                if self.draft is not None:
                    image.draft("RGB", (self.draft, self.draft))
                image.load()
                rgb = image if image.mode == "RGB" else image.convert("RGB")  # no copy for the usual RGB JPEG
                return rgb, image.size[0] / full_width
        except (OSError, SyntaxError, ValueError) as exc:
            raise UserError(f"{path}: cannot read image ({exc}). Replace the file, or set dataset.skip_corrupt=true "
                            "to skip unreadable images") from exc  # fmt: skip

    def __getitem__(self, index: int) -> tuple[Image.Image, int, Box | None]:
        sample = self.samples[index]
        image, scale = self.load(index)
        box = sample.box if sample.box is None or scale == 1 else tuple(v * scale for v in sample.box)
        return image, sample.label, box

    def fast_item(self, index: int) -> tuple[Image.Image | torch.Tensor, int, Box | None]:
        """``self[index]``, with a plain JPEG as a (3, H, W) uint8 tensor: the same pixels, about twice as fast
        (:mod:`glsim_pl.data.jpeg`); the transforms take either."""
        sample = self.samples[index]
        if self.draft is None and (image := read_plain_jpeg(sample.path)) is not None:
            return image, sample.label, sample.box
        return self[index]
