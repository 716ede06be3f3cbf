"""The official protocol in one command: the LR on validation, then the seeds on train/test at that LR, one table.

    python -m glsim_pl.reproduce cub                         # = make reproduce-cub
    python -m glsim_pl.reproduce cub --lr 0.01               # skip stage 1 (= make reproduce-cub LR=0.01)
    python -m glsim_pl.reproduce --experiments smoke_reproduce --name smoke -- trainer.max_epochs=1
    python -m glsim_pl.reproduce --cost                      # GPU-hours per row (the estimate of docs/reproduction.md)
    python -m glsim_pl.reproduce --protocol vpt --experiments vit_cub_vit_b16 -- finetune=linear   # the VPT protocol

For each experiment of the row (``glsim_<row>_vit_b16`` and its baseline ``vit_<row>_vit_b16``):

1. stage 1, the official LR grid {0.03, 0.01, 0.003, 0.001} on train/val (``dataset.protocol=val``: the first 80 % of
   each class's train images train, the rest validate; no test), seed = the first seed; the best validation top-1
   after the last epoch (``val/acc1``, the official rule: it validates once, at the end) picks the LR, ties go to the
   smaller LR; ``--select best`` picks by the best epoch's (``val/acc1_best``) instead;
2. stage 2, seeds 1, 10, 100 at that LR with the experiment's own protocol (``paper``: all of train, test once).

``--protocol vpt`` (the VPT FGVC protocol, :mod:`glsim_pl.analysis.lr_search`): stage 1 searches base LR x weight
decay (``--lr-grid``, ``--wd-grid``; LR scaled by effective batch / 256) on VPT's train / val split files
(``dataset.protocol=vpt``), stage 2 trains the seeds on VPT's train + val and tests (``dataset.protocol=vpt_trainval``).

Each invocation writes its runs to a new folder, ``--dir`` (default ``multirun/reproduce/<name>/<date_time>``); a
``--dir`` that already holds runs is refused, so the table only ever shows this invocation's runs. A job that failed is
listed under the table and the command exits 1. Outputs in ``--out``:
``<name>.md/.csv/.tex/.png`` (the table, Δ vs the ViT row, the paper's numbers), ``<name>_lr.md/.csv`` (every stage-1
run) and ``<name>_lr.json`` (the chosen LR per experiment). The chosen LR is also written in ``<name>.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from glsim_pl.analysis.aggregate import METRIC, aggregate, load_jobs
from glsim_pl.analysis.lr_search import (
    VPT_LR_GRID,
    VPT_WD_GRID,
    best_point,
    choose_lr_wd,
    lr_wd_section,
    scaled_lr,
)
from glsim_pl.errors import UserError, user_message

__all__ = ["GRID", "SELECT", "choose_lr", "gpu_hours", "main", "reproduce"]

GRID = (0.03, 0.01, 0.003, 0.001)
# stage 1's rule -> (the metric it reads, how the table names it)
SELECT = {"final": ("val/acc1", "val/acc1 after the last epoch (official)"),
          "best": ("val/acc1_best", "val/acc1_best, the best epoch")}  # fmt: skip
ROWS = ("cub", "nabirds", "inat17", "dogs", "pets", "flowers", "food", "vegfru", "cub448")


def choose_lr(results: dict[float, float]) -> float:
    """The LR with the best validation top-1; ties -> the smaller LR."""
    return best_point(results)


def _multirun(overrides: list[str], sweep_dir: Path) -> int:
    cmd = [sys.executable, "-m", "glsim_pl.train", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"]
    print("+ " + " ".join(cmd[1:]), flush=True)
    code = subprocess.run(cmd).returncode
    if code:
        print(f"some runs under {sweep_dir} failed; the table lists them", flush=True)
    return code


def _refuse_used_dir(root: Path, experiments: list[str]) -> None:
    """Runs of an earlier invocation would be read as this one's: a folder that holds any is refused."""
    used = [root / e / s for e in experiments for s in ("lr", "seeds") if (root / e / s).is_dir()]
    used = [str(p) for p in used if any(p.iterdir())]
    if used:
        raise UserError(f"--dir {root} already holds runs ({', '.join(used)}); every invocation writes to a new "
                        "folder: leave --dir out (a new dated folder) or name an unused one")  # fmt: skip


def _failures(sweep: Path, metric: str, expected: int, code: int | None) -> tuple[list[dict], list[str]]:
    """(finished jobs, one line per job of this stage that failed, was refused or never ran)."""
    try:
        done, failed = load_jobs(sweep, metric)
    except UserError as exc:
        done, failed = [], [{"dir": str(sweep), "error": user_message(exc)}]
    lines = [f"{job['dir']}: {job['error']}" for job in failed]
    if len(done) + len(failed) < expected or (code and not lines):
        lines.append(f"{sweep}: {expected - len(done)} of {expected} jobs left no result (the multirun exited "
                     f"{code}; its output names them)")  # fmt: skip
    return done, lines


