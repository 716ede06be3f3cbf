"""Open any model file the tools accept: our Lightning checkpoints and the official GLSim ``.pth`` files.

Both come back as a :class:`GLSimLitModule` in eval mode, so eval / predict / export / visualize share one path;
so do exported folders and ``hf-hub:`` ids of any of these. ``module.preprocessing`` is the stored eval transform.
Class names: a ``class_id,class_name`` CSV, else the checkpoint's, else ``0..K-1``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from glsim_pl.errors import UserError
from glsim_pl.model_io.hub import is_hub_id, resolve_model_path
from glsim_pl.model_io.pretrained import load_pretrained, read_class_names, stored_preprocessing
from glsim_pl.models import is_official_checkpoint, load_official_checkpoint
from glsim_pl.models.official import official_model_kwargs
from glsim_pl.training.module import GLSimLitModule

__all__ = ["load_module"]


def _read(path: Path) -> dict[str, Any]:
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling / zip errors: not a file we can use
        raise UserError(
            f"ckpt_path={str(path)!r}: cannot be read as a checkpoint ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(ckpt, dict):
        raise UserError(f"ckpt_path={str(path)!r}: expected a checkpoint dict, got {type(ckpt).__name__}")
    return ckpt


def load_module(ckpt_path: str | Path, class_names_file: str | None = None) -> tuple[GLSimLitModule, str]:
    """Checkpoint -> (module in eval mode on CPU, ``"lightning"``, ``"official"`` or ``"export"``).

    Args:
        ckpt_path: a Lightning ``.ckpt`` of this project, an official GLSim ``.pth``, an exported folder, or an
            ``hf-hub:`` id of any of these.
        class_names_file: optional ``class_id,class_name`` CSV that replaces the stored names.
    """
    path = resolve_model_path(ckpt_path)
    if path.is_dir():  # an exported folder (config.json + model.safetensors)
        net = load_pretrained(path)
        module = GLSimLitModule(method=net.pretrained_cfg["method"], warmup_steps=0, class_names=net.class_names,
                                **net.pretrained_cfg["model_kwargs"])  # fmt: skip
        module.net, module.preprocessing = net, net.preprocess
        return _with_names(module, class_names_file), "export"
    if not path.is_file():
        raise UserError(f"ckpt_path={str(ckpt_path)!r}: no such file")
    ckpt = _read(path)
    if is_official_checkpoint(ckpt):
        kwargs = official_model_kwargs(ckpt["config"])
        module = GLSimLitModule(method="glsim", warmup_steps=0, **kwargs)
        module.net = load_official_checkpoint(ckpt)
        kind = "official"
    elif "state_dict" in ckpt and "hyper_parameters" in ckpt:
        module = GLSimLitModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
        kind = "lightning"
    else:
        raise UserError(
            f"ckpt_path={str(ckpt_path)!r}: neither a glsim_pl Lightning checkpoint (state_dict + hyper_parameters) "
            f"nor an official GLSim checkpoint (argparse config + model); found keys {sorted(ckpt)[:8]}"
        )
    where = str(ckpt_path) if is_hub_id(ckpt_path) else str(path)
    module.preprocessing = stored_preprocessing(ckpt, int(module.hparams.img_size), f"ckpt_path={where}")
    return _with_names(module, class_names_file), kind


def _with_names(module: GLSimLitModule, class_names_file: str | None) -> GLSimLitModule:
    if class_names_file:
        module.hparams.class_names = read_class_names(class_names_file, int(module.hparams.num_classes))
    return module.eval()


def check_compatible(module: GLSimLitModule, datamodule: Any, ckpt: str) -> None:
    hp = module.hparams
    if int(hp.num_classes) != int(datamodule.num_classes):
        raise UserError(f"ckpt_path={ckpt!r} has {hp.num_classes} classes but dataset.num_classes="
                        f"{datamodule.num_classes}; evaluate it on the dataset it was trained for")  # fmt: skip
    if int(hp.img_size) != int(datamodule.image_size):
        raise UserError(f"ckpt_path={ckpt!r} was built for {hp.img_size} px but dataset.image_size="
                        f"{datamodule.image_size}; set dataset.image_size={hp.img_size}")  # fmt: skip
