"""CUB-200-2011 and NABirds: both ship the same official text-file format.

Files (space separated, one image per row, joined on the image id):
``images.txt`` (id, relative path under ``images/``), ``image_class_labels.txt`` (id, class id),
``train_test_split.txt`` (id, 1 = train / 0 = test), ``classes.txt`` (class id, name), and optionally
``bounding_boxes.txt`` (id, x, y, width, height). CUB class ids are 1..200; NABirds ids are non-contiguous and
``classes.txt`` also lists the hierarchy's inner nodes, so labels are the used ids in ascending order.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

from glsim_pl.data.base import FGVCDataModule, Splits
from glsim_pl.data.sources import ImageFileList, Sample
from glsim_pl.errors import UserError

__all__ = ["BirdsFormatDataModule", "CUBDataModule", "NABirdsDataModule"]


def _read_table(path: Path, columns: int) -> dict[str, list[str]]:
    """``id v1 v2 ...`` rows -> {id: [v1, ...]}; the last column keeps its spaces (class names)."""
    table = {}
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.strip().split(maxsplit=columns - 1)
        if len(fields) != columns:
            raise UserError(f"{path}:{line_no}: expected {columns} space-separated fields, got {line!r}")
        table[fields[0]] = fields[1:]
    return table


class BirdsFormatDataModule(FGVCDataModule):
    """Parser of the CUB / NABirds official format; subclasses only name the dataset."""

    required_files: ClassVar[tuple[str, ...]] = (
        "images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt", "images",
    )  # fmt: skip
    vpt_image_dir = "images"  # VPT's loader joins its split files' paths to images/ (as images.txt)

    @staticmethod
    def display_name(raw: str) -> str:
        """Class name as shown to users."""
        return raw

    def read_splits(self) -> Splits:
        """Join the official tables on the image id; keep the order of ``images.txt``."""
        root = self.root
        images = _read_table(root / "images.txt", 2)
        labels = _read_table(root / "image_class_labels.txt", 2)
        is_train = _read_table(root / "train_test_split.txt", 2)
        classes = _read_table(root / "classes.txt", 2)
        boxes_file = root / "bounding_boxes.txt"
        boxes = _read_table(boxes_file, 5) if boxes_file.exists() else {}
        for name, table in (("image_class_labels.txt", labels), ("train_test_split.txt", is_train)):
            missing = images.keys() - table.keys()
            if missing:
                raise UserError(f"{root / name}: no row for {len(missing)} image id(s) of images.txt, e.g. "
                                f"{sorted(missing)[0]!r}")  # fmt: skip
        used = sorted({labels[i][0] for i in images}, key=lambda c: int(c) if c.isdigit() else c)
        unknown = [c for c in used if c not in classes]
        if unknown:
            raise UserError(f"{root / 'classes.txt'}: class id(s) {unknown[:5]} used in image_class_labels.txt "
                            "are not listed")  # fmt: skip
        label_of = {c: i for i, c in enumerate(used)}
        train, test = [], []
        for image_id, (rel_path,) in images.items():
            box = None
            if image_id in boxes:
                x, y, w, h = (float(v) for v in boxes[image_id])
                box = (x, y, x + w, y + h)
            sample = Sample(root / "images" / rel_path, label_of[labels[image_id][0]], box)
            (train if is_train[image_id][0] == "1" else test).append(sample)
        draft = self.resize_size if self.fast_decode else None
        names = [self.display_name(classes[c][0]) for c in used]
        return Splits(ImageFileList(train, draft), ImageFileList(test, draft), names)


class CUBDataModule(BirdsFormatDataModule):
    """CUB-200-2011 (200 bird species, 5,994 train / 5,794 test images, boxes)."""

    name = "cub"
    source_url = "https://data.caltech.edu/records/65de6-vp158 (CUB_200_2011.tgz)"

    @staticmethod
    def display_name(raw: str) -> str:
        """``001.Black_footed_Albatross`` -> ``Black_footed_Albatross``."""
        return re.sub(r"^\d+\.", "", raw)


class NABirdsDataModule(BirdsFormatDataModule):
    """NABirds (555 visual categories, 23,929 train / 24,633 test images, boxes)."""

    name = "nabirds"
    source_url = "https://dl.allaboutbirds.org/nabirds (nabirds.tar.gz)"
