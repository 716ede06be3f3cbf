"""Callbacks own the side effects: crop images, per-class CSV, resumable checkpoints, the divergence guard, progress
lines and training curves."""

from glsim_pl.callbacks.crop_visualizer import CropVisualizer
from glsim_pl.callbacks.divergence_guard import DivergenceGuard
from glsim_pl.callbacks.per_class_csv import PerClassAccuracyCSV
from glsim_pl.callbacks.progress_log import ProgressLog
from glsim_pl.callbacks.resume_checkpoint import ResumeCheckpoint
from glsim_pl.callbacks.rng_state import RNGStateCheckpoint
from glsim_pl.callbacks.training_curves import TrainingCurves

__all__ = [
    "CropVisualizer",
    "DivergenceGuard",
    "PerClassAccuracyCSV",
    "ProgressLog",
    "RNGStateCheckpoint",
    "ResumeCheckpoint",
    "TrainingCurves",
]
