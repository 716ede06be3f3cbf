"""Import checkpoints of the official GLSim code (``ViTGLSim``, e.g. ``cub_vit_b16_16_2.pth``) into :class:`GLSim`.

The official file is a dict with ``config`` (an ``argparse.Namespace``), ``epoch``, ``model`` (a state dict whose
keys start with ``model.``; ``module.model.`` under DDP) and ``accuracy``. Its ViT keeps q, k, v as separate
linears and uses LayerNorm eps 1e-12; timm blocks fuse them as one ``qkv`` linear, q, k, v stacked in that
order, so the mapping is exact. ``anchor_class_token`` is created but never used by the official forward.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

import torch
from torch import Tensor

from glsim_pl.errors import UserError

__all__ = ["convert_official_state_dict", "is_official_checkpoint", "official_model_kwargs"]

# official model_name -> timm architecture (same widths, heads and patch sizes)
_TIMM_ARCH = {
    "t": "vit_tiny_patch{p}_224",
    "s": "vit_small_patch{p}_224",
    "b": "vit_base_patch{p}_224",
    "l": "vit_large_patch{p}_224",
    "h": "vit_huge_patch{p}_224",
}
_BLOCK_RENAMES = {"proj.": "attn.proj.", "pwff.fc1.": "mlp.fc1.", "pwff.fc2.": "mlp.fc2.", "norm1.": "norm1.",
                  "norm2.": "norm2."}  # fmt: skip
_OFFICIAL_EPS = 1e-12


def is_official_checkpoint(ckpt: dict[str, Any]) -> bool:
    """True for the official format (``config`` Namespace + ``model`` state dict)."""
    return isinstance(ckpt, dict) and isinstance(ckpt.get("config"), argparse.Namespace) and "model" in ckpt


def official_model_kwargs(config: argparse.Namespace) -> dict[str, Any]:
    """GLSim constructor keywords that reproduce an official run's config."""
    cfg = vars(config)
    match = re.fullmatch(r"vit_([tsblh])(\d+)", str(cfg.get("model_name", "")))
    if match is None:
        name = cfg.get("model_name")
        raise UserError(f"official checkpoint: model_name={name!r} is not an official ViT (vit_b16, vit_s16 ...)")
    if not cfg.get("dynamic_anchor", True) or cfg.get("classifier", "cls") != "cls":
        raise UserError("official checkpoint: only the GLSim method (dynamic_anchor, classifier=cls) can be imported")
    size, patch = match.groups()
    backbone_kwargs = {"depth": int(cfg["num_hidden_layers"])} if cfg.get("num_hidden_layers") else None
    return dict(
        backbone=_TIMM_ARCH[size].format(p=patch),
        num_classes=int(cfg["num_classes"]),
        img_size=int(cfg.get("image_size", 224)),
        top_o=int(cfg.get("dynamic_top", 8)),
        sim_metric=cfg.get("sim_metric", "cos"),
        box_rule="official",
        aggregator_layers=int(cfg.get("aggregator_num_hidden_layers") or 1),
        drop_path_uniform=True,
        layer_norm_eps=_OFFICIAL_EPS,
        backbone_kwargs=backbone_kwargs,
    )


def _convert_block(src: dict[str, Tensor], prefix: str, dst_prefix: str, out: dict[str, Tensor]) -> None:
    for kind in ("weight", "bias"):
        out[f"{dst_prefix}attn.qkv.{kind}"] = torch.cat([src[f"{prefix}attn.proj_{c}.{kind}"] for c in "qkv"])
    for key, value in src.items():
        if not key.startswith(prefix) or ".proj_" in key:
            continue
        rest = key[len(prefix) :]
        new = next((n + rest[len(o) :] for o, n in _BLOCK_RENAMES.items() if rest.startswith(o)), None)
        if new is None:
            raise UserError(f"official checkpoint: unexpected key {key!r}")
        out[dst_prefix + new] = value


def convert_official_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Official ``model.*`` keys -> :class:`GLSim` keys."""
    state = {re.sub(r"^(module\.)?model\.", "", k): v for k, v in state.items()}
    out = {
        "encoder.patch_embed.proj.weight": state["patch_embedding.weight"],
        "encoder.patch_embed.proj.bias": state["patch_embedding.bias"],
        "encoder.cls_token": state["class_token"],
        "encoder.pos_embed": state["positional_embedding.pos_embedding"],
        "encoder.norm.weight": state["encoder_norm.weight"],
        "encoder.norm.bias": state["encoder_norm.bias"],
        "aggregator.norm.weight": state["aggregator_norm.weight"],
        "aggregator.norm.bias": state["aggregator_norm.bias"],
        "head.weight": state["head.weight"],
        "head.bias": state["head.bias"],
    }
    blocks = {m.group(1) for k in state if (m := re.match(r"((?:encoder|aggregator)\.blocks\.\d+\.)", k))}
    for prefix in sorted(blocks):
        dst = prefix if prefix.startswith("aggregator") else "encoder." + prefix[len("encoder.") :]
        _convert_block(state, prefix, dst, out)
    return out
