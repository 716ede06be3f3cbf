"""``dataset.cache``: the deterministic prefix of the transforms (decode + ToImage + Resize((R, R)) bicubic, uint8),
computed once and reused every epoch; what follows it (crop, flip, TrivialAugment, ...) sees bit-identical input.

- ``off``: decode every image every epoch.
- ``ram``: one uint8 array (N, 3, R, R) in shared memory; loader workers read it without a copy.
- ``disk``: the same array as a memory-mapped file under ``dataset.cache_dir``, for sets larger than RAM (iNat17 at
  300 px is ~156 GB); it is reused by later runs while the image files keep their sizes and modification times
  (checked at every start, with :data:`~glsim_pl.data.image_io.DECODE_RULES`; a change rebuilds it). Processes
  that start together on one cold cache (torchrun, SLURM tasks with a shared home) take turns on a lock file
  (``flock``): one builds, the others wait and reuse its result. Each build writes its own temporary file and renames
  it when complete, so a reader never maps a partial cache, also where the file system has no ``flock``.

The run logs the cache's size before building it; the build decodes in parallel (forked processes, one per CPU)
with a progress bar. Boxes are resized with the images (the same float32 op as the uncached path) and stored.
Pipelines without a deterministic prefix (RandomResizedCrop) keep decoding.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import socket
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as F

from glsim_pl.data.image_io import DECODE_RULES
from glsim_pl.errors import UserError
from glsim_pl.utils.atomic_io import atomic_write
from glsim_pl.utils.cache_dir import cache_root
from glsim_pl.utils.logging import RankedLogger

try:
    import fcntl
except ImportError:  # no flock (Windows): concurrent builds still never share a file, they only repeat the work
    fcntl = None  # type: ignore[assignment]

__all__ = ["CACHE_MODES", "PrefixCache", "default_cache_dir"]

log = RankedLogger(__name__)
CACHE_MODES = ("off", "ram", "disk")
_VERSION = 1
_PARALLEL_FROM = 256  # fewer images build in this process (forking costs more than it saves)


def default_cache_dir() -> Path:
    """``<cache_root()>/prefix``: ``$GLSIM_CACHE_DIR/prefix``, else ``~/.cache/glsim_pl/prefix``."""
    return cache_root() / "prefix"


def _human(nbytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if nbytes < 1000 or unit == "TB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{nbytes} B"
        nbytes /= 1000
    return ""


def _file_stats(source: Dataset, indices: Sequence[int]) -> list[tuple[str, int, int]] | None:
    """(path, size, mtime_ns) of each cached image file, or None for a source without files."""
    samples = getattr(source, "samples", None)
    if not samples or not hasattr(samples[0], "path"):
        return None
    stats = []
    for i in indices:
        path = Path(samples[i].path)
        try:
            st = path.stat()
        except OSError as exc:
            raise UserError(f"{path}: cannot read image ({exc}); dataset.cache needs every file") from exc
        stats.append((str(path), st.st_size, st.st_mtime_ns))
    return stats


def _save_npy(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as f:  # a file object: np.save would append .npy to a temporary name
        np.save(f, array)


@contextmanager
def _exclusive(lock_path: Path, target: Path) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``lock_path`` (waiting for a process that builds the same cache); yields
    whether it is held. A file system without flock yields False: each process then builds its own copy."""
    if fcntl is None:
        yield False
        return
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = True
        except BlockingIOError:
            log.info(f"dataset.cache=disk: another process is building {target}; waiting for it")
            fcntl.flock(fd, fcntl.LOCK_EX)
            held = True
        except OSError:  # e.g. a network file system mounted without locks
            held = False
        yield held
    finally:
        os.close(fd)  # closing releases the lock; the lock file stays (removing it would race a waiting process)


