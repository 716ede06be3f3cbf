"""Model and method arguments checked from the config alone, before any data, weights or checkpoints are read.

Without these checks a bad value surfaces late (``method.top_o=0`` at the first forward pass, with a traceback)
or never (``dataset.image_size=60`` with an 8-px patch: the patch embedding's stride drops the last 4 rows and
columns, so the run silently trains on 56 px). Padding rule: none -- an image size that is not a multiple of the
patch size is an error, with the nearest valid sizes in the message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from omegaconf import DictConfig

from ..errors import UserError
from ..models.selectors import get_selector

__all__ = ["patch_size_of", "validate_config", "validate_selectors"]

METHODS = ("glsim", "vit")
SIM_METRICS = ("cos", "l1", "l2")
BOX_RULES = ("official", "inclusive")
GATES = ("none", "confidence")


def patch_size_of(backbone: str | None, backbone_kwargs: dict[str, Any] | None) -> int | None:
    """``backbone_kwargs.patch_size`` if set, else the ``patchNN`` in a timm ViT name; None if unknown."""
    size = (backbone_kwargs or {}).get("patch_size")
    if size is not None:
        size = size[0] if isinstance(size, (list, tuple)) else size
        if not isinstance(size, int) or size < 1:
            raise UserError(f"model.backbone_kwargs.patch_size={size!r}: expected a positive integer")
        return size
    match = re.search(r"patch(\d+)", backbone or "")
    return int(match.group(1)) if match else None


def _choice(key: str, value: Any, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise UserError(f"{key}={value!r}: expected one of {', '.join(choices)}")


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{key}={value!r}: expected a positive integer")
    return value


def validate_selectors(selector: Any, key: str = "method.selector") -> None:
    """A selector override (eval / predict); None means the checkpoint's own."""
    if selector is not None:
        get_selector(selector, key)


def validate_config(cfg: DictConfig) -> None:
    """Train: ``method``, ``model`` and ``dataset.image_size`` describe a model that can be built and run."""
    method, model = cfg.get("method") or {}, cfg.get("model") or {}
    name = method.get("method", "glsim")
    _choice("method.method", name, METHODS)
    size = _positive_int("dataset.image_size", cfg.dataset.get("image_size"))
    kwargs = model.get("backbone_kwargs")
    patch = patch_size_of(model.get("backbone"), dict(kwargs) if kwargs else None)
    if patch is not None and size % patch:
        lower, upper = size - size % patch, size - size % patch + patch
        options = f"{lower} or {upper}" if lower else f"{upper}"
        raise UserError(f"dataset.image_size={size} is not a multiple of the patch size {patch} of "
                        f"model.backbone={model.get('backbone')!r}: the patch grid would silently drop the last "
                        f"{size % patch} pixel rows and columns. Use dataset.image_size={options}")  # fmt: skip
    if name != "glsim":
        if method.get("selector", "none") not in (None, "none"):
            raise UserError(f"method.selector={method.get('selector')!r} with method={name}: the plain ViT has no "
                            "crop, so no selector; drop the override (a multirun merges such jobs)")  # fmt: skip
        return
    get_selector(method.get("selector", "gls"))
    _choice("method.sim_metric", method.get("sim_metric", "cos"), SIM_METRICS)
    _choice("method.box_rule", method.get("box_rule", "official"), BOX_RULES)
    _choice("method.gate", method.get("gate", "none"), GATES)
    _positive_int("method.aggregator_layers", method.get("aggregator_layers", 1))
    top_o = method.get("top_o", 8)
    if patch is not None:
        cells = (size // patch) ** 2
        if isinstance(top_o, bool) or not isinstance(top_o, int) or not 1 <= top_o <= cells:
            raise UserError(f"method.top_o={top_o!r}: expected an integer in 1..{cells}, the patches of the "
                            f"{size // patch}x{size // patch} grid ({size} px / {patch} px patches)")  # fmt: skip
    else:
        _positive_int("method.top_o", top_o)
