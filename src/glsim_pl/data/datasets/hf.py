"""Any Hugging Face dataset (Hub id, local parquet / arrow files, or a ``save_to_disk`` folder) through ``datasets``.

Columns: the image column is the first ``Image`` feature (else a column named ``image``/``img``/``jpg``/``png``), the
label column the first ``ClassLabel`` (whose names become the class names; else ``label``/``labels``/``class``/
``target``, numbered in sorted order of its values and named by a ``<label>_name`` column where there is one), the
box column ``bbox``/``box``/``bounding_box`` with four numbers per row; each can be named instead. Splits:
``train_split`` and ``test_split`` must exist; ``val_split`` ``auto`` takes ``validation``/``val``/``valid``/``dev``
when the dataset has one, otherwise the val split is carved from train by the rule of :mod:`glsim_pl.data.base`. The
images stay in the Arrow files (memory-mapped): the loader workers decode the stored bytes, so nothing is unpacked to
disk.
"""

from __future__ import annotations

from typing import Any

from glsim_pl.data.base import FGVCDataModule, Splits, split_train_val
from glsim_pl.data.datasets.hf_columns import (
    BOX_FORMATS,
    BOX_NAMES,
    IMAGE_NAMES,
    LABEL_NAMES,
    class_names,
    detect_columns,
    label_targets,
    named_classes,
    read_boxes,
)
from glsim_pl.data.datasets.hf_images import (
    HFImageSource,
    ImageCell,
    check_image_bytes,
    column_values,
    decode_image_bytes,
    stored_image,
)
from glsim_pl.data.datasets.hf_loading import dataset_provenance, load_dataset_dict
from glsim_pl.data.image_io import decode_image
from glsim_pl.errors import UserError
from glsim_pl.utils.logging import RankedLogger

# HFImageSource, decode_image_bytes, check_image_bytes and the column names live in hf_images / hf_columns;
# they stay importable from here, the module other code, tests and run configs name
__all__ = [
    "BOX_FORMATS",
    "BOX_NAMES",
    "IMAGE_NAMES",
    "LABEL_NAMES",
    "VAL_NAMES",
    "HFDataModule",
    "HFImageSource",
    "check_image_bytes",
    "decode_image_bytes",
]

log = RankedLogger(__name__)

VAL_NAMES = ("validation", "val", "valid", "dev")


