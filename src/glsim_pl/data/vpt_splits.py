"""The VPT FGVC protocol's splits (Jia et al., ECCV 2022, "Visual Prompt Tuning"): ``dataset.protocol=vpt``.

VPT publishes, per dataset, ``train.json`` / ``val.json`` / ``test.json``: a JSON object mapping an image's path
(relative to the dataset's image folder) to its class index. ``val`` is held out of the official train set, ``test``
is the official test set. VPT chooses LR and weight decay on ``val``, then trains on ``train`` + ``val`` and reports
``test`` (``dataset.protocol=vpt_trainval``).

Labels follow VPT's rule: the sorted class indices of the files, numbered 0..K-1. Class names and boxes come from the
official files when every listed image is one of theirs (the names then follow VPT's numbering); otherwise the
names are the JSON indices.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from glsim_pl.data.sources import ImageFileList, Sample
from glsim_pl.errors import UserError
from glsim_pl.utils.logging import RankedLogger

__all__ = ["SPLIT_FILES", "VPT_PROTOCOLS", "VPT_SOURCE", "read_split_file", "vpt_splits"]

log = RankedLogger(__name__)

VPT_PROTOCOLS = ("vpt", "vpt_trainval")
SPLIT_FILES = ("train", "val", "test")
VPT_SOURCE = 'the VPT repository\'s FGVC split files (https://github.com/KMnP/vpt, "Dataset preparation")'


def read_split_file(path: Path, dataset: str) -> dict[str, int]:
    """One split file -> {relative image path: class index}; a missing or malformed file is one UserError."""
    if not path.is_file():
        raise UserError(f"dataset '{dataset}': dataset.protocol=vpt needs {path}, which does not exist. Get "
                        f"train.json, val.json and test.json from {VPT_SOURCE} and put them in {path.parent} "
                        "(or point dataset.vpt_split_dir at the folder that holds them)")  # fmt: skip
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(rows, dict) or not rows:
        raise UserError(f"{path}: expected a non-empty JSON object mapping image path -> class index")
    for rel, label in rows.items():
        if isinstance(label, bool) or not isinstance(label, int) or label < 0:
            raise UserError(f"{path}: image {rel!r} has class {label!r}; expected an integer >= 0")
    return rows


def _official_index(official: list[ImageFileList]) -> dict[str, Sample]:
    return {os.path.normpath(s.path): s for source in official for s in getattr(source, "samples", [])}


def _names_and_boxes(
    lists: dict[str, dict[str, int]], paths: dict[str, list[Path]], official: list[ImageFileList],
    official_names: list[str], ids: list[int],
) -> tuple[list[str], dict[str, Sample] | None]:  # fmt: skip
    """Official class names in VPT's numbering and the official samples by path, when every listed image is in the
    official lists and each JSON class is one official class; (the JSON indices as names, None) otherwise."""
    index = _official_index(official)
    found = {str(p): index.get(os.path.normpath(p)) for split in SPLIT_FILES for p in paths[split]}
    if not found or any(s is None for s in found.values()):
        log.info("VPT split files: some listed images are not in the official lists; class names are the JSON indices")
        return [str(i) for i in ids], None
    official_of: dict[int, int] = {}
    for split in SPLIT_FILES:
        for path, label in zip(paths[split], lists[split].values(), strict=True):
            label_official = found[str(path)].label
            if official_of.setdefault(label, label_official) != label_official:
                raise UserError(f"VPT split file {split}.json: class {label} holds images of two official classes "
                                f"({official_names[official_of[label]]!r} and {official_names[label_official]!r}), "
                                f"e.g. {path}; the split files do not belong to this dataset")  # fmt: skip
    return [official_names[official_of[i]] for i in ids], found


def vpt_splits(
    dataset: str, official: list[ImageFileList], official_names: list[str], image_dir: Path, split_dir: Path,
    draft: int | None,
) -> tuple[ImageFileList, ImageFileList, ImageFileList, list[str]]:  # fmt: skip
    """(train, val, test, class names) from the three split files in ``split_dir``; images under ``image_dir``.

    Refused, each in one line: a missing file, train and val sharing an image, a listed image that is not there
    (the first one and how many).
    """
    lists = {split: read_split_file(split_dir / f"{split}.json", dataset) for split in SPLIT_FILES}
    shared = lists["train"].keys() & lists["val"].keys()
    if shared:
        raise UserError(f"{split_dir}: train.json and val.json share {len(shared)} image(s), e.g. "
                        f"{sorted(shared)[0]!r}; VPT's val split is held out of its train split")  # fmt: skip
    paths = {split: [image_dir / rel for rel in rows] for split, rows in lists.items()}
    missing = [(split, p) for split in SPLIT_FILES for p in paths[split] if not p.is_file()]
    if missing:
        split, first = missing[0]
        raise UserError(f"dataset '{dataset}': {len(missing)} image(s) listed in the VPT split files are missing "
                        f"under {image_dir}, first: {first} (from {split_dir / f'{split}.json'})")  # fmt: skip
    ids = sorted({label for rows in lists.values() for label in rows.values()})
    number = {label: i for i, label in enumerate(ids)}
    names, found = _names_and_boxes(lists, paths, official, official_names, ids)
    sources = []
    for split in SPLIT_FILES:
        samples = [Sample(p, number[label], found[str(p)].box if found else None)
                   for p, label in zip(paths[split], lists[split].values(), strict=True)]  # fmt: skip
        sources.append(ImageFileList(samples, draft))
    return sources[0], sources[1], sources[2], names
