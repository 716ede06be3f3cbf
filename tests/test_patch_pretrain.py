"""Token-labelled pretraining of the default's backbone, the command that writes it and the file that ships."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors import safe_open

from glsim_pl.errors import UserError
from glsim_pl.models.encoder import create_encoder
from glsim_pl.models.weights import weights_path
from glsim_pl.pretrain_synthetic import DEFAULT_OUT, main, pretrain
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
    encoder = create_encoder("vit_tiny_patch16_224", 32, pretrained_file=str(out),
                             backbone_kwargs=dict(patch_size=8, embed_dim=32, depth=2, num_heads=2))  # fmt: skip
    assert encoder.pretrained_share == 1.0


def test_the_command_refuses_a_dataset_without_boxes_it_draws(tmp_path) -> None:
    with pytest.raises(UserError, match="dataset must be synthetic"):
        pretrain(["dataset=cub", "dataset.root=" + str(tmp_path), *TINY_ENCODER], tmp_path / "b.safetensors", 1, 40,
                 PatchPretrainConfig(epochs=1))  # fmt: skip
    assert not list(tmp_path.iterdir())
    with pytest.raises(UserError, match=r"--size 8 / --epochs 1: expected at least one batch \(32 images\)"):
        pretrain(TINY_ENCODER, tmp_path / "b.safetensors", 1, 8, PatchPretrainConfig(epochs=1))
    assert not list(tmp_path.iterdir())


def test_the_shipped_backbone_is_the_defaults_and_matches_its_look(tmp_path) -> None:
    cfg = compose_cfg([], tmp_path / "run")
    assert weights_path(cfg.model.pretrained_file) == DEFAULT_OUT and DEFAULT_OUT.is_file()
    with safe_open(str(DEFAULT_OUT), "pt") as f:
        record = json.loads(f.metadata()["glsim_pl_pretrain"])
    look = {k: list(v) if isinstance(v, tuple) else v for k, v in record["look"].items()}
    assert look.pop("hue_step") * look["num_classes"] == pytest.approx(1.0)  # coarse: hues around the whole wheel
    assert cfg.dataset.hue_step * cfg.dataset.num_classes < 0.2  # the default's classes: fine, unseen in pretraining
    for key, value in look.items():  # a change of the default look must come with a re-made backbone
        expected = cfg.dataset[key]
        assert (list(expected) if not isinstance(expected, (int, float, str)) else expected) == value, key
    assert record["image_size"] == cfg.dataset.image_size and record["data_seed"] != cfg.dataset.seed
    assert record["backbone_kwargs"] == dict(cfg.model.backbone_kwargs)
    encoder = create_encoder(cfg.model.backbone, cfg.dataset.image_size, pretrained_file=cfg.model.pretrained_file,
                             backbone_kwargs=dict(cfg.model.backbone_kwargs))  # fmt: skip
    assert encoder.pretrained_share == 1.0
