"""Seeds -> one result: collect every job's ``metrics.json`` of a sweep into ``results/<experiment>.{md,csv}``.

    python -m glsim_pl.aggregate multirun/2026-01-01/12-00-00            # any sweep
    python -m glsim_pl.aggregate multirun/reproduce/glsim_cub_vit_b16 --out results

Each training job writes ``<output_dir>/metrics.json`` (``write_run_record``, rank 0): test metrics, wall time,
device, git commit, the protocol and the resolved config. Jobs are grouped by experiment (``experiment=...``, else
the task name); inside a group, jobs that differ only in ``seed`` form one row: mean ± sample std of ``test/acc1``
over seeds, with the paper's number (the experiment's ``paper:`` node) beside it, as a table and as a bar chart
(``results/<experiment>.png``; ``--formats png,pdf`` adds PDF).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import subprocess
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from .errors import UserError
from .plots import check_formats, save_figure
from .plots.cost import reproduction_figure

__all__ = ["aggregate", "main", "resolved_config", "write_run_record"]

RECORD = "metrics.json"
METRIC = "test/acc1"


# -- written by every training job ---------------------------------------------------------------------------------
def git_commit(cwd: str | Path | None = None) -> str:
    """``HEAD``'s sha of the package's checkout (``-dirty`` when tracked files changed), or ``unknown``."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=cwd, capture_output=True, text=True, timeout=10)
        sha = run("rev-parse", "HEAD")
        if sha.returncode:
            return "unknown"
        dirty = run("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return sha.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(trainer: Any) -> str:
    """``cpu x2`` / ``NVIDIA H100 80GB HBM3 x8``: the accelerator of this run and how many processes."""
    root = trainer.strategy.root_device
    name = torch.cuda.get_device_name(root) if root.type == "cuda" else root.type
    return f"{name} x{trainer.world_size}"


def protocol(cfg: DictConfig) -> dict[str, Any]:
    """The evaluation protocol in words: which split trains, which selects, TTA, epochs, sizes."""
    ds = cfg.dataset
    paper = ds.get("protocol", "val") == "paper"
    accumulate = int(cfg.trainer.get("accumulate_grad_batches") or 1)
    devices = cfg.trainer.get("devices", 1)
    world = (devices if isinstance(devices, int) and devices > 0 else 1) * int(cfg.trainer.get("num_nodes") or 1)
    return {
        "train_split": "official train (all of it)" if paper else f"first {ds.get('train_fraction')} of train/class",
        "selection_split": "none (final weights are tested)" if paper else "val (rest of train), best val/acc1",
        "test_split": "official test",
        "tta": "off",  # evaluation is a single centre crop; there is no test-time augmentation in this package
        "epochs": int(cfg.trainer.max_epochs),
        "image_size": int(ds.image_size),
        "effective_batch_size": int(ds.batch_size) * accumulate * world,
    }


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's config as plain containers, interpolations resolved where they can be (``hydra`` node dropped)."""
    plain = {k: v for k, v in cfg.items() if k != "hydra"}
    try:
        return OmegaConf.to_container(OmegaConf.create(plain), resolve=True)
    except Exception:  # an interpolation that only Hydra's runtime resolves: keep it unresolved
        return OmegaConf.to_container(OmegaConf.create(plain), resolve=False)


def write_run_record(cfg: DictConfig, trainer: Any, metrics: dict[str, Any], wall_time_s: float) -> Path | None:
    """Write ``<output_dir>/metrics.json`` for the aggregation (rank 0 only); returns its path."""
    if not trainer.is_global_zero:
        return None
    out = Path(cfg.paths.output_dir)
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
        experiment, overrides = hydra_cfg.runtime.choices.get("experiment"), list(hydra_cfg.overrides.task)
    except ValueError:  # called outside Hydra
        experiment, overrides = None, []
    config = resolved_config(cfg)
    record = {
        "experiment": experiment,
        "task_name": cfg.get("task_name"),
        "seed": cfg.get("seed"),
        "overrides": overrides,
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, int | float)},
        "wall_time_s": round(wall_time_s, 2),
        "device": device_name(trainer),
        "git_commit": git_commit(),
        "protocol": protocol(cfg),
        "paper": config.get("paper"),
        "config": config,
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / RECORD
    path.write_text(json.dumps(record, indent=2, default=str))
    return path


