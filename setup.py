"""Only what pyproject.toml cannot say: the wheel carries the top-level conf/ as the package data glsim_pl/conf."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONF = Path(__file__).resolve().parent / "conf"


class BuildPyWithConf(build_py):
    """Copy conf/**.yaml into <build>/glsim_pl/conf (an editable install reads conf/ in place instead)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False) or not CONF.is_dir():
            return
        target = Path(self.build_lib) / "glsim_pl" / "conf"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(CONF, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "local"))
        (target / "local").mkdir(exist_ok=True)  # the optional group of machine-specific overrides


setup(cmdclass={"build_py": BuildPyWithConf})