class _Builder:
    """Decode + resize one image into the shared array (runs in forked processes)."""

    def __init__(self, source: Dataset, indices: Sequence[int], resize: int) -> None:
        self.source, self.indices = source, list(indices)
        self.resize = T.Resize((resize, resize), interpolation=InterpolationMode.BICUBIC, antialias=True)

    def __call__(self, chunk: range, out: np.ndarray | None = None) -> list[tuple[int, list[float] | None]]:
        torch.set_num_threads(1)
        out = _SHARED["pixels"] if out is None else out
        boxes = []
        for slot in chunk:
            fetch = getattr(self.source, "fast_item", None) or self.source.__getitem__
            image, _, box = fetch(self.indices[slot])
            tensor = T.ToImage()(image)
            if box is not None:
                canvas = tuple(F.get_size(tensor))
                bb = tv_tensors.BoundingBoxes([box], format="XYXY", canvas_size=canvas)  # float32, as the view
                tensor, bb = self.resize(tensor, bb)
                boxes.append((slot, bb[0].tolist()))
            else:
                tensor = self.resize(tensor)
            out[slot] = tensor.numpy()
        return boxes


_SHARED: dict[str, Any] = {}


def _init_worker(builder: _Builder, pixels: np.ndarray) -> None:
    _SHARED["builder"], _SHARED["pixels"] = builder, pixels  # inherited through fork: nothing is pickled


def _run_chunk(chunk: range) -> list[tuple[int, list[float] | None]]:
    return _SHARED["builder"](chunk)