def _stage1(experiment: str, grid: list[str], jobs: int, seed: str, root: Path, extra: list[str], metric: str,
            data: str = "val") -> tuple[list[dict], list[str]]:  # fmt: skip
    """The grid's runs on a train/val split (``dataset.protocol=<data>``), no test: (finished jobs, failures)."""
    sweep = root / experiment / "lr"
    code = _multirun([f"experiment={experiment}", *grid, f"seed={seed}", f"dataset.protocol={data}", "test=false",
                      *extra], sweep)  # fmt: skip
    return _failures(sweep, metric, jobs, code)


def _official_stage1(experiment: str, grid: tuple[float, ...], lr: float | None, seed: str, root: Path,
                     extra: list[str], metric: str) -> tuple[dict[str, Any], list[str], list[str]]:  # fmt: skip
    """(what was chosen, the seeds' overrides, failures) of the official protocol's LR search."""
    if lr is not None:
        return {"lr": float(lr), "stage1": None}, [f"optim.lr={float(lr)}"], []
    done, failed = _stage1(experiment, [f"optim.lr={','.join(str(v) for v in grid)}"], len(grid), seed, root, extra,
                           metric)  # fmt: skip
    results = {float(job["config"]["optim"]["lr"]): float(job["metrics"][metric]) for job in done}
    chosen = choose_lr(results)
    return {"lr": chosen, "stage1": {str(k): v for k, v in sorted(results.items())}}, [f"optim.lr={chosen}"], failed


def _vpt_stage1(experiment: str, grid: tuple[float, ...], wd_grid: tuple[float, ...], lr: float | None,
                wd: float | None, batch: int, seed: str, root: Path, extra: list[str],
                metric: str) -> tuple[dict[str, Any], list[str], list[str]]:  # fmt: skip
    """(what was chosen, the seeds' overrides, failures) of the VPT protocol's LR x weight-decay search."""
    c: dict[str, Any] = {"protocol": "vpt", "effective_batch": batch, "stage1": None, "weight_decay": wd}
    failed: list[str] = []
    if lr is None:
        lrs = ",".join(str(scaled_lr(base, batch)) for base in grid)
        done, failed = _stage1(experiment, [f"optim.lr={lrs}", f"optim.weight_decay={','.join(map(str, wd_grid))}"],
                               len(grid) * len(wd_grid), seed, root, extra, metric, data="vpt")  # fmt: skip
        results = {(float(j["config"]["optim"]["lr"]), float(j["config"]["optim"]["weight_decay"])):
                   float(j["metrics"][metric]) for j in done}  # fmt: skip
        lr, wd = choose_lr_wd(results)
        c.update(weight_decay=wd, stage1={f"{k[0]},{k[1]}": v for k, v in sorted(results.items())})
    c["lr"] = float(lr)
    final = [f"optim.lr={c['lr']}", *([f"optim.weight_decay={wd}"] if wd is not None else [])]
    return c, [*final, "dataset.protocol=vpt_trainval"], failed


def reproduce(
    experiments: list[str],
    name: str,
    root: Path,
    out: Path,
    lr: float | None = None,
    grid: tuple[float, ...] = GRID,
    seeds: str = "1,10,100",
    extra: list[str] | None = None,
    select: str = "final",
    protocol: str = "official",
    wd_grid: tuple[float, ...] = VPT_WD_GRID,
    weight_decay: float | None = None,
    batch: int | None = None,
) -> dict:
    """Run both stages for every experiment; returns ``{experiment: {"lr": chosen, "stage1": {lr: val top-1},
    "select": rule, "failed": [one line per failed job]}}``. ``select``: stage 1's rule (:data:`SELECT`).

    ``protocol="vpt"``: stage 1 over base LRs ``grid`` x ``wd_grid`` (``weight_decay`` with ``lr``: skip it), LRs
    scaled by the effective batch (``batch``; None: the experiment's config); each entry also holds
    ``weight_decay``, ``effective_batch``, ``protocol`` and ``stage1`` keyed ``"lr,wd"``."""
    extra = list(extra or [])
    if select not in SELECT:
        raise UserError(f"--select {select!r}: expected one of {', '.join(SELECT)}")
    if protocol not in ("official", "vpt"):
        raise UserError(f"--protocol {protocol!r}: expected official or vpt")
    metric = SELECT[select][0]
    _refuse_used_dir(root, experiments)
    out.mkdir(parents=True, exist_ok=True)
    chosen: dict[str, dict[str, Any]] = {}
    seed = seeds.split(",")[0]
    for experiment in experiments:
        if protocol == "vpt":
            size = batch or _effective_batch(experiment, extra)
            c, final, failed = _vpt_stage1(experiment, grid, wd_grid, lr, weight_decay, size, seed, root, extra, metric)
        else:
            c, final, failed = _official_stage1(experiment, grid, lr, seed, root, extra, metric)
        chosen[experiment] = {**c, "select": select if lr is None else "given"}
        print(f"{experiment}: lr {c['lr']} ({'given' if lr is not None else 'chosen on val'})")
        sweep = root / experiment / "seeds"
        code = _multirun([f"experiment={experiment}", f"seed={seeds}", *final, *extra], sweep)
        chosen[experiment]["failed"] = failed + _failures(sweep, METRIC, len(seeds.split(",")), code)[1]
    (out / f"{name}_lr.json").write_text(json.dumps(chosen, indent=2))
    if lr is None:
        aggregate(root, out, f"{name}_lr", formats=[], metric=metric, quiet=True, include=["lr"])
    aggregate(root, out, name, include=["seeds"])
    if protocol == "vpt":
        _insert_section(out / f"{name}.md", lr_wd_section(chosen, grid, wd_grid, SELECT[select][1], name), chosen)
    else:
        _add_lr_section(out / f"{name}.md", chosen, name, select, grid)
    return chosen


