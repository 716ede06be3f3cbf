"""Accuracy vs cost of adaptive GLSim (``method.gate=confidence``) over the threshold tau; tau chosen on validation.

``python -m glsim_pl.eval ... eval.gate_sweep=true`` calls :func:`run_gate_sweep`. For each split (val, test):

1. One pass with both heads on every image (the always-two-pass forward) gives, per image, the first-pass
   confidence and both predictions. The accuracy and the share of images taking the second pass at any tau follow
   exactly from these (the cascade is tested to equal them), so the curve and the choice of tau are exact.
2. At each tau of the curve the real gated forward runs, timed, on the first ``timing_batches`` batches (held in
   memory on the device, so data loading is not timed; the taus in alternation, so machine load hits them alike):
   measured img/s, and a check that its predictions agree with step 1 on those images. A plain ViT pass (encoder +
   first-pass head) is timed alike as the unit of measured cost.

Cost relative to one ViT pass, analytic (official ``calc_flops`` convention, :mod:`glsim_pl.bench.model`):
(first pass + first-pass head + selector + share x (second encoder pass + aggregator + head)) / (one pass + head).
The selector and aggregator overheads are counted; the bilinear crop is not (not in that convention either).
tau for ``method.gate_target_cost`` maximises validation accuracy among the taus whose validation cost is at most
the target (ties: the cheaper); test is only read at that tau. tau = 0 is the first-pass head alone (a plain ViT),
tau = inf is always two passes (GLSim). Writes ``gate_sweep.csv`` and ``gate_sweep.png``.
"""

from __future__ import annotations

import contextlib
import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from glsim_pl.analysis.cost import aggregator_flops, selector_flops, vit_flops
from glsim_pl.analysis.timing import interleaved_median_seconds
from glsim_pl.errors import UserError
from glsim_pl.models import GLSim
from glsim_pl.models.gate import _NO_GATE, confidence
from glsim_pl.plots.cost import save_plot

__all__ = [
    "COLUMNS",
    "SplitOutputs",
    "choose_threshold",
    "collect",
    "compile_stages",
    "gate_flops",
    "run_gate_sweep",
    "sweep_from_config",
    "thresholds",
    "uncompile",
    "vit_pass",
]

COLUMNS = ["split", "point", "tau", "second_pass_share", "acc1", "gflops_per_img", "cost_vs_vit", "img_s",
           "measured_cost_vs_vit", "timed_images", "timed_agreement"]  # fmt: skip


@dataclass
class SplitOutputs:
    """One always-two-pass pass over a split: first-pass confidence (n,), first-pass and GLSim predictions (n,),
    labels (n,), and the first batches (B, 3, H, W) kept on the device for timing."""

    conf: Tensor
    first_pred: Tensor
    glsim_pred: Tensor
    labels: Tensor
    timing: list[Tensor]

    def at(self, tau: float) -> tuple[float, float, Tensor]:
        """(share taking the second pass, top-1, predictions (n,)) of the cascade at ``tau``."""
        take = self.conf < tau
        pred = torch.where(take, self.glsim_pred, self.first_pred)
        return float(take.float().mean()), float((pred == self.labels).float().mean()), pred


def collect(net: GLSim, loader: Iterable, device: torch.device, timing_batches: int, autocast: Any) -> SplitOutputs:
    """Run both heads on every image of ``loader`` (inference mode)."""
    conf, first, glsim, labels, timing = [], [], [], [], []
    with torch.inference_mode(), autocast():
        for batch in loader:
            images = batch[0].to(device)
            out = net.forward_gated(images, None)  # both passes on every image
            conf.append(confidence(out.first_logits).cpu())
            first.append(out.first_logits.argmax(-1).cpu())
            glsim.append(out.logits.argmax(-1).cpu())
            labels.append(batch[1].cpu())
            if len(timing) < timing_batches:
                timing.append(images)
    if not conf:
        raise UserError("eval.gate_sweep: a split has no images")
    return SplitOutputs(torch.cat(conf), torch.cat(first), torch.cat(glsim), torch.cat(labels), timing)


def thresholds(val_conf: Tensor, points: int) -> list[float]:
    """0, the validation-confidence quantiles (evenly spaced shares of second passes), inf."""
    qs = torch.linspace(0, 1, max(points, 3))[1:-1]
    inner = torch.quantile(val_conf.double(), qs.double()).tolist()
    return [0.0, *sorted(set(inner)), math.inf]


def gate_flops(net: GLSim, img_size: int, share: float) -> tuple[float, float]:
    """(FLOPs per image of the cascade at this share of second passes, FLOPs of one plain ViT pass with its head)."""
    enc = net.encoder
    dim, depth, classes = int(enc.num_features), len(enc.blocks), int(net.head.out_features)
    heads = int(enc.blocks[0].attn.num_heads)
    one_pass = vit_flops(img_size, net.patch_px, dim, depth, classes=0)
    selector = selector_flops(net.selector, img_size, net.patch_px, dim, depth, heads)
    if selector is None:
        raise UserError(f"method.selector={net.selector!r} declares no analytic cost (register_selector(..., "
                        "flops=...)); the gate sweep's cost axis needs it")  # fmt: skip
    total = one_pass + dim * classes + selector + share * (one_pass + aggregator_flops(net) + dim * classes)
    return total, one_pass + dim * classes