class PrefixCache(Dataset):
    """A source whose images come out decoded and resized: items ``(Image (3, R, R) uint8, label, box | None)``
    for the indices in ``indices`` (the others are not stored; asking for one is an error).

    Args:
        source: a sample source (items (PIL image, label, box | None)).
        resize: the square side R of the prefix's Resize.
        mode: ``ram`` or ``disk``.
        cache_dir: where ``disk`` keeps its files.
        key: names the cache files (dataset and split).
        indices: source indices to store (default: all).
        workers: build processes (default: the CPUs available).
    """

    def __init__(
        self, source: Dataset, resize: int, mode: str, cache_dir: str | Path | None = None, key: str = "dataset",
        indices: Sequence[int] | None = None, workers: int | None = None,
    ) -> None:  # fmt: skip
        if mode not in ("ram", "disk"):
            raise UserError(f"dataset.cache={mode!r}: expected one of {', '.join(CACHE_MODES)}")
        self.source, self.resize, self.mode = source, int(resize), mode
        self.indices = list(range(len(source))) if indices is None else sorted(set(indices))
        self.slot_of = {index: slot for slot, index in enumerate(self.indices)}
        self.targets = getattr(source, "targets", None)
        self.has_boxes = getattr(source, "boxes", None) is not None
        self.shape = (len(self.indices), 3, self.resize, self.resize)
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        self.workers = workers or cpus
        self._pixels: np.ndarray | torch.Tensor | None = None
        self.path: Path | None = None
        if mode == "ram":
            self._build_ram(key)
        else:
            self._open_disk(Path(cache_dir) if cache_dir else default_cache_dir(), key)

    # -- building ---------------------------------------------------------------------------------------------
    def _announce(self, where: str) -> None:
        log.info(f"dataset.cache={self.mode}: {len(self.indices)} images at {self.resize}x{self.resize} px = "
                 f"{_human(int(np.prod(self.shape)))} ({where}); building with {self.workers} processes")  # fmt: skip

    def _fill(self, pixels: np.ndarray) -> np.ndarray:
        """Decode + resize every stored image into ``pixels``; returns the resized boxes (N, 4) float32."""
        from tqdm.auto import tqdm

        builder, n = _Builder(self.source, self.indices, self.resize), len(self.indices)
        boxes = np.full((n, 4), np.nan, np.float32)
        step = max(16, min(256, n // (4 * max(self.workers, 1)) or 16))
        chunks = [range(s, min(s + step, n)) for s in range(0, n, step)]
        bar = tqdm(total=n, unit="img", desc=f"dataset.cache={self.mode}", leave=False, mininterval=1.0)
        parallel = self.workers > 1 and n >= _PARALLEL_FROM and "fork" in mp.get_all_start_methods()
        try:
            if parallel:  # forked children see the source and write into the shared array in place
                ctx = mp.get_context("fork")
                with ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker,
                                         initargs=(builder, pixels)) as pool:  # fmt: skip
                    for chunk, found in zip(chunks, pool.map(_run_chunk, chunks), strict=True):
                        for slot, box in found:
                            boxes[slot] = box
                        bar.update(len(chunk))
            else:
                for chunk in chunks:
                    for slot, box in builder(chunk, pixels):
                        boxes[slot] = box
                    bar.update(len(chunk))
        finally:
            bar.close()
        return boxes

    def _build_ram(self, key: str) -> None:
        self._announce(f"RAM, {key}")
        shared = torch.empty(self.shape, dtype=torch.uint8).share_memory_()  # workers map it, no copy
        self._boxes = self._fill(shared.numpy())
        self._pixels = shared

    def _fingerprint(self) -> dict[str, Any]:
        stats = _file_stats(self.source, self.indices)
        if stats is None:
            raise UserError(f"dataset.cache=disk: this dataset ({type(self.source).__name__}) has no image files to "
                            "check a disk cache against; use dataset.cache=ram")  # fmt: skip
        digest = hashlib.sha256("\n".join(f"{p}\0{s}\0{m}" for p, s, m in stats).encode()).hexdigest()
        decode = {"source": type(self.source).__name__, "draft": getattr(self.source, "draft", None)}
        return {"version": _VERSION, "decode_rules": DECODE_RULES, "resize": self.resize, "shape": list(self.shape),
                "decode": decode, "files": digest}  # fmt: skip

    def _open_disk(self, cache_dir: Path, key: str) -> None:
        fingerprint = self._fingerprint()
        names = hashlib.sha256(json.dumps([self._paths_key(), self.resize, fingerprint["decode"]]).encode())
        stem = f"{key}_{self.resize}px_{names.hexdigest()[:12]}"
        self.path = cache_dir / f"{stem}.u8"
        if self._reuse(stem, fingerprint, warn=True):
            return
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            with _exclusive(cache_dir / f"{stem}.lock", self.path) as locked:
                # another process may have finished the same cache while this one waited for the lock
                if self._reuse(stem, fingerprint, warn=False):
                    return
                self._build_disk(stem, fingerprint, locked)
        except OSError as exc:
            raise UserError(
                f"dataset.cache=disk: cannot write the cache under {cache_dir} ({exc}); set "
                "dataset.cache_dir to a writable folder with room, or use dataset.cache=ram"
            ) from exc

    def _reuse(self, stem: str, fingerprint: dict[str, Any], warn: bool) -> bool:
        """Whether the complete cache ``stem`` matches ``fingerprint`` (then its boxes are loaded)."""
        assert self.path is not None
        meta_path, boxes_path = self.path.with_name(f"{stem}.json"), self.path.with_name(f"{stem}.boxes.npy")
        if not (meta_path.is_file() and self.path.is_file()):
            return False
        try:
            saved = json.loads(meta_path.read_text())
            if saved == fingerprint and self.path.stat().st_size == int(np.prod(self.shape)):
                self._boxes = np.load(boxes_path)
                log.info(f"dataset.cache=disk: reusing {self.path} ({_human(self.path.stat().st_size)})")
                return True
        except (OSError, ValueError):
            pass  # unreadable: built again
        if warn:
            log.warning(f"dataset.cache=disk: {self.path} was built from other files (sizes or modification times "
                        "changed), settings or image decoding rules; rebuilding it")  # fmt: skip
        return False

    def _build_disk(self, stem: str, fingerprint: dict[str, Any], locked: bool) -> None:
        """Build into this process's own temporary file, then rename: readers only ever open a complete cache.

        The files are renamed in order boxes, pixels, metadata; the metadata is the mark of a complete cache."""
        assert self.path is not None
        cache_dir = self.path.parent
        partial = cache_dir / f".{stem}.{socket.gethostname()}.{os.getpid()}.partial"
        if locked:  # the lock holder is the only builder: other temporary files were left by killed builds
            for stale in [*cache_dir.glob(f".{stem}.*.partial"), cache_dir / f"{stem}.partial"]:
                if stale != partial:
                    stale.unlink(missing_ok=True)
        self._announce(str(self.path))
        try:
            pixels = np.memmap(partial, np.uint8, "w+", shape=self.shape)
            self._boxes = self._fill(pixels)
            pixels.flush()
            del pixels
            atomic_write(self.path.with_name(f"{stem}.boxes.npy"), lambda temp: _save_npy(temp, self._boxes))
            os.replace(partial, self.path)
        finally:
            partial.unlink(missing_ok=True)
        atomic_write(self.path.with_name(f"{stem}.json"), lambda temp: temp.write_text(json.dumps(fingerprint)))

    def _paths_key(self) -> str:
        samples = self.source.samples  # type: ignore[attr-defined]
        return hashlib.sha256("\n".join(str(samples[i].path) for i in self.indices).encode()).hexdigest()

    # -- reading ----------------------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.mode == "disk":
            state["_pixels"] = None  # each process maps the file itself (a memmap would pickle its data)
        return state

    def _array(self) -> np.ndarray | torch.Tensor:
        if self._pixels is None:
            self._pixels = np.memmap(self.path, np.uint8, "r", shape=self.shape)
        return self._pixels

    def __len__(self) -> int:
        return len(self.source)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[tv_tensors.Image, int, tuple[float, ...] | None]:
        slot = self.slot_of.get(index)
        if slot is None:
            raise IndexError(f"dataset.cache: image {index} is not in this cache")
        pixels = self._array()
        image = pixels[slot] if isinstance(pixels, torch.Tensor) else torch.from_numpy(np.array(pixels[slot]))
        label = self.targets[index] if self.targets is not None else self.source[index][1]
        box = None
        if self.has_boxes and not np.isnan(self._boxes[slot, 0]):
            box = tuple(float(v) for v in self._boxes[slot])  # float32 values, exact as python floats
        return tv_tensors.Image(image), label, box


# -- the data module's side -----------------------------------------------------------------------------------------
def check_cache_args(cache: Any, cache_dir: Any, device_normalize: Any) -> tuple[str, str | None, str]:
    """Validate ``dataset.cache`` / ``cache_dir`` / ``device_normalize`` -> (cache, cache_dir, device_normalize)."""
    mode = "off" if cache is False or cache is None else str(cache).lower()
    if mode not in CACHE_MODES:
        raise UserError(f"dataset.cache={cache!r}: expected one of {', '.join(CACHE_MODES)}")
    value = str(device_normalize).lower()
    if value not in ("auto", "true", "false"):
        raise UserError(f"dataset.device_normalize={device_normalize!r}: expected auto, true or false")
    return mode, (str(Path(cache_dir).expanduser()) if cache_dir else None), value


def resolve_device_normalize(value: str, trainer: Any, augs: Any) -> bool:
    """``auto``: on when the trainer runs on CUDA. MixUp/CutMix mix normalised images in the loader: always off."""
    if augs.mixup_alpha > 0 or augs.cutmix_alpha > 0:
        if value == "true":
            log.info("dataset.device_normalize=true: MixUp/CutMix mix normalised images in the loader; normalising "
                     "there instead")  # fmt: skip
        return False
    if value == "auto":
        return trainer is not None and trainer.strategy.root_device.type == "cuda"
    return value == "true"


def cached_views(datamodule: Any, train_src: Dataset, test_src: Dataset, train_idx: Sequence[int],
                 val_idx: Sequence[int], test_idx: Sequence[int], train_tf: Any,
                 eval_tf: Any) -> list[tuple[Dataset, Any]]:  # fmt: skip
    """(source, transform) of the train, val and test views: the cached sources with the transforms after the
    prefix when ``dataset.cache`` is on, else the sources and transforms as they are."""
    from glsim_pl.data.transforms import has_prefix, without_prefix

    if datamodule.cache == "off":
        return [(train_src, train_tf), (train_src, eval_tf), (test_src, eval_tf)]
    resize, mode, where, name = datamodule.resize_size, datamodule.cache, datamodule.cache_dir, datamodule.name
    train_cached = has_prefix(train_tf)
    if not train_cached:
        log.info(f"dataset.cache={mode}: the train transform (RandomResizedCrop) has no deterministic prefix; train "
                 "images are decoded every epoch, val and test come from the cache")  # fmt: skip
    wanted = [*train_idx, *val_idx] if train_cached else list(val_idx)
    cached_train = PrefixCache(train_src, resize, mode, where, f"{name}_train", wanted) if wanted else train_src
    cached_test = PrefixCache(test_src, resize, mode, where, f"{name}_test", test_idx)  # what the data check kept
    rest = without_prefix(eval_tf)
    train = (cached_train, without_prefix(train_tf)) if train_cached else (train_src, train_tf)
    return [train, (cached_train if val_idx else train_src, rest), (cached_test, rest)]
