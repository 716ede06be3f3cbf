"""Cost figures: accuracy vs cost (selectors, GLSim vs ViT), the ``bench model`` chart, reproduction vs the paper.

    python -m glsim_pl.plots.cost glsim_run/eval_metrics.json vit_run/eval_metrics.json --out accuracy_vs_cost

puts several ``python -m glsim_pl.eval`` results (say a GLSim and a ViT checkpoint) on one accuracy-vs-cost plot.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..errors import UserError
from . import FONT, check_formats, ellipsize, new_figure, save_figure

__all__ = ["accuracy_cost_figure", "accuracy_cost_points", "model_cost_figure", "reproduction_figure"]

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


def reproduction_figure(name: str, rows: Sequence[dict[str, Any]]) -> Figure:
    """Our mean ± std over seeds next to the paper's number ± std, one pair of bars per setting (``aggregate``
    rows, values in %); the y axis starts near the lowest value so sub-point differences stay visible."""
    n = len(rows)
    fig, (ax,) = new_figure(max(5.0, 1.4 * n + 2), 4.5)
    idx = np.arange(n)
    ours = [r["acc1_mean"] for r in rows]
    ours_err = [r["acc1_std"] or 0.0 for r in rows]
    paper = [r["paper_acc1"] if r["paper_acc1"] is not None else np.nan for r in rows]
    paper_err = [r["paper_std"] or 0.0 for r in rows]
    ax.bar(idx - 0.2, ours, 0.4, yerr=ours_err, capsize=3, color="tab:blue", label="ours (mean ± std over seeds)")
    ax.bar(idx + 0.2, paper, 0.4, yerr=paper_err, capsize=3, color="tab:gray", label="paper")
    for i, r in enumerate(rows):
        text = f"n={r['n']}" + (f"\nΔ {r['delta']:+.2f}" if r.get("delta") is not None else "")
        ax.annotate(text, (i - 0.2, ours[i] + ours_err[i]), xytext=(0, 3), textcoords="offset points",
                    ha="center", fontsize=FONT - 2)  # fmt: skip
    values = [v for v in [*ours, *paper] if not np.isnan(v)]
    low = max(0.0, min(values) - 5) if values else 0.0
    ax.set_ylim(low, min(100.0, max(values) + 5) if values else 100.0)
    ax.set_xticks(idx, [ellipsize(r["setting"], 30) for r in rows], rotation=20 if n > 3 else 0, fontsize=FONT - 1)
    ax.set_ylabel("test top-1 (%)", fontsize=FONT)
    ax.set_title(f"{name}: reproduction vs paper", fontsize=FONT + 1)
    ax.legend(fontsize=FONT - 1, loc="upper right")  # the y range leaves 5 points of room above the bars
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