def choose_threshold(val: SplitOutputs, cost_of: Any, target_cost: float) -> float:
    """tau with the best validation top-1 among those whose validation cost is <= ``target_cost`` (ties: cheaper).

    Every distinct validation confidence is a candidate (k images below it take the second pass), plus inf.
    """
    conf, order = val.conf.sort()
    n = len(conf)
    glsim_ok = (val.glsim_pred == val.labels)[order].double()
    first_ok = (val.first_pred == val.labels)[order].double()
    zero = torch.zeros(1, dtype=torch.float64)
    # k lowest-confidence images take the second pass, k = 0..n
    acc = (torch.cat([zero, glsim_ok.cumsum(0)]) + first_ok.sum() - torch.cat([zero, first_ok.cumsum(0)])) / n
    taus = [*conf.tolist(), math.inf]
    best: tuple[float, float, float] | None = None  # (acc, -cost, tau)
    for k in range(n + 1):
        if 0 < k < n and conf[k - 1] == conf[k]:
            continue  # a tie: no tau separates these k images from the next
        cost = cost_of(k / n)
        if cost <= target_cost + 1e-9 and (best is None or (float(acc[k]), -cost) > best[:2]):
            best = (float(acc[k]), -cost, taus[k])
    if best is None:
        raise UserError(f"method.gate_target_cost={target_cost}: below the cost of the first pass alone "
                        f"({cost_of(0.0):.3f} x one ViT pass)")  # fmt: skip
    return best[2]


def _timed(net: GLSim, data: SplitOutputs, taus: list[float], repeats: int, autocast: Any) -> dict[Any, Any]:
    """{tau: (img/s, predictions)} of the gated forward on the timing batches, plus {None: ...} for a plain ViT
    pass; the taus are timed in alternation (median of ``repeats``), so a busy machine slows them alike."""
    batches = data.timing
    if not batches:  # timing switched off (timing_batches=0)
        return {tau: (math.nan, torch.empty(0, dtype=torch.long)) for tau in [None, *taus]}
    last: dict[Any, list[Tensor]] = {}

    def runner(tau: float | None) -> Any:
        def run() -> None:
            with torch.inference_mode(), autocast():
                if tau is None:
                    last[tau] = [vit_pass(net, x) for x in batches]
                else:
                    last[tau] = [net.forward_gated(x, tau).logits for x in batches]

        return run

    seconds = interleaved_median_seconds({tau: runner(tau) for tau in [None, *taus]}, repeats)
    n = sum(len(x) for x in batches)
    return {tau: (n / t, torch.cat([v.argmax(-1).cpu() for v in last[tau]])) for tau, t in seconds.items()}


