"""Local weights files (model.pretrained_file) and the backbone model configs, without any download."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed

from glsim_pl.errors import UserError
from glsim_pl.models.encoder import create_encoder, load_weights_file

TINY_VIT = {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
CONF = Path(__file__).resolve().parents[1] / "conf"


def _source(img_size: int = 32, num_classes: int = 7) -> torch.nn.Module:
    """A tiny ViT with a classifier head, as a downloaded checkpoint would have."""
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", num_classes=num_classes, img_size=img_size, **TINY_VIT).eval()


def _assert_loaded(encoder: torch.nn.Module, src: dict[str, torch.Tensor], grid: int) -> None:
    dst = encoder.state_dict()
    for key, value in src.items():
        if key.startswith("head."):
            assert key not in dst  # the classifier is dropped (headless encoder)
        elif key == "pos_embed":
            expected = resample_abs_pos_embed(value, new_size=(grid, grid), num_prefix_tokens=1)
            assert dst[key].shape == (1, 1 + grid * grid, 32)
            torch.testing.assert_close(dst[key][:, :1], value[:, :1], rtol=0, atol=0)  # CLS entry kept
            torch.testing.assert_close(dst[key], expected)
        else:
            torch.testing.assert_close(dst[key], value, rtol=0, atol=0)


def test_safetensors_file_at_another_image_size(tmp_path: Path) -> None:
    src = _source().state_dict()
    save_file(src, tmp_path / "model.safetensors")
    encoder = create_encoder("vit_tiny_patch16_224", img_size=48, pretrained_file=str(tmp_path / "model.safetensors"),
                             backbone_kwargs=TINY_VIT)  # fmt: skip
    _assert_loaded(encoder, src, grid=6)


def test_missing_and_unexpected_keys_are_reported(tmp_path: Path, caplog) -> None:
    src = _source().state_dict()
    del src["norm.weight"], src["blocks.1.mlp.fc2.bias"]
    src["extra.scale"] = torch.ones(3)
    save_file(src, tmp_path / "model.safetensors")
    encoder = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, **TINY_VIT)
    with caplog.at_level("WARNING"):
        result = load_weights_file(encoder, tmp_path / "model.safetensors")
    assert sorted(result.missing_keys) == ["blocks.1.mlp.fc2.bias", "norm.weight"]
    assert result.unexpected_keys == ["extra.scale"]
    assert "norm.weight" in caplog.text
    assert "extra.scale" in caplog.text


def test_torch_file_with_wrapper_and_ddp_prefix(tmp_path: Path) -> None:
    src = _source().state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.items()}, "epoch": 3}, tmp_path / "ckpt.pth")
    encoder = create_encoder("vit_tiny_patch16_224", img_size=32, pretrained_file=str(tmp_path / "ckpt.pth"),
                             backbone_kwargs=TINY_VIT)  # fmt: skip
    _assert_loaded(encoder, src, grid=4)


def _to_jax_npz(model: torch.nn.Module, path: Path) -> None:
    """Write a timm ViT in Google's original ViT-B_16.npz layout (the format of the official IN-21k weights)."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    d, h = model.embed_dim, model.blocks[0].attn.num_heads
    w = {"embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
         "embedding/bias": sd["patch_embed.proj.bias"],
         "cls": sd["cls_token"], "Transformer/posembed_input/pos_embedding": sd["pos_embed"],
         "Transformer/encoder_norm/scale": sd["norm.weight"], "Transformer/encoder_norm/bias": sd["norm.bias"],
         "head/kernel": sd["head.weight"].T, "head/bias": sd["head.bias"]}  # fmt: skip
    for i in range(len(model.blocks)):
        p, b = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        qkv_w, qkv_b = np.split(sd[b + "attn.qkv.weight"], 3), np.split(sd[b + "attn.qkv.bias"], 3)
        for n, wq, bq in zip(("query", "key", "value"), qkv_w, qkv_b, strict=True):
            w[f"{p}MultiHeadDotProductAttention_1/{n}/kernel"] = wq.T.reshape(d, h, d // h)
            w[f"{p}MultiHeadDotProductAttention_1/{n}/bias"] = bq.reshape(h, d // h)
        w[f"{p}MultiHeadDotProductAttention_1/out/kernel"] = (
            sd[b + "attn.proj.weight"].reshape(d, h, d // h).transpose(1, 2, 0)
        )
        w[f"{p}MultiHeadDotProductAttention_1/out/bias"] = sd[b + "attn.proj.bias"]
        for ln, norm in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
            w[f"{p}{ln}/scale"], w[f"{p}{ln}/bias"] = sd[f"{b}{norm}.weight"], sd[f"{b}{norm}.bias"]
        for r in range(2):
            w[f"{p}MlpBlock_3/Dense_{r}/kernel"] = sd[f"{b}mlp.fc{r + 1}.weight"].T
            w[f"{p}MlpBlock_3/Dense_{r}/bias"] = sd[f"{b}mlp.fc{r + 1}.bias"]
    np.savez(path, **w)


def test_jax_npz_file(tmp_path: Path) -> None:
    model = _source()
    _to_jax_npz(model, tmp_path / "ViT-B_16.npz")
    encoder = create_encoder("vit_tiny_patch16_224", img_size=32, pretrained_file=str(tmp_path / "ViT-B_16.npz"),
                             backbone_kwargs=TINY_VIT)  # fmt: skip
    _assert_loaded(encoder, model.state_dict(), grid=4)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(encoder.eval()(x), model.forward_head(model.forward_features(x), pre_logits=True))


def test_pretrained_file_through_the_config(make_cfg, tmp_path: Path) -> None:
    """``model.pretrained_file=...`` reaches the GLSim encoder (TINY's backbone, 32 px -> 48 px)."""
    from glsim_pl.config.groups import module_kwargs
    from glsim_pl.training.module import GLSimLitModule

    src = _source().state_dict()
    save_file(src, tmp_path / "model.safetensors")
    cfg = make_cfg(f"model.pretrained_file={tmp_path / 'model.safetensors'}", "dataset.image_size=48")
    module = GLSimLitModule(**module_kwargs(cfg, [str(i) for i in range(10)]))
    _assert_loaded(module.net.encoder, src, grid=6)


def test_wrong_file_gives_one_clear_error(tmp_path: Path) -> None:
    save_file({"patch_embed.proj.weight": torch.zeros(5, 3, 8, 8)}, tmp_path / "other.safetensors")
    with pytest.raises(UserError, match=r"pretrained_file=.*other.safetensors.*same architecture"):
        create_encoder("vit_tiny_patch16_224", img_size=32, pretrained_file=str(tmp_path / "other.safetensors"),
                       backbone_kwargs=TINY_VIT)  # fmt: skip
    with pytest.raises(UserError, match="no such file"):
        create_encoder("vit_tiny_patch16_224", pretrained_file=str(tmp_path / "absent.safetensors"))


MODELS = ["vit_s16", "vit_b16", "vit_b32", "vit_l16", "deit3_b16", "dinov2_b14", "dinov2_b14_reg", "clip_b16"]


@pytest.mark.parametrize("name", MODELS)
def test_model_config_names_a_pretrained_timm_vit(name: str) -> None:
    cfg = OmegaConf.load(CONF / "model" / f"{name}.yaml")
    assert cfg.defaults[0] == "vit_base"
    assert cfg.backbone in timm.list_pretrained(cfg.backbone)  # a real weight tag, not just an architecture
    with torch.device("meta"):  # build without allocating (ViT-L is 300M parameters)
        encoder = create_encoder(cfg.backbone, img_size=224)
    assert encoder.cls_token is not None
    assert encoder.num_prefix_tokens == (5 if name == "dinov2_b14_reg" else 1)
