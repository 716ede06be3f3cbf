"""Stanford Cars (196 classes, 8,144 train / 8,041 test images, boxes) in either of its two official layouts.

- ``car_ims/`` + ``cars_annos.mat`` (one ``annotations`` struct array over all images: ``relative_im_path``,
  ``bbox_x1..bbox_y2``, 1-based ``class``, ``test`` flag; plus ``class_names``). The official GLSim runs used it.
- ``cars_train/``, ``cars_test/`` + the devkit: ``devkit/cars_meta.mat`` (``class_names``),
  ``devkit/cars_train_annos.mat`` and the test labels ``cars_test_annos_withlabels.mat`` (at the root, as torchvision
  expects it, or in ``devkit/``); the devkit's own ``cars_test_annos.mat`` has no labels.

The paper resizes Cars to ``image_size / 0.875`` instead of 1.34x (``resize_factor`` in ``conf/dataset/cars.yaml``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy.io import loadmat

from glsim_pl.data.base import FGVCDataModule, Splits
from glsim_pl.data.sources import ImageFileList, Sample
from glsim_pl.errors import UserError

__all__ = ["CarsDataModule", "read_mat_structs"]

_LABELLED_TEST = "cars_test_annos_withlabels.mat"


def read_mat_structs(path: Path, key: str) -> list[Any]:
    """The ``key`` struct array (or cell array) of a MATLAB file as a flat list; errors name the file and key."""
    try:
        content = loadmat(path, squeeze_me=True, struct_as_record=False)
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"{path}: not a readable MATLAB .mat file ({exc})") from None
    if key not in content:
        found = sorted(k for k in content if not k.startswith("__"))
        raise UserError(f"{path}: expected a '{key}' variable, found {found}")
    return list(np.atleast_1d(content[key]))


def _field(path: Path, entry: Any, name: str) -> Any:
    if not hasattr(entry, name):
        raise UserError(f"{path}: annotation structs need a '{name}' field, found {entry._fieldnames}")
    return getattr(entry, name)


def _sample(path: Path, entry: Any, image: Path, num_classes: int) -> Sample:
    """One annotation struct -> Sample; 1-based ``class`` -> 0-based label, boxes as shipped (pixels)."""
    label = int(_field(path, entry, "class")) - 1
    if not 0 <= label < num_classes:
        raise UserError(f"{path}: class {label + 1} of {image.name} is outside 1..{num_classes}")
    box = tuple(float(_field(path, entry, f"bbox_{c}")) for c in ("x1", "y1", "x2", "y2"))
    return Sample(image, label, box)


class CarsDataModule(FGVCDataModule):
    """Stanford Cars from ``cars_annos.mat`` + ``car_ims/`` or from the devkit layout (detected from the files)."""

    name = "cars"
    source_url = "https://ai.stanford.edu/~jkrause/cars/car_dataset.html (car_ims.tgz + cars_annos.mat, or devkit)"
    vpt_image_dir = ""  # VPT's loader joins its split files' paths to the dataset root

    def layout_error(self) -> UserError:
        """Neither layout is complete: say what each needs."""
        return UserError(
            f"dataset 'cars': no Stanford Cars layout at {self.root}. Expected either car_ims/ + cars_annos.mat, "
            f"or cars_train/ + cars_test/ + devkit/cars_meta.mat + devkit/cars_train_annos.mat + {_LABELLED_TEST} "
            f"(at the root or in devkit/). Get them from {self.source_url} and point dataset.root at that folder."
        )

    def read_splits(self) -> Splits:
        """Read whichever official layout is present."""
        if self.root is None:
            raise UserError("dataset 'cars': dataset.root is not set")
        if (self.root / "cars_annos.mat").is_file() and (self.root / "car_ims").is_dir():
            train, test, names = self._read_annos_layout()
        else:
            train, test, names = self._read_devkit_layout()
        draft = self.resize_size if self.fast_decode else None
        return Splits(ImageFileList(train, draft), ImageFileList(test, draft), names)

    def _read_annos_layout(self) -> tuple[list[Sample], list[Sample], list[str]]:
        path = self.root / "cars_annos.mat"
        names = [str(n) for n in read_mat_structs(path, "class_names")]
        train, test = [], []
        for entry in read_mat_structs(path, "annotations"):
            image = self.root / str(_field(path, entry, "relative_im_path"))
            is_test = int(_field(path, entry, "test")) == 1
            (test if is_test else train).append(_sample(path, entry, image, len(names)))
        return train, test, names

    def _read_devkit_layout(self) -> tuple[list[Sample], list[Sample], list[str]]:
        root = self.root
        test_annos = next((p for p in (root / _LABELLED_TEST, root / "devkit" / _LABELLED_TEST) if p.is_file()), None)
        needed = [root / "cars_train", root / "cars_test", root / "devkit/cars_meta.mat",
                  root / "devkit/cars_train_annos.mat"]  # fmt: skip
        if test_annos is None or not all(p.exists() for p in needed):
            raise self.layout_error()
        names = [str(n) for n in read_mat_structs(root / "devkit/cars_meta.mat", "class_names")]
        splits = []
        for annos, folder in ((root / "devkit/cars_train_annos.mat", "cars_train"), (test_annos, "cars_test")):
            splits.append([_sample(annos, e, root / folder / str(_field(annos, e, "fname")), len(names))
                           for e in read_mat_structs(annos, "annotations")])  # fmt: skip
        return splits[0], splits[1], names
