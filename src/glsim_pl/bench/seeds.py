"""Does the embedded default pass 0.90 for every seed? ``python -m glsim_pl.bench seeds [-- overrides]``.

Runs ``python -m glsim_pl.train`` once per (seed, method), each in its own process (one failing or hanging run is
reported, the others still run), reads the ``metrics.json`` each run writes, and prints a Markdown table (seed,
method, test/acc1, process wall time, fit + test time) and the line ``min ≥ 0.90: yes|no``. A progress line is
printed as each run finishes, so a caller that kills this script still has the finished ones. The GPU check
(``gpu_check --sections seeds``) passes ``trainer=gpu trainer.precision=bf16-mixed compile=false`` as overrides.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from glsim_pl.analysis.run_record import RECORD

__all__ = ["format_row", "read_accuracy", "summary_line"]

HEADER = ["| seed | method | test/acc1 | wall s (process) | fit + test s |", "|---|---|---|---|---|"]


def read_accuracy(run_dir: Path) -> tuple[float | None, float | None]:
    """(test/acc1, fit + test seconds) from ``run_dir/metrics.json``; (None, None) if the run wrote none."""
    path = run_dir / RECORD
    if not path.is_file():
        return None, None
    record = json.loads(path.read_text())
    return record.get("metrics", {}).get("test/acc1"), record.get("wall_time_s")


def format_row(seed: int, method: str, acc: float | None, wall_s: float, fit_s: float | None, status: str) -> str:
    """One table row; a run without a test accuracy shows why (exit code or timeout) in its place."""
    shown = f"{acc:.3f}" if acc is not None else f"— ({status})"
    return f"| {seed} | {method} | {shown} | {wall_s:.0f} | {'' if fit_s is None else f'{fit_s:.0f}'} |"


def summary_line(accs: list[float | None], threshold: float, planned: int) -> str:
    """``min ≥ <threshold>: yes|no`` over every planned run; a missing or unfinished run counts as a failure."""
    got = [a for a in accs if a is not None]
    ok = len(got) == planned and all(a >= threshold for a in got)
    low = f"min {min(got):.3f}" if got else "no accuracy"
    missing = planned - len(got)
    return f"min ≥ {threshold:.2f}: {'yes' if ok else 'no'} ({low} over {len(got)} of {planned} runs" + (
        f"; {missing} without test/acc1)" if missing else ")"
    )


def run_one(
    seed: int,
    method: str,
    out: Path,
    overrides: list[str],
    timeout: float,
    env: dict[str, str] | None = None,
    keep_checkpoints: bool = False,
) -> tuple[float | None, str]:
    """Train one (seed, method) into ``out/<method>_seed<seed>``; prints one progress line, returns (test/acc1, row)."""
    run_dir = out / f"{method}_seed{seed}"
    cmd = [sys.executable, "-m", "glsim_pl.train", f"seed={seed}", f"hydra.run.dir={run_dir}", "logger=none",
           *([f"method={method}"] if method != "glsim" else []), *overrides]  # fmt: skip
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, env=env)
        status, log = f"exit {proc.returncode}", proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        parts = [b.decode(errors="replace") if isinstance(b, bytes) else b or "" for b in (exc.stdout, exc.stderr)]
        status, log = f"timed out after {timeout:.0f} s", "".join(parts)
    wall = time.monotonic() - start
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.log").write_text(log)
    acc, fit = read_accuracy(run_dir) if status == "exit 0" else (None, None)
    if not keep_checkpoints:  # this run's own files (the folder was new); 10 runs' checkpoints would fill a report
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    if acc is None and status == "exit 0":
        status = "no test/acc1 in metrics.json"
    row = format_row(seed, method, acc, wall, fit, status)
    shown = "—" if acc is None else f"{acc:.3f}"
    print(f"done: {method} seed {seed}, {status}, test/acc1 {shown}, {wall:.0f} s ({run_dir / 'run.log'})", flush=True)
    if acc is None:
        print(f"{method} seed {seed}: last lines of its log:\n{log[-1500:]}", file=sys.stderr)
    return acc, row


def main(argv: list[str] | None = None) -> None:
    """Run every (seed, method) within ``--budget`` seconds and print the table and the min line."""
    p = argparse.ArgumentParser(prog="python -m glsim_pl.bench seeds", description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="1,2,3,4,5", help="comma list of seeds")
    p.add_argument("--methods", default="glsim,vit", help="comma list of method config names")
    p.add_argument("--threshold", type=float, default=0.90)
    p.add_argument("--out", type=Path, default=Path("outputs/bench_seeds"))
    p.add_argument("--timeout", type=float, default=600.0, help="seconds for one run (the default on a CPU: ~2.5 min)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (a GPU has room for several tiny runs)")
    p.add_argument("--budget", type=float, default=1e9, help="seconds for all runs; later runs are not started")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep each run's checkpoints/ (default: removed)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every run (after --)")
    args = p.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        raise SystemExit(f"error: --seeds={args.seeds!r}: expected a comma list of integers") from None
    methods = args.methods.split(",")
    if args.jobs < 1:
        raise SystemExit(f"error: --jobs={args.jobs}: expected at least 1")
    taken = [d for d in (args.out / f"{m}_seed{s}" for s in seeds for m in methods) if d.exists()]
    if taken:  # never train into (and delete the checkpoints of) a folder that holds an earlier run
        raise SystemExit(f"error: --out={args.out}: {taken[0].name} exists already; choose a new --out")
    deadline = time.monotonic() + args.budget
    print(f"python -m glsim_pl.train, seeds {args.seeds}, methods {args.methods}; overrides: {args.overrides}")
    env = dict(os.environ)
    if args.jobs > 1:  # runs side by side share the CPUs: no oversubscription by each one's torch threads
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.jobs)))

    def one(seed: int, method: str) -> tuple[float | None, str]:
        left = deadline - time.monotonic()
        if left < 5:
            return None, format_row(seed, method, None, 0.0, None, "not started: budget spent")
        timeout = min(args.timeout, left)
        return run_one(seed, method, args.out.resolve(), args.overrides, timeout, env, args.keep_checkpoints)

    with ThreadPoolExecutor(args.jobs) as pool:  # threads only wait on the run processes
        done = list(pool.map(lambda sm: one(*sm), [(seed, method) for seed in seeds for method in methods]))
    accs, rows = [acc for acc, _ in done], [row for _, row in done]
    print(f"{args.jobs} run(s) at a time: wall times include process start and the other runs' contention")
    print("\n".join([*HEADER, *rows, summary_line(accs, args.threshold, len(rows))]), flush=True)
    if None in accs:  # a run that measured nothing is a failure of this check, not a low accuracy
        raise SystemExit(1)


if __name__ == "__main__":
    main()
