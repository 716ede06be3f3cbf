"""Raw sample sources: indexable collections of (PIL image, label, box | None) with their labels known up front.

A source knows nothing about transforms or splits; :mod:`glsim_pl.data.base` adds both.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from glsim_pl.data.image_io import IMAGE_SUFFIXES, MAX_PIXELS, decode_image
from glsim_pl.data.jpeg import MAX_PIXELS as PLAIN_JPEG_MAX_PIXELS
from glsim_pl.data.jpeg import read_plain_jpeg
from glsim_pl.errors import UserError

__all__ = ["Box", "ImageFileList", "Sample", "describe_left_out", "find_class_folders", "list_class_folder"]

Box = tuple[float, float, float, float]  # pixel (x1, y1, x2, y2) in the original image, end exclusive


@dataclass(frozen=True)
class Sample:
    """One labelled image file; ``box`` is the ground-truth object box where the dataset ships one."""

    path: Path
    label: int
    box: Box | None = None


class ImageFileList(Dataset):
    """Images read from files; decode errors name the file.

    Args:
        samples: the files with their 0-based labels, in the dataset's official order.
        draft: let PIL decode JPEGs at a reduced scale no smaller than ``draft`` pixels per side (fast path).
        max_pixels: refuse larger images (decompression bombs); None: no limit.
    """

    def __init__(
        self, samples: Sequence[Sample], draft: int | None = None, max_pixels: int | None = MAX_PIXELS
    ) -> None:
        self.samples = list(samples)
        self.targets = [s.label for s in self.samples]
        self.boxes = [s.box for s in self.samples] if all(s.box is not None for s in self.samples) else None
        self.draft, self.max_pixels = draft, max_pixels

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[Image.Image, float]:
        """Decode as RGB (:func:`~glsim_pl.data.image_io.read_image`) -> (image, decoded side / stored side)."""
        path = self.samples[index].path
        try:
            image, stored = decode_image(path, self.max_pixels, self.draft)
        except UserError as exc:
            raise UserError(f"{exc}. Replace the file, or set dataset.skip_corrupt=true to leave unreadable images "
                            "out of their split") from None  # fmt: skip
        return image, max(image.size) / max(stored)  # max: the same for an EXIF-rotated image

    def __getitem__(self, index: int) -> tuple[Image.Image, int, Box | None]:
        sample = self.samples[index]
        image, scale = self.load(index)
        box = sample.box if sample.box is None or scale == 1 else tuple(v * scale for v in sample.box)
        return image, sample.label, box

    def fast_item(self, index: int) -> tuple[Image.Image | torch.Tensor, int, Box | None]:
        """``self[index]``, with a plain JPEG as a (3, H, W) uint8 tensor: the same pixels, about twice as fast
        (:mod:`glsim_pl.data.jpeg`); the transforms take either. Anything else goes through ``read_image``."""
        sample = self.samples[index]
        within_limit = self.max_pixels is None or self.max_pixels >= PLAIN_JPEG_MAX_PIXELS
        if self.draft is None and within_limit and (image := read_plain_jpeg(sample.path)) is not None:
            return image, sample.label, sample.box
        return self[index]


# -- class folders as users copy them --------------------------------------------------------------------------------
_MAC_FILES = "macOS metadata files (._*, .DS_Store)"
_MAC_FOLDERS = "macOS metadata folders (__MACOSX)"
_HIDDEN_FILES = "hidden files (.*)"
_HIDDEN_FOLDERS = "hidden folders (.*)"
_LINKS = "folder links into folders listed already (a loop, or the same files twice)"
_UNREADABLE = "folders that cannot be read"


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def _skipped_folder(entry: os.DirEntry, claimed: list[Path], left_out: Counter) -> bool:
    """Whether a folder is left out (counted in ``left_out``); a followed link's target joins ``claimed``."""
    if entry.name == "__MACOSX":
        left_out[_MAC_FOLDERS] += 1
        return True
    if entry.name.startswith("."):
        left_out[_HIDDEN_FOLDERS] += 1
        return True
    if entry.is_symlink():  # followed only to where no listed folder is, so no file is listed twice and none loops
        real = Path(os.path.realpath(entry.path))
        if any(_overlaps(real, c) for c in claimed):
            left_out[_LINKS] += 1
            return True
        claimed.append(real)
    return False


def _is_image(name: str, left_out: Counter) -> bool:
    """Whether a file name is an image's; other names are counted in ``left_out`` by reason."""
    if name.startswith("._") or name == ".DS_Store":  # AppleDouble resource forks, Finder's folder settings
        left_out[_MAC_FILES] += 1
    elif name.startswith("."):
        left_out[_HIDDEN_FILES] += 1
    elif (suffix := os.path.splitext(name)[1].lower()) not in IMAGE_SUFFIXES:
        left_out[f"not image files ({suffix or 'no extension'})"] += 1
    else:
        return True
    return False


def find_class_folders(root: Path, left_out: Counter) -> list[str]:
    """The class folders under ``root``, sorted; hidden, ``__MACOSX`` and looping folders are counted in ``left_out``.

    A linked class folder counts when it leads outside the tree and to no other class's folder. Raises OSError when
    ``root`` cannot be listed."""
    folders = sorted((e for e in os.scandir(root) if e.is_dir()), key=lambda e: e.name)
    # the tree and its real class folders first: a link sorted before the folder it leads to still finds it
    claimed = [Path(os.path.realpath(root)), *(Path(os.path.realpath(e.path)) for e in folders if not e.is_symlink())]
    return [e.name for e in folders if not _skipped_folder(e, claimed, left_out)]


def list_class_folder(root: Path, classes: Sequence[str], left_out: Counter) -> list[list[Path]]:
    """The image files of each class folder (subfolders included), in ``torchvision.datasets.ImageFolder``'s
    order (folders by path, files by name); what is left out is counted in ``left_out`` by reason.

    Only files with an image suffix (:data:`~glsim_pl.data.image_io.IMAGE_SUFFIXES`) are listed; macOS metadata
    (``._*``, ``.DS_Store``, ``__MACOSX``) and hidden files and folders are not. A linked folder is followed once, and
    not at all when it leads into the tree itself or into a folder listed already (a link back to a parent folder
    would list the same files again, under another class or without end)."""
    claimed = [Path(os.path.realpath(root)), *(Path(os.path.realpath(root / c)) for c in classes)]
    per_class = []
    for name in classes:
        folders: list[tuple[str, list[str]]] = []
        pending = [str(root / name)]
        while pending:
            folder = pending.pop()
            try:
                entries = list(os.scandir(folder))
            except OSError:
                left_out[_UNREADABLE] += 1
                continue
            files = []
            for entry in entries:
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                if is_dir:
                    if not _skipped_folder(entry, claimed, left_out):
                        pending.append(entry.path)
                elif _is_image(entry.name, left_out):
                    files.append(entry.name)
            folders.append((folder, sorted(files)))
        folders.sort(key=lambda f: f[0])
        per_class.append([Path(folder, file) for folder, files in folders for file in files])
    return per_class


def describe_left_out(left_out: Mapping[str, int]) -> str:
    """``3 macOS metadata files (._*, .DS_Store), 1 not image files (.txt)``: the counts by reason, largest first."""
    return ", ".join(f"{n} {reason}" for reason, n in sorted(left_out.items(), key=lambda kv: (-kv[1], kv[0])))
