"""A sweep folder -> the table of a paper: ``results/<name>.{md,csv,tex}`` and a figure.

    glsim-aggregate multirun/2026-01-01/12-00-00                       # any sweep (nested sweeps too)
    python -m glsim_pl.aggregate multirun/reproduce/cub --out results --name cub --baseline method=vit

Each training job writes ``<output_dir>/metrics.json`` (``write_run_record``, rank 0): metrics, cost (analytic GFLOPs
per image, fit img/s), wall time, device, git commit, the protocol and the resolved config; a job that fails writes
``failed.json`` with its error line. Jobs that differ only in ``seed`` form one row (mean ± sample std over seeds),
labelled by the settings that differ between rows; Δ top-1 is against the baseline row (``--baseline key=value``;
default: the ``method=vit`` row if there is one). Failed jobs and seeds missing from a row are listed under the table;
the protocol is a column when rows differ in it, a note otherwise. The paper's number (an experiment's ``paper:``
node) is shown for paper rows only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from glsim_pl.errors import UserError
from glsim_pl.plots import check_formats, save_figure
from glsim_pl.plots.cost import reproduction_figure
from glsim_pl.results_table import build_rows, render_csv, render_latex, render_markdown, setting_of

__all__ = ["aggregate", "load_jobs", "main", "resolved_config", "write_failure", "write_run_record"]

RECORD = "metrics.json"
FAILURE = "failed.json"
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


_OWN_SPLITS = ("ImageFolderDataModule", "CSVDataModule", "SyntheticDataModule")  # no official test set


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
        "test_split": "official test" if ds.get("_target_", "").rsplit(".", 1)[-1] not in _OWN_SPLITS else "test split",
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


def _hydra_job() -> tuple[str | None, list[str]]:
    """(experiment choice, task overrides) of the running Hydra job; (None, []) outside Hydra."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
        return hydra_cfg.runtime.choices.get("experiment"), list(hydra_cfg.overrides.task)
    except ValueError:
        return None, []


def run_cost(cfg: DictConfig, trainer: Any, fit_seconds: float | None) -> dict[str, Any]:
    """Analytic GFLOPs per image of the trained classifier and the fit's measured images per second."""
    from glsim_pl.bench.model import model_gflops

    cost: dict[str, Any] = {}
    net = getattr(trainer.lightning_module, "net", None) if trainer.lightning_module is not None else None
    if net is not None:
        cost["gflops"] = round(model_gflops(net, int(cfg.dataset.image_size)), 4)
    if fit_seconds and trainer.global_step:
        images = trainer.global_step * protocol(cfg)["effective_batch_size"]
        cost["fit_img_s"] = round(images / fit_seconds, 2)
    return cost


def write_failure(cfg: DictConfig, exc: BaseException) -> Path | None:
    """``<output_dir>/failed.json``: the job's overrides and its error line, for the aggregation's list of failures."""
    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0)) or 0) != 0:
        return None
    from glsim_pl.errors import user_message

    text = user_message(exc) if isinstance(exc, UserError) else str(exc)
    lines = [line for line in text.strip().splitlines() if line.strip()]
    error = f"{type(exc).__name__}: {lines[0 if isinstance(exc, UserError) else -1] if lines else ''}".rstrip(": ")
    experiment, overrides = _hydra_job()
    path = Path(cfg.paths.output_dir) / FAILURE
    try:  # never hide the job's own error behind one of writing this file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"experiment": experiment, "seed": cfg.get("seed"), "overrides": overrides,
                                    "error": error}, indent=2))  # fmt: skip
    except OSError:
        return None
    return path


