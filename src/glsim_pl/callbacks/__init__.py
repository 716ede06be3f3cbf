"""Callbacks own the side effects: crop images, per-class CSV, resumable checkpoints, the divergence guard."""

from .crop_visualizer import CropVisualizer
from .divergence_guard import DivergenceGuard
from .per_class_csv import PerClassAccuracyCSV
from .resume_checkpoint import ResumeCheckpoint
from .rng_state import RNGStateCheckpoint

__all__ = ["CropVisualizer", "DivergenceGuard", "PerClassAccuracyCSV", "RNGStateCheckpoint", "ResumeCheckpoint"]
