"""Stage 1 of ``python -m glsim_pl.reproduce`` under the VPT FGVC protocol: the LR x weight-decay grid, its choice
rule and its table (the official protocol's LR-only grid stays in the command).

VPT (Jia et al., ECCV 2022; its ``tune_fgvc.py``) searches base learning rates scaled by the batch size,
``lr = base_lr x effective batch / 256``, times weight decays, on its train/val split; the best val top-1 picks
(ties -> the smaller LR, then the smaller weight decay); the final runs train on train+val and report test.
"""

from __future__ import annotations

from typing import Any

from glsim_pl.errors import UserError

__all__ = ["VPT_LR_GRID", "VPT_WD_GRID", "best_point", "choose_lr_wd", "lr_wd_section", "scaled_lr"]

# VPT's grid for linear probing and prompts (tune_fgvc.py); full fine-tuning there searches {0.005, 0.001, 0.0005,
# 0.0001}: pass it with --lr-grid
VPT_LR_GRID = (50.0, 25.0, 10.0, 5.0, 2.5, 1.0, 0.5, 0.25, 0.1, 0.05)
VPT_WD_GRID = (0.01, 0.001, 0.0001, 0.0)


def scaled_lr(base_lr: float, effective_batch: int) -> float:
    """VPT's rule: a base LR is per 256 images of effective batch."""
    return base_lr * effective_batch / 256


def best_point(results: dict[Any, float], runs: str = "LR") -> Any:
    """The grid point (an LR, or an (lr, weight decay) tuple) with the best validation top-1; ties -> the smallest
    point (the smaller LR, then the smaller decay). ``runs`` names the grid in the error when every run failed."""
    if not results:
        raise UserError(f"stage 1 gave no validation result (every {runs} run failed); see the runs' train.log")
    best = max(results.values())
    return min(point for point, acc in results.items() if acc == best)


def choose_lr_wd(results: dict[tuple[float, float], float]) -> tuple[float, float]:
    """The (lr, weight decay) with the best validation top-1; ties -> the smaller LR, then the smaller decay."""
    return best_point(results, "LR / weight-decay")


def lr_wd_section(chosen: dict[str, dict[str, Any]], lr_grid: tuple[float, ...], wd_grid: tuple[float, ...],
                  rule: str, name: str) -> list[str]:  # fmt: skip
    """Markdown lines: per experiment, val top-1 of every (base LR, weight decay) run and the chosen pair."""
    lines = ["", f"## Learning rate and weight decay (VPT protocol, stage 1: VPT train / val split, best {rule}, "
             "ties -> smaller LR, then smaller weight decay)", ""]  # fmt: skip
    for experiment, c in chosen.items():
        batch = c.get("effective_batch")
        lines += [f"### {experiment}", ""]
        if c["stage1"] is None:
            lines += [f"Stage 1 skipped: lr {c['lr']}, weight decay {c['weight_decay']} given.", ""]
            continue
        lines += [f"Effective batch {batch}: lr = base lr x {batch} / 256. Final runs: VPT train + val, test.", ""]
        lines += ["| base lr (lr) | " + " | ".join(f"wd {wd}" for wd in wd_grid) + " |",
                  "|---|" + "---|" * len(wd_grid)]  # fmt: skip
        for base in lr_grid:
            lr = scaled_lr(base, batch)
            cells = [c["stage1"].get(f"{lr},{wd}") for wd in wd_grid]
            lines.append(f"| {base} ({lr:g}) | " + " | ".join("—" if v is None else f"{100 * v:.2f}" for v in cells)
                         + " |")  # fmt: skip
        lines += ["", f"Chosen: lr {c['lr']:g}, weight decay {c['weight_decay']}.", ""]
    lines.append(f"Every stage-1 run: `{name}_lr.md`; chosen values: `{name}_lr.json`.")
    return lines
