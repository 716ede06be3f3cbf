"""Selector zoo: each selector on hand-built attention with a known answer; capture equals timm's fused forward."""

from __future__ import annotations

import pytest
import torch

from glsim_pl.errors import UserError
from glsim_pl.models import GLSim, select_boxes
from glsim_pl.models.attention import capture_attention
from glsim_pl.models.selectors import (
    SELECTORS,
    attn_last_scores,
    center_scores,
    check_selector,
    maws_scores,
    psm_scores,
    rollout_scores,
)

TINY = {"backbone": "vit_tiny_patch16_224", "num_classes": 3, "img_size": 32, "top_o": 2,
            "backbone_kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}}  # fmt: skip


def one_hot_attention(targets: list[list[int]], t: int) -> torch.Tensor:
    """Each query attends fully to one key: targets[h][q] = key. -> (1, H, T, T)."""
    attn = torch.zeros(1, len(targets), t, t)
    for h, row in enumerate(targets):
        for q, k in enumerate(row):
            attn[0, h, q, k] = 1.0
    return attn


def test_attn_last_is_head_mean_of_cls_row() -> None:
    attn = torch.full((1, 2, 5, 5), 0.1)
    attn[0, 0, 0, 3] = 0.6  # head 0: CLS -> patch 2
    attn[0, 1, 0, 4] = 0.5  # head 1: CLS -> patch 3
    scores = attn_last_scores(attn)  # (1, 4)
    assert torch.allclose(scores, torch.tensor([[0.1, 0.1, 0.35, 0.3]]))
    assert attn_last_scores(attn, num_prefix=2).shape == (1, 3)  # register tokens are not patches


def test_rollout_follows_attention_through_layers() -> None:
    # T = 5 (CLS + 4 patches). Layer 1: every token looks at patch 3 (token 4); layer 2: CLS looks at patch 0.
    t = 5
    layer1 = one_hot_attention([[4] * t], t)
    layer2 = one_hot_attention([[1, 1, 2, 3, 4]], t)
    # by hand: A = (attn + I) / 2. R = A2 @ A1; CLS row of A2 = [.5, .5, 0, 0, 0];
    # rows 0 and 1 of A1 = [.5, 0, 0, 0, .5] and [0, .5, 0, 0, .5] -> CLS row of R = [.25, .25, 0, 0, .5]
    scores = rollout_scores([layer1, layer2])
    assert torch.allclose(scores, torch.tensor([[0.25, 0.0, 0.0, 0.5]]))
    # the last layer alone would point at patch 0: rollout differs from attn_last
    assert attn_last_scores(layer2).argmax() == 0
    assert scores.argmax() == 3
    assert torch.allclose(rollout_scores([layer1.mean(1, keepdim=True), layer2]), scores)  # head mean is enough


def test_psm_counts_per_head_argmax_of_product_without_residual() -> None:
    t = 6  # CLS + 5 patches; two heads. Layer 1 routes token q -> key per head; layer 2 routes CLS.
    layer1 = one_hot_attention([[0, 2, 2, 3, 4, 5], [0, 1, 2, 3, 4, 4]], t)
    layer2 = one_hot_attention([[1, 1, 2, 3, 4, 5], [5, 1, 2, 3, 4, 5]], t)
    # head 0: CLS -> token 1 (layer 2) -> token 2 (layer 1): patch 1. head 1: CLS -> token 5 -> token 4: patch 3
    scores = psm_scores([layer1, layer2])  # (1, 5)
    assert scores[0].topk(2).indices.sort().values.tolist() == [1, 3]
    assert scores[0, 1] >= 1
    assert scores[0, 3] >= 1
    assert scores[0, [0, 2, 4]].max() < 1
    same = [torch.cat([a[:, :1], a[:, :1]], 1) for a in (layer1, layer2)]  # both heads as head 0: two votes
    assert psm_scores(same)[0, 1] >= 2


def test_maws_prefers_mutual_attention_over_one_way() -> None:
    attn = torch.full((1, 1, 5, 5), 0.05)
    attn[0, 0, 0, 1] = 0.5  # CLS -> patch 0 strongly, but patch 0 ignores CLS
    attn[0, 0, 0, 2] = 0.3  # CLS -> patch 1 ...
    attn[0, 0, 2, 0] = 0.6  # ... and patch 1 -> CLS: mutual
    scores = maws_scores([attn, attn])
    assert scores.argmax() == 1
    assert attn_last_scores(attn).argmax() == 0
    assert torch.allclose(scores[0, 1], torch.tensor(0.3 * 0.6))


def test_center_scores_box_the_middle() -> None:
    scores = center_scores(2, (4, 4), torch.device("cpu"))  # (2, 16)
    boxes = select_boxes(scores, (4, 4), 8, 4, rule="inclusive")
    assert boxes.tolist() == [[8.0, 8.0, 24.0, 24.0]] * 2  # the central 2x2 patches


def test_unknown_selector_is_a_user_error() -> None:
    with pytest.raises(UserError, match="method.selector='nope'"):
        check_selector("nope")


def test_capture_matches_fused_forward_and_unpatches() -> None:
    model = GLSim(**TINY).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fused = model.encoder.forward_features(images)
        with capture_attention(model.encoder) as maps:
            manual = model.encoder.forward_features(images)
    assert torch.allclose(fused, manual, atol=1e-5)
    assert len(maps) == 2
    assert maps[0].shape == (2, 2, 17, 17)
    assert torch.allclose(maps[0].sum(-1), torch.ones(2, 2, 17))
    assert all("forward" not in block.attn.__dict__ for block in model.encoder.blocks)  # gls path untouched


@pytest.mark.parametrize("selector", SELECTORS)
def test_every_selector_gives_boxes_and_trains(selector: str) -> None:
    model = GLSim(**TINY, selector=selector)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.logits.shape == (2, 3)
    assert out.scores.shape == (2, 16)
    assert out.boxes.shape == (2, 4)
    assert ((out.boxes[:, 2:] - out.boxes[:, :2]) >= 8).all()
    out.logits.sum().backward()
    assert model.encoder.blocks[0].attn.qkv.weight.grad is not None
    if selector == "full":
        assert out.boxes.tolist() == [[0.0, 0.0, 32.0, 32.0]] * 2


def test_analytic_flops_reproduce_table_1() -> None:
    from glsim_pl.analysis.cost import selector_flops, vit_flops

    assert vit_flops(224) / 1e9 == pytest.approx(17.68, abs=0.01)  # backbone reference of Table 1
    assert selector_flops("gls", 224) / 1e6 == pytest.approx(0.45, abs=0.01)
    assert selector_flops("rollout", 224) / 1e6 == pytest.approx(1.7e2, rel=0.03)
    assert selector_flops("psm_transfg", 224) / 1e6 == pytest.approx(8.2e3, rel=0.01)
    assert selector_flops("rollout", 448) / 1e6 == pytest.approx(1.1e4, rel=0.05)
    assert selector_flops("rollout", 448) / selector_flops("gls", 448) >= 100  # the selector-cost target


def test_bench_model_writes_tables(tmp_path) -> None:
    from glsim_pl.bench.model import main

    tiny = '{"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}'
    main(["--backbone", "vit_tiny_patch16_224", "--backbone-kwargs", tiny, "--img-size", "32", "--batch-size", "2",
          "--repeats", "1", "--num-classes", "3", "--selectors", "gls,rollout", "--out", str(tmp_path)])  # fmt: skip
    table = (tmp_path / "model_cost.md").read_text()
    assert "| glsim[gls] |" in table
    assert "| glsim[rollout] |" in table
    assert "rollout / gls FLOPs at 448 px" in table
    assert (tmp_path / "model_cost.csv").read_text().startswith("model,throughput_img_s")
