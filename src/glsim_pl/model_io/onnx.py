"""ONNX export of the inference forward, crop included: images (B, 3, S, S) -> logits (B, K), boxes (B, 4).

torch's current exporter (``torch.onnx.export(..., dynamo=True)``: torch.export, then onnxscript), opset 18 by
default; the batch size is dynamic, the image side S is fixed (the position embeddings are built for it). The
whole GLSim forward becomes one graph: encoder, GLS scores, stable sort of the patches, box, ``GridSample`` crop,
second encoder pass, aggregator, head. Not exportable: the confidence gate's early exit (``gate=confidence`` with
a threshold), whose second-pass batch size depends on the data; such models export with the gate off (both
passes for every image, the logits of the full GLSim head), which is said in the log.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from glsim_pl.errors import UserError
from glsim_pl.models import GLSim

__all__ = ["export_onnx"]


class InferenceForward(nn.Module):
    """The classifier's eval forward with plain tensor outputs: (logits, boxes); the ViT baseline's boxes are the
    whole image."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        if isinstance(self.net, GLSim):
            feats = self.net.forward_features(images)
            return self.net.forward_head(feats), feats.boxes
        logits = self.net(images).logits
        h, w = images.shape[-2:]
        whole = torch.tensor([0.0, 0.0, float(w), float(h)], device=images.device)
        return logits, whole.expand(images.shape[0], 4)


def _sort_stable(self: Any, *, stable: bool | None = None, dim: int = -1, descending: bool = False) -> Any:
    """``torch.sort(stable=True)`` as ONNX ``TopK`` over the whole axis: TopK breaks ties by the lower index, which is
    a stable sort for either direction (the exporter has no translation of its own for the stable sort)."""
    from onnxscript import opset18 as op

    k = op.Shape(self, start=-1) if dim == -1 else op.Shape(self, start=dim, end=dim + 1)  # (1,): the axis length
    return op.TopK(self, k, axis=dim, largest=int(bool(descending)), sorted=1)


def export_onnx(net: nn.Module, path: str | Path, input_size: int, opset: int = 18) -> Path:
    """Write ``path`` (atomically, mode 0644); inputs ``images`` (B, 3, S, S) float, outputs ``logits``, ``boxes``."""
    try:
        import onnxscript  # noqa: F401  # the dynamo exporter needs it
    except ImportError as exc:
        raise UserError("format=onnx needs onnx and onnxscript: pip install 'glsim_pl[onnx]'") from exc
    path = Path(path)
    model = InferenceForward(net).eval()
    example = torch.randn(2, 3, input_size, input_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with torch.no_grad():
            program = torch.onnx.export(model, (example,), dynamo=True, opset_version=opset,
                                        input_names=["images"], output_names=["logits", "boxes"],
                                        dynamic_shapes={"images": {0: batch}}, external_data=False,
                                        custom_translation_table={torch.ops.aten.sort.stable: _sort_stable},
                                        verbose=False)  # fmt: skip
        program.save(str(temp))
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except UserError:
        raise
    except Exception as exc:
        temp.unlink(missing_ok=True)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UserError(f"format=onnx: torch.onnx.export failed ({type(exc).__name__}: {first})") from exc
    return path