def run_gate_sweep(
    net: GLSim, val_loader: Iterable, test_loader: Iterable, img_size: int, out: Path, *, target_cost: float,
    points: int = 21, timing_batches: int = 8, repeats: int = 3, device: str | torch.device = "cpu",
    autocast: Any = None, compile: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Sweep tau on val and test, write ``gate_sweep.csv`` + ``gate_sweep.png``; returns the summary at the chosen tau.

    Args:
        net: a GLSim with ``gate=confidence`` (its own threshold is left untouched).
        val_loader, test_loader: batches (images, labels, ...).
        img_size: input side (for the analytic FLOPs).
        out: folder for the CSV and the plot.
        target_cost: cost relative to one ViT pass that tau is chosen for, on validation.
        points: taus on the curve (0 and inf included).
        timing_batches: batches per split held on the device and timed at every tau.
        repeats: timed repetitions per tau (median).
        device: where the model runs.
        autocast: context-manager factory for mixed precision (None: full precision).
        compile: time with :func:`glsim_pl.analysis.gate_sweep.compile_stages` (the accuracies never depend on it).
    """
    if not isinstance(net, GLSim) or net.gate == "none":
        raise UserError(_NO_GATE)
    autocast = autocast or contextlib.nullcontext
    device = torch.device(device)
    net = net.eval().to(device)
    splits = {"val": collect(net, val_loader, device, timing_batches, autocast),
              "test": collect(net, test_loader, device, timing_batches, autocast)}  # fmt: skip
    vit_flops_img = gate_flops(net, img_size, 0.0)[1]
    cost_of = lambda share: gate_flops(net, img_size, share)[0] / vit_flops_img
    chosen = choose_threshold(splits["val"], cost_of, target_cost)
    taus = sorted({*thresholds(splits["val"].conf, points), chosen})
    rows: list[dict[str, Any]] = []
    if compile:
        compile_stages(net)
    for name, data in splits.items():
        timed = _timed(net, data, taus, repeats, autocast)
        vit_img_s = timed[None][0]
        n_timed = sum(len(x) for x in data.timing)
        for tau in taus:
            share, acc, pred = data.at(tau)
            img_s, timed_pred = timed[tau]
            point = "vit" if tau == 0 else "glsim" if math.isinf(tau) else "chosen" if tau == chosen else ""
            measured = vit_img_s / img_s if img_s > 0 else math.nan  # NaN when timing is off
            rows.append({"split": name, "point": point, "tau": tau, "second_pass_share": share, "acc1": acc,
                         "gflops_per_img": gate_flops(net, img_size, share)[0] / 1e9, "cost_vs_vit": cost_of(share),
                         "img_s": img_s, "measured_cost_vs_vit": measured, "timed_images": n_timed,
                         "timed_agreement": float((timed_pred == pred[:n_timed]).float().mean())})  # fmt: skip
    uncompile(net)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "gate_sweep.csv")
    save_plot(rows, out / "gate_sweep.png", target_cost)
    pick = {r["split"]: r for r in rows if r["tau"] == chosen}
    ends = {(r["split"], r["point"]): r for r in rows if r["point"] in ("vit", "glsim")}
    return {
        "target_cost": target_cost, "tau": chosen, "val_acc1": pick["val"]["acc1"],
        "val_cost_vs_vit": pick["val"]["cost_vs_vit"], "test_acc1": pick["test"]["acc1"],
        "test_cost_vs_vit": pick["test"]["cost_vs_vit"], "test_second_pass_share": pick["test"]["second_pass_share"],
        "test_measured_cost_vs_vit": pick["test"]["measured_cost_vs_vit"],
        "test_acc1_glsim": ends[("test", "glsim")]["acc1"], "test_acc1_first_pass": ends[("test", "vit")]["acc1"],
        "test_gap_points": 100 * (ends[("test", "glsim")]["acc1"] - pick["test"]["acc1"]),  # goal: <= 0.3
        "device": str(device), "compiled": compile, "csv": str(out / "gate_sweep.csv"),
        "plot": str(out / "gate_sweep.png"),
    }  # fmt: skip


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """One row per (split, tau); floats with 6 significant digits, tau = inf for the always-two-pass point."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in r.items()})


def sweep_from_config(cfg: Any, net: Any, datamodule: Any, out: Path) -> dict[str, Any]:
    """``eval.gate_sweep=true``: the sweep on the datamodule's val and test splits, device and precision as eval's."""
    datamodule.setup("test")
    val_loader = datamodule.val_dataloader()
    if not val_loader:
        raise UserError("eval.gate_sweep=true chooses tau on validation: the dataset has no validation split "
                        f"(dataset.protocol={datamodule.protocol!r}; use dataset.protocol=val)")  # fmt: skip
    gpu = cfg.trainer.get("accelerator") in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    precision = str(cfg.trainer.get("precision"))
    dtype = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}.get(precision)
    autocast = (lambda: torch.autocast("cuda", dtype=dtype)) if gpu and dtype is not None else None
    target = cfg.method.get("gate_target_cost")
    if target is None:
        raise UserError("eval.gate_sweep=true needs method.gate_target_cost (cost x one ViT pass, e.g. 1.5)")
    return run_gate_sweep(
        net, val_loader, datamodule.test_dataloader(), int(datamodule.image_size), out, target_cost=float(target),
        points=int(cfg.eval.gate_sweep_points), timing_batches=int(cfg.eval.gate_timing_batches),
        repeats=int(cfg.eval.gate_timing_repeats), device=device, autocast=autocast,
        compile=bool(cfg.eval.get("gate_compile", False)),
    )  # fmt: skip


def vit_pass(net: Any, images: Tensor) -> Tensor:
    """The unit of cost: one plain ViT pass, encoder + first-pass head. images (B, 3, H, W) -> logits (B, K)."""
    compiled = net.__dict__.get("compiled_vit_pass")
    if compiled is not None:
        return compiled(images)
    return net.gate_head(net.encoder.forward_features(images)[:, 0])


def compile_stages(net: Any, backend: str = "inductor") -> None:
    """Compile a gated GLSim's stages: the first pass static (same batch size every call), the second pass
    ``dynamic=True`` (its batch is the number of unsure images, different at every batch and tau: one graph for all
    sizes instead of a recompile per size). The confidence split, gather and scatter between them stay eager: the
    ``nonzero`` there is a graph break by nature. Instance attributes shadow the methods; :func:`uncompile` undoes it.
    The reference :func:`vit_pass` is compiled alike, so measured cost ratios compare compiled with compiled.
    """
    net.first_pass = torch.compile(net.first_pass, dynamic=False, backend=backend)
    net.second_pass = torch.compile(net.second_pass, dynamic=True, backend=backend)
    reference = lambda x: net.gate_head(net.encoder.forward_features(x)[:, 0])
    net.compiled_vit_pass = torch.compile(reference, dynamic=False, backend=backend)


def uncompile(net: Any) -> None:
    """Back to the eager methods after :func:`compile_stages`."""
    for name in ("first_pass", "second_pass", "compiled_vit_pass"):
        net.__dict__.pop(name, None)
