"""Tiny models and checkpoints the tests build (random init, tiny widths, fixed seeds)."""

from __future__ import annotations

from pathlib import Path

import lightning
import torch
from torch import nn

from glsim_pl.models import GLSim, build_classifier
from glsim_pl.training.module import GLSimLitModule
from tests.helpers.configs import TINY_KW


def save_lightning_ckpt(path: Path, num_classes: int = 10, spread_gate: bool = False, **kwargs) -> GLSimLitModule:
    """A fresh tiny module saved in Lightning's checkpoint format (what training writes).

    ``spread_gate``: a gate=confidence model's gate head gets random weights (confidences differ between images);
    otherwise it stays zero, as built (every first-pass confidence 1/num_classes).
    """
    torch.manual_seed(0)
    module = GLSimLitModule(num_classes=num_classes, class_names=[f"c{i}" for i in range(num_classes)],
                            net={**TINY_KW, **kwargs})  # fmt: skip
    torch.nn.init.normal_(module.net.head.weight, std=0.5)  # confident, partly wrong predictions
    if spread_gate:
        torch.nn.init.normal_(module.net.gate_head.weight, std=0.5)
    ckpt = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": lightning.__version__}  # fmt: skip
    torch.save(ckpt, path)
    return module


__all__ = ["TINY_CLASSIFIER", "TINY_GATED", "gated_model", "save_lightning_ckpt", "sgd_steps", "tiny_classifier"]


TINY_GATED = dict(img_size=32, backbone_kwargs=dict(patch_size=8, embed_dim=32, depth=2, num_heads=2))


def gated_model(seed: int = 2) -> GLSim:
    """A tiny gated GLSim with random (non-zero) heads, so confidences spread and both heads matter (seed 2: spread
    over 0.47-1 on these inputs; some seeds saturate every confidence at 1)."""
    torch.manual_seed(seed)
    model = GLSim("vit_tiny_patch16_224", num_classes=6, top_o=3, gate="confidence", **TINY_GATED).eval()
    torch.nn.init.normal_(model.head.weight, std=2.0)
    torch.nn.init.normal_(model.gate_head.weight, std=2.0)
    return model


TINY_CLASSIFIER = dict(backbone="vit_tiny_patch16_224", num_classes=10, img_size=32,
            backbone_kwargs={"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2})  # fmt: skip


def tiny_classifier(method: str, depth: int = 2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    kwargs = {**TINY_CLASSIFIER, "backbone_kwargs": {**TINY_CLASSIFIER["backbone_kwargs"], "depth": depth}}
    net = build_classifier(method, **kwargs)
    for p in net.parameters():  # the zero-initialised heads would give all-equal logits: nothing to compare
        if p.ndim == 2 and not p.abs().sum():
            nn.init.normal_(p, std=0.2)
    return net


def sgd_steps(net: nn.Module, steps: int = 3, **sgd: float) -> list[float]:
    """``steps`` SGD steps of ``net`` on 4 fixed random 32 px images of classes 0-2 (only what requires grad moves);
    the losses, step by step."""
    torch.manual_seed(0)
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], **{"lr": 0.1, **sgd})
    losses = []
    net.train()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(net(images).logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses
