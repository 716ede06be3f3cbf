"""Callbacks own the side effects: crop images, per-class CSV, resumable checkpoints, the divergence guard, progress
lines and training curves."""

from .crop_visualizer import CropVisualizer
from .divergence_guard import DivergenceGuard
from .per_class_csv import PerClassAccuracyCSV
from .progress_log import ProgressLog
from .resume_checkpoint import ResumeCheckpoint
from .rng_state import RNGStateCheckpoint
from .training_curves import TrainingCurves

__all__ = [
    "CropVisualizer",
    "DivergenceGuard",
    "PerClassAccuracyCSV",
    "ProgressLog",
    "RNGStateCheckpoint",
    "ResumeCheckpoint",
    "TrainingCurves",
]
