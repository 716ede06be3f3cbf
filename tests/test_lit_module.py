"""Schedule, optimizer groups and metrics of the Lightning module."""

from __future__ import annotations

import math

import pytest
import torch

from glsim_pl.training.metrics import build_metrics
from glsim_pl.training.module import GLSimLitModule
from glsim_pl.training.optim import warmup_cosine


def test_warmup_then_cosine_on_the_raw_step() -> None:
    lr = lambda s: warmup_cosine(s, total=1000, lr=0.01, warmup_steps=100, warmup_lr=1e-6, min_lr=1e-5)
    assert lr(0) == pytest.approx(1e-6)
    assert lr(50) == pytest.approx(1e-6 + (0.01 - 1e-6) * 0.5)
    # after warmup the cosine is not shifted: at step 500 it is halfway through its period
    assert lr(500) == pytest.approx(1e-5 + 0.5 * (0.01 - 1e-5) * (1 + math.cos(math.pi * 0.5)))
    assert lr(1000) == pytest.approx(1e-5)


def test_metrics_are_micro_top1_top5_and_macro() -> None:
    metrics = build_metrics(3, "val/")
    logits = torch.tensor([[3.0, 0, 0], [3.0, 0, 0], [3.0, 0, 0], [0, 0, 3.0]])
    metrics.update(logits, torch.tensor([0, 0, 1, 2]))  # 3/4 right; class 1 always wrong
    out = metrics.compute()
    assert out["val/acc1"].item() == pytest.approx(0.75)  # micro: overall
    assert out["val/acc1_macro"].item() == pytest.approx(2 / 3)  # macro: mean of per-class 1, 0, 1
    assert out["val/acc5"].item() == pytest.approx(1.0)  # top_k capped at K=3


def test_no_weight_decay_on_biases_norms_and_embeddings() -> None:
    net = {"backbone": "vit_tiny_patch16_224", "img_size": 32,
           "backbone_kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}}  # fmt: skip
    module = GLSimLitModule(num_classes=3, net=net, optim={"weight_decay": 0.05})
    module.trainer = type("T", (), {"estimated_stepping_batches": 10})()
    optimizer = module.configure_optimizers()["optimizer"]
    decayed = {id(p) for p in optimizer.param_groups[0]["params"]}
    names = {n for n, p in module.net.named_parameters() if id(p) in decayed}
    assert "encoder.blocks.0.attn.qkv.weight" in names
    assert not {"encoder.cls_token", "encoder.pos_embed", "head.bias", "aggregator.norm.weight"} & names
    assert optimizer.param_groups[0]["nesterov"] is True


def test_optimizer_step_i_uses_lr_of_step_i(make_cfg) -> None:
    """The LR order (docs/reproduction.md): optimizer step i runs at warmup_cosine(i), the scheduler steps after it
    (the official trainer's step i runs at lr(i - 1); one step of the schedule apart)."""
    import lightning as L

    from glsim_pl.config.groups import module_kwargs, transform_augs
    from glsim_pl.config.instantiate import instantiate

    cfg = make_cfg("optim.warmup_steps=4", "optim.lr=0.1", "optim.warmup_lr=0.0", "optim.min_lr=0.0")
    datamodule = instantiate(cfg.dataset, augs=transform_augs(cfg))
    module = GLSimLitModule(**module_kwargs(cfg, datamodule.class_names))
    seen: list[float] = []

    class Record(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
            seen.append(optimizer.param_groups[0]["lr"])

    trainer = L.Trainer(accelerator="cpu", max_epochs=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()])  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    total = trainer.estimated_stepping_batches
    expected = [warmup_cosine(i, total, 0.1, 4, 0.0, 0.0) for i in range(len(seen))]
    assert len(seen) == total >= 5
    assert seen == pytest.approx(expected, abs=1e-12)
    assert seen[1] == pytest.approx(0.025) and seen[0] == 0.0  # lr(i - 1) would repeat 0.0 at step 1
