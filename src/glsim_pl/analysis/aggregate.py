"""Read the run records of a sweep and turn them into one table (mean ± std over seeds, cost, Δ vs the baseline)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from glsim_pl.analysis.run_record import FAILURE, RECORD
from glsim_pl.analysis.table import build_rows, one_per_seed, render_csv, render_latex, render_markdown, setting_of
from glsim_pl.errors import UserError
from glsim_pl.plots import check_formats, save_figure
from glsim_pl.plots.cost import reproduction_figure

METRIC = "test/acc1"


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
            job["written"] = path.stat().st_mtime  # which of two results of one seed is the newer
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
    from glsim_pl.analysis.cost import model_gflops
    from glsim_pl.models import build_classifier, classifier_keywords

    config = job.get("config") or {}
    model, method, dataset = config.get("model") or {}, dict(config.get("method") or {}), config.get("dataset") or {}
    key = json.dumps([model, method, dataset.get("image_size"), dataset.get("num_classes")], sort_keys=True)
    if key not in cache:
        try:
            kwargs = {k: v for k, v in classifier_keywords({**model, **method}).items() if not k.startswith("gate")}
            kwargs.update(
                pretrained=False, pretrained_file=None, pretrained_head=False, img_size=int(dataset["image_size"])
            )
            net = build_classifier(num_classes=int(dataset["num_classes"]), **{"method": "glsim", **kwargs})
            gflops = model_gflops(net, int(dataset["image_size"]))
            cache[key] = None if gflops is None else round(gflops, 4)
        except Exception:  # an old or partial record: the table says n/a
            cache[key] = None
    return cache[key]


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
              quiet: bool = False, include: Sequence[str] | None = None,
              pair: str | None = None) -> list[Path]:  # fmt: skip
    """Write ``<out_dir>/<name>.md``, ``.csv``, ``.tex`` and the figure (one per format in ``formats``; none when
    empty); print the Markdown table; return the paths. ``name``: default the common experiment, else the task name,
    else the folder's name. ``pair``: ``key=value`` pairs; each row's Δ is against the row with the same other
    settings and these values (``method=vit``: GLSim - ViT per backbone x regime) instead of one baseline."""
    formats = check_formats(formats) if formats else []
    sweep_dir = Path(sweep_dir)
    done, failed = load_jobs(sweep_dir, metric, include)
    done, repeats = one_per_seed(done)  # a seed run twice (re-run, resumed) is one result, not two seeds
    missing = missing_seeds(done, failed)
    keys, rows = build_rows(done, metric, baseline, pair)
    name = name or _name(done, sweep_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = render_markdown(keys, rows, failed, missing, metric, repeats)
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


__all__ = ["METRIC", "aggregate", "load_jobs", "missing_seeds"]
