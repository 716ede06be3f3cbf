"""Shared fixtures: compose the real Hydra configs, shrunk for CPU tests (no network, tiny models, tmp outputs)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from tests.helpers.configs import FIXTURES, TINY_SYNTHETIC, compose_cfg

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a forgotten pretrained=true fails at once, not after a timeout
torch.set_num_threads(min(2, torch.get_num_threads()))
os.environ["GLSIM_CACHE_DIR"] = _CACHE_DIR = tempfile.mkdtemp(prefix="glsim-test-cache-")  # no test writes to ~/.cache
atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """``make_cfg(*overrides, tiny=True)`` -> a composed config writing to ``tmp_path/run``."""

    def _make(*overrides: str, tiny: bool = True, output_dir: Path | None = None) -> DictConfig:
        base = TINY_SYNTHETIC if tiny else []
        return compose_cfg([*base, *overrides], output_dir or tmp_path / "run")

    return _make


@pytest.fixture(scope="session")
def official_fixture() -> dict:
    """The official-format GLSim checkpoint with the official implementation's outputs."""
    from glsim_pl.bench.parity_fixture import FIXTURE_NAME, read_parity_fixture

    path = FIXTURES / FIXTURE_NAME
    if not path.is_file():
        pytest.fail(f"missing fixture {path} (tests/fixtures/ is part of the repository)")
    return read_parity_fixture(path)
