"""GLSim model code: pure torch + timm (no Lightning, no Hydra, no datasets)."""

from glsim_pl.models.aggregator import Aggregator
from glsim_pl.models.boxes import select_boxes
from glsim_pl.models.crop import crop_and_resize, crop_and_resize_loop
from glsim_pl.models.encoder import create_encoder
from glsim_pl.models.gate import GATES
from glsim_pl.models.glsim import (
    FirstPass,
    GLSim,
    GLSimFeatures,
    GLSimOutput,
    ViTClassifier,
    build_classifier,
    classifier_keywords,
    load_official_checkpoint,
)
from glsim_pl.models.official import is_official_checkpoint
from glsim_pl.models.selectors import SELECTORS, SelectorInputs, gls_scores, register_selector, selector_names
from glsim_pl.models.weights import read_official_checkpoint

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
    "classifier_keywords",
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
