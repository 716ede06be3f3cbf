"""The one place that turns config nodes into objects (``hydra.utils.instantiate`` with ``_convert_="all"``)."""

from __future__ import annotations

import os
from typing import Any

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from glsim_pl.errors import UserError

__all__ = ["instantiate", "instantiate_collection"]

# optional trackers: the module Lightning's logger needs -> the extra that installs it
EXTRAS = {"wandb": "wandb", "mlflow": "mlflow"}


def instantiate(node: DictConfig, **kwargs: Any) -> Any:
    """Instantiate one ``_target_`` node with plain Python containers; a :class:`UserError` comes out unwrapped.

    A W&B logger runs offline (``WANDB_MODE=offline``) unless the user set ``WANDB_MODE``, and an MLflow logger may
    use a ``file:`` store: no account or server needed.
    """
    key = node._get_full_key("_target_") if isinstance(node, DictConfig) else "_target_"  # dataset._target_
    if isinstance(node, DictConfig) and OmegaConf.is_missing(node, "_target_"):  # a group with no class (dataset=own)
        raise UserError(f"{key}=???: expected the class to build, by import path (e.g. {key}=mypackage.module.Class)")
    target = str(node.get("_target_", "")) if isinstance(node, DictConfig) else ""
    if target.endswith("WandbLogger"):
        os.environ.setdefault("WANDB_MODE", "offline")
    if target.endswith("MLFlowLogger") and str(node.get("tracking_uri") or "").startswith("file:"):
        # MLflow 3 refuses its file store (in "maintenance mode") unless allowed; it is the no-server default here
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    try:
        return hydra.utils.instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        if isinstance(cause, ModuleNotFoundError):
            extra = next((e for key, e in EXTRAS.items() if key in f"{target} {cause}".lower()), None)
            hint = f": pip install 'glsim_pl[{extra}]'" if extra else ""
            missing = f"config for {target or '?'} needs a package that is not installed ({cause}){hint}"
            raise UserError(missing) from None
        if isinstance(cause, ImportError) and str(exc).startswith("Error locating target"):  # the class itself
            reason = str(cause).splitlines()[1] if len(str(cause).splitlines()) > 1 else str(cause)
            raise UserError(f"{key}={target}: cannot import it ({reason}); expected a module on PYTHONPATH, or "
                            "in the working directory with imports=[its module]") from None  # fmt: skip
        if isinstance(cause, TypeError) and "unexpected keyword argument" in str(cause):
            raise UserError(f"config for {target or '?'}: {cause} (check the spelling of that key)") from None
        raise


def instantiate_collection(node: DictConfig | None, skip: set[str] | frozenset[str] = frozenset()) -> list[Any]:
    """Instantiate every ``_target_`` entry of a mapping (callbacks, loggers) except the ``skip`` keys."""
    if not node:
        return []
    entries = [entry for key, entry in node.items() if key not in skip]
    return [instantiate(entry) for entry in entries if isinstance(entry, DictConfig) and "_target_" in entry]
