"""``glsim-data convert --to wds``: the train / val / test splits of any dataset module written as WebDataset shards
that :mod:`glsim_pl.data.datasets.wds` reads (``<split>/shard-NNNNNN.tar`` and ``info.json``).

A sample is ``<key>.<ext>`` (an image file's or a Hugging Face cell's bytes as stored, so a round trip decodes the
same pixels; other sources as lossless PNG), ``<key>.cls`` (the 0-based label) and ``<key>.json`` (class name, the
source index and the box when the dataset has boxes). The output is written into ``<out>.partial`` and renamed when
complete; a convert that fails removes it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from glsim_pl.data.base import FGVCDataModule, Splits
from glsim_pl.data.datasets.hf import HFImageSource
from glsim_pl.data.datasets.wds import FORMAT, INFO_FILE
from glsim_pl.errors import UserError

__all__ = ["write_shards"]


def _image_bytes(source: Any, index: int) -> tuple[bytes, str]:
    """The stored bytes of a source's image and their extension: files and Hugging Face cells as they are (the
    round trip decodes the same pixels), anything else encoded as PNG (lossless)."""
    samples = getattr(source, "samples", None)
    if samples is not None and hasattr(samples[index], "path"):
        path = Path(samples[index].path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UserError(f"{path}: cannot read ({exc})") from None
        with Image.open(io.BytesIO(data)) as image:
            fmt = (image.format or "png").lower()
        return data, {"jpeg": "jpg", "tiff": "tif"}.get(fmt, fmt)
    if isinstance(source, HFImageSource):
        cell, row = source.rows[index]
        _, data = cell.payload(row)
        if data:
            with Image.open(io.BytesIO(data)) as image:
                fmt = (image.format or "png").lower()
            return bytes(data), {"jpeg": "jpg", "tiff": "tif"}.get(fmt, fmt)
    image = source[index][0]
    if isinstance(image, torch.Tensor):
        image = Image.fromarray(image.permute(1, 2, 0).numpy())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue(), "png"


def _write_split(folder: Path, split: str, source: Any, indices: list[int], boxes: Any, class_names: list[str],
                 shard_size: int, bar: Any) -> list[int]:  # fmt: skip
    """One split's samples as shards of ``shard_size`` under ``folder``; returns the samples per shard."""
    import webdataset as wds

    folder.mkdir(parents=True)
    counts: list[int] = []
    for start in range(0, len(indices), shard_size):
        name = f"shard-{len(counts):06d}.tar"
        with wds.TarWriter(str(folder / name), mtime=0) as sink:  # mtime 0: the same input gives the same bytes
            for position in range(start, min(start + shard_size, len(indices))):
                index = indices[position]
                data, ext = _image_bytes(source, index)
                label = int(source.targets[index])
                meta: dict[str, Any] = {"class_name": class_names[label], "index": index}
                if boxes is not None and boxes[index] is not None:
                    meta["box"] = [float(v) for v in boxes[index]]
                sink.write({"__key__": f"{split}-{position:09d}", ext: data, "cls": str(label).encode(),
                            "json": json.dumps(meta).encode()})  # fmt: skip
                bar.update()
        counts.append(min(shard_size, len(indices) - start))
    return counts


def write_shards(datamodule: FGVCDataModule, out: Path, shard_size: int, progress: bool = True) -> dict[str, Any]:
    """Write the train / val / test splits of any dataset module as shards under ``out`` (``<split>/shard-
    NNNNNN.tar`` and ``info.json``); written into ``<out>.partial`` and renamed when complete, removed when the
    convert fails. Returns the info."""
    from tqdm import tqdm

    if shard_size < 1:
        raise UserError(f"--shard-size {shard_size}: expected a positive number of samples per shard")
    out = Path(out).expanduser().absolute()
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: already exists and is not empty; choose another --out or remove it")
    if datamodule.cache != "off":
        raise UserError(f"glsim-data convert: dataset.cache={datamodule.cache}: convert reads the stored images; set "
                        "dataset.cache=off")  # fmt: skip
    datamodule.setup()  # the splits a training run uses: protocol, val rule and the data check applied
    splits: Splits = datamodule.splits
    views = {"train": datamodule.data_train, "val": datamodule.data_val, "test": datamodule.data_test}
    plan = {split: (view.source, view.indices) for split, view in views.items()}  # a given val split: train + val
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)  # an earlier interrupted convert
    has_boxes = all(getattr(source, "boxes", None) is not None for source, _ in plan.values())
    info: dict[str, Any] = {"format": FORMAT, "class_names": list(splits.class_names), "splits": {},
                            "has_boxes": has_boxes}  # fmt: skip
    total = sum(len(idx) for _, idx in plan.values())
    bar = tqdm(total=total, desc=f"convert -> {out}", unit="img", disable=not progress)
    try:
        for split, (source, indices) in plan.items():
            if indices:
                boxes = getattr(source, "boxes", None) if has_boxes else None
                counts = _write_split(partial / split, split, source, indices, boxes, splits.class_names, shard_size,
                                      bar)  # fmt: skip
                info["splits"][split] = {"shards": [f"{split}/shard-{i:06d}.tar" for i in range(len(counts))],
                                         "counts": counts}  # fmt: skip
        (partial / INFO_FILE).write_text(json.dumps(info, indent=1) + "\n")
    except BaseException:  # an unreadable image, a full disk, Ctrl-C: no half-written output stays behind
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        bar.close()
    if out.exists():
        out.rmdir()  # empty (checked above)
    os.replace(partial, out)
    return info
