"""SoyLocal (200 cultivars, 600 / 600 images) and Cotton80 (80 cultivars, 240 / 240) of the UFG benchmark.

The official folders (``soybean200_square/``, ``cotton_square_new/``) hold every image flat, named
``<class>_<k>_<split>.<ext>``: ``class`` is 1-based, ``k`` numbers the leaves of that class and ``split`` is
``train`` or ``test``. Rows are ordered by (class, k); class names are the official class numbers.
"""

from __future__ import annotations

import re
from typing import ClassVar

from glsim_pl.data.base import FGVCDataModule, Splits
from glsim_pl.data.sources import ImageFileList, Sample
from glsim_pl.errors import UserError

__all__ = ["Cotton80DataModule", "SoyLocalDataModule", "UFGDataModule"]

_NAME = re.compile(r"(?P<cls>\d+)_(?P<k>\d+)_(?P<split>[A-Za-z]+)\.(?:png|jpe?g|bmp)", re.IGNORECASE)
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


class UFGDataModule(FGVCDataModule):
    """Parser of the UFG file-name convention; subclasses name the dataset and its image folder."""

    image_dir: ClassVar[str] = ""

    def read_splits(self) -> Splits:
        """Split by the file names' ``train`` / ``test`` field; label = class number - 1."""
        rows: dict[str, list[tuple[int, int, str]]] = {"train": [], "test": []}
        folder = self.root / self.image_dir
        for path in folder.iterdir():
            if path.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            match = _NAME.fullmatch(path.name)
            split = match["split"].lower() if match else None
            if split not in rows or int(match["cls"]) < 1:
                raise UserError(f"{path}: expected UFG file names '<class 1..K>_<k>_<train|test>.<ext>'")
            rows[split].append((int(match["cls"]), int(match["k"]), path.name))
        classes = sorted({c for split_rows in rows.values() for c, _, _ in split_rows})
        if classes != list(range(1, len(classes) + 1)):
            raise UserError(f"{folder}: class numbers must run 1..K without gaps, found {classes[:5]}...")
        draft = self.resize_size if self.fast_decode else None
        train, test = (ImageFileList([Sample(folder / name, c - 1) for c, _, name in sorted(rows[s])], draft)
                       for s in ("train", "test"))  # fmt: skip
        return Splits(train, test, [str(c) for c in classes])


class SoyLocalDataModule(UFGDataModule):
    """SoyLocal: 200 soybean cultivars, 3 train + 3 test leaves each."""

    name = "soy"
    source_url = "https://maxwell.ict.griffith.edu.au/cvipl/UFG_dataset.html (SoyLocal)"
    image_dir = "soybean200_square"
    required_files = ("soybean200_square",)


class Cotton80DataModule(UFGDataModule):
    """Cotton80: 80 cotton cultivars, 3 train + 3 test leaves each."""

    name = "cotton"
    source_url = "https://maxwell.ict.griffith.edu.au/cvipl/UFG_dataset.html (Cotton80)"
    image_dir = "cotton_square_new"
    required_files = ("cotton_square_new",)
