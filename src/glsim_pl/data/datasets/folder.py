"""Your own data as an ImageFolder tree: ``<root>/<class>/<image>`` (files listed by
:func:`~glsim_pl.data.sources.list_class_folder`: images only, each once, with what is skipped counted by reason).

Either one tree, split per class by a deterministic rule (sorted file order: the first ``1 - test_fraction`` of
each class -> train, the rest -> test), or separate ``train_root`` and ``test_root`` trees with the same classes;
a ``val_root`` tree is the val split as given. Labels are the class folders in sorted order, as
``torchvision.datasets.ImageFolder`` numbers them. A class folder without images is an error naming it
(``drop_empty_classes=true``: left out, with a warning, before numbering).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from glsim_pl.data.base import FGVCDataModule, Splits, split_train_val
from glsim_pl.data.image_io import IMAGE_SUFFIXES
from glsim_pl.data.sources import ImageFileList, Sample, describe_left_out, find_class_folders, list_class_folder
from glsim_pl.errors import UserError
from glsim_pl.utils.logging import RankedLogger

__all__ = ["ImageFolderDataModule"]

log = RankedLogger(__name__)


def _scan(root: Path, left_out: Counter, class_to_idx: dict[str, int] | None = None) -> tuple[list[Sample], list[str]]:
    """Samples of one tree, in ImageFolder order, and its class names; errors name the folder. What is not an image
    (macOS metadata, other files, links back into the tree) is counted in ``left_out`` by reason."""
    if not root.is_dir():
        raise UserError(f"dataset 'folder': {root} is not a folder (expected <root>/<class>/<image> subfolders)")
    try:
        classes = find_class_folders(root, left_out)
    except OSError as exc:
        raise UserError(f"dataset 'folder': {root}: cannot list it ({exc})") from None
    if not classes:
        raise UserError(f"dataset 'folder': no class folders under {root} (expected <root>/<class>/<image>)")
    unknown = set(classes) - set(class_to_idx) if class_to_idx is not None else set()
    if unknown:
        raise UserError(f"dataset 'folder': {root} has class folders {sorted(unknown)[:5]} that the train tree "
                        "does not have; train and test trees need the same class folders")  # fmt: skip
    labels = class_to_idx or {c: i for i, c in enumerate(classes)}
    files = list_class_folder(root, classes, left_out)
    samples = [Sample(path, labels[c]) for c, paths in zip(classes, files, strict=True) for path in paths]
    if not samples:
        raise UserError(f"dataset 'folder': no images ({', '.join(IMAGE_SUFFIXES)}) under {root}/<class>/")
    return samples, classes


def _without_empty_classes(
    root: Path, samples: list[Sample], classes: list[str], drop: bool
) -> tuple[list[Sample], list[str]]:
    """Class folders without images: an error naming them, or (``drop``) left out and the rest renumbered."""
    used = {s.label for s in samples}
    empty = [c for i, c in enumerate(classes) if i not in used]
    if not empty:
        return samples, classes
    names = ", ".join(empty[:10]) + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
    if not drop:
        raise UserError(f"dataset 'folder': {len(empty)} class folder(s) under {root} hold no images: {names}. "
                        "Add images, remove the folders, or set dataset.drop_empty_classes=true to leave them "
                        "out")  # fmt: skip
    log.warning(f"dataset 'folder': left out {len(empty)} class folder(s) without images under {root}: {names}")
    kept = [i for i in range(len(classes)) if i in used]
    renumber = {old: new for new, old in enumerate(kept)}
    return [Sample(s.path, renumber[s.label], s.box) for s in samples], [classes[i] for i in kept]


class ImageFolderDataModule(FGVCDataModule):
    """ImageFolder trees; ``dataset.num_classes`` (when set) must match the number of class folders with images.

    Args:
        train_root: tree of the train split (default: ``root``).
        val_root: tree of the validation split; none: the val split is carved from the train tree (``protocol=val``).
        test_root: tree of the test split; none: the test split is carved from the train tree.
        test_fraction: per class, the last share of sorted files that becomes the test split (no ``test_root``).
        drop_empty_classes: leave class folders without images out (with a warning) instead of stopping.
        **kwargs: :class:`FGVCDataModule` arguments.
    """

    name = "folder"
    source_url = "your own images, one subfolder per class"
    infers_num_classes = True

    def __init__(self, train_root: str | None = None, test_root: str | None = None, test_fraction: float = 0.2,
                 drop_empty_classes: bool = False, val_root: str | None = None, **kwargs) -> None:  # fmt: skip
        super().__init__(**kwargs)
        self.drop_empty_classes = drop_empty_classes
        self.train_root = Path(train_root).expanduser() if train_root else self.root
        self.val_root = Path(val_root).expanduser() if val_root else None
        self.test_root = Path(test_root).expanduser() if test_root else None
        self.test_fraction = test_fraction

    def read_splits(self) -> Splits:
        """Scan the tree(s); split one tree per class when there is no separate test tree."""
        if self.train_root is None:
            raise UserError("dataset 'folder': set dataset.root (or dataset.train_root) to <root>/<class>/<image>")
        if not 0 < self.test_fraction < 1:
            raise UserError(f"dataset.test_fraction={self.test_fraction}: expected a share between 0 and 1")
        left_out: Counter[str] = Counter()
        samples, classes = _scan(self.train_root, left_out)
        samples, classes = _without_empty_classes(self.train_root, samples, classes, self.drop_empty_classes)
        class_to_idx = {c: i for i, c in enumerate(classes)}
        given = {}
        for split, root in (("val", self.val_root), ("test", self.test_root)):
            if root is None:
                continue
            other_classes = find_class_folders(root, Counter()) if root.is_dir() else []
            absent = sorted(set(other_classes) - set(classes))
            if self.drop_empty_classes and absent:  # classes dropped from train: their images cannot be scored
                raise UserError(f"dataset 'folder': {root} has images of classes {absent[:5]} whose "
                                f"folders under {self.train_root} are empty or missing")  # fmt: skip
            given[split], _ = _scan(root, left_out, class_to_idx)
        if "test" in given:
            train, test = samples, given["test"]
        else:
            train_idx, test_idx = split_train_val([s.label for s in samples], 1 - self.test_fraction)
            train, test = [samples[i] for i in train_idx], [samples[i] for i in test_idx]
        self.left_out = dict(left_out)
        if left_out:
            log.info(f"dataset 'folder': left out {describe_left_out(left_out)}; images are files ending in "
                     f"{' '.join(IMAGE_SUFFIXES)} (any case)")  # fmt: skip
        draft = self.resize_size if self.fast_decode else None
        val = ImageFileList(given["val"], draft) if "val" in given else None
        return Splits(ImageFileList(train, draft), ImageFileList(test, draft), classes, val)
