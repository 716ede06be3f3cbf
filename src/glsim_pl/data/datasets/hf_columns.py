"""Which columns of a Hugging Face dataset hold the image, label and box, and their cells as class names, 0-based
targets and pixel boxes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from glsim_pl.data.sources import Box
from glsim_pl.errors import UserError
from glsim_pl.utils.logging import RankedLogger

__all__ = [
    "BOX_FORMATS",
    "BOX_NAMES",
    "IMAGE_NAMES",
    "LABEL_NAMES",
    "class_names",
    "detect_columns",
    "label_targets",
    "named_classes",
    "read_boxes",
]

log = RankedLogger(__name__)

IMAGE_NAMES = ("image", "img", "jpg", "jpeg", "png", "webp")
LABEL_NAMES = ("label", "labels", "fine_label", "class", "target", "cls")
BOX_NAMES = ("bbox", "box", "bounding_box", "boxes", "bboxes")
BOX_FORMATS = ("xyxy", "xywh")


def detect_columns(ds: Any, where: str, image_column: str | None, label_column: str | None,
                   box_column: str | bool | None) -> tuple[str, str, str | None]:  # fmt: skip
    """(image, label, box or None) column names of split ``ds``: the named ones (checked), else the first typed
    feature (``Image`` / ``ClassLabel``), else the first column with a usual name; ``box_column=False``: no box."""
    import datasets

    features, columns = ds.features, list(ds.column_names)

    def pick(given: Any, key: str, typed: list[str], names: Sequence[str], what: str) -> str:
        if given:
            if given not in columns:
                raise UserError(f"dataset=hf {where}: no column '{given}' (dataset.{key}); the columns are "
                                f"{', '.join(columns)}")  # fmt: skip
            return str(given)
        found = typed or [c for c in columns if c.lower() in names]
        if not found:
            raise UserError(f"dataset=hf {where}: no {what} column found among {', '.join(columns)}; name it "
                            f"with dataset.{key}=<column>")  # fmt: skip
        return found[0]

    images = [c for c in columns if isinstance(features[c], datasets.Image)]
    labels = [c for c in columns if isinstance(features[c], datasets.ClassLabel)]
    image = pick(image_column, "image_column", images, IMAGE_NAMES, "image")
    label = pick(label_column, "label_column", labels, LABEL_NAMES, "label")
    box = None
    if box_column is not False:
        if box_column:
            box = pick(box_column, "box_column", [], BOX_NAMES, "box")
        else:
            box = next((c for c in columns if c.lower() in BOX_NAMES), None)
    return image, label, box


def class_names(feature: Any, values: Sequence[Any], split: str, column: str, where: str) -> list[str]:
    """A ``ClassLabel``'s names; else the distinct integer or string ``values``, sorted."""
    import datasets

    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    kinds = {type(v) for v in values if v is not None}
    if not kinds <= {int} and not kinds <= {str}:
        raise UserError(f"dataset=hf {where}: split '{split}', column '{column}': expected integer or "
                        f"string labels, found {', '.join(sorted(k.__name__ for k in kinds))}")  # fmt: skip
    return [str(v) for v in sorted({v for v in values if v is not None})]


def named_classes(keys: list[str], fit_labels: Sequence[Any], fit_parts: Sequence[Any], label_column: str) -> list:
    """The class names of a plain label column: each label's ``<label>_name`` cell where every fit split has that
    column (labels stored beside their names), else the labels themselves."""
    name_column = f"{label_column}_name"
    if not all(name_column in ds.column_names for ds in fit_parts):
        return keys
    given = dict(zip(map(str, fit_labels), [v for ds in fit_parts for v in ds[name_column]], strict=True))
    return [str(given[k]) for k in keys]


def label_targets(values: Sequence[Any], names: list[str], split: str, column: str, class_label: bool,
                  where: str) -> list:  # fmt: skip
    """0-based targets of a split's label cells (``ClassLabel`` integers, or positions in ``names``); a label
    outside the class list is one line naming its row."""
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
            raise UserError(f"dataset=hf {where}: split '{split}', row {row}, column '{column}': label "
                            f"{value!r} is outside the class list ({shown})")  # fmt: skip
        out.append(label)
    return out


def read_boxes(values: Sequence[Any], split: str, column: str, where: str, named: bool,
               box_format: str) -> list[Box] | None:  # fmt: skip
    """Pixel (x1, y1, x2, y2) boxes of a split's box cells. A cell without 4 numbers is an error when the column was
    ``named``; a detected column is then not used (None)."""
    out = []
    for row, value in enumerate(values):
        try:
            box = tuple(float(v) for v in value) if value is not None else ()
        except (TypeError, ValueError):
            box = ()
        if len(box) != 4:
            if named:  # every row needs one
                raise UserError(f"dataset=hf {where}: split '{split}', row {row}, column '{column}': "
                                f"expected 4 numbers ({box_format}), found {value!r}")  # fmt: skip
            log.info(f"dataset=hf {where}: column '{column}' has no 4-number box in split '{split}', row "
                     f"{row}; boxes not used")  # fmt: skip
            return None
        if box_format == "xywh":
            box = (box[0], box[1], box[0] + box[2], box[1] + box[3])
        out.append(box)
    return out
