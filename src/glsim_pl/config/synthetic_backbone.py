"""The embedded default's pretrained backbone: built from the composed config on first use, cached by its settings.

``model.pretrained_file: synthetic:pretrained`` (``model=vit_tiny_synthetic``) names no file: :func:`resolve_backbone`
replaces it, before the run builds its model, with ``$GLSIM_CACHE_DIR/backbones/synthetic_<key>.safetensors``
(``~/.cache/glsim_pl/backbones``), building the file first when it is missing. The key is a hash of everything the
pretraining reads (the set's look, image and resize size, backbone, pretraining settings), so another look or model
size gets its own file and a cached file is never one of other settings. Pretraining: images of the synthetic look with
another data seed and coarse classes, one label per patch (:mod:`glsim_pl.training.patch_pretrain`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from glsim_pl.config.instantiate import instantiate
from glsim_pl.data.base import TransformedView
from glsim_pl.data.datasets.synthetic import SyntheticDataModule
from glsim_pl.data.transforms import build_eval_transform
from glsim_pl.errors import UserError
from glsim_pl.models.encoder import create_encoder
from glsim_pl.training.patch_pretrain import PatchPretrainConfig, patch_pretrain, selector_hit_rate
from glsim_pl.utils.cache_dir import cache_root

__all__ = ["MARKER", "Pretraining", "backbone_path", "build_backbone", "resolve_backbone"]

log = logging.getLogger(__name__)
MARKER = "synthetic:pretrained"
METADATA_KEY = "glsim_pl_pretrain"


@dataclass(frozen=True)
class Pretraining:
    """What the pretraining reads besides the look: its images (another data seed, coarse hues) and its loop."""

    data_seed: int = 1  # the default's data seed is 0: no image of its splits is seen here
    images: int = 3000
    hue_step: float = 0.1  # ten hues around the whole wheel: the default's classes (0.015 apart) are unseen
    loop: PatchPretrainConfig = PatchPretrainConfig()


def _settings(cfg: Any, pretraining: Pretraining) -> dict:
    """Everything the built file depends on, as plain values (the cache key and the file's metadata)."""
    keep = ("num_classes", "hue_step", "evidence", "body_sat", "body_frac", "clutter", "margin", "marking_frac",
            "decoys", "image_px", "image_size", "resize_factor", "normalize", "mean", "std")  # fmt: skip
    look = {k: _plain(cfg.dataset[k]) for k in keep if k in cfg.dataset}  # not the data seed or split sizes
    model = {"backbone": cfg.model.backbone, "backbone_kwargs": _plain(cfg.model.get("backbone_kwargs") or {})}
    return {"look": look, **model, "top_o": int(cfg.method.get("top_o", 4)), **asdict(pretraining)}


def _plain(value: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def backbone_path(cfg: Any, pretraining: Pretraining = Pretraining()) -> Path:
    key = hashlib.sha256(json.dumps(_settings(cfg, pretraining), sort_keys=True).encode()).hexdigest()[:12]
    return cache_root() / "backbones" / f"synthetic_{key}.safetensors"


def _tensors(data_module: SyntheticDataModule, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images, labels, boxes) of a split after the evaluation transform (boxes in model-input pixels)."""
    source = getattr(data_module.read_splits(), split)
    transform = build_eval_transform(data_module.image_size, data_module.resize_size, data_module.mean,
                                     data_module.std)  # fmt: skip
    view = TransformedView(source, range(len(source)), transform, return_boxes=True)
    images, labels, boxes = zip(*(view[i] for i in range(len(view))), strict=True)
    return torch.stack(images), torch.tensor(labels), torch.stack(boxes)


def build_backbone(cfg: Any, out: Path, pretraining: Pretraining = Pretraining()) -> dict:
    """Pretrain the preset's encoder on the composed synthetic look, write it to ``out``; returns the record."""
    loop = pretraining.loop
    if pretraining.images < loop.batch_size or loop.epochs < 1:
        raise UserError(f"pretrain_synthetic: --size {pretraining.images} / --epochs {loop.epochs}: expected at least "
                        f"one batch ({loop.batch_size} images) and one epoch")  # fmt: skip
    target = str(cfg.dataset.get("_target_", ""))
    if target.rsplit(".", 1)[-1] != SyntheticDataModule.__name__:
        raise UserError(f"pretrain_synthetic: dataset must be synthetic (its images are drawn with their boxes), "
                        f"not {target!r}")  # fmt: skip
    settings = _settings(cfg, pretraining)
    dataset = cfg.dataset.copy()
    dataset.seed, dataset.train_size, dataset.test_size = pretraining.data_seed, pretraining.images, 500
    dataset.hue_step = pretraining.hue_step
    data_module = instantiate(dataset)
    started = time.time()
    images, labels, boxes = _tensors(data_module, "train")
    test_images, _, test_boxes = _tensors(data_module, "test")
    torch.manual_seed(loop.seed)
    encoder = create_encoder(cfg.model.backbone, int(cfg.dataset.image_size), pretrained=False,
                             backbone_kwargs=settings["backbone_kwargs"])  # fmt: skip
    encoder.eval()
    before, base = selector_hit_rate(encoder, test_images, test_boxes, settings["top_o"])
    losses = patch_pretrain(encoder, images, labels, boxes, int(cfg.dataset.num_classes), loop)
    after, _ = selector_hit_rate(encoder, test_images, test_boxes, settings["top_o"])
    record = dict(settings, loss_per_epoch=[round(v, 4) for v in losses], in_box_before=round(before, 3),
                  in_box_after=round(after, 3), in_box_random=round(base, 3),
                  seconds=round(time.time() - started, 1))  # fmt: skip
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f"{out.name}.{os.getpid()}.partial")  # runs building at once each write their own
    state = {k: v.detach().float().contiguous() for k, v in encoder.state_dict().items()}
    save_file(state, str(partial), metadata={METADATA_KEY: json.dumps(record)})
    partial.replace(out)
    return record


def resolve_backbone(cfg: Any, pretraining: Pretraining = Pretraining()) -> None:
    """``model.pretrained_file: synthetic:pretrained`` -> the cached file of these settings (built when missing)."""
    if cfg.model.get("pretrained_file") != MARKER:
        return
    path = backbone_path(cfg, pretraining)
    if not path.is_file():
        log.info(f"building the synthetic set's pretrained backbone (once, about 2 minutes on 2 CPU cores) -> {path}")
        with torch.random.fork_rng():  # the run's seeded state stays as it was: a first run equals a later one
            record = build_backbone(cfg, path, pretraining)
        log.info(
            f"backbone built in {record['seconds']} s: top-{record['top_o']} patches in the bird's box "
            f"{record['in_box_before']} -> {record['in_box_after']} (random patch {record['in_box_random']})"
        )
    cfg.model.pretrained_file = str(path)
