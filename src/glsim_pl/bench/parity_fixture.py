"""The official-parity fixture: a 1-layer ViT-T/16 GLSim (3 classes, top-O 6, 96 px, cos, 1 aggregator layer) with
the official implementation's eval-mode logits and crops for three images.

Every weight and input value lies on an int8 grid (``q * 2**e``, one exponent a tensor), so the file stores one byte
a value and :func:`read_parity_fixture` rebuilds the float32 tensors exactly; the logits and crops were computed by
the official code on exactly those float32 values (``tests/fixtures/make_parity_fixture.py``). The result is the
dict an official checkpoint plus its reference outputs would give: ``checkpoint`` (``config`` as an
``argparse.Namespace``, ``epoch``, ``model`` with ``model.``-prefixed keys, ``accuracy``), ``images``, ``logits``,
``crops``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

__all__ = ["FIXTURE_NAME", "read_parity_fixture"]

FIXTURE_NAME = "official_glsim_vit_t16_l1_s96_int8.pt"


def _exact(q: torch.Tensor, exponent: int) -> torch.Tensor:
    return q.to(torch.float32) * 2.0**exponent  # |q| <= 127: exact in float32


def read_parity_fixture(path: str | Path) -> dict[str, Any]:
    """The fixture as an official checkpoint dict plus ``images`` (3, 3, 96, 96), ``logits`` (3, 3), ``crops``."""
    raw = torch.load(path, map_location="cpu", weights_only=True)
    model = {key: _exact(q, raw["exponents"][key]) for key, q in raw["weights"].items()}
    checkpoint = {"config": argparse.Namespace(**raw["config"]), "epoch": raw["epoch"], "model": model,
                  "accuracy": raw["accuracy"]}  # fmt: skip
    return {"checkpoint": checkpoint, "images": _exact(raw["images"], raw["images_exponent"]),
            "logits": raw["logits"], "crops": raw["crops"]}  # fmt: skip
