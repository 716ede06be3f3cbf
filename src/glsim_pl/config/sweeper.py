"""The default sweeper's merge (``hydra/sweeper=merging``; the class is in ``hydra_plugins.glsim_pl_sweeper``, where
Hydra looks for plugins): Hydra's basic sweeper, plus: every job is composed first, and jobs whose composed configs
are identical run once.

Identical jobs come from keys a method has no use for: the plain ViT has no crop, so in
``-m method=glsim,vit method.selector=gls,rollout seed=1,2`` the ViT jobs differ only in ``method.selector``. For
``method=vit`` those keys (:data:`glsim_pl.models.glsim.GLSIM_ONLY_KEYS`) are dropped from the job's overrides, so the
job runs with ``conf/method/vit.yaml``'s values (``selector: none``) and its record names no selector; the remaining
duplicates are merged, and one log line says which. Six jobs, not eight: 4 GLSim + 2 ViT.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from glsim_pl.models.glsim import GLSIM_ONLY_KEYS

__all__ = ["drop_unused_overrides", "merge_jobs"]

_IGNORED = {"vit": tuple(f"method.{key}" for key in GLSIM_ONLY_KEYS)}  # method -> override keys it has no use for


def drop_unused_overrides(method: str | None, overrides: list[str]) -> tuple[list[str], list[str]]:
    """(kept, dropped): the overrides of keys that ``method`` has no use for are dropped."""
    ignored = _IGNORED.get(str(method), ())
    keep, drop = [], []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        (drop if key in ignored else keep).append(override)
    return keep, drop


def merge_jobs(jobs: list[list[str]], compose: Callable[[list[str]], dict[str, Any]]) -> tuple[list[list[str]], str]:
    """(unique jobs in order, one log line or ''): ``compose(job)`` -> the job's config without the ``hydra`` node."""
    kept: dict[str, list[str]] = {}
    merged: list[str] = []
    for job in jobs:
        composed = compose(job)
        method = composed.get("method", {}).get("method")
        job, dropped = drop_unused_overrides(method, list(job))
        key = json.dumps(compose(job) if dropped else composed, sort_keys=True, default=str)
        if key in kept:
            merged.append(f"method={method} ignores {' '.join(dropped)}" if dropped else f"repeated: {' '.join(job)}")
        else:
            kept[key] = job
    line = ""
    if merged:
        why = "; ".join(sorted(set(merged)))
        line = f"sweep: {len(jobs)} jobs -> {len(kept)}, identical composed configs merged ({why})"
    return list(kept.values()), line
