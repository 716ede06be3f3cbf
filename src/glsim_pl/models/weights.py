"""``model.pretrained_file``: weights from any file we know, loaded only where they match, or an error saying why.

Accepted files:

- timm / original ViT weights: ``.safetensors``, ``pytorch_model.bin``, ``.pth`` (``state_dict`` / ``model``
  wrappers and ``module.`` prefixes unwrapped; timm's checkpoint filter remaps foreign layouts and resamples the
  position embeddings), Google's JAX ``.npz`` (timm's npz loader);
- our own Lightning checkpoints (``net.*`` keys) and exported ``model.safetensors`` (``encoder.*``, ``aggregator.*``,
  ``head.*`` keys): the encoder part loads into the encoder;
- official GLSim checkpoints (``config`` + ``model``), converted to our layout first (:mod:`.official`).

At least :data:`MIN_SHARE` of the encoder's tensors must load (same name and shape), else the file does not belong
to this backbone: an error names the file, the count and the first unmatched keys on both sides. The head and the
aggregator of a classifier file load only with ``pretrained_head=True`` and the same number of classes.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from glsim_pl.errors import UserError
from glsim_pl.models.official import convert_official_state_dict, is_official_checkpoint

__all__ = [
    "MIN_SHARE",
    "EncoderLoad",
    "load_encoder_weights",
    "load_head_weights",
    "read_checkpoint",
    "read_official_checkpoint",
    "read_weights",
]

log = logging.getLogger(__name__)  # not utils.logging: models/ imports no Lightning
MIN_SHARE = 0.9
_SHOWN = 5
_HEAD_PARTS = ("head.", "aggregator.", "gate_head.")  # what a classifier file holds besides its encoder


@dataclass
class EncoderLoad:
    """Outcome of loading an encoder: tensors loaded of the encoder's total, and the keys left out on each side."""

    loaded: int
    total: int
    missing: list[str]
    unexpected: list[str]
    reshaped: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # (key, file, encoder)

    @property
    def share(self) -> float:
        return self.loaded / self.total if self.total else 0.0


def _cannot_load(path: Path, exc: BaseException) -> UserError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return UserError(f"model.pretrained_file={str(path)!r}: cannot read it ({first}); expected weights of the same "
                     "architecture as model.backbone (.safetensors, .bin, .pth, .npz, a glsim_pl checkpoint or "
                     "export, or an official GLSim checkpoint)")  # fmt: skip


