"""FGVC-Aircraft, Oxford-IIIT Pets, Flowers-102 and Food-101: torchvision's dataset classes read the official files.

torchvision parses each official split (``download=False``); we keep its file list and labels and decode the images
ourselves through :class:`ImageFileList`, so that every dataset shares one decoder: errors that name the file,
``dataset.skip_corrupt`` and the ``dataset.fast_decode`` draft path. torchvision reads ``<parent>/<folder>`` with a
fixed folder name, so ``dataset.root`` must be that extracted folder (e.g. ``.../food-101``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from torchvision import datasets

from glsim_pl.data.base import FGVCDataModule, Splits
from glsim_pl.data.sources import Box, ImageFileList, Sample
from glsim_pl.errors import UserError

__all__ = ["AircraftDataModule", "Flowers102DataModule", "Food101DataModule", "PetsDataModule", "TorchvisionDataModule"]


class TorchvisionDataModule(FGVCDataModule):
    """Shared plumbing: open a torchvision split by its folder name, turn it into an :class:`ImageFileList`."""

    folder: ClassVar[str] = ""  # the folder name torchvision expects under the root it is given
    files_attr: ClassVar[str] = "_image_files"  # torchvision keeps the per-image paths here (not a public API)

    def open(self, cls: type, **kwargs: Any) -> Any:
        """One split of torchvision dataset ``cls`` at ``dataset.root``, with every failure as a UserError."""
        if self.root.name != self.folder:
            raise UserError(
                f"dataset '{self.name}': dataset.root={self.root} must be the extracted '{self.folder}' folder "
                f"(torchvision.datasets.{cls.__name__} finds the files by that folder name); rename the folder or "
                f"point dataset.root at .../{self.folder}"
            )
        try:
            return cls(self.root.parent, download=False, **kwargs)
        except (RuntimeError, OSError, ValueError, KeyError) as exc:
            raise UserError(
                f"dataset '{self.name}': torchvision.datasets.{cls.__name__} cannot read {self.root} ({exc!r}). "
                f"Expected the official files {', '.join(self.required_files)} unmodified, from {self.source_url}"
            ) from None

    def file_list(self, splits: Sequence[Any], label_map: Sequence[int] | None = None,
                  boxes: dict[str, Box] | None = None) -> ImageFileList:  # fmt: skip
        """Concatenate torchvision splits (in order) into one source; ``label_map`` renumbers classes."""
        samples = []
        for split in splits:
            files, labels = getattr(split, self.files_attr), split._labels
            for path, label in zip(files, labels, strict=True):
                path = Path(path)
                box = boxes.get(path.stem) if boxes is not None else None
                samples.append(Sample(path, label_map[label] if label_map else label, box))
        return ImageFileList(samples, draft=self.resize_size if self.fast_decode else None)


def _read_aircraft_boxes(path: Path) -> dict[str, Box]:
    """``images_box.txt``: ``<image id> xmin ymin xmax ymax`` per row, pixel coordinates as shipped."""
    boxes = {}
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            raise UserError(f"{path}:{line_no}: expected '<image id> xmin ymin xmax ymax', got {line!r}")
        boxes[fields[0]] = tuple(float(v) for v in fields[1:])
    return boxes


class AircraftDataModule(TorchvisionDataModule):
    """FGVC-Aircraft at the variant level (100 classes, 6,667 trainval / 3,333 test images, boxes).

    Labels follow the official GLSim order, the sorted variant names (torchvision numbers them in ``variants.txt``
    order), so that official checkpoints' heads line up. The images keep their 20 px copyright banner, as in the
    official runs.
    """

    name = "aircraft"
    source_url = "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/ (fgvc-aircraft-2013b.tar.gz)"
    folder = "fgvc-aircraft-2013b"
    required_files = (
        "data/images", "data/variants.txt", "data/images_variant_trainval.txt", "data/images_variant_test.txt",
    )  # fmt: skip

    def read_splits(self) -> Splits:
        """trainval -> train, test -> test; boxes from ``data/images_box.txt`` when present."""
        trainval, test = (self.open(datasets.FGVCAircraft, split=s, annotation_level="variant")
                          for s in ("trainval", "test"))  # fmt: skip
        names = sorted(trainval.classes)
        label_map = [names.index(c) for c in trainval.classes]
        box_file = self.root / "data" / "images_box.txt"
        boxes = _read_aircraft_boxes(box_file) if box_file.exists() else None
        return Splits(self.file_list([trainval], label_map, boxes), self.file_list([test], label_map, boxes), names)


class PetsDataModule(TorchvisionDataModule):
    """Oxford-IIIT Pets (37 breeds, 3,680 trainval / 3,669 test images); ``annotations/*.txt`` labels are 1-based."""

    name = "pets"
    source_url = "https://www.robots.ox.ac.uk/~vgg/data/pets/ (images.tar.gz, annotations.tar.gz)"
    folder = "oxford-iiit-pet"
    files_attr = "_images"
    required_files = ("images", "annotations/trainval.txt", "annotations/test.txt")

    def read_splits(self) -> Splits:
        """trainval -> train, test -> test; class names as torchvision spells them (``Abyssinian``, ...)."""
        trainval, test = (self.open(datasets.OxfordIIITPet, split=s, target_types="category")
                          for s in ("trainval", "test"))  # fmt: skip
        return Splits(self.file_list([trainval]), self.file_list([test]), list(trainval.classes))


class Flowers102DataModule(TorchvisionDataModule):
    """Oxford Flowers-102 (102 classes; official train 1,020 + val 1,020 -> our train, test 6,149).

    The official train ids come first, then the val ids, so per class the first half of our train rows is exactly
    the official train split: ``train_fraction: 0.5`` in ``conf/dataset/flowers.yaml`` makes our val the official
    val. torchvision checks the two ``.mat`` files against their official md5 sums.
    """

    name = "flowers"
    source_url = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ (102flowers.tgz, imagelabels.mat, setid.mat)"
    folder = "flowers-102"
    required_files = ("jpg", "imagelabels.mat", "setid.mat")
    vpt_image_dir = ""  # VPT's loader joins its split files' paths to the dataset root

    def read_splits(self) -> Splits:
        """(trnid, valid) -> train, tstid -> test; labels 1..102 in ``imagelabels.mat`` become 0..101."""
        train, val, test = (self.open(datasets.Flowers102, split=s) for s in ("train", "val", "test"))
        return Splits(self.file_list([train, val]), self.file_list([test]), list(datasets.Flowers102.classes))


class Food101DataModule(TorchvisionDataModule):
    """Food-101 (101 classes, 75,750 train / 25,250 test images; classes sorted alphabetically)."""

    name = "food"
    source_url = "https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/ (food-101.tar.gz)"
    folder = "food-101"
    required_files = ("images", "meta/train.json", "meta/test.json")

    def read_splits(self) -> Splits:
        """``meta/train.json`` -> train, ``meta/test.json`` -> test."""
        train, test = (self.open(datasets.Food101, split=s) for s in ("train", "test"))
        return Splits(self.file_list([train]), self.file_list([test]), list(train.classes))
