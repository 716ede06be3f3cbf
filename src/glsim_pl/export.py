"""Export a checkpoint (ours or official GLSim) to a self-contained folder, and load it back without Lightning.

    python -m glsim_pl.export ckpt_path=best.ckpt out=exported/
    >>> import glsim_pl; model = glsim_pl.load_pretrained("exported/")   # GLSim / ViTClassifier, eval mode

The folder holds ``model.safetensors`` (the classifier's state dict) and ``config.json``: method, every constructor
keyword of the classifier (``model_kwargs``; backbone, num_classes, img_size, top_o, selector, ...), class names,
mean/std and the eval resize factor. Rebuilding needs no network: the backbone is created without weights.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import UserError, exit_on_user_error
from .models import GLSim, ViTClassifier, build_classifier
from .utils.logging import RankedLogger

__all__ = ["load_pretrained", "main", "save_pretrained"]

log = RankedLogger(__name__)
FORMAT = "glsim_pl.pretrained"
WEIGHTS, CONFIG = "model.safetensors", "config.json"


def _constructor_kwargs(net: nn.Module, hparams: dict[str, Any]) -> dict[str, Any]:
    cls = GLSim if isinstance(net, GLSim) else ViTClassifier
    names = [n for n in inspect.signature(cls.__init__).parameters if n != "self"]
    kwargs = {n: hparams[n] for n in names if n in hparams}
    kwargs.update(pretrained=False, pretrained_file=None)  # the weights come from model.safetensors
    if isinstance(net, GLSim):
        kwargs["selector"] = net.selector
    return json.loads(json.dumps(kwargs))  # plain JSON values only (fails loudly otherwise)


def save_pretrained(
    net: nn.Module, hparams: dict[str, Any], out: str | Path, class_names: list[str], mean: list[float],
    std: list[float], resize_factor: float = 1.34,
) -> Path:  # fmt: skip
    """Write ``model.safetensors`` + ``config.json`` to ``out``; returns the folder."""
    folder = Path(out).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    kwargs = _constructor_kwargs(net, hparams)
    config = {
        "format": FORMAT,
        "format_version": 1,
        "method": "glsim" if isinstance(net, GLSim) else "vit",
        "backbone": kwargs["backbone"],
        "num_classes": kwargs["num_classes"],
        "img_size": kwargs.get("img_size", 224),
        "top_o": kwargs.get("top_o"),
        "selector": kwargs.get("selector"),
        "class_names": list(class_names),
        "mean": list(mean),
        "std": list(std),
        "resize_factor": resize_factor,
        "model_kwargs": kwargs,
    }
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(folder / WEIGHTS))
    (folder / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return folder


def load_pretrained(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the exported classifier (eval mode); its ``pretrained_cfg`` holds config.json (names, mean/std)."""
    folder = Path(path).expanduser()
    if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
        raise UserError(f"{str(folder)!r}: expected an exported folder with {CONFIG} and {WEIGHTS}")
    config = json.loads((folder / CONFIG).read_text())
    if config.get("format") != FORMAT:
        raise UserError(f"{folder / CONFIG}: format={config.get('format')!r}, expected {FORMAT!r}")
    net = build_classifier(config["method"], **config["model_kwargs"])
    try:
        net.load_state_dict(load_file(str(folder / WEIGHTS), device=str(map_location)), strict=True)
    except RuntimeError as exc:
        raise UserError(f"{folder / WEIGHTS} does not match {folder / CONFIG}: {exc}") from exc
    net.pretrained_cfg = config
    return net.to(map_location).eval()


def export(cfg: DictConfig) -> Path:
    """``ckpt_path`` -> ``out``; class names and mean/std as in predict (checkpoint, file, dataset, defaults)."""
    from .checkpoint_io import load_module
    from .predict import _class_names_and_norm

    if not cfg.get("ckpt_path") or not cfg.get("out"):
        raise UserError("ckpt_path and out are required: python -m glsim_pl.export ckpt_path=... out=dir/")
    module, kind = load_module(cfg.ckpt_path, cfg.get("class_names_file"))
    if cfg.get("selector") and isinstance(module.net, GLSim):
        from .models.selectors import check_selector

        module.net.selector = check_selector(cfg.selector)
    names, mean, std = _class_names_and_norm(cfg, module)
    folder = save_pretrained(module.net, dict(module.hparams), cfg.out, names, mean, std, float(cfg.resize_factor))
    log.info(f"exported the {kind} checkpoint {cfg.ckpt_path} -> {folder} ({WEIGHTS}, {CONFIG})")
    return folder


@hydra.main(version_base="1.3", config_path="../../conf", config_name="export")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    """Hydra entry point; bad input ends with one clear message."""
    export(cfg)


if __name__ == "__main__":
    main()