def write_run_record(
    cfg: DictConfig, trainer: Any, metrics: dict[str, Any], wall_time_s: float, fit_seconds: float | None = None
) -> Path | None:
    """Write ``<output_dir>/metrics.json`` for the aggregation (rank 0 only); returns its path."""
    if not trainer.is_global_zero:
        return None
    out = Path(cfg.paths.output_dir)
    experiment, overrides = _hydra_job()
    config = resolved_config(cfg)
    record = {
        "experiment": experiment,
        "task_name": cfg.get("task_name"),
        "seed": cfg.get("seed"),
        "overrides": overrides,
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, int | float)},
        "cost": run_cost(cfg, trainer, fit_seconds),
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
def load_jobs(
    sweep_dir: Path, metric: str = METRIC, include: Sequence[str] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(finished jobs, failed jobs) under ``sweep_dir`` at any depth. A job folder has ``metrics.json``, or Hydra's
    ``.hydra/overrides.yaml`` without it (failed: ``failed.json``'s error line, or killed / still running).
    ``include``: only job folders below a folder of one of these names (``seeds`` of ``reproduce``)."""
    if not sweep_dir.is_dir():
        raise UserError(f"{sweep_dir}: no such directory (expected a Hydra multirun folder)")
    folders = {p.parent for p in sweep_dir.rglob(RECORD)} | {p.parent.parent for p in sweep_dir.rglob("overrides.yaml")
                                                            if p.parent.name == ".hydra"}  # fmt: skip
    if include:
        folders = {f for f in folders if set(f.relative_to(sweep_dir).parts) & set(include)}
    done, failed = [], []
    for folder in sorted(folders, key=_job_order):
        path = folder / RECORD
        if path.is_file():
            try:
                job = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}: not valid JSON ({exc})") from None
            job["dir"] = str(folder)
            if metric in job.get("metrics", {}):
                done.append(job)
                continue
            job["error"] = f"no '{metric}' in its metrics.json (did the job finish its test stage?)"
            failed.append(job)
            continue
        failure = folder / FAILURE
        unknown = {"error": "no metrics.json (killed, or still running)"}
        job = json.loads(failure.read_text()) if failure.is_file() else unknown
        if not job.get("overrides"):
            overrides = folder / ".hydra" / "overrides.yaml"
            job["overrides"] = list(OmegaConf.load(overrides)) if overrides.is_file() else []
        job["dir"] = str(folder)
        failed.append(job)
    if not done and not failed:
        raise UserError(f"{sweep_dir}: no {RECORD} found (jobs still running, or they crashed before testing)")
    if not done:
        raise UserError(f"{sweep_dir}: no job has '{metric}' ({len(failed)} failed: {failed[0]['error']})")
    cache: dict[str, float | None] = {}
    for job in done:
        if (job.get("cost") or {}).get("gflops") is None:
            job["cost"] = {**(job.get("cost") or {}), "gflops": _gflops_from_config(job, cache)}
    return done, failed


def _gflops_from_config(job: dict[str, Any], cache: dict[str, float | None]) -> float | None:
    """Records without a ``cost`` entry: build the classifier from the job's config (no weights) and count."""
    from glsim_pl.bench.model import model_gflops
    from glsim_pl.models import build_classifier

    config = job.get("config") or {}
    model, method, dataset = config.get("model") or {}, dict(config.get("method") or {}), config.get("dataset") or {}
    key = json.dumps([model, method, dataset.get("image_size"), dataset.get("num_classes")], sort_keys=True)
    if key not in cache:
        try:
            kwargs = {k: v for k, v in {**model, **method}.items() if not k.startswith("gate") and k != "method"}
            kwargs = {k: v for k, v in kwargs.items() if k in _CLASSIFIER_KEYS}
            net = build_classifier(method.get("method", "glsim"), num_classes=int(dataset["num_classes"]),
                                   img_size=int(dataset["image_size"]), **kwargs)  # fmt: skip
            cache[key] = round(model_gflops(net, int(dataset["image_size"])), 4)
        except Exception:  # an old or partial record: the table says n/a
            cache[key] = None
    return cache[key]


_CLASSIFIER_KEYS = ("backbone", "top_o", "sim_metric", "box_rule", "aggregator_layers", "selector", "backbone_kwargs",
                    "layer_norm_eps", "drop_path_uniform")  # fmt: skip


def _job_order(folder: Path) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in folder.parts)


def missing_seeds(done: list[dict[str, Any]], failed: list[dict[str, Any]]) -> list[str]:
    """Seeds that some row has and another row lacks (neither finished nor failed): a sweep that stopped early."""
    settings = [(setting_of(job), job.get("seed")) for job in [*done, *failed]]
    common = {k: v for k, v in settings[0][0].items() if all(s.get(k) == v for s, _ in settings)}
    rows: dict[str, set] = {}
    for setting, seed in settings:
        key = " ".join(f"{k}={v}" for k, v in setting.items() if k not in common) or "(as configured)"
        rows.setdefault(key, set()).add(seed)
    seeds = set().union(*rows.values())
    return [f"{key} seed={seed}" for key, have in rows.items() for seed in sorted(seeds - have, key=str)]


def _name(done: list[dict[str, Any]], sweep_dir: Path) -> str:
    experiments = {j.get("experiment") for j in done}
    tasks = {j.get("task_name") for j in done}
    if len(experiments) == 1 and None not in experiments:
        return str(experiments.pop())
    return str(tasks.pop()) if len(tasks) == 1 and None not in tasks else sweep_dir.resolve().name


def aggregate(sweep_dir: str | Path, out_dir: str | Path = "results", name: str | None = None,
              formats: Sequence[str] = ("png",), metric: str = METRIC, baseline: str | None = None,
              quiet: bool = False, include: Sequence[str] | None = None) -> list[Path]:  # fmt: skip
    """Write ``<out_dir>/<name>.md``, ``.csv``, ``.tex`` and the figure (one per format in ``formats``; none when
    empty); print the Markdown table; return the paths. ``name``: default the common experiment, else the task name,
    else the folder's name."""
    formats = check_formats(formats) if formats else []
    sweep_dir = Path(sweep_dir)
    done, failed = load_jobs(sweep_dir, metric, include)
    missing = missing_seeds(done, failed)
    keys, rows = build_rows(done, metric, baseline)
    name = name or _name(done, sweep_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = render_markdown(keys, rows, failed, missing, metric)
    (out / f"{name}.md").write_text(_report(name, table, done, sweep_dir))
    (out / f"{name}.csv").write_text(render_csv(keys, rows))
    (out / f"{name}.tex").write_text(render_latex(keys, rows))
    written = [out / f"{name}.{ext}" for ext in ("md", "csv", "tex")]
    if formats:
        written += save_figure(reproduction_figure(name, rows, metric), out / name, formats)
    if not quiet:
        print(f"{name}: {len(done)} jobs in {len(rows)} rows from {sweep_dir}\n\n{table}")
    return written


def _report(name: str, table: str, done: list[dict[str, Any]], source: Path) -> str:
    """The Markdown file: the table, then every job, then the resolved config of the first job."""
    lines = [f"# {name}", "", f"Aggregated from `{source}` ({len(done)} finished jobs).", "", table]
    sources = {(j.get("paper") or {}).get("source") for j in done} - {None}
    lines += [f"Paper: {s}." for s in sorted(sources)]
    lines += ["", "## Jobs", "", "| job | seed | test top-1 (%) | wall time (s) | device | git commit |"]
    lines.append("|---|---|---|---|---|---|")
    for j in done:
        acc = j["metrics"].get(METRIC)
        lines.append(f"| {j['dir']} | {j.get('seed')} | {'n/a' if acc is None else f'{100 * acc:.2f}'} "
                     f"| {j.get('wall_time_s')} | {j.get('device')} | {j.get('git_commit')} |")  # fmt: skip
    config = OmegaConf.to_yaml(OmegaConf.create(done[0].get("config", {})))
    lines += ["", "## Resolved config (first job)", "", "```yaml", config.rstrip(), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="glsim-aggregate", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", help="a Hydra multirun folder (jobs with metrics.json below it, any depth)")
    parser.add_argument("--out", default="results", help="where <name>.md/.csv/.tex and the figure go")
    parser.add_argument("--name", default=None, help="file name (default: the experiment, task or folder name)")
    parser.add_argument("--metric", default=METRIC, help=f"the accuracy of the rows (default: {METRIC})")
    parser.add_argument("--baseline", default=None, help="key=value ...: the baseline row (default: method=vit)")
    parser.add_argument("--formats", default="png", help="figure formats, comma-separated: png,pdf,svg ('' = none)")
    args = parser.parse_args(argv)
    try:
        formats = check_formats(args.formats) if args.formats else []
        for path in aggregate(args.sweep_dir, args.out, args.name, formats, args.metric, args.baseline):
            print(f"wrote {path}")
    except UserError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
