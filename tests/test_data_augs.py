"""Augmentation presets (strong = random-resized-crop + RandAugment + MixUp/CutMix with soft targets), normalisation."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2 as T

from glsim_pl.config.groups import transform_augs
from glsim_pl.config.instantiate import instantiate
from glsim_pl.data.transforms import IMAGENET_MEAN, MixUpCutMixCollate
from glsim_pl.errors import UserError
from glsim_pl.train import train
from tests.helpers.configs import TINY
from tests.helpers.data_trees import food


def datamodule(cfg):
    return instantiate(cfg.dataset, augs=transform_augs(cfg))


def test_strong_preset_transform_ops(make_cfg, tmp_path) -> None:
    tree = food(tmp_path)
    cfg = make_cfg(*TINY, "dataset=food", f"dataset.root={tree.root}", "dataset.num_classes=3", "augs=strong",
                   tiny=False)  # fmt: skip
    dm = datamodule(cfg)
    dm.setup("fit")
    kinds = [type(op) for op in dm.data_train.transform.transforms]
    assert kinds[:2] == [T.ToImage, T.RandomResizedCrop]  # uint8 tensor first, then the crop
    assert T.RandomHorizontalFlip in kinds
    assert any(issubclass(k, T.RandAugment) for k in kinds)  # torchvision's, or a subclass with the same draws
    assert not any(issubclass(k, T.TrivialAugmentWide) for k in kinds)
    assert dm.data_train[0][0].shape == (3, 32, 32)


def test_strong_preset_mixes_labels_into_soft_targets(make_cfg) -> None:
    torch.manual_seed(0)
    dm = datamodule(make_cfg("augs=strong"))
    dm.setup("fit")
    images, targets = next(iter(dm.train_dataloader()))
    assert images.shape == (8, 3, 32, 32)
    assert targets.shape == (8, 10)
    assert torch.allclose(targets.sum(dim=1), torch.ones(8))
    assert (targets.max(dim=1).values < 1).any()  # at least one image is a mix of two classes
    eval_labels = next(iter(dm.val_dataloader()))[1]  # (images, labels, boxes)
    assert eval_labels.ndim == 1  # evaluation never mixes


def test_mixup_collate_keeps_both_classes() -> None:
    collate = MixUpCutMixCollate(num_classes=4, mixup_alpha=1.0, cutmix_alpha=0.0)
    batch = [(torch.full((3, 8, 8), float(i)), i) for i in range(4)]
    torch.manual_seed(1)
    images, targets = collate(batch)
    lam = targets[0, 0].item()
    assert 0 < lam < 1
    assert targets[0, 3].item() == pytest.approx(1 - lam)  # MixUp pairs each image with the previous one
    assert images[0, 0, 0, 0].item() == pytest.approx(lam * 0 + (1 - lam) * 3)


def test_strong_preset_trains_on_soft_targets(make_cfg) -> None:
    metrics = train(make_cfg("augs=strong", "logger=none", "callbacks=none", "+trainer.fast_dev_run=true"))
    assert 0.0 <= metrics["test/acc1"] <= 1.0


def test_normalize_timm_reads_the_backbone_config(make_cfg) -> None:
    assert datamodule(make_cfg()).mean == IMAGENET_MEAN  # the official runs' default, whatever the backbone
    dm = datamodule(make_cfg("dataset.normalize=timm", "model.backbone=vit_base_patch16_224.orig_in21k"))
    assert dm.mean == (0.5, 0.5, 0.5)
    assert dm.std == (0.5, 0.5, 0.5)
    with pytest.raises(UserError, match="no_such_vit"):
        datamodule(make_cfg("dataset.normalize=timm", "model.backbone=no_such_vit")).check()