# -- read back by the aggregation ----------------------------------------------------------------------------------
def load_runs(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every job record under ``sweep_dir`` (any depth), in job order."""
    if not sweep_dir.is_dir():
        raise UserError(f"{sweep_dir}: no such directory (expected a Hydra multirun folder)")
    runs = []
    for path in sorted(sweep_dir.rglob(RECORD)):
        try:
            run = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: not valid JSON ({exc})") from None
        if METRIC not in run.get("metrics", {}):
            raise UserError(f"{path}: no '{METRIC}' in 'metrics' (did the job finish its test stage?)")
        run["dir"] = str(path.parent)
        runs.append(run)
    if not runs:
        raise UserError(f"{sweep_dir}: no {RECORD} found (jobs still running, or they crashed before testing)")
    return runs


def _setting(run: dict[str, Any]) -> str:
    """The overrides that define a row: everything but the seed (and output folders)."""
    skip = ("seed=", "experiment=", "hydra.", "paths.")
    return " ".join(o for o in run.get("overrides", []) if not o.lstrip("+~").startswith(skip)) or "(as configured)"


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f}"


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per setting: seeds, mean/std of test top-1 in %, the paper's number and the protocol."""
    by_setting: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        by_setting[_setting(run)].append(run)
    rows = []
    for setting, group in by_setting.items():
        mean, std = _mean_std([100.0 * r["metrics"][METRIC] for r in group])
        paper = group[0].get("paper") or {}
        rows.append({
            "setting": setting,
            "n": len(group),
            "seeds": " ".join(str(r.get("seed")) for r in group),
            "acc1_mean": round(mean, 4),
            "acc1_std": None if std is None else round(std, 4),
            "paper_acc1": paper.get("acc1"),
            "paper_std": paper.get("std"),
            "delta": None if paper.get("acc1") is None else round(mean - paper["acc1"], 4),
            **group[0].get("protocol", {}),
            "git_commit": " ".join(sorted({r.get("git_commit", "unknown") for r in group})),
            "device": " ".join(sorted({r.get("device", "unknown") for r in group})),
            "wall_time_s": round(sum(r.get("wall_time_s", 0.0) for r in group), 1),
        })  # fmt: skip
    return rows


def render_markdown(name: str, rows: list[dict[str, Any]], runs: list[dict[str, Any]], source: Path) -> str:
    """The human-readable result: the table, the protocol, every job, and the resolved config of the first job."""
    paper_src = (runs[0].get("paper") or {}).get("source", "")
    lines = [f"# {name}", "", f"Aggregated from `{source}` ({len(runs)} jobs).", ""]
    lines += ["| setting | seeds | test top-1 (%) | paper (%) | Δ |", "|---|---|---|---|---|"]
    for r in rows:
        delta = f"{r['delta']:+.2f}" if r["delta"] is not None else "n/a"
        lines.append(f"| {r['setting']} | {r['seeds']} | {_pm(r['acc1_mean'], r['acc1_std'])} "
                     f"| {_pm(r['paper_acc1'], r['paper_std'])} | {delta} |")  # fmt: skip
    if paper_src:
        lines += ["", f"Paper: {paper_src}."]
    lines += ["", "## Protocol", ""]
    for key, value in runs[0].get("protocol", {}).items():
        lines.append(f"- {key.replace('_', ' ')}: {value}")
    lines += ["", "## Jobs", "", "| job | seed | test top-1 (%) | wall time (s) | device | git commit |"]
    lines.append("|---|---|---|---|---|---|")
    for r in runs:
        lines.append(f"| {r['dir']} | {r.get('seed')} | {100 * r['metrics'][METRIC]:.2f} | {r.get('wall_time_s')} "
                     f"| {r.get('device')} | {r.get('git_commit')} |")  # fmt: skip
    config = OmegaConf.to_yaml(OmegaConf.create(runs[0].get("config", {})))
    lines += ["", "## Resolved config (first job)", "", "```yaml", config.rstrip(), "```", ""]
    return "\n".join(lines)


def render_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def aggregate(sweep_dir: str | Path, out_dir: str | Path = "results", name: str | None = None,
              formats: Sequence[str] = ("png",)) -> list[Path]:  # fmt: skip
    """Write ``<out_dir>/<experiment>.md``, ``.csv`` and the figure (ours ± std beside the paper's number, in each
    of ``formats``; none when empty) per experiment found under ``sweep_dir``; returns the paths."""
    formats = check_formats(formats) if formats else []
    sweep_dir = Path(sweep_dir)
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in load_runs(sweep_dir):
        groups[name or run.get("experiment") or run.get("task_name") or sweep_dir.name].append(run)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for group_name, runs in groups.items():
        rows = summarize(runs)
        (out / f"{group_name}.md").write_text(render_markdown(group_name, rows, runs, sweep_dir))
        (out / f"{group_name}.csv").write_text(render_csv(rows))
        written += [out / f"{group_name}.md", out / f"{group_name}.csv"]
        if formats:
            written += save_figure(reproduction_figure(group_name, rows), out / group_name, formats)
        for r in rows:
            print(f"{group_name} [{r['setting']}]: test top-1 {_pm(r['acc1_mean'], r['acc1_std'])} % over {r['n']} "
                  f"seed(s); paper {_pm(r['paper_acc1'], r['paper_std'])}")  # fmt: skip
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m glsim_pl.aggregate", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", help="a Hydra multirun folder (jobs with metrics.json below it)")
    parser.add_argument("--out", default="results", help="where <experiment>.md/.csv go (default: results)")
    parser.add_argument("--name", default=None, help="file name for all jobs (default: the experiment name)")
    parser.add_argument("--formats", default="png", help="figure formats, comma-separated: png,pdf,svg ('' = none)")
    args = parser.parse_args(argv)
    try:
        for path in aggregate(args.sweep_dir, args.out, args.name, check_formats(args.formats) if args.formats else []):
            print(f"wrote {path}")
    except UserError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
