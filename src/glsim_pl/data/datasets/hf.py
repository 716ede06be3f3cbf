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

import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

from glsim_pl.data.base import FGVCDataModule, Splits, split_train_val
from glsim_pl.data.image_io import MAX_PIXELS, decode_image, to_rgb
from glsim_pl.data.jpeg import MAX_PIXELS as PLAIN_JPEG_MAX_PIXELS
from glsim_pl.data.jpeg import decode_plain_jpeg, read_plain_jpeg
from glsim_pl.data.sources import Box
from glsim_pl.errors import UserError
from glsim_pl.utils.logging import RankedLogger

__all__ = ["HFDataModule", "HFImageSource", "check_image_bytes", "decode_image_bytes"]

log = RankedLogger(__name__)

IMAGE_NAMES = ("image", "img", "jpg", "jpeg", "png", "webp")
LABEL_NAMES = ("label", "labels", "fine_label", "class", "target", "cls")
BOX_NAMES = ("bbox", "box", "bounding_box", "boxes", "bboxes")
VAL_NAMES = ("validation", "val", "valid", "dev")
BOX_FORMATS = ("xyxy", "xywh")
_END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND"}
_FILE_FORMATS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".json": "json", ".jsonl": "json"}


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


class _Cell:
    """Reads the stored (undecoded) image of one row of one split; pickles as the memory-mapped Arrow table."""

    def __init__(self, split: str, table: Any, column: str) -> None:
        self.split, self.table, self.column = split, table, column

    def where(self, row: int) -> str:
        return f"split '{self.split}', row {row}, column '{self.column}'"

    def read(self, row: int, max_pixels: int | None, draft: int | None) -> tuple[Image.Image, tuple[int, int]]:
        value = self.table[row][self.column]
        if isinstance(value, dict) and value.get("bytes") is None and value.get("path"):
            return decode_image(value["path"], max_pixels, draft)  # an Image feature that points to a local file
        data = value.get("bytes") if isinstance(value, dict) else value
        if not isinstance(data, bytes | bytearray | None):
            raise UserError(f"{self.where(row)}: expected image bytes, found {type(data).__name__}")
        return decode_image_bytes(bytes(data or b""), self.where(row), max_pixels, draft)

    def read_plain_jpeg(self, row: int) -> torch.Tensor | None:
        """A plain JPEG cell as a (3, H, W) uint8 tensor, as an image file's (:mod:`glsim_pl.data.jpeg`); else None."""
        value = self.table[row][self.column]
        if isinstance(value, dict) and value.get("bytes") is None and value.get("path"):
            return read_plain_jpeg(value["path"])
        data = value.get("bytes") if isinstance(value, dict) else value
        return decode_plain_jpeg(data) if isinstance(data, bytes) and data else None


class HFImageSource(Dataset):
    """Rows of one or more splits of a Hugging Face dataset as (PIL image, label, box | None).

    Args:
        rows: (cell reader, row index) per sample, in the dataset's order.
        targets: 0-based label per sample.
        boxes: pixel (x1, y1, x2, y2) per sample, or None when the dataset has no boxes.
        draft: decode JPEGs at a reduced scale no smaller than ``draft`` pixels per side.
    """

    def __init__(self, rows: Sequence[tuple[_Cell, int]], targets: Sequence[int], boxes: Sequence[Box] | None,
                 draft: int | None = None) -> None:  # fmt: skip
        self.rows, self.targets = list(rows), list(targets)
        self.boxes = list(boxes) if boxes is not None else None
        self.draft, self.max_pixels = draft, MAX_PIXELS

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[Image.Image, int, Box | None]:
        cell, row = self.rows[index]
        image, stored = cell.read(row, self.max_pixels, self.draft)
        box = self.boxes[index] if self.boxes is not None else None
        scale = max(image.size) / max(stored)  # a draft decode is smaller than the stored image
        if box is not None and scale != 1:
            box = tuple(v * scale for v in box)
        return image, self.targets[index], box

    def fast_item(self, index: int) -> tuple[Image.Image | torch.Tensor, int, Box | None]:
        """``self[index]``, with a plain JPEG as a (3, H, W) uint8 tensor: the same pixels and the same decoder as
        an image file's fast path (``ImageFileList.fast_item``), so parquet reads no slower than files."""
        cell, row = self.rows[index]
        within_limit = self.max_pixels is None or self.max_pixels >= PLAIN_JPEG_MAX_PIXELS
        if self.draft is None and within_limit and (image := cell.read_plain_jpeg(row)) is not None:
            return image, self.targets[index], self.boxes[index] if self.boxes is not None else None
        return self[index]


