"""GLSim model code: pure torch + timm (no Lightning, no Hydra, no datasets)."""

from .aggregator import Aggregator
from .crop import crop_and_resize, crop_and_resize_loop
from .encoder import create_encoder
from .gate import GATES
from .glsim import FirstPass, GLSim, GLSimFeatures, GLSimOutput, ViTClassifier, build_classifier
from .official import is_official_checkpoint, load_official_checkpoint, read_official_checkpoint
from .selector import gls_scores, select_boxes
from .selectors import SELECTORS, SelectorInputs, register_selector, selector_names

__all__ = [
    "GATES",
    "SELECTORS",
    "Aggregator",
    "FirstPass",
    "GLSim",
    "GLSimFeatures",
    "GLSimOutput",
    "SelectorInputs",
    "ViTClassifier",
    "build_classifier",
    "create_encoder",
    "crop_and_resize",
    "crop_and_resize_loop",
    "gls_scores",
    "is_official_checkpoint",
    "load_official_checkpoint",
    "read_official_checkpoint",
    "register_selector",
    "select_boxes",
    "selector_names",
]
