"""Your own data as split files, the format of the official GLSim repo (and its DAF:re / Moe datasets).

``<root>/<train_file>`` and ``<root>/<test_file>``: CSV with a header and columns ``class_id,dir`` (0-based label,
image path relative to ``<root>/<image_dir>``). Optional ``<root>/<class_names_file>`` with ``class_id,class_name``
rows names the classes (otherwise the names are the ids). Rows keep their file order, so the val rule of
:mod:`glsim_pl.data.base` (per class, first 80% of train rows) applies to the official ``train_val.csv`` directly.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..errors import UserError
from .base import FGVCDataModule, Splits
from .sources import ImageFileList, Sample

__all__ = ["CSVDataModule", "read_csv_columns"]


def read_csv_columns(path: Path, columns: tuple[str, str]) -> list[tuple[int, str]]:
    """(int first column, second column) rows of a headed CSV; errors name the file, line and expected columns."""
    expected = ",".join(columns)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not set(columns) <= set(reader.fieldnames):
                raise UserError(f"{path}: expected a header with columns {expected}, found {reader.fieldnames}")
            rows = []
            for line_no, row in enumerate(reader, start=2):
                key, value = row[columns[0]], row[columns[1]]
                if key is None or not key.strip().isdigit() or not value:
                    raise UserError(f"{path}:{line_no}: expected '{expected}' with a 0-based integer "
                                    f"{columns[0]}, got {row}")  # fmt: skip
                rows.append((int(key), value.strip()))
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc})") from None
    return rows


class CSVDataModule(FGVCDataModule):
    """Split files with ``class_id,dir`` rows.

    Args:
        train_file: CSV of the train split (the official GLSim name for train+val is ``train_val.csv``).
        test_file: CSV of the test split.
        image_dir: folder under ``root`` that ``dir`` is relative to, for the train split.
        test_image_dir: the same for the test split (default: ``image_dir``).
        class_names_file: optional ``class_id,class_name`` CSV under ``root``.
        **kwargs: :class:`FGVCDataModule` arguments.
    """

    name = "csv"
    source_url = "your own split files (class_id,dir rows)"

    def __init__(self, train_file: str = "train_val.csv", test_file: str = "test.csv", image_dir: str = "images",
                 test_image_dir: str | None = None, class_names_file: str | None = "classid_classname.csv",
                 **kwargs) -> None:  # fmt: skip
        super().__init__(**kwargs)
        self.train_file, self.test_file, self.class_names_file = train_file, test_file, class_names_file
        self.image_dir, self.test_image_dir = image_dir, test_image_dir or image_dir
        self.required_files = (train_file, test_file, image_dir)

    def read_splits(self) -> Splits:
        """Read both split files; labels must be 0..K-1 over the train file."""
        train_rows = read_csv_columns(self.root / self.train_file, ("class_id", "dir"))
        test_rows = read_csv_columns(self.root / self.test_file, ("class_id", "dir"))
        labels = sorted({y for y, _ in train_rows})
        if labels != list(range(len(labels))):
            raise UserError(f"{self.root / self.train_file}: class_id must run 0..K-1, found {labels[:5]}...")
        unknown = {y for y, _ in test_rows} - set(labels)
        if unknown:
            raise UserError(f"{self.root / self.test_file}: class_id {sorted(unknown)[:5]} never occurs in train")
        names = [str(y) for y in labels]
        names_path = self.root / self.class_names_file if self.class_names_file else None
        if names_path is not None and names_path.is_file():
            given = dict(read_csv_columns(names_path, ("class_id", "class_name")))
            missing = set(labels) - given.keys()
            if missing:
                raise UserError(f"{names_path}: no class_name for class_id {sorted(missing)[:5]}")
            names = [given[y] for y in labels]
        draft = self.resize_size if self.fast_decode else None
        train, test = (
            ImageFileList([Sample(self.root / folder / d, y) for y, d in rows], draft)
            for rows, folder in ((train_rows, self.image_dir), (test_rows, self.test_image_dir))
        )
        return Splits(train, test, names)