def _effective_batch(experiment: str, extra: list[str]) -> int:
    """The effective batch (per-device batch x devices x accumulation) the experiment's runs train with."""
    from glsim_pl.analysis.run_record import protocol
    from glsim_pl.config.compose import compose_train

    what = "--protocol vpt: cannot compose, to read its batch size,"
    cfg = compose_train([f"experiment={experiment}", *extra], what=what)
    return int(protocol(cfg)["effective_batch_size"])


def _add_lr_section(path: Path, chosen: dict[str, dict[str, Any]], name: str, select: str = "final",
                    grid: tuple[float, ...] = GRID) -> None:  # fmt: skip
    rule = SELECT[select][1]
    lines = ["", f"## Learning rate (stage 1: train/val, best {rule}, ties -> smaller LR)", ""]
    lines += ["| experiment | " + " | ".join(f"lr {lr}" for lr in grid) + " | chosen LR |",
              "|---|" + "---|" * (len(grid) + 1)]  # fmt: skip
    for experiment, c in chosen.items():
        stage1 = c["stage1"] or {}
        cells = [f"{100 * stage1[str(lr)]:.2f}" if str(lr) in stage1 else "—" for lr in grid]
        lines.append(f"| {experiment} | " + " | ".join(cells) + f" | {c['lr']} |")
    if any(c["stage1"] is None for c in chosen.values()):
        lines.append("\n— : stage 1 skipped (LR given on the command line).")
    lines.append(f"\nEvery stage-1 run: `{name}_lr.md`; chosen LRs: `{name}_lr.json`.")
    _insert_section(path, lines, chosen)


def _insert_section(path: Path, lines: list[str], chosen: dict[str, dict[str, Any]]) -> None:
    """``lines`` and the failed jobs into the results page, before its list of jobs."""
    failed = [f"- {experiment}: {line}" for experiment, c in chosen.items() for line in c.get("failed", [])]
    if failed:
        lines += ["", "## Failed jobs (this invocation; not in the table)", "", *failed]
    text = path.read_text()
    cut = text.find("\n## Jobs")
    path.write_text(text[:cut] + "\n".join(lines) + "\n" + text[cut:] if cut >= 0 else text + "\n".join(lines))


# -- cost ------------------------------------------------------------------------------------------------------------
# (train+val images, train images of stage 1, val images, test images, image side) per row; docs/datasets.md sizes
SIZES = {"cub": (5994, 4794, 1200, 5794, 224), "nabirds": (23929, 18957, 4972, 24633, 224),
         "inat17": (579184, 463347, 115837, 95986, 224), "dogs": (12000, 9600, 2400, 8580, 224),
         "pets": (3680, 2941, 739, 3669, 224), "flowers": (2040, 1020, 1020, 6149, 224),
         "food": (75750, 15150, 60600, 25250, 224), "vegfru": (43800, 35040, 8760, 116931, 224),
         "cub448": (5994, 4794, 1200, 5794, 448)}  # fmt: skip
# training img/s of the real loop, ViT-B/16, batch 8, 16-mixed, one H200 (224 px: `python -m glsim_pl.train
# dataset=cub model=vit_b16`; 448 px: scaled by the 224 -> 448 ratio of `python -m glsim_pl.bench gpu`, batch 32 bf16)
TRAIN_IMG_S = {("glsim", 224): 137.0, ("vit", 224): 328.0, ("glsim", 448): 137.0 * 295 / 691,
               ("vit", 448): 328.0 * 588 / 1237}  # fmt: skip
