"""GLSim vs plain-ViT eval forward time, same backbone and batch: ``python -m glsim_pl.bench forward``.

GLSim runs the encoder twice, so 2.0x is the floor; the goal (<= 2.10x) bounds what selection, crop and aggregator add.
"""

from __future__ import annotations

import argparse
import platform

import torch

from glsim_pl.analysis.timing import interleaved_median_seconds
from glsim_pl.models import GLSim, ViTClassifier


def main(argv: list[str] | None = None) -> None:
    """Print median eval forward times of both models and their ratio."""
    parser = argparse.ArgumentParser(prog="python -m glsim_pl.bench forward")
    parser.add_argument("--backbone", default="vit_base_patch16_224", help="timm name (random init)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    kwargs = dict(backbone=args.backbone, num_classes=200, img_size=args.size)
    models = {"vit": ViTClassifier(**kwargs), "glsim": GLSim(**kwargs)}
    images = torch.randn(args.batch, 3, args.size, args.size, device=args.device)
    for model in models.values():
        model.eval().to(args.device)
    with torch.inference_mode():
        times = interleaved_median_seconds({name: (lambda m=m: m(images)) for name, m in models.items()}, args.repeats)
    print(f"device: {args.device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)")
    print(f"{args.backbone}, {args.size} px, batch {args.batch}, eval forward, median of {args.repeats}")
    for name, seconds in times.items():
        print(f"{name:6s} {seconds * 1e3:9.1f} ms  ({seconds / args.batch * 1e3:.1f} ms/image)")
    print(f"ratio glsim / vit: {times['glsim'] / times['vit']:.3f}x  (goal <= 2.10x; two encoder passes = 2.0x)")


if __name__ == "__main__":
    main()
