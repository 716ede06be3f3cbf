"""Supervised pretraining with a label for every patch (token labelling): the embedded default's tiny backbone.

GLSim ranks patches by the cosine similarity of their final tokens with the final CLS token. In a ViT pretrained on
large data the object's patches are the ones that resemble the CLS; in a tiny ViT trained from scratch for minutes
they are not (which patches its CLS resembles changes with the seed, docs/synthetic.md). Here every patch token is
trained, through the same linear head as the CLS, to name the class of the object it lies on, and the patches off
the object to name an extra background class (token labelling, Jiang et al., "All Tokens Matter", 2021). The
object's tokens and the CLS then point the same way, which is the property the selector relies on.

Pure torch: a plain loop over tensors already in memory (a few thousand small images), flips as the only
augmentation, AdamW with a linear warmup and a cosine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glsim_pl.models.selectors import gls_scores

__all__ = ["PatchPretrainConfig", "patch_targets", "patch_pretrain", "selector_hit_rate"]


@dataclass(frozen=True)
class PatchPretrainConfig:
    epochs: int = 8
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    patch_weight: float = 1.0  # weight of the per-patch loss beside the CLS loss
    seed: int = 0


def patch_centres(grid: int, patch: int) -> tuple[Tensor, Tensor]:
    """x and y pixel centres of a grid x grid patch layout, row-major (the token order)."""
    index = torch.arange(grid * grid)
    return (index % grid).float() * patch + patch / 2, (index // grid).float() * patch + patch / 2


def _inside(boxes: Tensor, grid: int, patch: int) -> Tensor:
    cx, cy = patch_centres(grid, patch)
    x1, y1, x2, y2 = (boxes[:, k : k + 1] for k in range(4))
    return (cx >= x1) & (cx <= x2) & (cy >= y1) & (cy <= y2)  # (B, grid * grid)


def patch_targets(boxes: Tensor, labels: Tensor, grid: int, patch: int, background: int) -> Tensor:
    """(B, grid * grid) labels: the image's class where a patch centre lies in its object box, else ``background``."""
    inside = _inside(boxes, grid, patch)
    return torch.where(inside, labels[:, None].expand_as(inside), torch.full_like(inside, background, dtype=torch.long))


def _flip(images: Tensor, boxes: Tensor, flip: Tensor) -> tuple[Tensor, Tensor]:
    side = images.shape[-1]
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    mirrored = torch.stack([side - boxes[:, 2], boxes[:, 1], side - boxes[:, 0], boxes[:, 3]], 1)
    return images, torch.where(flip[:, None], mirrored, boxes)


def _lr_at(step: int, warmup: int, total: int, peak: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def patch_pretrain(encoder: nn.Module, images: Tensor, labels: Tensor, boxes: Tensor, num_classes: int,
                   config: PatchPretrainConfig = PatchPretrainConfig()) -> list[float]:  # fmt: skip
    """Train a headless timm ViT (``forward_features`` -> normed tokens) in place; returns the mean loss per epoch.

    ``images`` (N, 3, S, S) normalised, ``labels`` (N,), ``boxes`` (N, 4) XYXY pixels of the object in the image.
    One linear head serves the CLS (``num_classes`` logits) and the patch tokens (the same logits plus background).
    """
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    dim, patch = encoder.num_features, encoder.patch_embed.patch_size[0]
    grid, prefix = images.shape[-1] // patch, encoder.num_prefix_tokens
    head, background = nn.Linear(dim, num_classes), nn.Linear(dim, 1)
    params = [*encoder.parameters(), *head.parameters(), *background.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = len(images) // config.batch_size
    total, step, history = steps_per_epoch * config.epochs, 0, []
    encoder.train()
    for _epoch in range(config.epochs):
        order, losses = torch.randperm(len(images), generator=generator), []
        for i in range(steps_per_epoch):
            batch = order[i * config.batch_size : (i + 1) * config.batch_size]
            flip = torch.rand(len(batch), generator=generator) < 0.5
            x, box = _flip(images[batch], boxes[batch], flip)
            y = labels[batch]
            tokens = encoder.forward_features(x)
            cls_loss = F.cross_entropy(head(tokens[:, 0]), y)
            local = tokens[:, prefix:]
            patch_logits = torch.cat([head(local), background(local)], -1)
            target = patch_targets(box, y, grid, patch, num_classes)
            loss = cls_loss + config.patch_weight * F.cross_entropy(patch_logits.flatten(0, 1), target.flatten())
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, steps_per_epoch, total, config.lr)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
        history.append(sum(losses) / len(losses))
    encoder.eval()
    return history


@torch.no_grad()
def selector_hit_rate(encoder: nn.Module, images: Tensor, boxes: Tensor, top_o: int) -> tuple[float, float]:
    """Share of the ``top_o`` patches most similar to the CLS (cosine, final normed tokens) whose centre lies in the
    object box, and the same share for a patch drawn at random (the base rate)."""
    patch, prefix = encoder.patch_embed.patch_size[0], encoder.num_prefix_tokens
    grid = images.shape[-1] // patch
    tokens = encoder.forward_features(images)
    scores = gls_scores(tokens[:, 0], tokens[:, prefix:])
    inside = _inside(boxes, grid, patch)
    top = scores.topk(top_o, dim=-1).indices
    return inside.gather(1, top).float().mean().item(), inside.float().mean().item()
