"""``make gpu-bundle``: packages travel with their metadata, which Lightning reads through ``importlib.metadata``."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from glsim_pl.bench.bundle import bundle


def test_bundle_carries_packages_and_their_dist_info(tmp_path: Path) -> None:
    names = bundle(tmp_path / "site", ["hydra", "omegaconf"])
    found = {d.metadata["Name"].lower(): d.version for d in metadata.distributions(path=[str(tmp_path / "site")])}
    assert found == {"hydra-core": metadata.version("hydra-core"), "omegaconf": metadata.version("omegaconf")}
    assert (tmp_path / "site" / "hydra" / "__init__.py").is_file() and "hydra" in names
    assert not list((tmp_path / "site").rglob("__pycache__"))


def test_bundle_names_a_package_nobody_provides(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no_such_package"):
        bundle(tmp_path, ["no_such_package"])
