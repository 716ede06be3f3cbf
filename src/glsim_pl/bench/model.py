"""Cost of GLSim vs the plain ViT and of each selector: ``python -m glsim_pl.bench model [options]``.

Measured on the current device in one run: eval throughput at a batch size, bs-1 latency (median), peak memory
(GPU ``max_memory_allocated``; CPU: the process's peak RSS, monotonic over the run), parameters; and the measured
time of each selector's step (scores + box + crop, plus the attention recording it needs) against one encoder pass.
Analytic FLOPs (the official ``calc_flops`` formulas, method.md section 8; N counts the CLS token) at 224/448/768/1024
for ViT-B/16 sit next to them, the paper's Table 1 layout. Writes a Markdown table, CSVs and ``model_cost.png``
(throughput per model, selector FLOPs vs image size).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import torch

from glsim_pl.analysis.cost import measure_cost, selector_flops, vit_flops
from glsim_pl.analysis.timing import median_seconds
from glsim_pl.errors import UserError
from glsim_pl.models import GLSim, build_classifier, crop_and_resize, select_boxes
from glsim_pl.models.attention import capture_attention
from glsim_pl.models.selectors import SelectorInputs, capture_plan, get_selector, head_mean, selector_names
from glsim_pl.plots import check_formats, save_figure
from glsim_pl.plots.cost import model_cost_figure

__all__ = []

SIZES = (224, 448, 768, 1024)


def selector_step_seconds(model: GLSim, x: torch.Tensor, selector: str, repeats: int) -> tuple[float, float]:
    """(one encoder pass, the selector's extra work: recording overhead + scores + box + crop), median seconds."""
    enc = model.encoder
    grid = (x.shape[-2] // model.patch_px, x.shape[-1] // model.patch_px)
    layers, mean_only = capture_plan(selector, len(enc.blocks))
    with torch.inference_mode():
        tokens = enc.forward_features(x)
        t_enc = median_seconds(lambda: enc.forward_features(x), repeats)

        def recorded() -> list[torch.Tensor]:
            with capture_attention(enc, layers, head_mean if mean_only else None) as maps:
                enc.forward_features(x)
            return maps

        t_rec, maps = (median_seconds(recorded, repeats) - t_enc, recorded()) if layers is not None else (0.0, [])

        def step() -> torch.Tensor:
            p = model.num_prefix_tokens
            inputs = SelectorInputs(tokens[:, 0], tokens[:, p:], maps, grid, p, model.sim_metric)
            s = get_selector(selector).scores(inputs)
            return crop_and_resize(x, select_boxes(s, grid, model.patch_px, model.top_o, model.box_rule), x.shape[-2:])

        return t_enc, max(t_rec, 0.0) + median_seconds(step, repeats)


def main(argv: list[str] | None = None) -> None:
    """Print and write the cost table; see ``--help``."""
    p = argparse.ArgumentParser(prog="python -m glsim_pl.bench model", description=__doc__.split("\n")[0])
    p.add_argument("--backbone", default="vit_base_patch16_224", help="timm name (random init)")
    p.add_argument("--backbone-kwargs", default="{}", help="JSON, e.g. '{\"depth\": 2}' for a quick run")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--num-classes", type=int, default=200)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--selectors", default=",".join(selector_names()))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--out", default="bench_results/model", help="folder for model_cost.md/.csv/.png, selector_flops.csv"
    )
    p.add_argument("--formats", default="png", help="figure formats, comma-separated: png,pdf,svg")
    args = p.parse_args(argv)
    try:
        args.formats = check_formats(args.formats)
    except UserError as exc:
        raise SystemExit(f"error: --formats: {exc}") from None
    selectors = [s for s in args.selectors.split(",") if s]
    known = selector_names()
    unknown = set(selectors) - set(known)
    if unknown:
        raise SystemExit(f"error: --selectors: unknown {sorted(unknown)}; expected some of {', '.join(known)}")
    torch.manual_seed(0)
    common = dict(backbone=args.backbone, num_classes=args.num_classes, img_size=args.img_size,
                  backbone_kwargs=json.loads(args.backbone_kwargs) or None)  # fmt: skip
    rows = [{"model": "vit", **measure_cost(build_classifier("vit", **common), args.batch_size, args.img_size,
                                              args.device, args.repeats)}]  # fmt: skip
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=args.device)
    for sel in selectors:
        model = GLSim(**common, selector=sel)
        row = {
            "model": f"glsim[{sel}]",
            **measure_cost(model, args.batch_size, args.img_size, args.device, args.repeats),
        }
        t_enc, t_sel = selector_step_seconds(model, x, sel, args.repeats)
        row.update(
            encoder_pass_ms=t_enc * 1e3, selector_step_ms=t_sel * 1e3, selector_pct_of_encoder=100 * t_sel / t_enc
        )
        rows.append(row)
    _write(rows, Path(args.out), args)


def _write(rows: list[dict[str, Any]], out: Path, args: argparse.Namespace) -> None:
    out.mkdir(parents=True, exist_ok=True)
    keys = ["model", "throughput_img_s", "latency_bs1_ms", "peak_memory_mb", "params_m", "encoder_pass_ms",
            "selector_step_ms", "selector_pct_of_encoder"]  # fmt: skip
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
    lines = [f"device: {rows[0]['device']}, {torch.get_num_threads()} threads; {args.backbone} "
             f"{args.backbone_kwargs}, {args.img_size} px, batch {args.batch_size}, median of {args.repeats}", "",
             "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]  # fmt: skip
    lines += ["| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
    flop_names = ["gls", "rollout", "attn_last", "psm", "psm_transfg", "maws"]
    flops = [{"img": s, "backbone_gflops": vit_flops(s) / 1e9,
              **{f"{n}_mflops": selector_flops(n, s) / 1e6 for n in flop_names}} for s in SIZES]  # fmt: skip
    header = "| selector | " + " | ".join(f"{s} px | %" for s in SIZES) + " |"
    lines += ["", "Analytic selector FLOPs (MFLOPs; % of the ViT-B/16 backbone), calc_flops convention:", "",
              header, "|---|" + "---|---|" * len(SIZES)]  # fmt: skip
    for n in flop_names:
        cells = [f"{f[f'{n}_mflops']:.3g} | {100 * f[f'{n}_mflops'] / (f['backbone_gflops'] * 1e3):.4g}" for f in flops]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    ratio = selector_flops("rollout", 448) / selector_flops("gls", 448)
    lines.append(f"\nrollout / gls FLOPs at 448 px: {ratio:.0f}x (goal >= 100x)")
    gls = next((r for r in rows if r["model"] == "glsim[gls]"), None)
    if gls:
        ok = "meets" if gls["selector_pct_of_encoder"] <= 2 else "misses"
        lines.append(f"gls selector + box + crop: {gls['selector_pct_of_encoder']:.2f}% of one encoder pass "
                     f"({ok} the <= 2% goal)")  # fmt: skip
    text = "\n".join(lines)
    print(text)
    (out / "model_cost.md").write_text(text + "\n")
    for name, data in (("model_cost.csv", rows), ("selector_flops.csv", flops)):
        with (out / name).open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in data for k in r)))
            writer.writeheader()
            writer.writerows(data)
    figures = save_figure(model_cost_figure(rows, flops, flop_names), out / "model_cost", args.formats)
    print(
        f"written: {out / 'model_cost.md'}, {out / 'model_cost.csv'}, {out / 'selector_flops.csv'}, "
        + ", ".join(map(str, figures))
    )


if __name__ == "__main__":
    main()
