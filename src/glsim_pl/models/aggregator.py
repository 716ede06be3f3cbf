"""Aggregator: a small transformer over the [CLS_original, CLS_crop] sequence, then LayerNorm."""

from __future__ import annotations

from functools import partial

from timm.models.vision_transformer import Block
from torch import Tensor, nn

__all__ = ["Aggregator"]


class Aggregator(nn.Module):
    """``layers`` pre-norm transformer blocks (heads of width 64, MLP ratio 4) followed by LayerNorm.

    Args:
        dim: token width (the encoder's).
        layers: number of blocks (the paper uses 1).
        drop_path: stochastic-depth rate of every block.
        eps: LayerNorm epsilon (1e-12 in the official architecture, 1e-6 in timm's).

    Every Linear starts as in the official code: Xavier-uniform weights, N(0, 1e-6) biases (LayerNorms: ones, zeros).
    The official attention has separate q, k and v projections, each Xavier-uniform over (D, D); timm's Block fuses
    them into one (3D, D) ``qkv`` matrix, so each third of it is initialised on its own (Xavier over the whole fused
    matrix would draw from a sqrt(2) narrower range).
    """

    def __init__(self, dim: int, layers: int = 1, drop_path: float = 0.0, eps: float = 1e-6) -> None:
        super().__init__()
        norm = partial(nn.LayerNorm, eps=eps)
        heads = max(1, dim // 64)
        block = lambda: Block(dim, heads, mlp_ratio=4.0, qkv_bias=True, drop_path=drop_path, norm_layer=norm)
        self.blocks = nn.Sequential(*[block() for _ in range(layers)])
        self.norm = norm(dim)
        for module in self.modules():  # the official init (the aggregator is never in a pretrained file)
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.normal_(module.bias, std=1e-6)
        for blk in self.blocks:  # q, k, v: three (D, D) matrices in the official code
            for part in blk.attn.qkv.weight.data.chunk(3, dim=0):
                nn.init.xavier_uniform_(part)

    def forward(self, tokens: Tensor) -> Tensor:
        """(B, T, D) -> (B, T, D)."""
        return self.norm(self.blocks(tokens))
