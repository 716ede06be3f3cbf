"""glsim_pl: fine-grained visual classification with GLSim (Global-Local Similarity) vision transformers.

From ``pip install`` to a prediction::

    import glsim_pl
    model = glsim_pl.load_pretrained("hf-hub:NYCU-PCSxNTHU-MIS/GLSim/cub_vit_b16_16_2.pth")
    print(glsim_pl.predict_image(model, "bird.jpg"))   # top-5 (class, probability), crop box in image pixels

Public names (imported on first use, so ``import glsim_pl`` stays light; inference never imports Lightning,
Hydra or matplotlib):

- :func:`load_pretrained`: any model file or ``hf-hub:`` id -> classifier in eval mode with ``.preprocess``.
- :func:`transforms_for`: the model's eval preprocessing (PIL image or path -> input tensor).
- :func:`predict_image`: top-k classes and the crop box (original-image pixels) for one image.
- :class:`Preprocessing`: the stored eval transform (input size, resize rule, mean/std).
- :class:`GLSim`, :class:`ViTClassifier`: the models (pure torch + timm).
- :class:`GLSimLitModule`: the Lightning training system around them (imports Lightning on first use).
- :func:`load_official_checkpoint`: an official GLSim ``.pth`` -> :class:`GLSim`.
- :func:`selector_names`, :func:`register_selector`, :class:`SelectorInputs`: the registry of patch selectors a
  GLSim model can crop with (``method.selector=rollout``); a selector of your own is one decorated function.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "GLSim": "glsim_pl.models.glsim",
    "GLSimLitModule": "glsim_pl.training.module",
    "ViTClassifier": "glsim_pl.models.glsim",
    "load_official_checkpoint": "glsim_pl.models.glsim",
    "SelectorInputs": "glsim_pl.models.selectors",
    "register_selector": "glsim_pl.models.selectors",
    "selector_names": "glsim_pl.models.selectors",
    "Preprocessing": "glsim_pl.data.preprocessing",
    "load_pretrained": "glsim_pl.model_io.pretrained",
    "predict_image": "glsim_pl.model_io.pretrained",
    "transforms_for": "glsim_pl.model_io.pretrained",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Lazy exports: torch and timm load with the first public name used, not with ``import glsim_pl``."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'glsim_pl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
