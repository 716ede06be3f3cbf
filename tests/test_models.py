"""Model math on hand-built tensors, official-checkpoint parity, forward/backward on tiny ViTs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from glsim_pl.models import (
    Aggregator,
    GLSim,
    ViTClassifier,
    crop_and_resize,
    crop_and_resize_loop,
    gls_scores,
    load_official_checkpoint,
    select_boxes,
)

TINY = dict(img_size=32, backbone_kwargs=dict(patch_size=8, embed_dim=32, depth=2, num_heads=2))


def _scores_at(hot: list[int], n: int = 16) -> torch.Tensor:
    scores = torch.zeros(1, n)
    scores[0, hot] = torch.arange(len(hot), 0, -1, dtype=torch.float32)  # distinct, all above the rest
    return scores


# -- selector ---------------------------------------------------------------------------------------------------------
def test_cos_scores_rank_the_patch_aligned_with_cls() -> None:
    cls = torch.tensor([[1.0, 0.0]])
    patches = torch.tensor([[[0.0, 1.0], [1.0, 0.1], [-1.0, 0.0], [0.5, 0.5]]])
    scores = gls_scores(cls, patches, "cos")
    assert scores.shape == (1, 4)
    assert scores.argmax().item() == 1
    torch.testing.assert_close(scores[0, 2], torch.tensor(-1.0))


def test_l1_l2_are_mean_distances_and_select_smallest() -> None:
    cls = torch.tensor([[0.0, 0.0]])
    patches = torch.tensor([[[3.0, 1.0], [0.1, 0.1], [2.0, 2.0], [5.0, 5.0]]])
    torch.testing.assert_close(gls_scores(cls, patches, "l1"), torch.tensor([[2.0, 0.1, 2.0, 5.0]]))
    torch.testing.assert_close(gls_scores(cls, patches, "l2"), torch.tensor([[5.0, 0.01, 4.0, 25.0]]))
    # 2x2 grid, 10 px patches: the smallest distance is patch 1 (row 0, col 1)
    box = select_boxes(gls_scores(cls, patches, "l2"), (2, 2), 10, top_o=1, rule="inclusive", largest=False)
    assert box.tolist() == [[10.0, 0.0, 20.0, 10.0]]
    with pytest.raises(ValueError, match="sim_metric"):
        gls_scores(cls, patches, "dot")


def test_official_box_rule_excludes_last_patch_row_and_column() -> None:
    # 4x4 grid of 16 px patches; selected patches at (row, col) = (0, 1), (2, 3), (1, 2)
    scores = _scores_at([1, 11, 6])
    official = select_boxes(scores, (4, 4), 16, top_o=3, rule="official")
    inclusive = select_boxes(scores, (4, 4), 16, top_o=3, rule="inclusive")
    # x = columns 1..3, y = rows 0..2; official stops at the top-left corner of the last patch
    assert official.tolist() == [[16.0, 0.0, 48.0, 32.0]]
    assert inclusive.tolist() == [[16.0, 0.0, 64.0, 48.0]]


def test_official_box_rule_single_patch_is_one_patch() -> None:
    scores = _scores_at([15])  # bottom-right corner patch
    assert select_boxes(scores, (4, 4), 16, top_o=1, rule="official").tolist() == [[48.0, 48.0, 64.0, 64.0]]
    scores = _scores_at([4, 7])  # one row, columns 0 and 3: rows collapse to one patch, columns exclusive
    assert select_boxes(scores, (4, 4), 16, top_o=2, rule="official").tolist() == [[0.0, 16.0, 48.0, 32.0]]


def test_ties_break_towards_lower_patch_index() -> None:
    scores = torch.ones(2, 16)  # all tied: the first top_o patches in row-major order win
    boxes = select_boxes(scores, (4, 4), 16, top_o=5, rule="inclusive")
    assert boxes.tolist() == [[0.0, 0.0, 64.0, 32.0]] * 2  # patches 0..4 = row 0 and (1, 0)


def test_select_boxes_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="top_o"):
        select_boxes(torch.zeros(1, 16), (4, 4), 16, top_o=17)
    with pytest.raises(ValueError, match="grid"):
        select_boxes(torch.zeros(1, 15), (4, 4), 16, top_o=1)
    with pytest.raises(ValueError, match="box_rule"):
        select_boxes(torch.zeros(1, 16), (4, 4), 16, top_o=1, rule="loose")


# -- crop -------------------------------------------------------------------------------------------------------------
def test_batched_crop_equals_per_sample_reference() -> None:
    torch.manual_seed(0)
    images = torch.rand(6, 3, 224, 224)
    boxes = torch.tensor([[0, 0, 224, 224], [16, 32, 208, 160], [0, 0, 16, 16], [96, 48, 112, 224],
                          [200, 0, 224, 224], [32, 32, 33, 200]], dtype=torch.float32)  # fmt: skip
    fast = crop_and_resize(images, boxes, (224, 224))
    ref = crop_and_resize_loop(images, boxes, (224, 224))
    assert fast.shape == (6, 3, 224, 224)
    torch.testing.assert_close(fast, ref, atol=1e-4, rtol=0)


def test_crop_of_whole_image_is_identity_and_non_square_output() -> None:
    images = torch.rand(2, 3, 40, 60)
    whole = torch.tensor([[0.0, 0.0, 60.0, 40.0]] * 2)
    torch.testing.assert_close(crop_and_resize(images, whole, (40, 60)), images, atol=1e-5, rtol=0)
    ref = F.interpolate(images[:, :, 10:30, 5:50], size=(16, 24), mode="bilinear", align_corners=True)
    box = torch.tensor([[5.0, 10.0, 50.0, 30.0]] * 2)
    torch.testing.assert_close(crop_and_resize(images, box, (16, 24)), ref, atol=1e-5, rtol=0)


# -- official checkpoint ----------------------------------------------------------------------------------------------
def test_official_checkpoint_parity(official_fixture: dict) -> None:
    model = load_official_checkpoint(official_fixture["checkpoint"]).eval()
    images = official_fixture["images"]
    with torch.no_grad():
        out = model(images)
    torch.testing.assert_close(out.logits, official_fixture["logits"], atol=1e-4, rtol=0)
    crops = crop_and_resize(images, out.boxes, tuple(images.shape[-2:]))
    torch.testing.assert_close(crops, official_fixture["crops"], atol=1e-4, rtol=0)
    assert out.scores.shape == (3, 36)  # 6x6 patches at 96 px


def test_official_checkpoint_loads_from_a_file(official_fixture: dict, tmp_path) -> None:
    path = tmp_path / "cub_vit_t16_16_2.pth"
    torch.save(official_fixture["checkpoint"], path)
    model = load_official_checkpoint(path)
    assert model.top_o == 6 and model.box_rule == "official"
    assert model.head.out_features == 3


def test_official_import_rejects_other_files(tmp_path) -> None:
    from glsim_pl.errors import UserError

    with pytest.raises(UserError, match="not an official GLSim checkpoint"):
        load_official_checkpoint({"state_dict": {}})


# -- forward / backward -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("metric", ["cos", "l2"])
def test_glsim_forward_backward_reaches_every_parameter(metric: str) -> None:
    torch.manual_seed(0)
    model = GLSim("vit_tiny_patch16_224", num_classes=7, top_o=3, sim_metric=metric, **TINY)
    model.head.weight.data.normal_()  # the zero init would block gradients to everything below the head
    images = torch.randn(4, 3, 32, 32)
    out = model(images)
    assert out.logits.shape == (4, 7) and out.boxes.shape == (4, 4) and out.scores.shape == (4, 16)
    assert not out.boxes.requires_grad
    out.logits.square().sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reached: {missing}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_register_tokens_are_not_patches() -> None:
    model = GLSim("vit_tiny_patch16_224", num_classes=3, **{**TINY, "backbone_kwargs": {**TINY["backbone_kwargs"],
                  "reg_tokens": 4}})  # fmt: skip
    assert model.num_prefix_tokens == 5
    out = model(torch.randn(2, 3, 32, 32))
    assert out.scores.shape == (2, 16)


def test_plain_vit_baseline_has_no_crop() -> None:
    model = ViTClassifier("vit_tiny_patch16_224", num_classes=4, **TINY)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.logits.shape == (2, 4) and out.boxes is None and out.scores is None


def test_unknown_backbone_and_offline_pretrained_are_clear_errors() -> None:
    from glsim_pl.errors import UserError

    with pytest.raises(UserError, match="not a timm model name"):
        GLSim("vit_does_not_exist", num_classes=3)
    with pytest.raises(UserError, match="pretrained_file"):
        GLSim("vit_tiny_patch16_224", num_classes=3, pretrained=True, pretrained_file="/nonexistent/w.safetensors")
    with pytest.raises(UserError, match=r"model\.pretrained=false"):
        GLSim("vit_tiny_patch16_224.augreg_in21k", num_classes=3, pretrained=True, **TINY)


def test_aggregator_init_is_the_official_one() -> None:
    """Xavier-uniform weights (bound sqrt(6 / (fan_in + fan_out)), variance bound^2 / 3) and N(0, 1e-6) biases."""
    torch.manual_seed(0)
    agg = Aggregator(192, layers=2)
    linears = [m for m in agg.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 8  # qkv, proj, fc1, fc2 per block
    qkvs = {id(blk.attn.qkv) for blk in agg.blocks}
    for lin in linears:
        # the fused qkv matrix is the official code's three (D, D) q, k, v projections, each Xavier on its own
        parts = lin.weight.chunk(3, dim=0) if id(lin) in qkvs else (lin.weight,)
        for w in parts:
            fan_out, fan_in = w.shape
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            assert w.abs().max() <= bound
            assert w.std().item() == pytest.approx(bound / math.sqrt(3.0), rel=0.05)
        assert lin.bias.abs().max() < 1e-5 and lin.bias.std().item() == pytest.approx(1e-6, rel=0.25)
    for blk in agg.blocks:  # each third spreads like Xavier over (D, D): bound sqrt(6 / 2D), not sqrt(6 / 4D)
        d = blk.attn.qkv.in_features
        for w in blk.attn.qkv.weight.chunk(3, dim=0):
            assert w.abs().max().item() > 0.95 * math.sqrt(6.0 / (2 * d))
    norms = [m for m in agg.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert all(bool((n.weight == 1).all()) and bool((n.bias == 0).all()) for n in norms)
