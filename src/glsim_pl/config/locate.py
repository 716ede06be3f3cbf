"""Where the entry points read their Hydra configs, one rule for a checkout and an install.

The repository's top-level ``conf/`` is the source of truth; a wheel carries a copy of it inside the package
(``glsim_pl/conf``). The packaged copy is used when it exists (an installed wheel), else the ``conf/`` beside
``src/`` (a checkout, editable install included).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CONFIG_DIR", "find_config_dir"]


def find_config_dir(package_dir: Path | None = None) -> str:
    """``<package>/conf`` if present (installed wheel), else ``<repo>/conf`` (checkout); an absolute path."""
    package = (package_dir or Path(__file__).resolve().parents[1]).resolve()
    for candidate in (package / "conf", package.parents[1] / "conf"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"no Hydra config folder: neither {package / 'conf'} (an installed wheel) nor "
                            f"{package.parents[1] / 'conf'} (a checkout) holds train.yaml")  # fmt: skip


CONFIG_DIR = find_config_dir()
