"""VegFru (292 classes: 200 vegetables then 92 fruits; 29,200 train + 14,600 val / 116,931 test images).

Official layout, as the archive extracts: ``veg200_images/<class>/<file>.jpg``, ``fru92_images/<class>/<file>.jpg``
and ``vegfru_list/vegfru_{train,val,test}.txt`` with ``<path relative to the root> <0-based label>`` rows.
Official train then val -> our train (the official GLSim merge), test -> test. Class names are the image folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from glsim_pl.data.base import FGVCDataModule, Splits
from glsim_pl.data.sources import ImageFileList, Sample
from glsim_pl.errors import UserError

__all__ = ["VegFruDataModule"]


def _read_list(path: Path) -> list[tuple[str, int]]:
    rows = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not fields[1].isdigit():
            raise UserError(f"{path}:{line_no}: expected '<relative image path> <0-based label>', got {line!r}")
        rows.append((fields[0], int(fields[1])))
    return rows


class VegFruDataModule(FGVCDataModule):
    """Parser of the official VegFru list files."""

    name = "vegfru"
    source_url = "https://github.com/ustc-vim/vegfru (vegfru-dataset archives)"
    lists: ClassVar[str] = "vegfru_list"
    required_files = (
        "veg200_images", "fru92_images", "vegfru_list/vegfru_train.txt", "vegfru_list/vegfru_val.txt",
        "vegfru_list/vegfru_test.txt",
    )  # fmt: skip

    def read_splits(self) -> Splits:
        """``vegfru_train.txt`` + ``vegfru_val.txt`` -> train, ``vegfru_test.txt`` -> test."""
        rows = {s: _read_list(self.root / self.lists / f"vegfru_{s}.txt") for s in ("train", "val", "test")}
        folder_of: dict[int, str] = {}
        for split, split_rows in rows.items():
            for path, label in split_rows:
                folder = Path(path).parent.name
                if folder_of.setdefault(label, folder) != folder:
                    raise UserError(f"{self.root / self.lists}/vegfru_{split}.txt: label {label} is used for both "
                                    f"{folder_of[label]}/ and {folder}/")  # fmt: skip
        if sorted(folder_of) != list(range(len(folder_of))):
            raise UserError(f"{self.root / self.lists}: labels must be 0..K-1, found gaps in {sorted(folder_of)[:8]}")
        draft = self.resize_size if self.fast_decode else None
        train, test = (ImageFileList([Sample(self.root / p, y) for p, y in split_rows], draft)
                       for split_rows in (rows["train"] + rows["val"], rows["test"]))  # fmt: skip
        return Splits(train, test, [folder_of[k] for k in sorted(folder_of)])
