"""One WebDataset sample -> (RGB image, label, box): its fields, their checks and the image decoding."""

from __future__ import annotations

import json
from typing import Any

import torch
from PIL import Image

from glsim_pl.data.datasets.hf_images import decode_image_bytes
from glsim_pl.data.jpeg import MAX_PIXELS as PLAIN_JPEG_MAX_PIXELS
from glsim_pl.data.jpeg import decode_plain_jpeg
from glsim_pl.errors import UserError

__all__ = ["IMAGE_EXTS", "decode_sample"]

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif", "ppm")


def decode_sample(sample: dict[str, Any], max_pixels: int | None, need_box: bool,
                  plain_jpeg_tensor: bool = False,
                  num_classes: int | None = None) -> tuple[Image.Image | torch.Tensor, int, Any]:  # fmt: skip
    """(RGB image, label, box or None) of a webdataset sample; a missing or bad field is one line naming it.
    ``plain_jpeg_tensor``: a plain JPEG comes as a (3, H, W) uint8 tensor, decoded as an image file's fast path
    (:mod:`glsim_pl.data.jpeg`: the same pixels), so shards read no slower than files. ``num_classes``: a label
    outside ``0..num_classes - 1`` is one line naming the sample."""
    url, key = sample.get("__url__", "?"), sample.get("__key__", "?")
    where = f"{url}: sample {key}"
    ext = next((e for e in IMAGE_EXTS if e in sample), None)
    fields = ", ".join(sorted(k for k in sample if not k.startswith("__"))) or "none"
    if ext is None or "cls" not in sample:
        missing = "image (" + "/".join(IMAGE_EXTS[:3]) + ")" if ext is None else "label (cls)"
        raise UserError(f"{where}: has no {missing}; its files are {fields}. The shard may end mid-record, or was "
                        "not written as <key>.jpg|png + <key>.cls (glsim-data convert writes that)")  # fmt: skip
    try:
        label = int(bytes(sample["cls"]).decode().strip())
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{where}.cls: expected a 0-based integer label, found {bytes(sample['cls'])[:20]!r}") from None
    if num_classes is not None and not 0 <= label < num_classes:
        raise UserError(f"{where}.cls: label {label} is outside the class list (0..{num_classes - 1})")
    data = bytes(sample[ext])
    within_limit = max_pixels is None or max_pixels >= PLAIN_JPEG_MAX_PIXELS
    image = decode_plain_jpeg(data) if plain_jpeg_tensor and ext in ("jpg", "jpeg") and within_limit else None
    if image is None:
        image = decode_image_bytes(data, f"{where}.{ext}", max_pixels)[0]
    box = None
    if need_box:
        meta = json.loads(bytes(sample.get("json", b"{}")).decode() or "{}")
        if not isinstance(meta, dict) or len(meta.get("box") or ()) != 4:
            raise UserError(f"{where}.json: expected a 'box' of 4 numbers (x1, y1, x2, y2)")
        box = tuple(float(v) for v in meta["box"])
    return image, label, box
