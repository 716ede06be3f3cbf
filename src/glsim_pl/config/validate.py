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

import torch
from omegaconf import DictConfig, OmegaConf

from glsim_pl.errors import UserError
from glsim_pl.models.families import check_selector_support, meta_encoder
from glsim_pl.models.finetune import apply_finetune, check_finetune
from glsim_pl.models.selectors import get_selector

__all__ = [
    "check_range",
    "patch_size_of",
    "validate_config",
    "validate_predict",
    "validate_selectors",
    "validate_values",
]

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


def check_range(key: str, value: Any, low: float | None = None, high: float | None = None, integer: bool = False,
                low_open: bool = False, high_open: bool = False, optional: bool = False) -> None:  # fmt: skip
    """``value`` is a number (an integer when ``integer``) within [low, high] (open ends as flagged); else one line
    naming the key, the value and the valid range. ``optional``: None passes."""
    if value is None and optional:
        return
    kind = "an integer" if integer else "a number"
    lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
    hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
    expected = f"{kind} {lo}{' and ' if lo and hi else ''}{hi}".strip() + (" or null" if optional else "")
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or (integer and not isinstance(value, int)):
        raise UserError(f"{key}={value!r}: expected {expected}")
    if (low is not None and (value <= low if low_open else value < low)) or (
        high is not None and (value >= high if high_open else value > high)
    ):
        raise UserError(f"{key}={value!r}: out of range, expected {expected}")


# (section, key) -> check_range keywords; what each value means is in the config files
_DATASET_RANGES: dict[str, dict[str, Any]] = {
    "batch_size": dict(low=1, integer=True),
    "resize_factor": dict(low=1.0),
    "train_fraction": dict(low=0, high=1, low_open=True),
    "test_fraction": dict(low=0, high=1, low_open=True, high_open=True),
    "max_image_pixels": dict(low=1, integer=True, optional=True),
    "train_size": dict(low=1, integer=True),
    "test_size": dict(low=1, integer=True),
}
_OPTIM_RANGES: dict[str, dict[str, Any]] = {
    "lr": dict(low=0, low_open=True),
    "momentum": dict(low=0, high=1, high_open=True),
    "weight_decay": dict(low=0),
    "warmup_steps": dict(low=0, integer=True),
    "warmup_lr": dict(low=0),
    "min_lr": dict(low=0),
    "layer_decay": dict(low=0, high=1, low_open=True, optional=True),
}
_AUGS_RANGES: dict[str, dict[str, Any]] = {
    "label_smoothing": dict(low=0, high=1, high_open=True),
    "random_erasing": dict(low=0, high=1),
    "mixup_alpha": dict(low=0),
    "cutmix_alpha": dict(low=0),
    "drop_path_rate": dict(low=0, high=1, high_open=True),
}


_TRAINER_RANGES: dict[str, dict[str, Any]] = {
    "accumulate_grad_batches": dict(low=1, integer=True),
    "gradient_clip_val": dict(low=0, optional=True),
}


def _check_section(prefix: str, section: Any, ranges: dict[str, dict[str, Any]]) -> None:
    for key, rule in ranges.items():
        if section is not None and key in section:
            check_range(f"{prefix}.{key}", section.get(key), **rule)


