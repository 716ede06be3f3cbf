"""The ViT encoder: a timm ViT or Eva (CLS token or pooled feature), built headless, with local or hub weights."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import timm
from timm.layers import DropPath
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from glsim_pl.errors import UserError
from glsim_pl.models.weights import load_encoder_weights

log = logging.getLogger(__name__)  # not utils.logging: models/ imports no Lightning

__all__ = ["create_encoder", "hub_cache_only_if_unreachable", "load_weights_file"]

_NETWORK_ERROR_MODULES = ("huggingface_hub", "httpx", "httpcore", "requests", "urllib", "socket")
HUB_CHECK_SECONDS = 5.0  # one request; the Hub client itself retries a refused connection for about a minute


@contextmanager
def hub_cache_only_if_unreachable() -> Iterator[bool]:
    """Inside: downloads from the Hub as usual, or, when its endpoint does not answer one request within
    ``HUB_CHECK_SECONDS``, from the local cache only (offline mode), so a missing file fails at once instead of
    after the client's retries. Yields whether the Hub was found unreachable."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    if constants.HF_HUB_OFFLINE:
        yield False
        return
    try:
        get_session().head(constants.ENDPOINT, timeout=HUB_CHECK_SECONDS)  # any HTTP answer: reachable
        reachable = True
    except Exception:  # refused, timed out, no route, proxy failure: the client's own error types vary
        reachable = False
    if reachable:
        yield False
        return
    log.warning(f"the Hugging Face Hub ({constants.ENDPOINT}) does not answer: using the local cache only")
    constants.HF_HUB_OFFLINE = True
    try:
        yield True
    finally:
        constants.HF_HUB_OFFLINE = False


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
        pretrained_file: local weights file (.safetensors/.bin/.pth, a JAX ``.npz`` such as ``ViT-B_16.npz``, a
            glsim_pl checkpoint or export, an official GLSim checkpoint); see ``load_weights_file``.
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
        with hub_cache_only_if_unreachable() if from_hub else nullcontext():
            encoder = timm.create_model(
                backbone, pretrained=from_hub, num_classes=0, img_size=img_size, drop_path_rate=drop_path_rate,
                **kwargs,
            )  # fmt: skip
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
    if getattr(encoder, "cls_token", None) is None and getattr(encoder, "global_pool", "") in ("", None):
        raise UserError(f"model.backbone={backbone!r} has neither a CLS token nor a pooled global feature "
                        "(global_pool); GLSim needs one of them")  # fmt: skip
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
    """Load the encoder part of a local weights file into a headless timm ViT; returns missing/unexpected keys.

    Any file :mod:`glsim_pl.models.weights` accepts (timm / original ViT ``.safetensors``, ``.bin``, ``.pth``,
    ``.npz``; glsim_pl checkpoints and exports; official GLSim checkpoints). Fewer than 90 % of the encoder's
    tensors matching is an error naming the keys; the share loaded is kept as ``encoder.pretrained_share``.
    """
    path = Path(pretrained_file).expanduser()
    if not isinstance(encoder, VisionTransformer):
        raise UserError(f"model.pretrained_file={str(pretrained_file)!r}: local files load into timm ViTs only")
    result = load_encoder_weights(encoder, path)
    encoder.pretrained_share = result.share  # a plain float: train.py writes it to metrics.json
    log.info(f"loaded {result.loaded} of the encoder's {result.total} tensors ({result.share:.1%}) from {path} "
             "(position embeddings resampled to the image size if needed)")  # fmt: skip
    if result.missing:
        log.warning(f"pretrained_file: missing keys, kept their init: {result.missing}")
    if result.unexpected:
        log.warning(f"pretrained_file: unexpected keys, ignored: {result.unexpected}")
    return nn.modules.module._IncompatibleKeys(result.missing, result.unexpected)
