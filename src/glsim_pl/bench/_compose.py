"""What the benchmarks that build a run or a model from ``conf/train.yaml`` share."""

from __future__ import annotations

from glsim_pl.config.compose import compose_train  # re-exported: the benchmarks compose through it

__all__ = ["TINY", "compose_train"]

# --tiny: a random-init 2-block ViT of width 32 in place of the named model
TINY = ["model=vit_tiny_scratch", "model.backbone_kwargs={patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2}"]
