"""tta=hflip at eval: logits averaged with the flipped image's; training and tta=none untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from glsim_pl.errors import UserError
from glsim_pl.models import GLSim
from glsim_pl.models.glsim import ViTClassifier
from glsim_pl.models.tta import check_tta
from tests.helpers.checkpoints import save_lightning_ckpt
from tests.helpers.configs import TINY_DATA, TINY_KW, compose_tool


def _random_head(net: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    torch.nn.init.normal_(net.head.weight)  # the zero-init head would give zero logits for every view
    return net.eval()


@pytest.mark.parametrize("cls", [GLSim, ViTClassifier])
def test_hflip_averages_the_two_views(cls: type) -> None:
    kw = {k: v for k, v in TINY_KW.items() if cls is GLSim or k != "top_o"}
    net = _random_head(cls(num_classes=3, **kw))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain, mirrored = net(x), net(x.flip(-1))
        net.tta = "hflip"
        both = net(x)
    assert not torch.allclose(plain.logits, mirrored.logits)
    assert torch.allclose(both.logits, (plain.logits + mirrored.logits) / 2, atol=1e-6)
    if cls is GLSim:
        assert torch.equal(both.boxes, plain.boxes)  # the crop of the image as given
    net.train()
    with torch.no_grad():
        torch.manual_seed(1)
        trained = net(x).logits
        net.tta = "none"
        torch.manual_seed(1)
        assert torch.allclose(trained, net(x).logits)  # training ignores tta


def test_bad_mode_is_refused() -> None:
    with pytest.raises(UserError, match="tta='vflip': expected one of none, hflip"):
        check_tta("vflip")


def test_eval_with_hflip(tmp_path: Path) -> None:
    from glsim_pl.eval import evaluate

    ckpt = tmp_path / "tiny.ckpt"
    save_lightning_ckpt(ckpt)
    overrides = [*TINY_DATA, f"ckpt_path={ckpt}", "eval.cost=false", "eval.gallery_size=0", "logger=none"]
    result = evaluate(compose_tool("eval", [*overrides, "tta=hflip"], tmp_path / "eval"))
    assert result["tta"] == "hflip" and 0.0 <= result["test/acc1"] <= 1.0
    with pytest.raises(UserError, match="tta='both'"):
        evaluate(compose_tool("eval", [*overrides, "tta=both"], tmp_path / "eval2"))