EVAL_SPEEDUP = 3.0  # forward only vs forward + backward (an assumption, not measured in the loop)


def gpu_hours(row: str, epochs: int = 50, grid: int = len(GRID), seeds: int = 3, stage1: bool = True) -> dict:
    """Estimated GPU-hours of one row (GLSim + ViT; stage 1: ``grid`` runs on train with val every epoch; stage 2:
    ``seeds`` runs on train+val, test once) from :data:`TRAIN_IMG_S`."""
    train_val, train, val, test, side = SIZES[row]
    hours = {}
    for method in ("glsim", "vit"):
        speed = TRAIN_IMG_S[(method, side)]
        s1 = grid * epochs * (train + val / EVAL_SPEEDUP) / speed if stage1 else 0.0
        s2 = seeds * (epochs * train_val + test / EVAL_SPEEDUP) / speed
        hours[method] = (s1 + s2) / 3600
    hours["row"] = hours["glsim"] + hours["vit"]
    return hours


def cost_table() -> str:
    lines = ["| row | GLSim (GPU-h) | ViT (GPU-h) | row, both stages (GPU-h) | row with LR=... (GPU-h) |",
             "|---|---|---|---|---|"]  # fmt: skip
    for row in ROWS:
        h, fixed = gpu_hours(row), gpu_hours(row, stage1=False)
        lines.append(f"| {row} | {h['glsim']:.1f} | {h['vit']:.1f} | {h['row']:.1f} | {fixed['row']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(prog="python -m glsim_pl.reproduce", description=__doc__.splitlines()[0])
    p.add_argument("row", nargs="?", help=f"a paper row: {', '.join(ROWS)} (GLSim and its ViT baseline)")
    p.add_argument("--experiments", nargs="+", help="experiment names instead of a row")
    p.add_argument("--name", help="results file name (default: the row)")
    p.add_argument("--lr", type=float, help="skip stage 1 and train the seeds at this LR (absolute, not scaled)")
    p.add_argument(
        "--protocol",
        default="official",
        choices=["official", "vpt"],
        help="official: LR grid on a val split carved from train; vpt: VPT's split files, LR x WD grid",
    )
    p.add_argument("--lr-grid", type=float, nargs="+", help="stage 1's LRs (vpt: base LRs, x effective batch / 256)")
    p.add_argument("--wd-grid", type=float, nargs="+", default=list(VPT_WD_GRID), help="vpt: stage 1's weight decays")
    p.add_argument("--wd", type=float, help="vpt with --lr: the seeds' weight decay (default: the experiment's)")
    p.add_argument("--seeds", default="1,10,100")
    p.add_argument(
        "--select",
        default="final",
        choices=sorted(SELECT),
        help="stage 1's rule: final = val top-1 after the last epoch (official), best = the best epoch's",
    )
    p.add_argument("--dir", default=None, help="a new folder for the runs (default: multirun/reproduce/<name>/<now>)")
    p.add_argument("--out", default="results")
    p.add_argument("--cost", action="store_true", help="print the GPU-hour estimate per row and exit")
    args = p.parse_args(argv)
    if args.cost:
        print(cost_table())
        return
    if not args.experiments and args.row not in ROWS:
        p.error(f"row {args.row!r}: expected one of {', '.join(ROWS)}, or --experiments")
    experiments = args.experiments or [f"glsim_{args.row}_vit_b16", f"vit_{args.row}_vit_b16"]
    name = args.name or args.row or experiments[0]
    root = Path(args.dir or f"multirun/reproduce/{name}/{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    try:
        grid = tuple(args.lr_grid or (VPT_LR_GRID if args.protocol == "vpt" else GRID))
        chosen = reproduce(experiments, name, root, Path(args.out), args.lr, grid, seeds=args.seeds, extra=extra,
                           select=args.select, protocol=args.protocol, wd_grid=tuple(args.wd_grid),
                           weight_decay=args.wd)  # fmt: skip
    except UserError as exc:
        raise SystemExit(f"error: {user_message(exc)}") from None
    for experiment, c in chosen.items():
        print(f"{experiment}: lr {c['lr']}")
    print(f"results: {Path(args.out) / name}.md (runs: {root})")
    failed = [f"{experiment}: {line}" for experiment, c in chosen.items() for line in c["failed"]]
    if failed:
        raise SystemExit("error: some jobs failed (listed in the results):\n  " + "\n  ".join(failed))


if __name__ == "__main__":
    main()
