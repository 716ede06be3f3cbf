"""Models for inference, without Lightning or Hydra: load any model file, preprocess an image, predict.

    >>> import glsim_pl
    >>> model = glsim_pl.load_pretrained("hf-hub:NYCU-PCSxNTHU-MIS/GLSim/cub_vit_b16_16_2.pth")   # doctest: +SKIP
    >>> glsim_pl.predict_image(model, "bird.jpg")["top"][0]                                      # doctest: +SKIP
    ('0', 0.93...)

Sources :func:`load_pretrained` reads: an exported folder (``config.json`` + ``model.safetensors``), a glsim_pl
Lightning checkpoint (``.ckpt``), an official GLSim checkpoint (``.pth``) and ``hf-hub:`` ids of any of these.
Every loaded model carries ``pretrained_cfg`` (architecture, class names, preprocessing), ``preprocess`` (a
:class:`~glsim_pl.data.preprocessing.Preprocessing`: PIL image or path -> the tensor eval uses) and ``class_names``.
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from glsim_pl.data.preprocessing import Preprocessing, open_rgb
from glsim_pl.errors import UserError
from glsim_pl.model_io.hub import resolve_model_path
from glsim_pl.models import (
    GLSim,
    build_classifier,
    classifier_keywords,
    is_official_checkpoint,
    load_official_checkpoint,
)
from glsim_pl.models.finetune import EXPORT_KEEPS, has_adapters, merged_copy
from glsim_pl.models.official import official_model_kwargs
from glsim_pl.models.weights import read_checkpoint
from glsim_pl.utils.atomic_io import atomic_write

__all__ = [
    "CONFIG",
    "FORMAT",
    "WEIGHTS",
    "classifier_kwargs",
    "read_model_file",
    "upgrade_hparams",
    "load_pretrained",
    "predict_image",
    "prediction_rows",
    "read_class_names",
    "save_pretrained",
    "stored_preprocessing",
    "transforms_for",
]

FORMAT = "glsim_pl.pretrained"  # the export format's name (kept: exports written by any version carry it)
WEIGHTS, CONFIG = "model.safetensors", "config.json"


# the flat hyperparameters of checkpoints written before they were grouped (a frozen list: the old format)
# a net group passed alone (save_pretrained) is regrouped through this list too: every classifier keyword belongs here
_FLAT_OPTIM_KEYS = ("optimizer", "lr", "momentum", "weight_decay", "warmup_steps", "warmup_lr", "min_lr")
_MODULE_KEYS = ("num_classes", "label_smoothing", "gate_loss_weight", "grad_checkpointing", "class_names")


def upgrade_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's hyperparameters in today's grouped form (``net``, ``optim`` + the module's own keys); flat ones
    from checkpoints written before the grouping are regrouped here, the one place that knows the old form. A bare
    ``net`` group (no module keys) comes back as ``{"net": hparams}``: every key that is neither the module's nor
    the optimiser's belongs to the classifier, so a new model knob needs no entry here."""
    hp = dict(hparams)
    if "net" in hp:
        return hp
    optim = {key: hp.pop(key) for key in _FLAT_OPTIM_KEYS if key in hp}
    module = {key: hp.pop(key) for key in _MODULE_KEYS if key in hp}
    return {**module, "net": hp, "optim": optim}


def classifier_kwargs(net: dict[str, Any], num_classes: int) -> tuple[str, dict[str, Any]]:
    """(method, constructor keywords) of a classifier from a module's ``hparams.net``, the backbone built empty
    (the weights come from the file being loaded, so no download); the ``model_kwargs`` an export stores."""
    kwargs = classifier_keywords(dict(net))
    method = kwargs.pop("method", "glsim")
    kwargs.pop("pretrained_head", None)
    kwargs.update(num_classes=int(num_classes), pretrained=False, pretrained_file=None)
    return method, json.loads(json.dumps(kwargs))  # plain JSON values only (fails loudly otherwise)


def stored_preprocessing(ckpt: dict[str, Any], img_size: int, where: str) -> Preprocessing:
    """The checkpoint's preprocessing record; official files and older checkpoints (no record) get the paper's
    eval transform at their input size with ImageNet statistics, which is what the official runs used."""
    record = ckpt.get("preprocessing")
    if isinstance(record, dict):
        return Preprocessing.from_dict(record, f"{where}: preprocessing")
    if not is_official_checkpoint(ckpt):
        warnings.warn(f"{where}: no preprocessing record (a checkpoint from an older version); using the default "
                      f"eval transform at {img_size} px with ImageNet mean/std", stacklevel=2)  # fmt: skip
    return Preprocessing(input_size=int(img_size))


