"""Predict classes for an image, a folder or a CSV of paths with any checkpoint (ours or official GLSim).

    glsim-predict ckpt_path=best.ckpt input=photos/ [output=preds/] [save_vis=true] [topk=5]
    glsim-predict ckpt_path=hf-hub:NYCU-PCSxNTHU-MIS/GLSim/cub_vit_b16_16_2.pth input=list.csv class_names_file=c.csv

The checkpoint's stored preprocessing (input size, resize, mean/std) builds the transform; ``mean`` / ``std`` /
``resize_factor`` or ``dataset=`` given on the command line replace it.
``<output>/predictions.csv``: file, error, box (x1, y1, x2, y2 in original-image pixels), the same box in model-input
pixels (input_x1 .. input_y2), second_pass (1 when the
prediction came from the crop -> second pass -> aggregator -> head; with a gated checkpoint, 0 when the image exited
after the first pass at ``gate_threshold``), then top-k class names and probabilities. Unreadable files get a row
with the error and no prediction. ``save_vis=true`` writes
``<output>/vis/<n>_<name>.png``: original with the box | selector heat map | crop.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from glsim_pl.config.locate import CONFIG_DIR
from glsim_pl.config.run_dir import resolve_preprocessing
from glsim_pl.config.validate import validate_predict, validate_selectors
from glsim_pl.data.image_io import read_image
from glsim_pl.errors import UserError, exit_on_user_error
from glsim_pl.model_io.checkpoints import load_module
from glsim_pl.model_io.pretrained import prediction_rows
from glsim_pl.models.gate import apply_gate_threshold
from glsim_pl.models.selectors import check_selector
from glsim_pl.plots.panels import render_crop_panels, tensor_to_pil, upscaled
from glsim_pl.utils.compile import prepare_classifier
from glsim_pl.utils.logging import RankedLogger

__all__ = ["list_inputs", "main", "predict"]

log = RankedLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def list_inputs(spec: str) -> list[Path]:
    """An image file, a folder (searched recursively, sorted) or a CSV whose ``file``/``path`` column (or first
    column) lists images, relative to the CSV's folder."""
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise UserError(f"input={spec!r}: the folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return files
    if path.suffix.lower() == ".csv" and path.is_file():
        rows = list(csv.reader(path.read_text().splitlines()))
        header = [c.strip().lower() for c in rows[0]] if rows else []
        col = next((header.index(c) for c in ("file", "path", "image", "filename") if c in header), None)
        body = rows[1:] if col is not None else rows
        files = [path.parent / r[col or 0].strip() for r in body if r and r[col or 0].strip()]
        if not files:
            raise UserError(f"input={spec!r}: the CSV lists no files (expected a 'file' or 'path' column)")
        return files
    if path.is_file():
        return [path]
    raise UserError(f"input={spec!r}: expected an image file, a folder of images or a CSV of paths")


class _Images(Dataset):
    """(image tensor or zeros, index, error message or '', original width, original height)."""

    def __init__(self, files: list[Path], transform: Any, size: int) -> None:
        self.files, self.transform, self.size = files, transform, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, str, int, int]:
        try:
            image = read_image(self.files[i])
            return self.transform(image), i, "", *image.size
        except Exception as exc:  # any unreadable file becomes a row in the CSV, not a crash
            return torch.zeros(3, self.size, self.size), i, f"{type(exc).__name__}: {exc}".replace("\n", " "), 0, 0


def predict(cfg: DictConfig) -> Path:
    """Run the model over ``cfg.input`` and write ``predictions.csv`` (and visualisations); returns the CSV path."""
    if not cfg.get("ckpt_path") or not cfg.get("input"):
        raise UserError("ckpt_path and input are required: python -m glsim_pl.predict ckpt_path=... input=...")
    validate_selectors(cfg.get("selector"), "selector")  # before the checkpoint is read
    validate_predict(cfg)
    module, _ = load_module(cfg.ckpt_path, cfg.get("class_names_file"))
    net = module.net
    if cfg.get("selector") and hasattr(net, "selector"):
        net.selector = check_selector(cfg.selector)
    apply_gate_threshold(net, cfg.get("gate_threshold"))
    names, pre = resolve_preprocessing(cfg, module)
    size = pre.input_size
    files = list_inputs(str(cfg.input))
    transform = pre.transform()
    loader = DataLoader(
        _Images(files, transform, size), batch_size=int(cfg.batch_size), num_workers=int(cfg.num_workers)
    )
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))  # fmt: skip
    net.to(device).eval()
    prepare_classifier(net, cfg.get("compile"), cfg.get("compile_mode"), device.type == "cuda", int(cfg.batch_size))
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    k = min(int(cfg.topk), len(names))
    header = [
        "file",
        "error",
        "x1",
        "y1",
        "x2",
        "y2",
        "input_x1",
        "input_y1",
        "input_x2",
        "input_y2",
        "second_pass",
    ] + [f"{c}_{j}" for j in range(1, k + 1) for c in ("class", "prob")]
    patch = getattr(net, "patch_px", None)
    n_ok = 0
    with (out / "predictions.csv").open("w", newline="") as f, torch.inference_mode():
        writer = csv.writer(f)
        writer.writerow(header)
        for images, index, errors, widths, heights in loader:
            ok = [j for j, e in enumerate(errors) if not e]
            sizes = [(int(widths[j]), int(heights[j])) for j in ok]
            result = net(images[ok].to(device)) if ok else None
            rows = prediction_rows(result, sizes, pre, names, k) if ok else []
            for j, i in enumerate(index.tolist()):
                if errors[j]:
                    writer.writerow([files[i], errors[j]] + [""] * (len(header) - 2))
                    continue
                r = ok.index(j)
                row = rows[r]
                box = row["box_input"]
                top = [v for name, p in row["top"] for v in (name, f"{p:.6f}")]
                writer.writerow([files[i], "", *row["box"], *box, int(row["second_pass"]), *top])
                n_ok += 1
                if cfg.save_vis:
                    scores = result.scores[r : r + 1] if result.scores is not None else None
                    grid_hw = (size // patch, size // patch) if scores is not None else (1, 1)
                    panel = render_crop_panels(images[ok][r : r + 1], torch.tensor([box]).float(), scores, grid_hw)
                    (out / "vis").mkdir(exist_ok=True)
                    upscaled(tensor_to_pil(panel)).save(out / "vis" / f"{i:05d}_{files[i].stem}.png")
    log.info(f"predicted {n_ok}/{len(files)} images ({len(files) - n_ok} unreadable) -> {out / 'predictions.csv'}")
    return out / "predictions.csv"


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    """Hydra entry point; bad input ends with one clear message."""
    predict(cfg)


if __name__ == "__main__":
    main()