def _hub_commit(name: str, revision: str | None) -> str | None:
    """The commit a Hub dataset's revision resolves to (one metadata request); None offline or for a local folder."""
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE or Path(name).expanduser().exists():
        return None
    try:
        return HfApi().dataset_info(name, revision=revision, timeout=10).sha
    except Exception:  # the record is a convenience: no network or no access must not stop a run that has its data
        return None


def _column_values(table: Any, column: str, rows: list[int], chunk: int = 1024) -> Iterator[Any]:
    """The cells of ``rows`` (ascending), read a slice at a time: one Arrow read per chunk, not per row."""
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        values = table[part[0] : part[-1] + 1][column]
        yield from (values[r - part[0]] for r in part)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


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

    # -- loading --------------------------------------------------------------------------------------------------
    def _data_files(self) -> dict[str, list[str]] | list[str] | None:
        files = self.data_files
        if files is None:
            return None
        if isinstance(files, dict) or hasattr(files, "items"):
            return {str(k): [str(Path(p).expanduser()) for p in _as_list(v)] for k, v in files.items()}
        return [str(Path(p).expanduser()) for p in _as_list(files)]

    def _load(self) -> Any:
        """The ``DatasetDict``; any failure of ``datasets`` is one line naming what was asked for."""
        try:
            import datasets
        except ImportError:
            raise UserError("dataset=hf needs the datasets library: pip install 'glsim_pl[data]'") from None

        files = self._data_files()
        try:
            if self.hf_name and (Path(self.hf_name).expanduser() / "dataset_dict.json").is_file():
                return datasets.load_from_disk(str(Path(self.hf_name).expanduser()))
            if self.hf_name:
                return datasets.load_dataset(self.hf_name, self.config_name, revision=self.revision, data_files=files,
                                             cache_dir=self.hf_cache_dir)  # fmt: skip
            first = next(iter(files.values()))[0] if isinstance(files, dict) else files[0]
            suffix = Path(first).suffix.lower()
            if suffix not in _FILE_FORMATS:
                raise UserError(f"dataset.data_files: {first}: expected {', '.join(_FILE_FORMATS)} files")
            if isinstance(files, list):
                files = {self.train_split: files}
            return datasets.load_dataset(_FILE_FORMATS[suffix], data_files=files, cache_dir=self.hf_cache_dir)
        except UserError:
            raise
        except FileNotFoundError as exc:
            raise UserError(f"dataset=hf {self.where}: not found ({exc})") from None
        except Exception as exc:  # datasets raises many types (hub, arrow, config errors); the message says it all
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"dataset=hf {self.where}: cannot load ({type(exc).__name__}: {message})") from None

    def _split(self, dd: Any, name: str, key: str) -> Any:
        if name not in dd:
            raise UserError(f"dataset=hf {self.where}: no split '{name}' (dataset.{key}); the dataset has "
                            f"{', '.join(dd)}")  # fmt: skip
        return dd[name]

    def _columns(self, ds: Any) -> tuple[str, str, str | None]:
        """(image, label, box or None) column names, named or detected."""
        import datasets

        features, columns = ds.features, list(ds.column_names)

        def pick(given: Any, key: str, typed: list[str], names: Sequence[str], what: str) -> str:
            if given:
                if given not in columns:
                    raise UserError(f"dataset=hf {self.where}: no column '{given}' (dataset.{key}); the columns are "
                                    f"{', '.join(columns)}")  # fmt: skip
                return str(given)
            found = typed or [c for c in columns if c.lower() in names]
            if not found:
                raise UserError(f"dataset=hf {self.where}: no {what} column found among {', '.join(columns)}; name it "
                                f"with dataset.{key}=<column>")  # fmt: skip
            return found[0]

        images = [c for c in columns if isinstance(features[c], datasets.Image)]
        labels = [c for c in columns if isinstance(features[c], datasets.ClassLabel)]
        image = pick(self.image_column, "image_column", images, IMAGE_NAMES, "image")
        label = pick(self.label_column, "label_column", labels, LABEL_NAMES, "label")
        box = None
        if self.box_column is not False:
            if self.box_column:
                box = pick(self.box_column, "box_column", [], BOX_NAMES, "box")
            else:
                box = next((c for c in columns if c.lower() in BOX_NAMES), None)
        return image, label, box

    # -- labels and boxes -----------------------------------------------------------------------------------------
    def _class_names(self, feature: Any, values: Sequence[Any], split: str, column: str) -> list[str]:
        import datasets

        if isinstance(feature, datasets.ClassLabel):
            return list(feature.names)
        kinds = {type(v) for v in values if v is not None}
        if not kinds <= {int} and not kinds <= {str}:
            raise UserError(f"dataset=hf {self.where}: split '{split}', column '{column}': expected integer or "
                            f"string labels, found {', '.join(sorted(k.__name__ for k in kinds))}")  # fmt: skip
        return [str(v) for v in sorted({v for v in values if v is not None})]

    def _targets(self, values: Sequence[Any], names: list[str], split: str, column: str, class_label: bool) -> list:
        index = {n: i for i, n in enumerate(names)}
        out = []
        for row, value in enumerate(values):
            if class_label:
                ok = isinstance(value, int) and 0 <= value < len(names)
                label = value
            else:
                label = index.get(str(value)) if value is not None else None
                ok = label is not None
            if not ok:
                shown = f"0..{len(names) - 1}" if class_label else f"{len(names)} values of the train split"
                raise UserError(f"dataset=hf {self.where}: split '{split}', row {row}, column '{column}': label "
                                f"{value!r} is outside the class list ({shown})")  # fmt: skip
            out.append(label)
        return out

    def _boxes(self, values: Sequence[Any], split: str, column: str) -> list[Box] | None:
        out = []
        for row, value in enumerate(values):
            try:
                box = tuple(float(v) for v in value) if value is not None else ()
            except (TypeError, ValueError):
                box = ()
            if len(box) != 4:
                if self.box_column:  # named: every row needs one
                    raise UserError(f"dataset=hf {self.where}: split '{split}', row {row}, column '{column}': "
                                    f"expected 4 numbers ({self.box_format}), found {value!r}")  # fmt: skip
                log.info(f"dataset=hf {self.where}: column '{column}' has no 4-number box in split '{split}', row "
                         f"{row}; boxes not used")  # fmt: skip
                return None
            if self.box_format == "xywh":
                box = (box[0], box[1], box[0] + box[2], box[1] + box[3])
            out.append(box)
        return out

    # -- the data check -------------------------------------------------------------------------------------------
    def _check_cells(self, cell: _Cell, rows: list[int]) -> list[int]:
        """Rows whose image cell is bad: one error listing them, or (``skip_corrupt``) left out with a warning."""
        if self.verify == "off":
            return rows
        full = self.verify == "full"
        table = cell.table.select_columns([cell.column])
        bad: list[str] = []
        kept = []
        for row, value in zip(rows, _column_values(table, cell.column, rows), strict=True):
            try:
                if isinstance(value, dict) and value.get("bytes") is None and value.get("path"):
                    decode_image(value["path"], self.max_image_pixels)
                else:
                    data = value.get("bytes") if isinstance(value, dict) else value
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

        dd = self._load()
        if isinstance(dd, datasets.Dataset):
            dd = datasets.DatasetDict({self.train_split: dd})
        train = self._split(dd, self.train_split, "train_split")
        test = self._split(dd, self.test_split, "test_split")
        val_name = self.val_split
        if val_name == "auto":
            val_name = next((n for n in VAL_NAMES if n in dd and n not in (self.train_split, self.test_split)), None)
        val = self._split(dd, val_name, "val_split") if val_name else None
        image_col, label_col, box_col = self._columns(train)
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
        names = self._class_names(label_feature, fit_labels, self.train_split, label_col)
        if not names:
            raise UserError(f"dataset=hf {self.where}: split '{self.train_split}' has no labelled rows")
        keys, name_col = names, f"{label_col}_name"
        fit_parts = [ds for split, ds in parts if split != self.test_split]
        if not class_label and all(name_col in ds.column_names for ds in fit_parts):  # labels beside their names
            given = dict(zip(map(str, fit_labels), [v for ds in fit_parts for v in ds[name_col]], strict=True))
            names = [str(given[k]) for k in keys]
        lacking = [split for split, ds in parts if box_col is not None and box_col not in ds.column_names]
        if lacking and self.box_column:  # named: every split needs it
            raise UserError(f"dataset=hf {self.where}: split '{lacking[0]}' has no column '{box_col}' "
                            "(dataset.box_column)")  # fmt: skip
        if lacking:
            box_col = None
        sources: dict[str, tuple[list, list, list | None]] = {}
        for split, ds in parts:
            targets = self._targets(labels[split], keys, split, label_col, class_label)
            boxes = self._boxes(list(ds[box_col]), split, box_col) if box_col else None
            cell = _Cell(split, ds.select_columns([image_col]).cast_column(image_col, datasets.Image(decode=False))
                         if isinstance(ds.features[image_col], datasets.Image) else ds.select_columns([image_col]),
                         image_col)  # fmt: skip
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
        self.provenance = {"data/hf_fingerprint": getattr(train, "_fingerprint", "") or ""}
        if self.hf_name:
            self.provenance["data/hf_dataset"] = self.hf_name
        if self.revision:
            self.provenance["data/hf_revision"] = str(self.revision)
        commit = _hub_commit(self.hf_name, self.revision) if self.hf_name else None
        if commit:
            self.provenance["data/hf_commit"] = commit
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
