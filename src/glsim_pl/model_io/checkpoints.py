"""Open any model file the tools accept as a Lightning module: our checkpoints, exports, official ``.pth`` files.

All come back as a :class:`GLSimLitModule` in eval mode, so eval / predict / export / visualize share one path;
so do exported folders and ``hf-hub:`` ids of any of these. ``module.preprocessing`` is the stored eval transform.
Class names: a ``class_id,class_name`` CSV, else the checkpoint's, else ``0..K-1``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from glsim_pl.errors import UserError
from glsim_pl.model_io.pretrained import read_class_names, read_model_file
from glsim_pl.training.module import GLSimLitModule

__all__ = ["check_compatible", "load_module"]


def load_module(ckpt_path: str | Path, class_names_file: str | None = None) -> tuple[GLSimLitModule, str]:
    """Any model file -> (module in eval mode on CPU, ``"lightning"``, ``"official"`` or ``"export"``).

    The classifier comes from the dispatcher (:func:`~glsim_pl.model_io.pretrained.read_model_file`), so the three
    kinds take one path; the module around it carries the grouped hyperparameters (old flat ones upgraded).

    Args:
        ckpt_path: a Lightning ``.ckpt`` of this project, an official GLSim ``.pth``, an exported folder, or an
            ``hf-hub:`` id of any of these.
        class_names_file: optional ``class_id,class_name`` CSV that replaces the stored names.
    """
    net, record, pre = read_model_file(ckpt_path, "ckpt_path")
    kwargs = dict(record["model_kwargs"])
    num_classes = int(kwargs.pop("num_classes"))
    module = GLSimLitModule(num_classes=num_classes, net={"method": record["method"], **kwargs},
                            optim={"warmup_steps": 0}, class_names=record.get("class_names"))  # fmt: skip
    module.net, module.preprocessing = net, pre
    return _with_names(module, class_names_file), record["source"]


def _with_names(module: GLSimLitModule, class_names_file: str | None) -> GLSimLitModule:
    if class_names_file:
        module.hparams.class_names = read_class_names(class_names_file, int(module.hparams.num_classes))
    return module.eval()


def check_compatible(module: GLSimLitModule, datamodule: Any, ckpt: str) -> None:
    """A model file and a dataset that fit: same class count, same input size; else one line saying which."""
    hp = module.hparams
    if int(hp.num_classes) != int(datamodule.num_classes):
        raise UserError(f"ckpt_path={ckpt!r} has {hp.num_classes} classes but dataset.num_classes="
                        f"{datamodule.num_classes}; evaluate it on the dataset it was trained for")  # fmt: skip
    img_size = int(hp.net.get("img_size", 224))
    if img_size != int(datamodule.image_size):
        raise UserError(f"ckpt_path={ckpt!r} was built for {img_size} px but dataset.image_size="
                        f"{datamodule.image_size}; set dataset.image_size={img_size}")  # fmt: skip
