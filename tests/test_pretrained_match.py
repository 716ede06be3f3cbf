"""model.pretrained_file: our checkpoints, exports and official GLSim files load; files that do not match fail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from glsim_pl.data.preprocessing import Preprocessing
from glsim_pl.errors import UserError
from glsim_pl.export import save_pretrained
from glsim_pl.models import build_classifier

TINY_VIT = {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
BACKBONE = "vit_tiny_patch16_224"


def _glsim(num_classes: int, seed: int = 0, trained: bool = False, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = build_classifier("glsim", backbone=BACKBONE, num_classes=num_classes, img_size=32, top_o=4,
                           backbone_kwargs=TINY_VIT, **kwargs)  # fmt: skip
    if trained:  # a trained-looking head and aggregator (the head's init is all zeros)
        with torch.no_grad():
            for p in (*net.head.parameters(), *net.aggregator.parameters()):
                p.add_(torch.randn_like(p))
    return net


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], prefix: str) -> bool:
    keys = [k for k in a if k.startswith(prefix)]
    return bool(keys) and all(torch.equal(a[k], b[k]) for k in keys)


def _export(tmp_path: Path, net: torch.nn.Module) -> Path:
    hparams = {"backbone": BACKBONE, "num_classes": net.head.out_features, "img_size": 32, "top_o": 4,
               "backbone_kwargs": TINY_VIT}  # fmt: skip
    pre = Preprocessing(input_size=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    return save_pretrained(net, hparams, tmp_path / "exported", ["c"] * net.head.out_features, pre)


def test_exported_model_fine_tunes_with_another_class_count(tmp_path: Path) -> None:
    source = _glsim(num_classes=5, trained=True)
    folder = _export(tmp_path, source)
    net = _glsim(num_classes=3, seed=1, pretrained_file=str(folder / "model.safetensors"))
    src, dst = source.state_dict(), net.state_dict()
    assert _same(src, dst, "encoder.")  # every encoder tensor comes from the export
    assert net.encoder.pretrained_share == 1.0
    assert not _same(src, dst, "aggregator.")  # head and aggregator: not loaded (5 vs 3 classes)
    assert dst["head.weight"].shape == (3, 32)


def test_lightning_checkpoint_with_its_head(tmp_path: Path, caplog) -> None:
    source = _glsim(num_classes=4, trained=True)
    ckpt = {"state_dict": {f"net.{k}": v for k, v in source.state_dict().items()}, "epoch": 2,
            "pytorch-lightning_version": "2.6.6", "hyper_parameters": {"num_classes": 4}}  # fmt: skip
    torch.save(ckpt, tmp_path / "last.ckpt")
    with_head = _glsim(num_classes=4, seed=1, pretrained_file=str(tmp_path / "last.ckpt"), pretrained_head=True)
    assert _same(source.state_dict(), with_head.state_dict(), "")  # encoder, aggregator and head: all of it
    without = _glsim(num_classes=4, seed=1, pretrained_file=str(tmp_path / "last.ckpt"))
    assert _same(source.state_dict(), without.state_dict(), "encoder.")
    assert not _same(source.state_dict(), without.state_dict(), "head.")
    with caplog.at_level("WARNING"):
        other = _glsim(num_classes=6, seed=1, pretrained_file=str(tmp_path / "last.ckpt"), pretrained_head=True)
    assert "has 4 classes, this model 6" in caplog.text
    assert _same(source.state_dict(), other.state_dict(), "encoder.")


def test_official_glsim_checkpoint_loads_its_encoder(official_fixture: dict, tmp_path: Path) -> None:
    from glsim_pl.models.official import convert_official_state_dict

    path = tmp_path / "cub_vit_t16.pth"  # the official file itself, as train.py of the official code saves it
    torch.save(official_fixture["checkpoint"], path)
    converted = convert_official_state_dict(official_fixture["checkpoint"]["model"])
    net = build_classifier("vit", backbone=BACKBONE, num_classes=10, img_size=96, pretrained_file=str(path),
                           backbone_kwargs={"depth": 1}, layer_norm_eps=1e-12)  # fmt: skip
    dst = net.state_dict()
    encoder = [k for k in converted if k.startswith("encoder.")]
    assert encoder and all(torch.equal(dst[k], converted[k]) for k in encoder)
    assert net.encoder.pretrained_share == 1.0


def test_file_that_matches_too_little_is_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    other = timm.create_model(BACKBONE, num_classes=0, img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=2)
    save_file(other.state_dict(), tmp_path / "wide.safetensors")  # same names, other widths
    with pytest.raises(UserError) as info:
        _glsim(num_classes=3, pretrained_file=str(tmp_path / "wide.safetensors"))
    message = str(info.value)
    assert "wide.safetensors" in message and "only 0 of the encoder's 30 tensors (0%)" in message
    assert "Unmatched in the encoder: ['cls_token', 'pos_embed'" in message
    assert "'blocks.0.attn.proj.bias'" in message.split("unmatched in the file: ")[1]  # same names, other shapes
    assert "\n" not in message
    save_file({"classifier.weight": torch.zeros(2, 2)}, tmp_path / "unrelated.safetensors")
    with pytest.raises(UserError, match=r"only 0 of the encoder's 30 tensors.*unmatched in the file: \['classifier"):
        _glsim(num_classes=3, pretrained_file=str(tmp_path / "unrelated.safetensors"))


def test_share_loaded_is_in_metrics_json(make_cfg, tmp_path: Path) -> None:
    from glsim_pl.train import train

    folder = _export(tmp_path, _glsim(num_classes=5))  # TINY's backbone (patch 8, width 32, 2 blocks), 32 px
    cfg = make_cfg(f"model.pretrained_file={folder / 'model.safetensors'}", "logger=none", "trainer.max_epochs=1",
                   "callbacks.crop_visualizer=null", "dataset.train_size=40", "dataset.test_size=8")  # fmt: skip
    train(cfg)
    record = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert record["metrics"]["pretrained/loaded_share"] == 1.0


def test_truncated_safetensors_and_another_model_size_say_why(tmp_path: Path) -> None:
    """A cut-short .safetensors is one line, as a cut-short .pth; ViT-S-like weights (same names, wider) for this
    ViT-Ti-like encoder say the shapes differ and show a few keys with both shapes."""
    torch.manual_seed(0)
    other = timm.create_model(BACKBONE, num_classes=0, img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=2)
    whole = tmp_path / "wide.safetensors"
    save_file(other.state_dict(), whole)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(UserError, match=r"^model\.pretrained_file='.*cut\.safetensors': cannot read it \(") as info:
        _glsim(num_classes=3, pretrained_file=str(cut))
    assert "\n" not in str(info.value)
    with pytest.raises(UserError) as info:
        _glsim(num_classes=3, pretrained_file=str(whole))
    message = str(info.value)
    assert "30 of the encoder's tensors are in the file under the same name with another shape" in message
    assert "cls_token [1, 1, 48] in the file, [1, 1, 32] in the encoder" in message
