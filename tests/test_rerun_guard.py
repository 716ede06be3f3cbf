"""A refused run (folder in use, folder holds an earlier run) leaves that folder byte for byte as it was: its saved
config (.hydra/), its log, its results; nothing added."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.configs import TINY_SYNTHETIC

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _earlier_run(folder: Path) -> None:
    """What a finished run leaves (contents made up: only their bytes are compared)."""
    (folder / ".hydra").mkdir(parents=True)
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (folder / ".hydra" / name).write_text(f"# the earlier run's {name}\ndataset:\n  root: /data/cub\n")
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"an earlier run's weights")
    (folder / "metrics.json").write_text('{"metrics": {"test/acc1": 0.5}}')
    (folder / "train.log").write_text("[2026-01-01][glsim_pl][INFO] - the earlier run's log\n")


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder below ``folder`` with the hash of its bytes (mtimes left out)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.rglob("*"))
    }


def _train(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "glsim_pl.train", *args, *TINY_SYNTHETIC, "logger=none", "optim.lr=0.003"]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_run_refused_by_an_earlier_runs_results_leaves_its_folder_as_it_was(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _earlier_run(run)
    before = _snapshot(run)
    proc = _train(tmp_path, f"hydra.run.dir={run}")
    assert proc.returncode == 1
    assert f"error: output folder {run} holds an earlier run (metrics.json, checkpoints)" in proc.stderr
    assert _snapshot(run) == before


@pytest.mark.slow
def test_run_refused_by_a_live_run_leaves_its_folder_and_lock_as_they_were(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("# the live run's config\n")
    (run / "train.log").write_text("the live run's log\n")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        lock = {"host": socket.gethostname(), "pid": other.pid, "started": "2026-01-01 00:00:00"}
        (run / ".run.lock").write_text(json.dumps(lock))
        before = _snapshot(run)
        proc = _train(tmp_path, f"hydra.run.dir={run}")
        assert proc.returncode == 1
        assert f"is in use by another run (pid {other.pid}" in proc.stderr
        assert _snapshot(run) == before
    finally:
        other.kill()
        other.wait()


@pytest.mark.slow
def test_sweep_job_refused_leaves_its_folder_as_it_was_and_the_sweep_fails(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    _earlier_run(sweep / "0")
    before = _snapshot(sweep / "0")
    proc = _train(tmp_path, "-m", "seed=1", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 1
    assert "sweep: 1 job(s) failed" in proc.stdout + proc.stderr and "refused: output folder" in proc.stdout
    assert _snapshot(sweep / "0") == before


def test_held_log_lines_are_written_when_kept_and_gone_when_dropped(tmp_path: Path) -> None:
    import logging

    from glsim_pl.utils.logging import HeldFileLines

    log_file = tmp_path / "train.log"
    log_file.write_text("the earlier run's log\n")
    handler, root = logging.FileHandler(log_file), logging.getLogger()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    level, root.level = root.level, logging.INFO
    try:
        held = HeldFileLines(tmp_path)
        logging.getLogger("glsim_pl.test").info("a refused run's line")
        held.release(keep=False)
        handler.flush()
        assert log_file.read_text() == "the earlier run's log\n"
        held = HeldFileLines(tmp_path)
        logging.getLogger("glsim_pl.test").info("a started run's line")
        assert log_file.read_text() == "the earlier run's log\n"  # held until the run has passed its checks
        held.release(keep=True)
        logging.getLogger("glsim_pl.test").info("and the next one")
        handler.flush()
        assert log_file.read_text().splitlines() == [
            "the earlier run's log",
            "a started run's line",
            "and the next one",
        ]
    finally:
        root.removeHandler(handler)
        handler.close()
        root.level = level


@pytest.mark.slow
def test_resume_refused_for_other_values_leaves_the_run_folder_as_it_was(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = _train(tmp_path, f"hydra.run.dir={run}")
    assert first.returncode == 0, first.stderr[-2000:]
    before = _snapshot(run)
    refused = _train(tmp_path, f"hydra.run.dir={run}", "ckpt_path=last", "optim.weight_decay=0.5")
    assert refused.returncode == 1, refused.stderr[-2000:]
    assert "this resume differs from the run that saved it in optim.weight_decay" in refused.stderr
    assert _snapshot(run) == before  # train.log included: the lines logged before the check are dropped