def _from_checkpoint(ckpt: dict[str, Any], where: str) -> tuple[nn.Module, dict[str, Any]]:
    if is_official_checkpoint(ckpt):
        net, kwargs = load_official_checkpoint(ckpt), official_model_kwargs(ckpt["config"])
        return net, {"method": "glsim", "model_kwargs": {**kwargs, "selector": "gls"}, "class_names": None,
                     "source": "official"}  # fmt: skip
    if "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise UserError(f"{where}: neither a glsim_pl checkpoint (state_dict + hyper_parameters) nor an official "
                        f"GLSim checkpoint (argparse config + model); found keys {sorted(ckpt)[:8]}")  # fmt: skip
    hp = upgrade_hparams(ckpt["hyper_parameters"])
    method, kwargs = classifier_kwargs(hp["net"], hp["num_classes"])
    net = build_classifier(method, **kwargs)
    state = {k[4:].replace("_orig_mod.", ""): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise UserError(f"{where}: the weights do not match the stored hyperparameters: {exc}") from exc
    return net, {"method": method, "model_kwargs": kwargs, "class_names": hp.get("class_names"), "source": "lightning"}


def _from_folder(folder: Path) -> tuple[nn.Module, dict[str, Any], Preprocessing]:
    from safetensors.torch import load_file

    if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
        raise UserError(f"{str(folder)!r}: expected an exported folder with {CONFIG} and {WEIGHTS}")
    config = json.loads((folder / CONFIG).read_text())
    if config.get("format") != FORMAT:
        raise UserError(f"{folder / CONFIG}: format={config.get('format')!r}, expected {FORMAT!r}")
    net = build_classifier(config["method"], **config["model_kwargs"])
    try:
        net.load_state_dict(load_file(str(folder / WEIGHTS)), strict=True)
    except RuntimeError as exc:
        raise UserError(f"{folder / WEIGHTS} does not match {folder / CONFIG}: {exc}") from exc
    record = config.get("preprocessing") or {
        "input_size": config.get("img_size", 224),
        "mean": config.get("mean"),
        "std": config.get("std"),
        "resize_factor": config.get("resize_factor"),
    }
    pre = Preprocessing.from_dict({k: v for k, v in record.items() if v is not None}, f"{folder / CONFIG}")
    return net, {**config, "source": "export"}, pre


def read_model_file(path_or_hub_id: str | Path, key: str = "path") -> tuple[nn.Module, dict[str, Any], Preprocessing]:
    """The one dispatcher for any model file: an exported folder, a glsim_pl ``.ckpt``, an official ``.pth`` or an
    ``hf-hub:`` id of any of these -> (classifier, its record, its eval preprocessing).

    The record has ``method``, ``model_kwargs`` (constructor keywords, ``num_classes`` included), ``class_names``
    (as stored: ``None`` for official files) and ``source`` (``export``, ``lightning`` or ``official``).
    """
    path = resolve_model_path(path_or_hub_id)
    where = str(path_or_hub_id)
    if path.is_dir():
        return _from_folder(path)
    if not path.is_file():
        raise UserError(f"{key}={where!r}: no such file or folder")
    ckpt = read_checkpoint(path, key)
    net, config = _from_checkpoint(ckpt, f"{key}={where}")
    pre = stored_preprocessing(ckpt, int(config["model_kwargs"].get("img_size", 224)), f"{key}={where}")
    return net, config, pre


def load_pretrained(
    path_or_hub_id: str | Path, map_location: str | torch.device = "cpu", class_names: list[str] | None = None
) -> nn.Module:
    """Any model file -> a ready classifier in eval mode that carries its preprocessing.

    Args:
        path_or_hub_id: an exported folder, a ``.ckpt`` of this project, an official GLSim ``.pth``, or
            ``hf-hub:<owner>/<name>[/<file>]`` (downloaded into the Hugging Face cache).
        map_location: device of the returned model.
        class_names: replace the stored names (official checkpoints store none: ``"0"`` .. ``"K-1"``).

    Returns:
        :class:`~glsim_pl.GLSim` (or the ViT baseline) with ``.preprocess``, ``.class_names``, ``.pretrained_cfg``.

    Example:
        >>> model = glsim_pl.load_pretrained("exported/")                          # doctest: +SKIP
        >>> logits = model(model.preprocess("bird.jpg")[None]).logits               # doctest: +SKIP
    """
    net, config, pre = read_model_file(path_or_hub_id, "path")
    k = int(config["model_kwargs"]["num_classes"])
    names = list(class_names or config.get("class_names") or [str(i) for i in range(k)])
    if len(names) != k:
        raise UserError(f"class_names: {len(names)} names, the model has {k} classes")
    net.pretrained_cfg = {**config, "class_names": names, "preprocessing": pre.to_dict(), **pre.to_dict()["timm"]}
    net.preprocess, net.class_names = pre, names
    return net.to(map_location).eval()


def transforms_for(model: nn.Module) -> Preprocessing:
    """The eval preprocessing of a model from :func:`load_pretrained` (PIL image or path -> tensor (3, S, S)).

    Example:
        >>> x = glsim_pl.transforms_for(model)("bird.jpg")[None]                    # doctest: +SKIP
    """
    pre = getattr(model, "preprocess", None)
    if not isinstance(pre, Preprocessing):
        raise UserError("transforms_for: the model carries no preprocessing; load it with glsim_pl.load_pretrained")
    return pre


def prediction_rows(
    output: Any, sizes: list[tuple[int, int]], pre: Preprocessing, names: list[str], topk: int
) -> list[dict[str, Any]]:
    """A classifier's batch output -> per image: top-k (name, probability), the crop box in original-image pixels
    (``box``, from each image's (width, height) in ``sizes``) and in model-input pixels (``box_input``), and
    whether the prediction came from the second pass."""
    k = min(int(topk), len(names))
    s = pre.input_size
    prob, cls = output.logits.float().softmax(-1).topk(k, dim=-1)
    rows = []
    for r, (width, height) in enumerate(sizes):
        box_in = [int(v) for v in output.boxes[r].tolist()] if output.boxes is not None else [0, 0, s, s]
        second = bool(output.second_pass[r]) if output.second_pass is not None else output.boxes is not None
        rows.append({"top": [(names[c], float(p)) for c, p in zip(cls[r].tolist(), prob[r].tolist(), strict=True)],
                     "box": pre.box_to_original(box_in, width, height), "box_input": box_in,
                     "second_pass": second})  # fmt: skip
    return rows


@torch.inference_mode()
def predict_image(model: nn.Module, image: Image.Image | str | Path, topk: int = 5) -> dict[str, Any]:
    """Classify one image with a model from :func:`load_pretrained` (the same path ``glsim-predict`` takes).

    Returns:
        ``{"top": [(class name, probability), ...], "box": [x1, y1, x2, y2] in original-image pixels,
        "box_input": [...] in model-input pixels, "second_pass": bool}``.

    Example:
        >>> glsim_pl.predict_image(model, "bird.jpg", topk=3)["box"]                # doctest: +SKIP
        [41.2, 30.0, 410.6, 388.1]
    """
    rgb = open_rgb(image)
    pre = transforms_for(model)
    x = pre(rgb)[None].to(next(model.parameters()).device)
    return prediction_rows(model(x), [rgb.size], pre, model.class_names, topk)[0]


def save_pretrained(
    net: nn.Module, hparams: dict[str, Any], out: str | Path, class_names: list[str], pre: Preprocessing,
    extra: dict[str, Any] | None = None,
) -> Path:  # fmt: skip
    """Write ``model.safetensors`` + ``config.json`` (architecture, class names, preprocessing) to ``out``, each
    atomically with mode 0644; returns the folder. ``hparams``: the module's hyperparameters (grouped, or flat as
    older checkpoints hold them) or just their ``net`` group."""
    from safetensors.torch import save_file

    folder = Path(out).expanduser()
    method, kwargs = classifier_kwargs(upgrade_hparams(hparams)["net"], net.head.out_features)
    if isinstance(net, GLSim):
        kwargs["selector"] = net.selector
    if (kwargs.get("finetune") or {}).get("regime") not in EXPORT_KEEPS:  # prompts, bottleneck adapters stay as such
        kwargs.pop("finetune", None)
        if has_adapters(net):
            net = merged_copy(net)  # LoRA / DoRA folded into the weights: the export is a plain encoder, as full FT's
    p = pre.to_dict()
    config = {
        "format": FORMAT, "format_version": 2, "method": method, "backbone": kwargs["backbone"],
        "num_classes": kwargs["num_classes"], "img_size": kwargs.get("img_size", 224), "top_o": kwargs.get("top_o"),
        "selector": kwargs.get("selector"), "class_names": list(class_names), "mean": p["mean"], "std": p["std"],
        "resize_factor": pre.resize_factor, "preprocessing": p, "model_kwargs": kwargs, **(extra or {}),
    }  # fmt: skip
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    atomic_write(folder / WEIGHTS, lambda t: save_file(state, str(t), metadata={"format": "pt"}))
    atomic_write(folder / CONFIG, lambda t: t.write_text(json.dumps(config, indent=2) + "\n"))
    return folder


def read_class_names(path: str | Path, num_classes: int) -> list[str]:
    """``class_id,class_name`` rows (header optional, ids 0..K-1 or 1..K) -> K names."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"class_names_file={str(path)!r}: no such file")
    rows = [r for r in csv.reader(file.read_text().splitlines()) if r]
    if rows and not rows[0][0].strip().lstrip("-").isdigit():
        rows = rows[1:]  # header
    try:
        pairs = {int(r[0]): r[1].strip() for r in rows}
    except (ValueError, IndexError) as exc:
        raise UserError(f"class_names_file={str(path)!r}: expected rows 'class_id,class_name' ({exc})") from exc
    ids = sorted(pairs)
    if len(ids) != num_classes or ids[-1] - ids[0] + 1 != num_classes:
        raise UserError(f"class_names_file={str(path)!r}: {len(ids)} distinct ids, the model has {num_classes} classes")
    return [pairs[i] for i in ids]
