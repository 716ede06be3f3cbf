"""Cost figures: accuracy vs cost (selectors, GLSim vs ViT), the ``bench model`` chart, reproduction vs the paper.

    python -m glsim_pl.plots.cost glsim_run/eval_metrics.json vit_run/eval_metrics.json --out accuracy_vs_cost

puts several ``python -m glsim_pl.eval`` results (say a GLSim and a ViT checkpoint) on one accuracy-vs-cost plot.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from glsim_pl.errors import UserError
from glsim_pl.plots import FONT, check_formats, new_figure, save_figure

__all__ = ["accuracy_cost_figure", "accuracy_cost_points", "model_cost_figure", "reproduction_figure", "save_plot"]

COST_AXES = {"gflops": "analytic GFLOPs per image", "throughput_img_s": "measured throughput (images/s)"}


def accuracy_cost_points(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``eval_metrics.json`` dicts -> one point per model, or per selector where ``eval.localization`` compared them.

    Returns:
        rows ``label, method, acc1`` (%), ``gflops`` (analytic, per image) and ``throughput_img_s`` (measured, or
        None: measured for the checkpoint's own selector only).
    """
    points = []
    for res in results:
        method, own = res.get("method", "?"), res.get("selector")
        throughput = (res.get("cost") or {}).get("throughput_img_s")
        per_selector = res.get("localization") or {}
        if per_selector:
            for sel, v in per_selector.items():
                measured = throughput if sel == own else None
                points.append({"label": f"{method}[{sel}]", "method": method, "acc1": 100 * v["acc1"],
                               "gflops": v.get("gflops"), "throughput_img_s": measured})  # fmt: skip
        else:
            label = f"{method}[{own}]" if own else method
            points.append({"label": label, "method": method, "acc1": 100 * res["test/acc1"],
                           "gflops": res.get("gflops"), "throughput_img_s": throughput})  # fmt: skip
    return points


def accuracy_cost_figure(points: Sequence[dict[str, Any]], x: str = "gflops") -> Figure:
    """Top-1 (%) against ``x`` (``gflops`` or ``throughput_img_s``), one labelled marker per point; ViT points as
    squares, GLSim as circles. Points without that cost are left out (named in the title)."""
    if x not in COST_AXES:
        raise UserError(f"cost axis {x!r}: expected one of {', '.join(COST_AXES)}")
    shown = [p for p in points if p.get(x) is not None]
    fig, (ax,) = new_figure(6.5, 4.5)
    for p in shown:
        marker, color = ("s", "tab:gray") if p["method"] == "vit" else ("o", "tab:blue")
        ax.scatter(p[x], p["acc1"], marker=marker, color=color, s=36, zorder=3)
        ax.annotate(p["label"], (p[x], p["acc1"]), xytext=(4, 4), textcoords="offset points", fontsize=FONT - 2)
    ax.set_xlabel(COST_AXES[x], fontsize=FONT)
    ax.set_ylabel("test top-1 (%)", fontsize=FONT)
    missing = len(points) - len(shown)
    note = f" ({missing} without {x} not shown)" if missing else ""
    ax.set_title(f"Accuracy vs cost{note}", fontsize=FONT + 1)
    ax.grid(alpha=0.3)
    ax.margins(0.15)
    return fig


def model_cost_figure(rows: Sequence[dict[str, Any]], flops: Sequence[dict[str, Any]],
                      selectors: Sequence[str]) -> Figure:  # fmt: skip
    """``bench model`` results: measured throughput per model (ViT vs GLSim[selector]) and the selectors'
    analytic MFLOPs against image size (log scale), the paper's Table 1 as a chart."""
    fig, (left, right) = new_figure(11, 4.2, ncols=2)
    names = [r["model"] for r in rows]
    colors = ["tab:gray" if n == "vit" else "tab:blue" for n in names]
    left.barh(range(len(rows)), [r["throughput_img_s"] for r in rows], color=colors)
    left.set_yticks(range(len(rows)), names, fontsize=FONT - 1)
    left.invert_yaxis()
    left.set_xlabel(f"throughput (images/s, batch {rows[0]['batch_size']}, {rows[0]['device']})", fontsize=FONT)
    left.set_title("Measured eval throughput", fontsize=FONT + 1)
    sizes = [f["img"] for f in flops]
    for name in selectors:
        values = [f[f"{name}_mflops"] for f in flops]
        if any(v > 0 for v in values):
            right.plot(sizes, values, marker="o", label=name)
    right.plot(sizes, [1e3 * f["backbone_gflops"] for f in flops], color="black", linestyle="--",
               label="ViT-B/16 backbone")  # fmt: skip
    right.set_xscale("log", base=2)
    right.set_yscale("log")
    right.set_xticks(sizes, [str(s) for s in sizes])
    right.set_xlabel("image size (px)", fontsize=FONT)
    right.set_ylabel("MFLOPs (analytic)", fontsize=FONT)
    right.set_title("Selector cost vs image size (ViT-B/16)", fontsize=FONT + 1)
    right.legend(fontsize=FONT - 2)
    right.grid(alpha=0.3, which="both")
    return fig


