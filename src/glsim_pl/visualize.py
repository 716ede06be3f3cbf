"""Compare selectors on the same validation images (the paper's Figure 1 style), as one PNG.

    python -m glsim_pl.visualize ckpt_path=best.ckpt dataset=cub selectors=[gls,rollout,attn_last]

One row per image: the image (object box in green where the dataset has boxes), then for each selector its score
heat map over the image with the selected crop box in red. Written to ``<run dir>/selectors.png`` (or ``out=``).
"""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from PIL import Image
from torch import Tensor

from glsim_pl.config.groups import transform_augs
from glsim_pl.config.instantiate import instantiate
from glsim_pl.config.locate import CONFIG_DIR
from glsim_pl.errors import UserError, exit_on_user_error
from glsim_pl.model_io.checkpoints import check_compatible, load_module
from glsim_pl.models import GLSim
from glsim_pl.models.selectors import check_selector
from glsim_pl.plots.panels import captioned, selector_panel, tensor_to_pil, to_unit
from glsim_pl.utils.logging import RankedLogger

__all__ = ["main", "visualize"]

log = RankedLogger(__name__)


def visualize(cfg: DictConfig) -> Path:
    """Render the comparison grid; returns the PNG path."""
    if not cfg.get("ckpt_path"):
        raise UserError("ckpt_path is required: python -m glsim_pl.visualize ckpt_path=... dataset=...")
    module, _ = load_module(cfg.ckpt_path)
    net = module.net
    if not isinstance(net, GLSim):
        raise UserError(f"ckpt_path={cfg.ckpt_path!r} is a plain ViT (method=vit): it has no selector to visualise")
    selectors = [check_selector(s) for s in cfg.selectors]
    datamodule = instantiate(cfg.dataset, augs=transform_augs(cfg))
    datamodule.check()
    check_compatible(module, datamodule, cfg.ckpt_path)
    datamodule.setup("fit")
    data = datamodule.data_val if len(datamodule.data_val) else datamodule.data_test
    items = [data[i] for i in range(min(int(cfg.num_images), len(data)))]
    images = torch.stack([it[0] for it in items])  # (B, 3, H, W), normalised
    gt = [it[2] if len(it) > 2 else None for it in items]
    grid_hw = (images.shape[-2] // net.patch_px, images.shape[-1] // net.patch_px)
    own = net.selector
    first = [selector_panel(to_unit(im[None])[0], None, b, grid_hw, "lime") for im, b in zip(images, gt, strict=True)]
    columns: list[list[Tensor]] = [first]
    with torch.inference_mode():
        for sel in selectors:
            net.selector = sel
            out = net(images)
            columns.append(
                [
                    selector_panel(to_unit(im[None])[0], s, b, grid_hw)
                    for im, s, b in zip(images, out.scores, out.boxes, strict=True)
                ]
            )
    net.selector = own
    sheet = _sheet(columns, ["image", *selectors], scale=max(1, 160 // images.shape[-1]))
    path = Path(cfg.out) if cfg.get("out") else Path(cfg.paths.output_dir) / "selectors.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    log.info(f"selector comparison ({', '.join(selectors)}) on {len(items)} images -> {path}")
    return path


def _sheet(columns: list[list[Tensor]], titles: list[str], scale: int, pad: int = 4) -> Image.Image:
    cells = [[tensor_to_pil(c) for c in col] for col in columns]
    w, h = cells[0][0].width * scale, cells[0][0].height * scale
    heads = [captioned(Image.new("RGB", (w, 0), "white"), t) for t in titles]
    top = heads[0].height
    sheet = Image.new("RGB", (len(cells) * (w + pad), top + len(cells[0]) * (h + pad)), "white")
    for j, col in enumerate(cells):
        sheet.paste(heads[j], (j * (w + pad), 0))
        for i, cell in enumerate(col):
            sheet.paste(cell.resize((w, h), Image.NEAREST), (j * (w + pad), top + i * (h + pad)))
    return sheet


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="visualize")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    """Hydra entry point; bad input ends with one clear message."""
    visualize(cfg)


if __name__ == "__main__":
    main()
