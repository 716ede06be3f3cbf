"""optim.layer_decay: layer-wise learning rates over the encoder; off (null), the paper's two parameter groups."""

from __future__ import annotations

import pytest
import torch

from glsim_pl.errors import UserError
from glsim_pl.models import GLSim
from glsim_pl.training.optim import build_optimizer, layer_id, param_groups, schedule_factor
from tests.helpers.configs import TINY_KW


def _lr_of(optimizer: torch.optim.Optimizer) -> dict[int, float]:
    return {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}


def test_off_is_the_papers_two_groups() -> None:
    net = GLSim(num_classes=3, **TINY_KW)
    for decay in (None, 1.0):
        opt = build_optimizer(net, {"lr": 0.01, "layer_decay": decay}, {})
        expected = param_groups(net, 0.0)
        assert len(opt.param_groups) == 2
        assert [[id(p) for p in g["params"]] for g in opt.param_groups] == [
            [id(p) for p in g["params"]] for g in expected
        ]


def test_each_block_gets_its_decayed_lr() -> None:
    net = GLSim(num_classes=3, **TINY_KW)  # depth 2: embeddings 0, blocks 1..2, the rest 3
    lr, d = 0.01, 0.5
    opt = build_optimizer(net, {"lr": lr, "layer_decay": d, "weight_decay": 0.05}, {})
    lrs = _lr_of(opt)
    assert len(lrs) == sum(1 for p in net.parameters() if p.requires_grad)  # every parameter once
    params = dict(net.named_parameters())
    assert lrs[id(params["head.weight"])] == pytest.approx(lr)
    assert lrs[id(params["encoder.norm.weight"])] == pytest.approx(lr)
    assert lrs[id(params["encoder.blocks.1.attn.qkv.weight"])] == pytest.approx(lr * d)
    assert lrs[id(params["encoder.blocks.0.mlp.fc1.weight"])] == pytest.approx(lr * d**2)
    assert lrs[id(params["encoder.cls_token"])] == pytest.approx(lr * d**3)
    assert lrs[id(params["encoder.patch_embed.proj.weight"])] == pytest.approx(lr * d**3)
    assert opt.param_groups[0]["lr"] == pytest.approx(lr)  # the peak LR first: what the progress lines show
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert id(params["encoder.blocks.0.mlp.fc1.weight"]) in decayed and id(params["head.bias"]) not in decayed


def test_the_schedule_keeps_the_ratios() -> None:
    net = GLSim(num_classes=3, **TINY_KW)
    hp = {"lr": 0.01, "layer_decay": 0.5, "warmup_steps": 2}
    opt = build_optimizer(net, hp, {})
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule_factor(hp, lambda: 10))
    for _ in range(4):
        opt.step()
        sched.step()
    first, last = opt.param_groups[0]["lr"], opt.param_groups[-1]["lr"]
    assert last == pytest.approx(first * 0.5**3)


def test_layer_id_and_the_range_check(make_cfg) -> None:
    names = ("encoder.pos_embed", "encoder.blocks.11.attn.qkv.lora_A.default.weight",
             "aggregator.blocks.0.norm1.weight", "encoder.fc_norm.weight")  # fmt: skip
    assert [layer_id(n, 12) for n in names] == [0, 12, 13, 13]
    from glsim_pl.config.validate import validate_config

    with pytest.raises(UserError, match=r"optim.layer_decay=1.5: out of range"):
        validate_config(make_cfg("optim.layer_decay=1.5"))
    validate_config(make_cfg("optim.layer_decay=0.75"))
