"""What GLSim needs from a backbone family, and what each family offers.

GLSim's global representation is the paper's final CLS token. Foundation backbones do not all have one: SigLIP /
SigLIP 2 pool with a learned attention probe (MAP), ``*_gap`` models average the patch tokens. For them the global
representation is the model's own pooled feature (timm's ``forward_head(pre_logits=True)``: the pool, then
``fc_norm``), the feature the backbone was pre-trained to summarise the image with; the CLS token is the special case
``global_pool='token'``, taken as before (token 0 after the final norm).

Families, as timm builds them:

- ``VisionTransformer`` with a CLS token (ViT, DeiT III, CLIP, DINOv2 with or without registers): every selector.
- ``VisionTransformer`` without one (SigLIP's MAP, ``*_gap``): selectors on tokens (gls, random, center, full); the
  attention selectors read the CLS row of the attention maps, which such a model does not have.
- ``Eva`` (EVA-02, DINOv3, PE-core; RoPE, SwiGLU): every selector; attention is recorded from the unfused path.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from glsim_pl.errors import UserError
from glsim_pl.models.attention import attention_modules
from glsim_pl.models.finetune import has_prompts
from glsim_pl.models.selectors import SelectorSpec, get_selector, selector_names

__all__ = [
    "check_selector_support",
    "global_feature",
    "has_cls_token",
    "meta_encoder",
    "selector_problem",
    "usable_selectors",
]


def has_cls_token(encoder: nn.Module) -> bool:
    """True when the encoder prepends a CLS token (token 0)."""
    return getattr(encoder, "cls_token", None) is not None


def global_feature(encoder: nn.Module, tokens: Tensor) -> Tensor:
    """The image's global representation from ``forward_features`` tokens (B, P + N, D) -> (B, D)."""
    if getattr(encoder, "global_pool", "token") == "token":
        return tokens[:, 0]
    return encoder.forward_head(tokens, pre_logits=True)


def selector_problem(spec: SelectorSpec, encoder: nn.Module) -> str | None:
    """Why ``spec`` cannot run on ``encoder`` (one phrase), or None when it can."""
    if not spec.records_attention:
        return None
    if has_prompts(encoder):
        return "reads attention maps, and finetune=vpt adds prompt tokens to them"
    if not has_cls_token(encoder):
        pool = getattr(encoder, "global_pool", "")
        return f"reads the CLS token's attention and this backbone has no CLS token (global_pool={pool!r})"
    try:
        attention_modules(encoder)
    except UserError:
        return f"needs timm ViT or Eva attention blocks, and {type(encoder).__name__} has other blocks"
    return None


def check_selector_support(spec: SelectorSpec, encoder: nn.Module, backbone: str, key: str = "method.selector") -> None:
    """A UserError naming the selector and the backbone when ``spec`` cannot run on ``encoder``."""
    problem = selector_problem(spec, encoder)
    if problem is not None:
        raise UserError(f"{key}={spec.name!r} {problem}: model.backbone={backbone!r}; use method.selector=gls "
                        "(or random, center, full) with this backbone")  # fmt: skip


def meta_encoder(backbone: str, backbone_kwargs: dict[str, Any] | None = None) -> nn.Module | None:
    """The backbone's structure without weights or memory (meta device), for checks at config time; None if timm
    cannot build it this way (the real build reports the problem)."""
    import timm

    try:
        with torch.device("meta"):
            return timm.create_model(backbone, pretrained=False, num_classes=0, **dict(backbone_kwargs or {}))
    except Exception:
        return None


def usable_selectors(encoder: nn.Module) -> tuple[str, ...]:
    """The registered selectors that can run on ``encoder`` (the default comparison list of eval and the demo)."""
    return tuple(name for name in selector_names() if selector_problem(get_selector(name), encoder) is None)
