"""The ViT encoder: any timm ViT with a CLS token, built headless, with local or hub weights."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

import timm
import torch
from timm.layers import DropPath
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

from ..errors import UserError

log = logging.getLogger(__name__)  # not utils.logging: models/ imports no Lightning

__all__ = ["create_encoder", "load_weights_file"]

_NETWORK_ERROR_MODULES = ("huggingface_hub", "httpx", "httpcore", "requests", "urllib", "socket")


def _is_network_error(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, OSError | ConnectionError) or type(exc).__module__.split(".")[0] in _NETWORK_ERROR_MODULES:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def create_encoder(
    backbone: str,
    img_size: int = 224,
    pretrained: bool = False,
    pretrained_file: str | None = None,
    drop_path_rate: float = 0.0,
    drop_path_uniform: bool = False,
    layer_norm_eps: float | None = None,
    backbone_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """Headless timm ViT (``num_classes=0``) whose ``forward_features`` returns normed tokens (B, P + N, D).

    Args:
        backbone: timm model name, optionally with a weight tag (``vit_base_patch16_224.orig_in21k``).
        img_size: input side in pixels; timm resamples position embeddings of pretrained weights.
        pretrained: load the tag's weights (from the hub, or from ``pretrained_file`` when given).
        pretrained_file: local weights file (.safetensors/.bin/.pth, or a JAX ``.npz`` such as ``ViT-B_16.npz``)
            loaded with timm's loaders (classifier dropped, position embeddings resampled); see ``load_weights_file``.
        drop_path_rate: stochastic depth; timm ramps it linearly over the blocks unless ``drop_path_uniform``.
        drop_path_uniform: the same rate in every block, as the official GLSim architecture.
        layer_norm_eps: LayerNorm epsilon override (official architecture: 1e-12); None keeps timm's.
        backbone_kwargs: extra timm constructor keywords (e.g. ``patch_size``, ``embed_dim``, ``depth``).
    """
    kwargs: dict[str, Any] = dict(backbone_kwargs or {})
    if layer_norm_eps is not None:
        kwargs["norm_layer"] = partial(nn.LayerNorm, eps=layer_norm_eps)
    if pretrained_file is not None:
        path = Path(pretrained_file).expanduser()
        if not path.is_file():
            raise UserError(f"model.pretrained_file={pretrained_file!r}: no such file")
    from_hub = pretrained and pretrained_file is None  # a local file is loaded below, after the model is built
    try:
        encoder = timm.create_model(
            backbone, pretrained=from_hub, num_classes=0, img_size=img_size, drop_path_rate=drop_path_rate, **kwargs
        )
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise UserError(f"model.backbone={backbone!r} is not a timm model name") from exc
        if pretrained and _is_network_error(exc):
            raise _offline_error(backbone) from exc
        raise
    except Exception as exc:
        if pretrained and pretrained_file is None and _is_network_error(exc):
            raise _offline_error(backbone) from exc
        raise
    if getattr(encoder, "cls_token", None) is None:
        raise UserError(f"model.backbone={backbone!r} has no CLS token; GLSim needs a ViT with one")
    if pretrained_file is not None:
        load_weights_file(encoder, pretrained_file)
    if drop_path_uniform and drop_path_rate > 0:
        for block in encoder.blocks:
            block.drop_path1 = DropPath(drop_path_rate)
            block.drop_path2 = DropPath(drop_path_rate)
    return encoder


def _offline_error(backbone: str) -> UserError:
    return UserError(
        f"could not fetch pretrained weights for {backbone!r} (no network, or the hub is unreachable). "
        "Download them once and set model.pretrained_file=/path/to/model.safetensors, "
        "or train from scratch with model.pretrained=false."
    )


def load_weights_file(encoder: nn.Module, pretrained_file: str | Path) -> nn.modules.module._IncompatibleKeys:
    """Load a local weights file into a headless timm ViT with timm's own loaders; returns missing/unexpected keys.

    ``.npz`` (Google's original JAX checkpoints, e.g. ``ViT-B_16.npz``) goes through timm's npz loader
    (``VisionTransformer.load_pretrained``); the keys it left untouched are reported as missing. Every other file
    (``.safetensors``, ``pytorch_model.bin``, ``.pth``; ``state_dict``/``model`` wrappers and ``module.`` prefixes
    are unwrapped) goes through ``timm.models.load_state_dict`` (``weights_only``) and timm's ViT checkpoint filter
    (key remapping of foreign layouts, position embeddings resampled to this image size); the classifier is dropped.
    """
    path = Path(pretrained_file).expanduser()
    if not isinstance(encoder, VisionTransformer):
        raise UserError(f"model.pretrained_file={str(pretrained_file)!r}: local files load into timm ViTs only")
    try:
        if path.suffix == ".npz":
            before = {k: v.clone() for k, v in encoder.state_dict().items()}
            encoder.load_pretrained(str(path))
            missing = [k for k, v in encoder.state_dict().items() if torch.equal(v, before[k])]
            result = nn.modules.module._IncompatibleKeys(missing, [])
        else:
            state = timm.models.load_state_dict(str(path), weights_only=True)
            state = checkpoint_filter_fn(state, encoder)
            classifier = encoder.pretrained_cfg.get("classifier") or "head"
            dropped = [k for k in state if k.split(".")[0] in (classifier, "fc_norm") and k not in encoder.state_dict()]
            result = encoder.load_state_dict({k: v for k, v in state.items() if k not in dropped}, strict=False)
    except (RuntimeError, KeyError, ValueError, OSError) as exc:  # wrong architecture, truncated file, bad format
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"model.pretrained_file={str(pretrained_file)!r}: cannot load it into the backbone ({first}); "
            "expected weights of the same architecture as model.backbone"
        ) from exc
    loaded = len(encoder.state_dict()) - len(result.missing_keys)
    log.info(f"loaded {loaded} tensors from {path} (position embeddings resampled to the image size if needed)")
    if result.missing_keys:
        log.warning(f"pretrained_file: missing keys, kept their init: {result.missing_keys}")
    if result.unexpected_keys:
        log.warning(f"pretrained_file: unexpected keys, ignored: {result.unexpected_keys}")
    return result
