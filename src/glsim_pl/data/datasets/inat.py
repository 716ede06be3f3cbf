"""iNaturalist 2017 (5,089 species; official train 579,184 / val 95,986 images, the val set serves as test).

Official files, extracted into one folder: ``train_val_images/<supercategory>/<species>/<file>.jpg`` and
``train2017.json`` / ``val2017.json`` (COCO style: ``images`` with ``id`` and ``file_name`` relative to the folder,
``annotations`` with ``image_id`` and ``category_id``, ``categories`` with ``id`` and ``name``).
Labels are the category ids in ascending order (0..5088 in the official files, so label = ``category_id``).
"""

from __future__ import annotations

import json
from pathlib import Path

from glsim_pl.data.base import FGVCDataModule, Splits
from glsim_pl.data.sources import ImageFileList, Sample
from glsim_pl.errors import UserError

__all__ = ["INat17DataModule", "read_coco_labels"]


def read_coco_labels(path: Path) -> tuple[list[tuple[str, int]], dict[int, str]]:
    """(file_name, category_id) per image in ``images`` order, and {category_id: name}; errors name the file."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
        category_of = {a["image_id"]: a["category_id"] for a in content["annotations"]}
        names = {c["id"]: c["name"] for c in content["categories"]}
        rows = [(image["file_name"], category_of[image["id"]]) for image in content["images"]]
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"{path}: not a readable COCO-style JSON file ({exc})") from None
    except KeyError as exc:
        raise UserError(f"{path}: missing COCO key or annotation {exc} (expected images/annotations/categories, "
                        "one annotation per image)") from None  # fmt: skip
    return rows, names


class INat17DataModule(FGVCDataModule):
    """Parser of the official iNat17 JSON files; the official val split is our test split."""

    name = "inat17"
    source_url = "https://github.com/visipedia/inat_comp/tree/master/2017 (train_val_images.tar.gz, train_val2017.zip)"
    required_files = ("train_val_images", "train2017.json", "val2017.json")

    def read_splits(self) -> Splits:
        """``train2017.json`` -> train, ``val2017.json`` -> test, each in its ``images`` order."""
        train_rows, names = read_coco_labels(self.root / "train2017.json")
        test_rows, _ = read_coco_labels(self.root / "val2017.json")
        label_of = {category: label for label, category in enumerate(sorted(names))}
        unknown = {c for _, c in train_rows + test_rows} - label_of.keys()
        if unknown:
            raise UserError(f"{self.root}: category ids {sorted(unknown)[:5]} are used but not listed in categories")
        draft = self.resize_size if self.fast_decode else None
        train, test = (ImageFileList([Sample(self.root / f, label_of[c]) for f, c in rows], draft)
                       for rows in (train_rows, test_rows))  # fmt: skip
        return Splits(train, test, [names[c] for c in sorted(names)])
