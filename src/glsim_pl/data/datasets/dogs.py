"""Stanford Dogs (120 breeds, 12,000 train / 8,580 test images, boxes).

Official archives, extracted into one folder: ``images.tar`` -> ``Images/<wnid>-<Breed>/<file>.jpg``,
``lists.tar`` -> ``train_list.mat`` / ``test_list.mat`` (``file_list``, ``annotation_list``, 1-based ``labels``),
``annotation.tar`` -> ``Annotation/<wnid>-<Breed>/<file>`` (PASCAL-VOC XML, optional: only the boxes need it).
An image with several dogs gets the box that encloses all of them (all are of the labelled breed).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from scipy.io import loadmat

from glsim_pl.data.base import FGVCDataModule, Splits
from glsim_pl.data.sources import Box, ImageFileList, Sample
from glsim_pl.errors import UserError

__all__ = ["DogsDataModule", "read_voc_box"]


def read_voc_box(path: Path) -> Box:
    """The box enclosing every ``object/bndbox`` of a PASCAL-VOC XML file, in pixels as shipped."""
    try:
        objects = ET.parse(path).getroot().findall("object/bndbox")
        corners = [[float(b.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")] for b in objects]
    except (OSError, ET.ParseError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: cannot read the box annotation ({exc})") from None
    if not corners:
        raise UserError(f"{path}: no <object><bndbox> in this annotation")
    xs1, ys1, xs2, ys2 = zip(*corners, strict=True)
    return min(xs1), min(ys1), max(xs2), max(ys2)


def _read_list(path: Path) -> list[tuple[str, str, int]]:
    """``train_list.mat`` / ``test_list.mat`` -> (image path, annotation path, 1-based label) rows in file order."""
    try:
        content = loadmat(path, squeeze_me=True)
        columns = [list(np.atleast_1d(content[k])) for k in ("file_list", "annotation_list", "labels")]
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise UserError(f"{path}: expected a MATLAB file with file_list, annotation_list, labels ({exc!r})") from None
    files, annotations, labels = columns
    if not len(files) == len(annotations) == len(labels):
        raise UserError(f"{path}: file_list, annotation_list and labels differ in length")
    return [(str(f), str(a), int(y)) for f, a, y in zip(files, annotations, labels, strict=True)]


class DogsDataModule(FGVCDataModule):
    """Parser of the official Stanford Dogs files; class names are the breed part of the image folders."""

    name = "dogs"
    source_url = "http://vision.stanford.edu/aditya86/ImageNetDogs/ (images.tar, annotation.tar, lists.tar)"
    required_files = ("Images", "train_list.mat", "test_list.mat")
    vpt_image_dir = "Images"  # VPT's loader joins its split files' paths to Images/

    def read_splits(self) -> Splits:
        """``train_list.mat`` -> train, ``test_list.mat`` -> test, in the lists' order."""
        rows = {split: _read_list(self.root / f"{split}_list.mat") for split in ("train", "test")}
        folder_of: dict[int, str] = {}
        for file, _, label in rows["train"] + rows["test"]:
            folder = file.split("/")[0]
            if folder_of.setdefault(label, folder) != folder:
                raise UserError(f"{self.root}: label {label} is used for both {folder_of[label]}/ and {folder}/")
        if sorted(folder_of) != list(range(1, len(folder_of) + 1)):
            raise UserError(f"{self.root / 'train_list.mat'}: labels must be 1..K, found {sorted(folder_of)[:5]}...")
        names = [folder_of[k].split("-", 1)[-1] for k in sorted(folder_of)]  # n02085620-Chihuahua -> Chihuahua
        annotations = self.root / "Annotation"
        has_boxes = annotations.is_dir()
        draft = self.resize_size if self.fast_decode else None
        splits = []
        for split in ("train", "test"):
            samples = [Sample(self.root / "Images" / file, label - 1,
                              read_voc_box(annotations / ann) if has_boxes else None)
                       for file, ann, label in rows[split]]  # fmt: skip
            splits.append(ImageFileList(samples, draft))
        return Splits(splits[0], splits[1], names)
