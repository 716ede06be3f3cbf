"""The data check before training (``dataset.verify``): every image file of every split, once, up front.

``fast`` (default): each file exists, is not empty, its header parses, its size is within ``dataset.max_image_pixels``
and a JPEG / PNG ends with its end marker (a file cut short by a copy or download does not). ``full``: every image is
decoded as training will decode it. ``off``: no check; an unreadable file then stops the run when it is reached.

The files are checked in parallel by ``dataset.num_workers`` loader processes, with a progress bar. Bad files stop
the run with one message that lists them, unless ``dataset.skip_corrupt=true``: then they are left out of their
split (never replaced by another image), listed in ``<output_dir>/removed_files.csv`` and counted in
``metrics.json``. Results are cached per dataset root (path, size, mtime, result of each file) in
``dataset.check_cache_dir``: a second run stats the files and checks only the new or changed ones.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, Dataset

from glsim_pl.data.image_io import check_image_file
from glsim_pl.errors import UserError
from glsim_pl.utils.cache_dir import cache_root
from glsim_pl.utils.logging import RankedLogger

__all__ = ["VERIFY_MODES", "DataCheck", "default_cache_dir", "run_data_check", "write_removed_files"]

log = RankedLogger(__name__)
VERIFY_MODES = ("fast", "full", "off")
_LEVEL = {"fast": 1, "full": 2}  # a cached full check also answers a fast one
_SHOWN = 20  # bad files listed in the error message
_BATCH = 64  # files per loader item: progress granularity and worker hand-off cost


def default_cache_dir() -> Path:
    """``<cache_root()>/data_check``: the data check's results."""
    return cache_root() / "data_check"


@dataclass
class DataCheck:
    """What the check found. ``kept``: the indices each split keeps; ``removed``: (file, reason) per split."""

    kept: dict[str, list[int]]
    removed: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    files: int = 0
    seconds: float = 0.0

    def metrics(self) -> dict[str, int]:
        """``data/removed_<split>`` counts (metrics.json) and the files checked."""
        return {"data/files_checked": self.files, **{f"data/removed_{s}": len(v) for s, v in self.removed.items()}}


