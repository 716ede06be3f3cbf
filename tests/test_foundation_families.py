"""Every 2026 backbone family as GLSim's encoder: tiny random-init variants, every selector, config-time refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from glsim_pl.config.validate import validate_config
from glsim_pl.data.base import _normalisation
from glsim_pl.errors import UserError
from glsim_pl.models import GLSim
from glsim_pl.models.families import global_feature, usable_selectors
from glsim_pl.models.glsim import ViTClassifier
from glsim_pl.models.selectors import SELECTORS, get_selector
from tests.helpers.checkpoints import sgd_steps
from tests.helpers.configs import compose_cfg

TINY = {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
# family -> (timm name, extra constructor keywords); the presets' backbones without their weight tags
FAMILIES = {
    "vit_cls": ("vit_base_patch16_224", {}),
    "dinov2_reg": ("vit_base_patch14_reg4_dinov2", {}),
    "clip": ("vit_base_patch16_clip_224", {}),
    "siglip2_map": ("vit_base_patch16_siglip_224", {}),
    "gap": ("vit_base_patch16_siglip_gap_224", {}),
    "eva02": ("eva02_base_patch14_224", {"ref_feat_shape": (4, 4)}),
    "dinov3": ("vit_base_patch16_dinov3", {"global_pool": "token"}),
    "pe_core": ("vit_pe_core_base_patch16_224", {"ref_feat_shape": (4, 4)}),
}
NO_CLS = {"siglip2_map", "gap"}
ATTENTION_SELECTORS = tuple(name for name in SELECTORS if get_selector(name).records_attention)


def _kw(family: str, **extra) -> dict:
    name, kwargs = FAMILIES[family]
    return {"backbone": name, "img_size": 32, "top_o": 2, "pretrained": False,
            "backbone_kwargs": {**TINY, **kwargs}, **extra}  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["vit", "glsim"])
def test_family_trains(family: str, method: str) -> None:
    torch.manual_seed(0)
    net = GLSim(num_classes=3, **_kw(family)) if method == "glsim" else ViTClassifier(
        num_classes=3, **{k: v for k, v in _kw(family).items() if k != "top_o"})  # fmt: skip
    before = {k: v.clone() for k, v in net.encoder.state_dict().items()}
    losses = sgd_steps(net)
    assert all(torch.isfinite(torch.tensor(losses)))
    changed = [k for k, v in net.encoder.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "the encoder received no gradient"
    if method == "glsim":
        out = net.eval()(torch.randn(2, 3, 32, 32))
        assert out.boxes.shape == (2, 4) and out.scores.shape == (2, 16)  # 4x4 grid: prefix tokens never scored


@pytest.mark.parametrize("family", FAMILIES)
def test_global_feature_is_cls_or_own_pool(family: str) -> None:
    net = GLSim(num_classes=3, **_kw(family)).eval()
    tokens = net.encoder.forward_features(torch.randn(2, 3, 32, 32))
    feat = global_feature(net.encoder, tokens)
    if net.encoder.global_pool == "token":
        assert torch.equal(feat, tokens[:, 0])
    else:  # the backbone's own pooled feature (MAP probe, or mean of the patch tokens + fc_norm)
        assert torch.allclose(feat, net.encoder.forward_head(tokens, pre_logits=True))
        assert not torch.allclose(feat, tokens[:, 0])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("selector", SELECTORS)
def test_every_selector_runs_or_is_refused_by_name(family: str, selector: str) -> None:
    if family in NO_CLS and selector in ATTENTION_SELECTORS:
        with pytest.raises(UserError, match=rf"method.selector='{selector}'.*no CLS token"):
            GLSim(num_classes=3, **_kw(family, selector=selector))
        return
    net = GLSim(num_classes=3, **_kw(family, selector=selector)).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 32, 32))
    assert torch.isfinite(out.logits).all() and out.scores.shape == (2, 16)
    assert torch.isfinite(out.scores).all()


def test_eva_attention_capture_matches_the_fused_forward() -> None:
    """Recording attention on an Eva block must not change its output (the unfused path is the same computation)."""
    net = GLSim(num_classes=3, **_kw("dinov3", selector="rollout")).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = net.encoder.forward_features(images)
        first = net.first_pass(images)
    assert torch.allclose(global_feature(net.encoder, plain), first.cls_global, atol=1e-5)
    assert all(m.fused_attn == net.encoder.blocks[0].attn.fused_attn for m in (b.attn for b in net.encoder.blocks))


def test_usable_selectors_of_a_map_backbone() -> None:
    net = GLSim(num_classes=3, **_kw("siglip2_map"))
    assert set(usable_selectors(net.encoder)) >= {"gls", "random", "center", "full"}
    assert not set(usable_selectors(net.encoder)) & set(ATTENTION_SELECTORS)
    with pytest.raises(UserError, match="rollout"):
        net.selector = "rollout"
    assert net.selector == "gls"


def test_attention_selector_on_siglip_refused_at_config_time(tmp_path: Path) -> None:
    cfg = compose_cfg(["model=siglip2_b16", "method.selector=attn_last", "dataset.image_size=32",
                       "model.backbone_kwargs={patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2}"],
                      tmp_path)  # fmt: skip
    with pytest.raises(UserError, match=r"method.selector='attn_last'.*no CLS token.*siglip"):
        validate_config(cfg)
    with open_dict(cfg):
        cfg.method.selector = "gls"
    validate_config(cfg)


@pytest.mark.parametrize(
    ("preset", "mean"),
    [("clip_b16", (0.48145466, 0.4578275, 0.40821073)), ("siglip2_b16", (0.5, 0.5, 0.5)),
     ("eva02_b14", (0.48145466, 0.4578275, 0.40821073)), ("pe_core_b16", (0.5, 0.5, 0.5)),
     ("dinov3_b16", (0.485, 0.456, 0.406)), ("vit_b16", (0.485, 0.456, 0.406))],
)  # fmt: skip
def test_normalisation_from_the_backbone_config(tmp_path: Path, preset: str, mean: tuple) -> None:
    """Foundation presets take mean/std from the backbone's pretrained config; the paper's preset keeps ImageNet's."""
    cfg = compose_cfg([f"model={preset}"], tmp_path)
    ds = cfg.dataset
    got, _ = _normalisation(ds.normalize, ds.mean, ds.std, ds.backbone)
    assert got == pytest.approx(mean)
    override = compose_cfg([f"model={preset}", "dataset.normalize=imagenet"], tmp_path).dataset
    assert _normalisation(override.normalize, None, None, override.backbone)[0] == pytest.approx((0.485, 0.456, 0.406))


@pytest.mark.parametrize("preset", ["clip_b16", "siglip2_b16", "eva02_b14", "pe_core_b16", "dinov3_b16",
                                    "dinov2_b14_reg"])  # fmt: skip
def test_presets_interpolation_is_the_pipelines(preset: str, tmp_path: Path) -> None:
    """The input pipeline resizes bicubic; every preset's backbone was pre-trained with bicubic too."""
    from timm.models import get_pretrained_cfg

    cfg = compose_cfg([f"model={preset}"], tmp_path)
    assert get_pretrained_cfg(cfg.model.backbone).interpolation == "bicubic"
