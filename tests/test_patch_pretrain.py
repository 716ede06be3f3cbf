"""Token-labelled pretraining of the default's backbone, the command that writes it and the file that ships."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors import safe_open

from glsim_pl.config.synthetic_backbone import MARKER, Pretraining, backbone_path, build_backbone, resolve_backbone
from glsim_pl.errors import UserError
from glsim_pl.models.encoder import create_encoder
from glsim_pl.pretrain_synthetic import main
from glsim_pl.training.patch_pretrain import (
    PatchPretrainConfig,
    _flip,
    patch_pretrain,
    patch_targets,
    selector_hit_rate,
)
from tests.helpers.configs import compose_cfg

TINY_ENCODER = [
    "model=vit_tiny_scratch",
    "model.backbone_kwargs={patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2}",
    "dataset.image_size=32",
]


def test_patch_targets_name_the_class_inside_the_box_and_background_elsewhere() -> None:
    boxes = torch.tensor([[8.0, 0.0, 24.0, 10.0], [0.0, 0.0, 1.0, 1.0]])  # 4 x 4 grid of 8 px: centres at 4, 12, 20, 28
    targets = patch_targets(boxes, torch.tensor([3, 5]), grid=4, patch=8, background=10)
    first = targets[0].reshape(4, 4)
    assert first[0, 1] == first[0, 2] == 3  # centres (12, 4) and (20, 4) lie in the box
    assert (first[1:] == 10).all() and first[0, 0] == first[0, 3] == 10
    assert (targets[1] == 10).all()  # a box holding no patch centre: all background


def test_a_flip_mirrors_image_and_box_together() -> None:
    images = torch.zeros(1, 3, 16, 16)
    images[..., 2:6, 1:5] = 1.0  # an object at x 1..5, y 2..6
    boxes = torch.tensor([[1.0, 2.0, 5.0, 6.0]])
    flipped, box = _flip(images, boxes, torch.tensor([True]))
    x1, y1, x2, y2 = box[0].int().tolist()
    assert (x1, y1, x2, y2) == (11, 2, 15, 6)
    assert flipped[0, 0, y1:y2, x1:x2].min() == 1.0 and flipped.sum() == images.sum()


def _toy_set(n: int, side: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A bright square of the class's colour channel on grey noise, at a random place on a 4 x 4 grid of 4 px."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, side, side, generator=g) * 0.3
    labels = torch.arange(n) % 3
    boxes = torch.zeros(n, 4)
    for i in range(n):
        x, y = (torch.randint(0, 3, (2,), generator=g) * 4).tolist()
        images[i, labels[i], y : y + 8, x : x + 8] += 2.0
        boxes[i] = torch.tensor([x, y, x + 8, y + 8])
    return images, labels, boxes


def test_pretraining_puts_the_selectors_top_patches_on_the_object() -> None:
    images, labels, boxes = _toy_set(192)
    torch.manual_seed(0)
    encoder = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=16, patch_size=4,
                                embed_dim=32, depth=2, num_heads=2)  # fmt: skip
    test_images, _, test_boxes = _toy_set(64, seed=1)
    before, base = selector_hit_rate(encoder.eval(), test_images, test_boxes, top_o=2)
    losses = patch_pretrain(encoder, images, labels, boxes, 3, PatchPretrainConfig(epochs=8, batch_size=16, seed=0))
    after, _ = selector_hit_rate(encoder, test_images, test_boxes, top_o=2)
    assert losses[-1] < 0.5 * losses[0]
    assert base == pytest.approx(0.25)  # 4 of the 16 patches lie in each square
    assert after > 0.8 and after > before + 0.3, (before, after)


def test_the_command_writes_a_backbone_the_model_preset_loads(tmp_path, capsys) -> None:
    out = tmp_path / "b.safetensors"
    main(["--out", str(out), "--size", "40", "--epochs", "1", *TINY_ENCODER, "dataset.num_classes=4"])
    assert f"wrote {out}" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.partial"))
    with safe_open(str(out), "pt") as f:
        record = json.loads(f.metadata()["glsim_pl_pretrain"])
    assert record["data_seed"] == 1 and record["images"] == 40 and record["look"]["num_classes"] == 4
    assert record["look"]["hue_step"] == 0.015  # the run's look is recorded; the pretraining classes are coarser
    assert record["hue_step"] == 0.1 and record["loop"]["epochs"] == 1
    encoder = create_encoder("vit_tiny_patch16_224", 32, pretrained_file=str(out),
                             backbone_kwargs=dict(patch_size=8, embed_dim=32, depth=2, num_heads=2))  # fmt: skip
    assert encoder.pretrained_share == 1.0


def test_bad_sizes_and_a_dataset_without_boxes_are_one_line(tmp_path) -> None:
    cub = compose_cfg(["dataset=cub", "dataset.root=" + str(tmp_path), *TINY_ENCODER], tmp_path / "run")
    with pytest.raises(UserError, match="dataset must be synthetic"):
        build_backbone(cub, tmp_path / "b.safetensors", Pretraining(images=40, loop=PatchPretrainConfig(epochs=1)))
    synthetic = compose_cfg(TINY_ENCODER, tmp_path / "run")
    with pytest.raises(UserError, match=r"--size 8 / --epochs 1: expected at least one batch \(32 images\)"):
        build_backbone(synthetic, tmp_path / "b.safetensors", Pretraining(images=8, loop=PatchPretrainConfig(epochs=1)))
    assert not (tmp_path / "b.safetensors").exists()


def test_the_default_builds_its_backbone_once_per_setting(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GLSIM_CACHE_DIR", str(tmp_path / "cache"))
    small = Pretraining(images=40, loop=PatchPretrainConfig(epochs=1))
    tiny = ["model.backbone_kwargs={patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2}", "dataset.image_size=32"]
    cfg = compose_cfg(tiny, tmp_path / "run")
    assert cfg.model.pretrained_file == MARKER  # the default names no file: the run builds or finds it
    torch.manual_seed(5)
    state = torch.get_rng_state()
    resolve_backbone(cfg, small)
    assert torch.equal(torch.get_rng_state(), state)  # the run's seeded state is untouched by the build
    path = Path(cfg.model.pretrained_file)
    assert path.parent == tmp_path / "cache" / "backbones" and path.is_file()
    built = path.stat().st_mtime_ns
    again = compose_cfg(tiny, tmp_path / "run")
    resolve_backbone(again, small)
    assert again.model.pretrained_file == str(path) and path.stat().st_mtime_ns == built  # found, not rebuilt
    other = compose_cfg([*tiny, "dataset.body_frac=[0.3,0.4]"], tmp_path / "run")
    assert backbone_path(other, small) != path  # another look: another file, never this one
    scratch = compose_cfg(["model=vit_tiny_scratch"], tmp_path / "run")
    resolve_backbone(scratch, small)
    assert scratch.model.pretrained_file is None
