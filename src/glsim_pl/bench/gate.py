"""Does the measured cost of adaptive GLSim fall with the early-exit share? ``python -m glsim_pl.bench gate``.

One real-size GLSim with ``gate=confidence`` (default ViT-Ti/16 at 224 px, random init), one batch. For each target
share s of images taking the second pass, tau is set to the confidence of the (s x B)-th least confident image of
that batch, so that exactly s x B images fall below it: random weights give arbitrary confidences, so the share is
*forced* through tau; what is measured is the real ``GLSim.forward_gated`` (first pass, confidence split, gather,
second pass on the subset, scatter). The realised share is checked against the target on the real forward's mask.

Timed in one run, in alternation (median of repeats, ``torch.inference_mode``, one warm-up call each): a plain ViT
pass (encoder + first-pass head, the unit of cost, as in :mod:`glsim_pl.analysis.gate_sweep`), the gated forward
at every share, and a ``gate=none`` GLSim (the paper's model, always two passes). The analytic cost is
:func:`glsim_pl.analysis.gate_sweep.gate_flops` (1 + share + selector, aggregator and head overheads, ``calc_flops``
convention; the bilinear crop is not counted).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
from typing import Any

import torch
from torch import Tensor, nn

from glsim_pl.analysis.gate_sweep import gate_flops, vit_pass
from glsim_pl.analysis.timing import interleaved_median_seconds
from glsim_pl.errors import UserError
from glsim_pl.models import GLSim
from glsim_pl.models.gate import confidence

__all__ = ["COLUMNS", "format_table", "measure", "threshold_for_share"]

COLUMNS = ["model", "second_pass_share", "tau", "ms_per_batch", "measured_cost_vs_vit", "analytic_cost_vs_vit",
           "measured_over_analytic"]  # fmt: skip
DEFAULT_SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)
TINY_KW = {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}


def threshold_for_share(conf: Tensor, share: float) -> tuple[float, int]:
    """(tau, k): with confidences conf (B,), exactly k = round(share x B) images have ``conf < tau``.

    tau = 0 exits every image, inf none; otherwise the k-th smallest confidence (exact in float32, so the k below it
    are strictly less). Ties at the cut make the share unreachable: one clear error rather than a silently other one.
    """
    if not 0.0 <= share <= 1.0:
        raise UserError(f"--shares: {share} is not a share in [0, 1]")
    n = conf.shape[0]
    k = round(share * n)
    if k == 0:
        return 0.0, 0
    if k == n:
        return math.inf, n
    ordered = conf.sort().values
    if ordered[k - 1] == ordered[k]:
        raise UserError(f"share {share}: confidences tie at the cut (k={k} of {n}); use another --batch or --seed")
    return float(ordered[k]), k


def measure(
    backbone: str = "vit_tiny_patch16_224", size: int = 224, batch: int = 32, repeats: int = 5,
    shares: tuple[float, ...] = DEFAULT_SHARES, device: str = "cpu", backbone_kwargs: dict[str, Any] | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:  # fmt: skip
    """Time a plain ViT pass, the gated forward at each share, and gate=none GLSim on one batch; one row each."""
    torch.manual_seed(seed)
    kw = dict(backbone=backbone, num_classes=200, img_size=size, backbone_kwargs=backbone_kwargs)
    gated = GLSim(**kw, gate="confidence").eval().to(device)
    paper = GLSim(**kw, gate="none").eval().to(device)
    paper.load_state_dict({k: v for k, v in gated.state_dict().items() if not k.startswith("gate_head")})
    # the trained init is zero (every confidence 1/K, all tied); unit-variance logits spread them without saturating
    nn.init.normal_(gated.gate_head.weight, std=gated.head.in_features**-0.5)
    images = torch.randn(batch, 3, size, size, device=device)
    with torch.inference_mode():
        conf = confidence(gated.gate_head(gated.first_pass(images).cls_global))  # (B,)
        taus = {share: threshold_for_share(conf, share) for share in shares}
        for share, (tau, k) in taus.items():  # the real forward's mask, not the confidences above
            taken = int(gated.forward_gated(images, tau).second_pass.sum())
            if taken != k:
                raise RuntimeError(f"share {share}: forward_gated sent {taken} images to the second pass, not {k}")
        fns = {"vit": lambda: vit_pass(gated, images), "glsim (gate=none)": lambda: paper(images)}
        fns.update({share: (lambda t=tau: gated.forward_gated(images, t)) for share, (tau, _) in taus.items()})
        seconds = interleaved_median_seconds(fns, repeats)
    one_pass = gate_flops(gated, size, 0.0)[1]
    none_flops = gate_flops(gated, size, 1.0)[0] - gated.head.in_features * gated.head.out_features  # no gate head
    rows = []
    for key, sec in seconds.items():
        gated_row = not isinstance(key, str)
        share = taus[key][1] / batch if gated_row else 0.0 if key == "vit" else 1.0  # realised, not the target
        flops = gate_flops(gated, size, share)[0] if gated_row else one_pass if key == "vit" else none_flops
        measured, analytic = sec / seconds["vit"], flops / one_pass
        rows.append({"model": "gated" if gated_row else key, "second_pass_share": share,
                     "tau": taus[key][0] if gated_row else math.nan, "ms_per_batch": sec * 1e3,
                     "measured_cost_vs_vit": measured, "analytic_cost_vs_vit": analytic,
                     "measured_over_analytic": measured / analytic})  # fmt: skip
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of :func:`measure`'s rows."""
    lines = ["| model | second-pass share | tau | ms / batch | measured cost (x ViT) | analytic cost (x ViT) "
             "| measured / analytic |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        tau = "" if math.isnan(r["tau"]) else f"{r['tau']:.4g}"
        lines.append(f"| {r['model']} | {r['second_pass_share']:.2f} | {tau} | {r['ms_per_batch']:.1f} | "
                     f"{r['measured_cost_vs_vit']:.2f} | {r['analytic_cost_vs_vit']:.2f} | "
                     f"{r['measured_over_analytic']:.2f} |")  # fmt: skip
    return "\n".join(lines)


def monotone(rows: list[dict[str, Any]]) -> bool:
    """Whether the gated rows' measured time rises strictly with the second-pass share."""
    gated = sorted((r["second_pass_share"], r["ms_per_batch"]) for r in rows if r["model"] == "gated")
    return all(a[1] < b[1] for a, b in zip(gated, gated[1:], strict=False))


def main(argv: list[str] | None = None) -> None:
    """Print the share-vs-cost table for one batch."""
    p = argparse.ArgumentParser(prog="python -m glsim_pl.bench gate", description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="vit_tiny_patch16_224", help="timm name, random init (GPU: vit_base_...)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--shares", default=",".join(map(str, DEFAULT_SHARES)), help="comma list in [0, 1]")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0, help="weights and images")
    p.add_argument("--tiny", action="store_true", help="a 2-block width-32 backbone: checks the script only")
    args = p.parse_args(argv)
    try:
        shares = tuple(float(s) for s in args.shares.split(","))
    except ValueError:
        raise UserError(f"--shares={args.shares!r}: expected a comma list of numbers in [0, 1]") from None
    rows = measure(args.backbone, args.size, args.batch, args.repeats, shares, args.device,
                   TINY_KW if args.tiny else None, args.seed)  # fmt: skip
    where = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    load = os.getloadavg() if hasattr(os, "getloadavg") else ()
    print(f"device: {args.device} ({where}, {torch.get_num_threads()} threads), load average "
          f"{' '.join(f'{x:.2f}' for x in load)}")  # fmt: skip
    print(
        f"{args.backbone}{' (tiny)' if args.tiny else ''}, {args.size} px, batch {args.batch}, fp32 eager, "
        f"median of {args.repeats} (interleaved); tau forced per share from this batch's confidences"
    )
    print(format_table(rows))
    print(f"measured time rises with the second-pass share (falls with the early-exit share): {monotone(rows)}")


if __name__ == "__main__":
    main()