def validate_values(cfg: DictConfig) -> None:
    """Sizes, counts, fractions, probabilities, learning rates and smoothing of ``dataset``, ``optim`` and ``augs``
    within their ranges, and a resize no smaller than the crop -- before any data, weights or checkpoint is read."""
    _check_recipe(cfg)  # first: optim.lr of a recipe reads the regime's entry
    dataset = cfg.get("dataset")
    if dataset is not None:  # before the plain range: this says what the value would do
        size, factor = dataset.get("image_size"), dataset.get("resize_factor")
        if isinstance(size, int) and isinstance(factor, int | float) and 0 < int(factor * size) < size:
            raise UserError(f"dataset.resize_factor={factor!r}: resizes {size} px images to {int(factor * size)} px, "
                            f"smaller than the {size} px crop; expected a number >= 1")  # fmt: skip
    _check_section("dataset", dataset, _DATASET_RANGES)
    _check_section("optim", cfg.get("optim"), _OPTIM_RANGES)
    _check_section("augs", cfg.get("augs"), _AUGS_RANGES)
    if cfg.get("ema") is not None:
        check_range("ema.decay", cfg.ema.get("decay"), low=0, high=1, low_open=True, high_open=True, optional=True)
    trainer = cfg.get("trainer")
    _check_section("trainer", trainer, _TRAINER_RANGES)
    epochs = trainer.get("max_epochs") if trainer is not None else None
    if epochs is not None and epochs != -1:  # -1: no epoch limit (max_steps ends the run)
        check_range("trainer.max_epochs", epochs, low=1, integer=True)
    if dataset is not None:
        num_classes = dataset.get("num_classes")
        if num_classes not in (None, 0):  # unset: read from the files (folder, csv)
            check_range("dataset.num_classes", num_classes, low=1, integer=True)
        if dataset.get("verify") is not None:
            _choice("dataset.verify", dataset.get("verify"), ("fast", "full", "off"))
    optim = cfg.get("optim")
    if optim is not None and optim.get("optimizer") is not None:
        _choice("optim.optimizer", optim.get("optimizer"), ("sgd", "adamw"))


def _check_recipe(cfg: DictConfig) -> None:
    """A recipe (``recipe=<preset>``) names its learning rate and stochastic depth per fine-tuning regime."""
    recipe, finetune = cfg.get("recipe"), cfg.get("finetune")
    if recipe is None or finetune is None:
        return
    regime = finetune.get("regime", "full")
    for key in ("lr", "drop_path"):
        table = recipe.get(key)
        if table is not None and regime not in table:
            raise UserError(f"finetune={regime}: recipe {recipe.get('name')!r} has no recipe.{key} for this regime "
                            f"(it has {', '.join(table)}); add recipe.{key}.{regime}=<value> or pick another "
                            "recipe")  # fmt: skip


def validate_predict(cfg: DictConfig) -> None:
    """``predict``: batch size, workers, top-k and the resize factor, before the checkpoint is read."""
    check_range("batch_size", cfg.get("batch_size"), low=1, integer=True)
    check_range("num_workers", cfg.get("num_workers"), low=0, integer=True)
    check_range("topk", cfg.get("topk"), low=1, integer=True)
    check_range("resize_factor", cfg.get("resize_factor"), low=1.0, optional=True)  # null: the checkpoint's
    check_range("gate_threshold", cfg.get("gate_threshold"), low=0, optional=True)


def validate_selectors(selector: Any, key: str = "method.selector") -> None:
    """A selector override (eval / predict); None means the checkpoint's own."""
    if selector is not None:
        get_selector(selector, key)


def validate_config(cfg: DictConfig) -> None:
    """Train: ``method``, ``model`` and ``dataset.image_size`` describe a model that can be built and run."""
    validate_values(cfg)
    finetune = check_finetune(OmegaConf.to_container(cfg.finetune, resolve=True) if cfg.get("finetune") else None)
    method, model = cfg.get("method") or {}, cfg.get("model") or {}
    if finetune["regime"] in ("vpt", "adapter"):
        _check_structure(model, finetune)
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
    spec = get_selector(method.get("selector", "gls"))
    if spec.records_attention:  # the backbone's structure (meta device, no weights) says whether it can
        if finetune["regime"] == "vpt":
            raise UserError(f"method.selector={spec.name!r} reads attention maps, and finetune=vpt adds prompt tokens "
                            "to them; use method.selector=gls (or random, center, full) with finetune=vpt")  # fmt: skip
        encoder = meta_encoder(model.get("backbone"), dict(kwargs) if kwargs else None)
        if encoder is not None:
            check_selector_support(spec, encoder, model.get("backbone"))
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


def _check_structure(model: Any, finetune: dict[str, Any]) -> None:
    """finetune=vpt|adapter on this backbone's structure (meta device): refused by name where its blocks cannot take
    prompts or adapters."""
    kwargs = model.get("backbone_kwargs")
    encoder = meta_encoder(model.get("backbone"), dict(kwargs) if kwargs else None)
    if encoder is not None:
        holder = torch.nn.Module()
        holder.encoder = encoder
        with torch.device("meta"):
            apply_finetune(holder, finetune)
