"""python -m glsim_pl.visualize: selector comparison grid on validation images."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from glsim_pl.errors import UserError
from glsim_pl.visualize import visualize
from tests.helpers.checkpoints import save_lightning_ckpt
from tests.helpers.configs import TINY_DATA, compose_tool


def test_grid_has_one_column_per_selector(tmp_path: Path) -> None:
    ckpt = tmp_path / "tiny.ckpt"
    save_lightning_ckpt(ckpt)
    overrides = [*TINY_DATA, f"ckpt_path={ckpt}", "selectors=[gls,rollout,attn_last,psm]", "num_images=3"]
    path = visualize(compose_tool("visualize", overrides, tmp_path / "run"))
    assert path == tmp_path / "run" / "selectors.png"
    with Image.open(path) as im:
        w, h = im.size
    cell = 32 * 5  # 32 px images are upscaled 5x
    assert w == 5 * (cell + 4)  # image column + 4 selectors
    assert h > 3 * cell


def test_plain_vit_and_unknown_selector_are_clear(tmp_path: Path) -> None:
    ckpt = tmp_path / "vit.ckpt"
    save_lightning_ckpt(ckpt, method="vit")
    with pytest.raises(UserError, match="method=vit"):
        visualize(compose_tool("visualize", [*TINY_DATA, f"ckpt_path={ckpt}"], tmp_path / "a"))
    save_lightning_ckpt(ckpt)
    with pytest.raises(UserError, match="method.selector='roll'"):
        visualize(compose_tool("visualize", [*TINY_DATA, f"ckpt_path={ckpt}", "selectors=[roll]"], tmp_path / "b"))
