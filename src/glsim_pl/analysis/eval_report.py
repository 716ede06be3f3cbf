"""Eval reports: class charts (matplotlib, :mod:`glsim_pl.plots`) and image panels (torchvision drawing, PIL
captions): confusion matrix, most confused pairs, error gallery, labelled image grids."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.loggers import Logger
from PIL import Image
from torch import Tensor

from glsim_pl.plots import save_figure
from glsim_pl.plots.classes import confused_pairs_figure, confusion_figure, top_confused_pairs, write_pairs_csv
from glsim_pl.plots.panels import captioned, render_crop_panels, tensor_to_pil, upscaled
from glsim_pl.utils.trackers import log_figure, log_image

__all__ = ["Mistake", "save_error_gallery", "write_class_reports"]


def write_class_reports(
    confusion: Tensor, out: Path, class_names: Sequence[str], formats: Sequence[str] = ("png",),
    loggers: Sequence[Logger] = (), normalize: bool = True, top_k: int = 20, max_classes: int = 1000,
) -> list[Path]:  # fmt: skip
    """``confused_pairs.csv`` + ``confused_pairs.<fmt>`` (the ``top_k`` most confused pairs, ranked) and, up to
    ``max_classes`` classes, ``confusion_matrix.<fmt>``; each figure also goes to the trackers as ``test/<name>``."""
    written = []
    if confusion.shape[0] <= max_classes:
        fig = confusion_figure(confusion.numpy(), class_names, normalize)
        written += save_figure(fig, out / "confusion_matrix", formats)
        log_figure(loggers, "test/confusion_matrix", fig)
    pairs = top_confused_pairs(confusion.numpy(), class_names, top_k)
    written.append(write_pairs_csv(pairs, out / "confused_pairs.csv"))
    fig = confused_pairs_figure(pairs)
    written += save_figure(fig, out / "confused_pairs", formats)
    log_figure(loggers, "test/confused_pairs", fig)
    return written


def save_error_gallery(
    mistakes: Sequence[Mistake], path: Path, class_names: Sequence[str], patch_px: int | None,
    loggers: Sequence[Logger] = (),
) -> bool:  # fmt: skip
    """Most confident mistakes, one row each: image with box | heat map | crop, captioned true/pred/confidence;
    also sent to the trackers as ``test/error_gallery``.

    Returns False (nothing written) when there are no mistakes.
    """
    rows = []
    for m in mistakes:
        image = m["image"][None]  # (1, 3, H, W)
        h, w = image.shape[-2:]
        if m["box"] is not None and patch_px:
            grid = render_crop_panels(image, m["box"][None], _scores(m), (h // patch_px, w // patch_px))
        else:
            grid = render_crop_panels(image, torch.tensor([[0.0, 0.0, w, h]]), None, (1, 1))
        true, pred = class_names[m["label"]], class_names[m["pred"]]
        panel = upscaled(tensor_to_pil(grid))
        rows.append(captioned(panel, f"true: {true} | predicted: {pred} ({m['confidence']:.2f})"))
    if not rows:
        return False
    width = max(r.width for r in rows)
    sheet = Image.new("RGB", (width, sum(r.height for r in rows)), "white")
    y = 0
    for row in rows:
        sheet.paste(row, (0, y))
        y += row.height
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    log_image(loggers, "test/error_gallery", np.asarray(sheet))
    return True


def _scores(m: Mistake) -> Tensor | None:
    return None if m["scores"] is None else m["scores"][None]


class Mistake(dict):
    """One misclassified test image: image (3, H, W), box (4,), scores (N,) or None, label, pred, confidence."""