def _strip(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def read_weights(path: str | Path) -> tuple[dict[str, Tensor], str]:
    """(state dict, kind) of a non-npz weights file; kind is ``timm`` or ``classifier`` (``encoder.*`` keys)."""
    path = Path(path).expanduser()
    try:
        if path.suffix == ".safetensors":
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            try:
                obj: Any = load_file(str(path))
            except SafetensorError as exc:  # truncated or not safetensors: none of the errors caught below
                raise _cannot_load(path, exc) from exc
        else:
            obj = _load(path)
        if is_official_checkpoint(obj):
            return convert_official_state_dict(obj["model"]), "classifier"
    except (RuntimeError, KeyError, ValueError, OSError, EOFError) as exc:  # truncated, not a weights file
        raise _cannot_load(path, exc) from exc
    if isinstance(obj, dict):
        for wrapper in ("state_dict", "model", "module"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise _cannot_load(path, ValueError("no state dict of tensors in it"))
    state = _strip(_strip(obj, "module."), "net.")  # DDP prefix; a glsim_pl LightningModule holds its model as net
    state = {k: v for k, v in state.items() if not k.startswith(("criterion.", "train_metrics.", "val_metrics."))}
    return state, "classifier" if any(k.startswith("encoder.") for k in state) else "timm"


def _matched(encoder: nn.Module, state: dict[str, Tensor]) -> tuple[dict[str, Tensor], EncoderLoad]:
    target = encoder.state_dict()
    usable = {k: v for k, v in state.items() if k in target and tuple(v.shape) == tuple(target[k].shape)}
    missing = [k for k in target if k not in usable]
    unexpected = [k for k in state if k not in usable]
    reshaped = [(k, tuple(state[k].shape), tuple(target[k].shape)) for k in missing if k in state]
    return usable, EncoderLoad(len(usable), len(target), missing, unexpected, reshaped)


def _check_share(path: Path, result: EncoderLoad) -> None:
    if result.share >= MIN_SHARE:
        return
    reshaped = ""
    if result.reshaped:  # the same layout at another size (ViT-S weights for a ViT-Ti, another patch size)
        shapes = "; ".join(f"{k} {list(f)} in the file, {list(e)} in the encoder" for k, f, e in result.reshaped[:3])
        reshaped = (f" {len(result.reshaped)} of the encoder's tensors are in the file under the same name with "
                    f"another shape (another model size?): {shapes}.")  # fmt: skip
    raise UserError(f"model.pretrained_file={str(path)!r}: only {result.loaded} of the encoder's {result.total} "
                    f"tensors ({result.share:.0%}) match the file (at least {MIN_SHARE:.0%} needed; expected weights "
                    f"of the same architecture as model.backbone).{reshaped} Unmatched in the encoder: "
                    f"{result.missing[:_SHOWN]}; unmatched in the file: {result.unexpected[:_SHOWN]}")  # fmt: skip


def load_encoder_weights(encoder: nn.Module, pretrained_file: str | Path) -> EncoderLoad:
    """Load the encoder part of ``pretrained_file`` into a headless timm ViT; too few matching tensors is an error."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    path = Path(pretrained_file).expanduser()
    if path.suffix == ".npz":
        before = {k: v.clone() for k, v in encoder.state_dict().items()}
        with torch.no_grad():  # a NaN sentinel marks what the npz loader did not write (an init value could match)
            for value in encoder.state_dict().values():
                if value.is_floating_point():
                    value.fill_(float("nan"))
        try:
            encoder.load_pretrained(str(path))
        except (RuntimeError, KeyError, ValueError, OSError) as exc:
            encoder.load_state_dict(before)
            raise _cannot_load(path, exc) from exc
        missing = [k for k, v in encoder.state_dict().items() if v.is_floating_point() and bool(v.isnan().all())]
        encoder.load_state_dict({k: before[k] for k in missing}, strict=False)
        result = EncoderLoad(len(before) - len(missing), len(before), missing, [])
        _check_share(path, result)
        return result
    state, kind = read_weights(path)
    if kind == "classifier":
        state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    try:
        state = checkpoint_filter_fn(state, encoder)  # foreign layouts, position embeddings to this image size
    except (RuntimeError, KeyError, ValueError) as exc:
        raise _cannot_load(path, exc) from exc
    classifier = encoder.pretrained_cfg.get("classifier") or "head"
    target = encoder.state_dict()
    state = {k: v for k, v in state.items() if k in target or k.split(".")[0] not in (classifier, "fc_norm")}
    usable, result = _matched(encoder, state)
    _check_share(path, result)
    encoder.load_state_dict(usable, strict=False)
    return result


def load_head_weights(net: nn.Module, pretrained_file: str | Path) -> list[str]:
    """The head (and aggregator) of a classifier file, when its class count matches ``net``'s; returns the keys."""
    path = Path(pretrained_file).expanduser()
    if path.suffix == ".npz":
        log.warning(f"model.pretrained_head=true: {path} holds a backbone only; the head keeps its init")
        return []
    state, _ = read_weights(path)
    parts = {k: v for k, v in state.items() if k.startswith(_HEAD_PARTS)}
    head = parts.get("head.weight")
    if head is None:
        log.warning(f"model.pretrained_head=true: {path} has no GLSim / ViT classifier head; the head keeps its init")
        return []
    classes = int(net.head.weight.shape[0])
    if tuple(head.shape) != tuple(net.head.weight.shape):
        log.warning(f"model.pretrained_head=true: the head of {path} has {head.shape[0]} classes, this model "
                    f"{classes}; head and aggregator dropped (they keep their init)")  # fmt: skip
        return []
    target = net.state_dict()
    usable = {k: v for k, v in parts.items() if k in target and tuple(v.shape) == tuple(target[k].shape)}
    net.load_state_dict(usable, strict=False)
    log.info(f"model.pretrained_head=true: loaded {len(usable)} head / aggregator tensors from {path}")
    return sorted(usable)


def _load(path: Path, mmap: bool = False) -> Any:
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def read_checkpoint(path: str | Path, key: str = "ckpt_path", mmap: bool = False) -> dict[str, Any]:
    """The package's one ``torch.load``: ``weights_only=True``, and only ``argparse.Namespace`` may unpickle (the
    official files' config). ``mmap=True`` maps the tensors instead of reading them (a cheap look at the metadata).
    Any file that is not a readable checkpoint dict raises one :class:`UserError` naming ``key`` and the file."""
    try:
        ckpt = _load(Path(path), mmap)
    except Exception as exc:  # unpickling / zip errors: not a file we can use
        raise UserError(f"{key}={str(path)!r}: cannot be read as a checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, dict):
        raise UserError(f"{key}={str(path)!r}: expected a checkpoint dict, got {type(ckpt).__name__}")
    return ckpt


read_official_checkpoint = read_checkpoint  # the name the official-format loader has always had