def reproduction_figure(name: str, rows: Sequence[dict[str, Any]], metric: str = "test/acc1") -> Figure:
    """One horizontal bar per row (``glsim_pl.analysis.table`` rows, values in %): mean ± std over seeds, the paper's
    number ± std beside it only where the row is a paper row. Row labels sit on the y axis, wrapped, never cut; the
    x range contains every bar's error bar; the legend lists only what was drawn."""
    n = len(rows)
    labels = [textwrap.fill(r["setting"], 28, break_long_words=False, break_on_hyphens=False) for r in rows]
    height = max(2.4, 0.55 * n + 0.25 * sum(label.count("\n") for label in labels) + 1.2)
    fig, (ax,) = new_figure(6.0, height)
    idx = np.arange(n)[::-1]  # first row at the top
    ours = np.array([np.nan if r["acc1_mean"] is None else r["acc1_mean"] for r in rows], dtype=float)
    ours_err = np.array([r["acc1_std"] or 0.0 for r in rows], dtype=float)
    papers = [i for i, r in enumerate(rows) if r.get("paper_acc1") is not None]
    bar = 0.38 if papers else 0.6
    shift = bar / 2 if papers else 0.0
    ax.barh(idx + shift, ours, bar, xerr=ours_err, capsize=3, color="tab:blue", label="ours (mean ± std over seeds)")
    ends = [*(ours - ours_err), *(ours + ours_err)]
    if papers:
        paper = np.array([rows[i]["paper_acc1"] for i in papers], dtype=float)
        paper_err = np.array([rows[i].get("paper_std") or 0.0 for i in papers], dtype=float)
        ax.barh(idx[papers] - shift, paper, bar, xerr=paper_err, capsize=3, color="tab:gray", label="paper")
        ends += [*(paper - paper_err), *(paper + paper_err)]
    for i, r in enumerate(rows):
        if np.isnan(ours[i]):
            continue
        delta = "baseline" if r.get("baseline") else (f"Δ {r['delta']:+.2f}" if r.get("delta") is not None else "")
        text = f"{ours[i]:.2f} (n={r['n']})" + (f", {delta}" if delta else "")
        ax.annotate(text, (ours[i] + ours_err[i], idx[i] + shift), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize=FONT - 2)  # fmt: skip
    finite = [v for v in ends if np.isfinite(v)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 100.0)
    span = max(high - low, 1.0)
    ax.set_xlim(max(0.0, low - 0.15 * span), high + 0.45 * span)  # room on the right for the value labels
    ax.set_yticks(idx, labels, fontsize=FONT - 1)
    ax.set_xlabel(f"{metric} (%)", fontsize=FONT)
    ax.set_title(name, fontsize=FONT + 1)
    fig.legend(fontsize=FONT - 1, loc="outside lower center", ncols=2)  # below the axes: never over a bar
    return fig


def main(argv: list[str] | None = None) -> None:
    """Several eval_metrics.json -> one accuracy-vs-cost figure."""
    p = argparse.ArgumentParser(prog="python -m glsim_pl.plots.cost", description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", help="eval_metrics.json files written by python -m glsim_pl.eval")
    p.add_argument("--out", default="accuracy_vs_cost", help="output path without extension")
    p.add_argument("--x", default="gflops", choices=list(COST_AXES), help="cost axis")
    p.add_argument("--formats", default="png", help="comma-separated: png,pdf,svg")
    args = p.parse_args(argv)
    try:
        results = []
        for path in map(Path, args.results):
            if not path.is_file():
                raise UserError(f"{path}: no such file (expected an eval_metrics.json from python -m glsim_pl.eval)")
            results.append(json.loads(path.read_text()))
        written = save_figure(accuracy_cost_figure(accuracy_cost_points(results), args.x), Path(args.out),
                              check_formats(args.formats))  # fmt: skip
    except (UserError, json.JSONDecodeError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print("wrote " + ", ".join(map(str, written)))


if __name__ == "__main__":
    main()


def save_plot(rows: list[dict[str, Any]], path: Path, target_cost: float) -> None:
    """Top-1 vs cost (x one ViT pass), val and test; the plain-ViT, always-two-pass and chosen points marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 3.6), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for split, style in (("val", "o--"), ("test", "s-")):
        pts = sorted((r["cost_vs_vit"], r["acc1"]) for r in rows if r["split"] == split)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, ms=3, lw=1, label=split)
    marks = {"vit": ("first pass only (tau=0)", "tab:red"), "glsim": ("always two passes", "tab:green"),
             "chosen": ("tau chosen on val", "black")}  # fmt: skip
    for point, (label, color) in marks.items():
        sel = [r for r in rows if r["point"] == point and r["split"] == "test"]
        if sel:
            ax.plot([sel[0]["cost_vs_vit"]], [sel[0]["acc1"]], "*", ms=10, color=color, label=f"{label} (test)")
    ax.axvline(target_cost, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("cost (analytic FLOPs, x one ViT pass)", fontsize=8)
    ax.set_ylabel("top-1", fontsize=8)
    ax.set_title("adaptive GLSim: accuracy vs cost over the gate threshold", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.savefig(path)
