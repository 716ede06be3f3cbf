"""Analytic cost of a classifier (FLOPs of the ViT, the aggregator and each selector, from its registry entry) and
its measured throughput, latency and memory."""

from __future__ import annotations

import resource
from typing import Any

import torch
from torch import nn

from glsim_pl.analysis.timing import median_seconds
from glsim_pl.models import GLSim
from glsim_pl.models.selectors import ScoringShape, get_selector


def vit_flops(img: int, patch: int = 16, dim: int = 768, depth: int = 12, classes: int = 200) -> float:
    """calc_flops ViT: 2(N-1)P^2*3*D + L[4ND^2 + 2N^2 D + 8ND^2] + D*C."""
    n = (img // patch) ** 2 + 1
    return 2 * (n - 1) * patch**2 * 3 * dim + depth * (4 * n * dim**2 + 2 * n**2 * dim + 8 * n * dim**2) + dim * classes


def selector_flops(
    name: str, img: int, patch: int = 16, dim: int = 768, depth: int = 12, heads: int = 12
) -> float | None:
    """Analytic FLOPs of one selector's scoring (box and crop excluded, as Table 1), from its registry entry; None
    when the entry declares none. ``psm_transfg``: Table 1's TransFG (overlapping stride-12 tokens, L = 11)."""
    if name == "psm_transfg":
        n12 = ((img - patch) // 12 + 1) ** 2 + 1
        return 10 * heads * n12**2 * (2 * n12 - 1)
    spec = get_selector(name)
    if spec.flops is None:
        return None
    return float(spec.flops(ScoringShape((img // patch) ** 2 + 1, dim, depth, heads)))


def aggregator_flops(model: GLSim) -> float:
    """FLOPs of GLSim's aggregator blocks over N = 2 tokens (calc_flops convention: 24 D^2 + 4 N D per block)."""
    dim = int(model.encoder.num_features)
    return len(model.aggregator.blocks) * (24 * dim**2 + 8 * dim)


def model_gflops(model: nn.Module, img_size: int, selector: str | None = None) -> float | None:
    """Analytic GFLOPs per image of a built classifier, calc_flops convention: one encoder pass for the plain ViT;
    GLSim adds the selector's scoring, a second encoder pass on the crop and the aggregator blocks (N = 2 tokens).
    None for a selector whose registry entry declares no cost."""
    enc = model.encoder
    dim, depth = int(enc.embed_dim), len(enc.blocks)
    heads, patch = int(enc.blocks[0].attn.num_heads), int(model.patch_px)
    classes = int(model.head.out_features)
    encoder = vit_flops(img_size, patch, dim, depth, classes=0)
    if not isinstance(model, GLSim):
        return (encoder + dim * classes) / 1e9
    scoring = selector_flops(selector or model.selector, img_size, patch, dim, depth, heads)
    if scoring is None:
        return None
    return (2 * encoder + scoring + aggregator_flops(model) + dim * classes) / 1e9


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure_cost(model: nn.Module, batch_size: int, img_size: int, device: str | torch.device = "cpu",
                 repeats: int = 5, warmup: int = 1) -> dict[str, Any]:  # fmt: skip
    """Eval throughput (img/s) at ``batch_size``, bs-1 latency (ms, median), peak memory (MiB), parameters (M)."""
    device = torch.device(device)
    model = model.eval().to(device)
    x = torch.randn(batch_size, 3, img_size, img_size, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode():
        batch_s = median_seconds(lambda: model(x), repeats, warmup)
        single_s = median_seconds(lambda: model(x[:1]), repeats, warmup)
    return {
        "throughput_img_s": batch_size / batch_s,
        "latency_bs1_ms": single_s * 1e3,
        "peak_memory_mb": _peak_memory_mb(device),
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "batch_size": batch_size,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }


__all__ = ["aggregator_flops", "measure_cost", "model_gflops", "selector_flops", "vit_flops"]