class HFDataModule(FGVCDataModule):
    """A Hugging Face dataset with an image and a label column.

    Args:
        name: Hub dataset id (``owner/name``), a local folder the Hub layout or ``save_to_disk`` wrote, or None
            with ``data_files``.
        revision: Hub branch, tag or commit (None: the default branch).
        config_name: the dataset's configuration (subset), where it has several.
        data_files: local parquet / arrow files: one path or glob, a list, or ``{split: path(s)}``.
        hf_cache_dir: where ``datasets`` keeps its Arrow files (None: its default, ``HF_DATASETS_CACHE``).
        image_column: None: detected (see the module docstring).
        label_column: None: detected.
        box_column: None: detected; ``false``: boxes ignored.
        box_format: ``xyxy`` (x1, y1, x2, y2) or ``xywh`` (x, y, width, height), in pixels.
        train_split: the split to train on.
        val_split: ``auto``, a split name, or None (carved from train by ``train_fraction``).
        test_split: the split to test on.
        official_sizes: ``{train_val: n, test: n}`` of the official benchmark; differing sizes are warned about.
        **kwargs: :class:`FGVCDataModule` arguments.
    """

    name = "hf"
    source_url = "the Hugging Face Hub (dataset.name=<owner/name>) or local parquet files (dataset.data_files=...)"
    infers_num_classes = True

    def __init__(self, name: str | None = None, revision: str | None = None, config_name: str | None = None,
                 data_files: Any = None, hf_cache_dir: str | None = None, image_column: str | None = None,
                 label_column: str | None = None, box_column: str | bool | None = None, box_format: str = "xyxy",
                 train_split: str = "train", val_split: str | None = "auto", test_split: str = "test",
                 official_sizes: dict[str, int] | None = None, **kwargs) -> None:  # fmt: skip
        super().__init__(**kwargs)
        if box_format not in BOX_FORMATS:
            raise UserError(f"dataset.box_format={box_format!r}: expected one of {', '.join(BOX_FORMATS)}")
        if not name and not data_files:
            raise UserError("dataset=hf: set dataset.name=<Hub id or folder> or dataset.data_files=<parquet files>")
        self.hf_name, self.revision, self.config_name = name, revision, config_name
        self.data_files, self.hf_cache_dir = data_files, hf_cache_dir
        self.image_column, self.label_column, self.box_column = image_column, label_column, box_column
        self.box_format = box_format
        self.train_split, self.val_split, self.test_split = train_split, val_split, test_split
        self.official_sizes = dict(official_sizes or {})
        self.n_official_train = 0  # rows of train_split at the front of the train source; the rest are val_split
        self.provenance: dict[str, str] = {}  # what metrics.json records of the dataset's version

    @property
    def where(self) -> str:
        """The dataset as the user named it, for messages."""
        return self.hf_name or f"data_files={self.data_files}"

    def _split(self, dd: Any, name: str, key: str) -> Any:
        if name not in dd:
            raise UserError(f"dataset=hf {self.where}: no split '{name}' (dataset.{key}); the dataset has "
                            f"{', '.join(dd)}")  # fmt: skip
        return dd[name]

    # -- the data check -------------------------------------------------------------------------------------------
    def _check_cells(self, cell: ImageCell, rows: list[int]) -> list[int]:
        """Rows whose image cell is bad: one error listing them, or (``skip_corrupt``) left out with a warning."""
        if self.verify == "off":
            return rows
        full = self.verify == "full"
        table = cell.table.select_columns([cell.column])
        bad: list[str] = []
        kept = []
        for row, value in zip(rows, column_values(table, cell.column, rows), strict=True):
            try:
                path, data = stored_image(value)
                if path:
                    decode_image(path, self.max_image_pixels)
                else:
                    if not isinstance(data, bytes | bytearray | None):
                        raise UserError(f"{cell.where(row)}: expected image bytes, found {type(data).__name__}")
                    check_image_bytes(bytes(data or b""), cell.where(row), full, self.max_image_pixels)
                kept.append(row)
            except UserError as exc:
                bad.append(f"dataset=hf {self.where}: {exc}")
        if bad and not self.skip_corrupt:
            more = f" (and {len(bad) - 1} more bad image cells)" if len(bad) > 1 else ""
            raise UserError(f"{bad[0]}{more}. Fix the dataset, or set dataset.skip_corrupt=true to leave bad images "
                            "out of their split")  # fmt: skip
        if bad:
            log.warning(f"dataset=hf {self.where}: {len(bad)} bad image(s) left out of split '{cell.split}' "
                        f"(dataset.skip_corrupt=true):\n  " + "\n  ".join(bad[:10]))  # fmt: skip
        return kept

    # -- splits ---------------------------------------------------------------------------------------------------
    def read_splits(self) -> Splits:
        """Load the dataset, detect its columns, read labels and boxes, check the image cells."""
        import datasets

        dd = load_dataset_dict(self.hf_name, self.config_name, self.revision, self.data_files, self.hf_cache_dir,
                               self.train_split, self.where)  # fmt: skip
        if isinstance(dd, datasets.Dataset):
            dd = datasets.DatasetDict({self.train_split: dd})
        train = self._split(dd, self.train_split, "train_split")
        test = self._split(dd, self.test_split, "test_split")
        val_name = self.val_split
        if val_name == "auto":
            val_name = next((n for n in VAL_NAMES if n in dd and n not in (self.train_split, self.test_split)), None)
        val = self._split(dd, val_name, "val_split") if val_name else None
        image_col, label_col, box_col = detect_columns(train, self.where, self.image_column, self.label_column,
                                                      self.box_column)  # fmt: skip
        parts = [(self.train_split, train), *([(val_name, val)] if val is not None else []), (self.test_split, test)]
        for split, ds in parts[1:]:
            missing = [c for c in (image_col, label_col) if c not in ds.column_names]
            if missing:
                raise UserError(f"dataset=hf {self.where}: split '{split}' has no column '{missing[0]}'; the "
                                f"columns are {', '.join(ds.column_names)}")  # fmt: skip
        label_feature = train.features[label_col]
        class_label = isinstance(label_feature, datasets.ClassLabel)
        labels = {split: list(ds[label_col]) for split, ds in parts}
        fit_labels = labels[self.train_split] + (labels[val_name] if val is not None else [])
        names = class_names(label_feature, fit_labels, self.train_split, label_col, self.where)
        if not names:
            raise UserError(f"dataset=hf {self.where}: split '{self.train_split}' has no labelled rows")
        keys = names
        if not class_label:
            fit_parts = [ds for split, ds in parts if split != self.test_split]
            names = named_classes(keys, fit_labels, fit_parts, label_col)
        lacking = [split for split, ds in parts if box_col is not None and box_col not in ds.column_names]
        if lacking and self.box_column:  # named: every split needs it
            raise UserError(f"dataset=hf {self.where}: split '{lacking[0]}' has no column '{box_col}' "
                            "(dataset.box_column)")  # fmt: skip
        if lacking:
            box_col = None
        sources: dict[str, tuple[list, list, list | None]] = {}
        for split, ds in parts:
            targets = label_targets(labels[split], keys, split, label_col, class_label, self.where)
            boxes = read_boxes(list(ds[box_col]), split, box_col, self.where, bool(self.box_column),
                               self.box_format) if box_col else None  # fmt: skip
            table = ds.select_columns([image_col])
            if isinstance(ds.features[image_col], datasets.Image):  # the stored bytes, decoded by the loader workers
                table = table.cast_column(image_col, datasets.Image(decode=False))
            cell = ImageCell(split, table, image_col)
            kept = self._check_cells(cell, list(range(len(ds))))
            sources[split] = ([(cell, r) for r in kept], [targets[r] for r in kept],
                              [boxes[r] for r in kept] if boxes is not None else None)  # fmt: skip
        has_boxes = all(b is not None for _, _, b in sources.values())
        fit = [sources[self.train_split]] + ([sources[val_name]] if val is not None else [])
        self.n_official_train = len(fit[0][0])
        draft = self.resize_size if self.fast_decode else None
        train_src = HFImageSource([r for s in fit for r in s[0]], [t for s in fit for t in s[1]],
                                  [b for s in fit for b in s[2]] if has_boxes else None, draft)  # fmt: skip
        rows, targets, boxes = sources[self.test_split]
        test_src = HFImageSource(rows, targets, boxes if has_boxes else None, draft)
        self.has_official_val = val is not None
        self._report_sizes({s: len(ds) for s, ds in parts}, val_name)
        self.provenance = dataset_provenance(train, self.hf_name, self.revision)
        return Splits(train_src, test_src, names)

    def _report_sizes(self, sizes: dict[str, int], val_name: str | None) -> None:
        """One line of split sizes; with ``official_sizes``, a warning when they differ from the benchmark's."""
        train_val = sizes[self.train_split] + (sizes[val_name] if val_name else 0)
        shown = ", ".join(f"{s} {n}" for s, n in sizes.items())
        official = self.official_sizes
        if not official:
            log.info(f"dataset=hf {self.where}: splits {shown}")
            return
        want_tv, want_test = official.get("train_val"), official.get("test")
        log.info(f"dataset=hf {self.where}: splits {shown}; train+val {train_val} (official {want_tv}), test "
                 f"{sizes[self.test_split]} (official {want_test})")  # fmt: skip
        test = sizes[self.test_split]
        if (want_tv is not None and train_val != want_tv) or (want_test is not None and test != want_test):
            log.warning(f"dataset=hf {self.where}: split sizes differ from the official benchmark (train+val "
                        f"{train_val} vs {want_tv}, test {test} vs {want_test}): results are not "
                        "comparable with published numbers")  # fmt: skip

    def train_val_indices(self, train_src: Any) -> tuple[list[int], list[int]]:
        """The dataset's own validation split when it has one; otherwise carved from train by the shared rule."""
        if getattr(self, "has_official_val", False):
            n = self.n_official_train
            return list(range(n)), list(range(n, len(train_src)))
        return split_train_val(train_src.targets, self.train_fraction)
