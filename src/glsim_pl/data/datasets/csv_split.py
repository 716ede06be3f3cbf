"""Your own data as split files, the format of the official GLSim repo (and its DAF:re / Moe datasets).

``<root>/<train_file>`` and ``<root>/<test_file>``: CSV with a header and columns ``class_id,dir`` (0-based label,
image path relative to ``<root>/<image_dir>``). Optional ``<root>/<class_names_file>`` with ``class_id,class_name``
rows names the classes (otherwise the names are the ids). An optional ``<root>/<val_file>`` in the same format is the
validation split as given; without one, rows keep their file order, so the val rule of :mod:`glsim_pl.data.base`
(per class, first 80% of train rows) applies to the official ``train_val.csv`` directly.
"""

from __future__ import annotations

import csv
from pathlib import Path

from glsim_pl.data.base import FGVCDataModule, Splits
from glsim_pl.data.sources import ImageFileList, Sample
from glsim_pl.errors import UserError

__all__ = ["CSVDataModule", "read_csv_columns"]


def read_csv_columns(path: Path, columns: tuple[str, str]) -> list[tuple[int, str]]:
    """(int first column, second column) rows of a headed CSV; errors name the file, row, column and value."""
    rows, _ = read_csv_rows(path, columns)
    return rows


def read_csv_rows(path: Path, columns: tuple[str, str]) -> tuple[list[tuple[int, str]], list[int]]:
    """:func:`read_csv_columns` plus the file line of each row (the header is line 1)."""
    expected = ",".join(columns)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not set(columns) <= set(reader.fieldnames):
                raise UserError(f"{path}: expected a header with columns {expected}, found {reader.fieldnames}")
            rows, lines = [], []
            for row in reader:
                line_no = reader.line_num
                key, value = row[columns[0]], row[columns[1]]
                if key is None or not key.strip().isdigit():
                    raise UserError(f"{path}: row {line_no}, column {columns[0]}: {key!r} is not a 0-based "
                                    "integer")  # fmt: skip
                if value is None or not value.strip():
                    raise UserError(f"{path}: row {line_no}, column {columns[1]}: empty value")
                rows.append((int(key), value.strip()))
                lines.append(line_no)
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc})") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return rows, lines


class CSVDataModule(FGVCDataModule):
    """Split files with ``class_id,dir`` rows.

    Args:
        train_file: CSV of the train split (the official GLSim name for train+val is ``train_val.csv``).
        test_file: CSV of the test split.
        val_file: CSV of the validation split (the official GLSim files: ``train.csv`` + ``val.csv``); none: val is
            carved from the train file.
        image_dir: folder under ``root`` that ``dir`` is relative to, for the train split.
        test_image_dir: the same for the test split (default: ``image_dir``).
        val_image_dir: the same for the val split (default: ``image_dir``).
        class_names_file: optional ``class_id,class_name`` CSV under ``root``.
        **kwargs: :class:`FGVCDataModule` arguments.
    """

    name = "csv"
    source_url = "your own split files (class_id,dir rows)"
    infers_num_classes = True

    def __init__(self, train_file: str = "train_val.csv", test_file: str = "test.csv", image_dir: str = "images",
                 test_image_dir: str | None = None, class_names_file: str | None = "classid_classname.csv",
                 val_file: str | None = None, val_image_dir: str | None = None, **kwargs) -> None:  # fmt: skip
        super().__init__(**kwargs)
        self.train_file, self.test_file, self.class_names_file = train_file, test_file, class_names_file
        self.val_file, self.val_image_dir = val_file, val_image_dir or image_dir
        self.image_dir, self.test_image_dir = image_dir, test_image_dir or image_dir
        self.required_files = (train_file, test_file, image_dir, *([val_file] if val_file else []))

    def read_splits(self) -> Splits:
        """Read both split files; labels must be 0..K-1 over the train file."""
        train_path, test_path = self.root / self.train_file, self.root / self.test_file
        train_rows, train_lines = read_csv_rows(train_path, ("class_id", "dir"))
        test_rows, test_lines = read_csv_rows(test_path, ("class_id", "dir"))
        val_path = self.root / self.val_file if self.val_file else None
        val_rows, val_lines = read_csv_rows(val_path, ("class_id", "dir")) if val_path else ([], [])
        if val_path is not None and not val_rows:
            raise UserError(f"{val_path}: no rows (expected class_id,dir rows after the header)")
        if not train_rows:
            raise UserError(f"{train_path}: no rows (expected class_id,dir rows after the header)")
        labels = sorted({y for y, _ in train_rows})
        if labels != list(range(len(labels))):
            gaps = sorted(set(range(labels[-1] + 1)) - set(labels))
            first = next(j for j, (y, _) in enumerate(train_rows) if y > gaps[0])
            raise UserError(f"{train_path}: row {train_lines[first]}, column class_id: {train_rows[first][0]}: "
                            f"class ids must run 0..K-1 without gaps, but no row has class_id "
                            f"{', '.join(map(str, gaps[:5]))}")  # fmt: skip
        for path, rows, lines in ((val_path, val_rows, val_lines), (test_path, test_rows, test_lines)):
            for j, (y, _) in enumerate(rows):
                if y >= len(labels):
                    raise UserError(f"{path}: row {lines[j]}, column class_id: {y} never occurs in "
                                    f"{train_path.name} (class ids 0..{len(labels) - 1})")  # fmt: skip
        names = [str(y) for y in labels]
        names_path = self.root / self.class_names_file if self.class_names_file else None
        if names_path is not None and names_path.is_file():
            given = dict(read_csv_columns(names_path, ("class_id", "class_name")))
            missing = set(labels) - given.keys()
            if missing:
                raise UserError(f"{names_path}: no class_name for class_id {sorted(missing)[:5]}")
            names = [given[y] for y in labels]
        draft = self.resize_size if self.fast_decode else None
        train, test, val = (
            ImageFileList([Sample(self.root / folder / d, y) for y, d in rows], draft)
            for rows, folder in (
                (train_rows, self.image_dir), (test_rows, self.test_image_dir), (val_rows, self.val_image_dir),
            )
        )  # fmt: skip
        return Splits(train, test, names, val if val_path is not None else None)
