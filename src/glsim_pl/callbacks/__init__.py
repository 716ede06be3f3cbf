"""Callbacks own the side effects: crop images, per-class CSV."""

from .crop_visualizer import CropVisualizer
from .per_class_csv import PerClassAccuracyCSV

__all__ = ["CropVisualizer", "PerClassAccuracyCSV"]