class _FileChecks(Dataset):
    """Loader items: a batch of files -> (index, size, mtime_ns, level, reason or '') each; cached results reused."""

    def __init__(self, paths: Sequence[str], cached: dict[str, list], level: int, max_pixels: int | None) -> None:
        self.paths, self.cached, self.level, self.max_pixels = list(paths), cached, level, max_pixels

    def __len__(self) -> int:
        return (len(self.paths) + _BATCH - 1) // _BATCH

    def _one(self, i: int) -> tuple[int, int, int, int, str]:
        path = self.paths[i]
        try:
            st = os.stat(path)
            stamp = (st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = (-1, -1)  # missing or a dangling link: checked (and reported) every time
        entry = self.cached.get(path)
        if entry is not None and tuple(entry[:2]) == stamp and stamp[0] >= 0 and entry[2] >= self.level:
            return i, *stamp, entry[2], entry[3]
        try:
            check_image_file(path, full=self.level >= _LEVEL["full"], max_pixels=self.max_pixels)
            reason = ""
        except UserError as exc:
            reason = str(exc)
        return i, *stamp, self.level, reason

    def __getitem__(self, item: int) -> list[tuple[int, int, int, int, str]]:
        return [self._one(i) for i in range(item * _BATCH, min((item + 1) * _BATCH, len(self.paths)))]


def _first(batch: list) -> Any:
    return batch[0]


def _cache_file(cache_dir: Path, root: Path | None, name: str) -> Path:
    key = hashlib.sha1(f"{name}:{root}".encode()).hexdigest()[:16]
    return cache_dir / f"{name}-{key}.json"


def _load_cache(path: Path) -> dict[str, list]:
    try:
        data = json.loads(path.read_text())
        return data["files"] if isinstance(data.get("files"), dict) else {}
    except (OSError, ValueError, KeyError, AttributeError):
        return {}  # no cache yet, or an unreadable one: everything is checked again


def _save_cache(path: Path, root: Path | None, entries: dict[str, list]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temp.write_text(json.dumps({"root": str(root), "files": entries}))
        os.replace(temp, path)  # concurrent ranks or runs: a reader sees one whole file
    except OSError as exc:
        log.warning(f"data check: cannot write its cache {path} ({exc}); the next run checks every file again")


def _check_files(paths: list[str], mode: str, num_workers: int, max_pixels: int | None, cache: Path | None,
                 root: Path | None) -> dict[str, str]:  # fmt: skip
    """path -> reason for every bad file among ``paths``."""
    from tqdm.auto import tqdm

    cached = _load_cache(cache) if cache is not None else {}
    checks = _FileChecks(paths, cached, _LEVEL[mode], max_pixels)
    loader = DataLoader(checks, batch_size=1, collate_fn=_first, num_workers=min(num_workers, len(checks)))
    entries, bad = dict(cached), {}
    with tqdm(total=len(paths), desc=f"data check ({mode})", unit="file", mininterval=1.0, disable=None) as bar:
        for results in loader:
            for i, size, mtime, level, reason in results:
                entries[paths[i]] = [size, mtime, level, reason]
                if reason:
                    bad[paths[i]] = reason
            bar.update(len(results))
    if cache is not None:
        _save_cache(cache, root, entries)
    return bad


def run_data_check(
    name: str, root: Path | None, splits: dict[str, tuple[Any, list[int]]], class_names: Sequence[str], mode: str,
    skip_corrupt: bool, num_workers: int = 0, max_pixels: int | None = None, cache_dir: Path | None = None,
) -> DataCheck:  # fmt: skip
    """Check every file of ``splits`` (name -> (source with ``samples``, indices)) and apply ``skip_corrupt``."""
    kept = {s: list(idx) for s, (_, idx) in splits.items()}
    checkable = {s: (src, idx) for s, (src, idx) in splits.items() if hasattr(src, "samples")}
    if mode == "off" or not checkable:
        return DataCheck(kept)
    start = time.perf_counter()
    paths = sorted({str(src.samples[i].path) for src, idx in checkable.values() for i in idx})
    cache = _cache_file(cache_dir, root, name) if cache_dir is not None else None
    bad = _check_files(paths, mode, num_workers, max_pixels, cache, root)
    removed: dict[str, list[tuple[str, str]]] = {}
    for split, (src, idx) in checkable.items():
        removed[split] = [(str(src.samples[i].path), bad[str(src.samples[i].path)]) for i in idx
                          if str(src.samples[i].path) in bad]  # fmt: skip
        kept[split] = [i for i in idx if str(src.samples[i].path) not in bad]
    result = DataCheck(kept, removed, len(paths), time.perf_counter() - start)
    _log_summary(name, result, splits, class_names, mode, len(bad))
    if bad and not skip_corrupt:
        listed = "\n  ".join(f"{reason}" for reason in list(bad.values())[:_SHOWN])
        more = f"\n  ... and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
        raise UserError(f"dataset '{name}': the data check found {len(bad)} bad file(s) of {len(paths)}:\n  "
                        f"{listed}{more}\nReplace or delete them, or set dataset.skip_corrupt=true to leave them "
                        "out of their split")  # fmt: skip
    _warn_empty_classes(name, result, splits, class_names)
    for split, files in removed.items():
        if files:
            listed = "\n  ".join(reason for _, reason in files[:_SHOWN])
            log.warning(f"dataset '{name}': {len(files)} bad file(s) left out of the {split} split "
                        f"(dataset.skip_corrupt=true):\n  {listed}")  # fmt: skip
    return result


def _log_summary(name: str, result: DataCheck, splits: dict[str, tuple[Any, list[int]]], class_names: Sequence[str],
                 mode: str, n_bad: int) -> None:  # fmt: skip
    per_class: Counter[int] = Counter()
    for split, (src, _) in splits.items():
        per_class.update(src.targets[i] for i in result.kept[split])
    counts = [per_class.get(c, 0) for c in range(len(class_names))]
    rate = result.files / result.seconds if result.seconds > 0 else float("inf")
    sizes = ", ".join(f"{s} {len(result.kept[s])}" for s in splits)
    lines = [
        f"data check ({mode}) of dataset '{name}': {result.files} files in {result.seconds:.1f} s ({rate:.0f} files/s)",
        f"  good files per split: {sizes}",
        f"  classes: {len(class_names)}, images per class: min {min(counts, default=0)}, max {max(counts, default=0)}",
        f"  bad files: {n_bad}",
    ]
    log.info("\n".join(lines))


def _warn_empty_classes(name: str, result: DataCheck, splits: dict[str, tuple[Any, list[int]]],
                        class_names: Sequence[str]) -> None:  # fmt: skip
    """After removal a class may have no image left in train or test: its accuracy would be undefined."""
    for split in ("train", "test"):
        if split not in splits or not splits[split][1]:
            continue
        src, before = splits[split]
        had, has = {src.targets[i] for i in before}, {src.targets[i] for i in result.kept[split]}
        lost = [class_names[c] for c in sorted(had - has)]
        if lost:
            log.warning(
                f"dataset '{name}': after the data check the {split} split has no image of class(es) "
                f"{', '.join(lost[:10])}" + (f" and {len(lost) - 10} more" if len(lost) > 10 else "")
            )


def write_removed_files(check: DataCheck | None, out_dir: Path) -> Path | None:
    """``<out_dir>/removed_files.csv`` (split, file, reason) when the check left files out; returns its path."""
    removed = check.removed if check is not None else {}
    rows = [(split, path, reason) for split, files in removed.items() for path, reason in files]
    if not rows:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "removed_files.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["split", "file", "reason"])
        writer.writerows(rows)
    return path


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m glsim_pl.data.verify ROOT [--mode fast|full] [--workers N] [--no-cache]``: the data check of an
    ImageFolder tree (``ROOT/<class>/<image>``) on its own, with the summary a training run prints."""
    import argparse
    import logging

    from glsim_pl.data.sources import Sample, describe_left_out, find_class_folders, list_class_folder

    parser = argparse.ArgumentParser(prog="python -m glsim_pl.data.verify", description=main.__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("--mode", choices=("fast", "full"), default="fast")
    parser.add_argument("--workers", type=int, default=0, help="loader processes (0: in this process)")
    parser.add_argument("--no-cache", action="store_true", help="check every file, and write no cache")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    left_out: Counter[str] = Counter()
    try:
        classes = find_class_folders(args.root, left_out)
    except OSError as exc:
        raise SystemExit(f"error: {args.root}: cannot list it ({exc})") from None
    pairs = [(p, y) for y, files in enumerate(list_class_folder(args.root, classes, left_out)) for p in files]
    if left_out:
        log.info(f"left out {describe_left_out(left_out)} (the files a training run does not read as images)")

    class _Files:  # what run_data_check reads of a source
        samples = [Sample(Path(p), y) for p, y in pairs]
        targets = [y for _, y in pairs]

    splits = {"all": (_Files(), list(range(len(pairs))))}
    cache = None if args.no_cache else default_cache_dir()
    check = run_data_check("folder", args.root.absolute(), splits, classes, args.mode, True, args.workers, None, cache)
    for _, reason in check.removed["all"]:
        print(reason)


if __name__ == "__main__":
    main()
