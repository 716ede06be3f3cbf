"""Record the attention probabilities of timm ViT blocks during an ordinary forward pass (no second pass).

timm's ``Attention`` uses fused SDPA, which never materialises the probabilities. Inside
:func:`capture_attention` the chosen attention modules run a forward that computes ``softmax(q k^T * scale)``
explicitly, keeps (a reduction of) it, and multiplies it with v, so the block output is the same computation.
Outside the context nothing is patched: selectors that do not need attention (gls, random, center, full) pay
nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import MethodType

import torch
from torch import Tensor, nn

from glsim_pl.errors import UserError

__all__ = ["attention_modules", "capture_attention"]

Reduce = Callable[[Tensor], Tensor]


def _fused_qkv(mod: nn.Module) -> bool:
    return getattr(mod, "qkv", None) is not None and all(hasattr(mod, a) for a in ("num_heads", "scale"))


def _drop_hookable(mod: nn.Module) -> bool:
    # timm's Eva / RoPE attention: its unfused path passes the softmax probabilities through attn_drop
    return hasattr(mod, "fused_attn") and isinstance(getattr(mod, "attn_drop", None), nn.Module)


def attention_modules(encoder: nn.Module) -> list[nn.Module]:
    """The self-attention module of every encoder block, in depth order (timm ``blocks[i].attn``)."""
    blocks = getattr(encoder, "blocks", None)
    mods = [getattr(b, "attn", None) for b in blocks] if blocks is not None else []
    if not mods or any(m is None or not (_fused_qkv(m) or _drop_hookable(m)) for m in mods):
        raise UserError(
            f"{type(encoder).__name__}: attention-based selectors need timm ViT or Eva blocks (blocks[i].attn); "
            "use method.selector=gls with this backbone"
        )
    return mods


def _is_vit_attention(mod: nn.Module) -> bool:
    # timm's plain ViT Attention keeps its own explicit forward below (the recorded maps and outputs of existing runs)
    return _fused_qkv(mod) and type(mod).__name__ == "Attention"


def _capturing_forward(self: nn.Module, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
    """timm ``Attention.forward`` with explicit probabilities. x (B, T, C) -> (B, T, C)."""
    b, t, _ = x.shape
    gate = self.gate(x).sigmoid() if getattr(self, "gate", None) is not None else None
    qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)  # (3, B, H, T, hd)
    q, k, v = qkv.unbind(0)
    q, k = self.q_norm(q), self.k_norm(k)
    logits = (q * self.scale) @ k.transpose(-2, -1)  # (B, H, T, T)
    if is_causal:
        raise UserError("attention capture does not support causal attention")
    if attn_mask is not None:
        logits = logits.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else logits + attn_mask
    probs = logits.softmax(dim=-1)  # (B, H, T, T), rows sum to 1
    self._glsim_sink(self._glsim_reduce(probs.detach()))
    out = (self.attn_drop(probs) @ v).transpose(1, 2).reshape(b, t, -1)  # (B, T, H * hd)
    out = self.norm(out) if hasattr(self, "norm") else out
    if gate is not None:
        out = out * gate
    return self.proj_drop(self.proj(out))


@contextmanager
def capture_attention(
    encoder: nn.Module, layers: Sequence[int] | None = None, reduce: Reduce | None = None
) -> Iterator[list[Tensor]]:
    """Collect attention probabilities of ``layers`` (default: all) while the context is open.

    Args:
        encoder: timm ViT (``blocks[i].attn``).
        layers: block indices to record, negative allowed; each forward appends one map per recorded layer.
        reduce: applied to each (B, H, T, T) map before it is kept (e.g. a head mean, to save memory).

    Yields:
        The list the maps are appended to, in depth order: (B, H, T, T) each, or ``reduce``'s output.
    """
    mods = attention_modules(encoder)
    chosen = [mods[i] for i in (range(len(mods)) if layers is None else layers)]
    maps: list[Tensor] = []
    keep = reduce or (lambda a: a)
    hooks, unfused = [], []
    for mod in chosen:
        if _is_vit_attention(mod):
            mod._glsim_sink, mod._glsim_reduce = maps.append, keep
            mod.forward = MethodType(_capturing_forward, mod)
        else:  # Eva / RoPE attention: the unfused path, probabilities read where they enter attn_drop
            unfused.append((mod, mod.fused_attn))
            mod.fused_attn = False
            hooks.append(mod.attn_drop.register_forward_pre_hook(lambda _m, args: maps.append(keep(args[0].detach()))))
    try:
        yield maps
    finally:
        for mod in chosen:
            for name in ("forward", "_glsim_sink", "_glsim_reduce"):
                mod.__dict__.pop(name, None)
        for hook in hooks:
            hook.remove()
        for mod, fused in unfused:
            mod.fused_attn = fused
