"""The same JPEGs kept three ways, for ``bench data``: the official CUB layout (one file per image), one parquet file
per split holding the files' bytes (``dataset=hf``) and WebDataset tar shards (``dataset=wds``, written by
``glsim-data convert``'s own writer). Each is read by its dataset module's own train loader: the rows compare what a
user of each source gets, decode and transform included.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from glsim_pl.data.base import FGVCDataModule

__all__ = ["SOURCE_ROWS", "source_loaders"]

SOURCE_ROWS = ("folder: CUB layout, image files (dataset=cub)", "hf: parquet of image bytes (dataset=hf)",
               "wds: tar shards (dataset=wds)")  # fmt: skip


def _module(cls: type, work: Path, batch: int, size: int, **kwargs: Any) -> FGVCDataModule:
    """A dataset module set up as a one-process CPU run sets it up: no workers, normalised in the loader."""
    module = cls(image_size=size, batch_size=batch, num_workers=0, pin_memory=False, persistent_workers=False,
                 device_normalize=False, check_cache_dir=str(work / "check"), **kwargs)  # fmt: skip
    module.setup()
    return module


def _write_parquet(cub: FGVCDataModule, out: Path) -> dict[str, str]:
    """The CUB tree's train and test splits as parquet files: each file's bytes as stored, its label, its box."""
    import datasets

    if (out / "done").is_file():
        return {s: str(out / f"{s}.parquet") for s in ("train", "test")}
    names = list(cub.class_names)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names),
                                  "bbox": datasets.Sequence(datasets.Value("float32"), length=4)})  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    for split, source in (("train", cub.splits.train), ("test", cub.splits.test)):
        rows = {"image": [{"bytes": s.path.read_bytes(), "path": None} for s in source.samples],
                "label": list(source.targets), "bbox": [list(s.box) for s in source.samples]}  # fmt: skip
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(out / f"{split}.parquet"))
    (out / "done").write_text("")
    return {s: str(out / f"{s}.parquet") for s in ("train", "test")}


def source_loaders(tree: Path, num_classes: int, work: Path, batch: int, size: int) -> dict[str, Iterable]:
    """Train loaders of the CUB tree at ``tree`` read as files, as parquet and as shards (both written under
    ``work`` once and reused); the same train images in each."""
    from glsim_pl.data.datasets.birds import CUBDataModule
    from glsim_pl.data.datasets.hf import HFDataModule
    from glsim_pl.data.datasets.wds import INFO_FILE, WDSDataModule
    from glsim_pl.data.datasets.wds_convert import write_shards

    cub = _module(CUBDataModule, work, batch, size, root=str(tree), num_classes=num_classes)
    files = _write_parquet(cub, work / "parquet")
    hf = _module(HFDataModule, work, batch, size, data_files=files, hf_cache_dir=str(work / "hf_cache"))
    shards = work / "shards"
    if not (shards / INFO_FILE).is_file():
        write_shards(cub, shards, shard_size=100, progress=False)
    wds = _module(WDSDataModule, work, batch, size, root=str(shards))
    if len(hf.data_train) != len(cub.data_train) or sum(wds.train_counts) != len(cub.data_train):
        raise RuntimeError("the three sources do not hold the same train images")
    loaders = (cub.train_dataloader(), hf.train_dataloader(), wds.train_dataloader())
    return dict(zip(SOURCE_ROWS, loaders, strict=True))
