"""Fine-tuning regimes (finetune=full|linear|lora|dora|vpt|adapter): what trains, what stays frozen, export, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import glsim_pl
from glsim_pl.errors import UserError
from glsim_pl.export import export
from glsim_pl.model_io.checkpoints import load_module
from glsim_pl.models import GLSim
from glsim_pl.models.finetune import has_adapters, has_bottleneck_adapters, has_prompts, merged_copy, param_counts
from glsim_pl.models.glsim import ViTClassifier
from glsim_pl.train import train
from tests.helpers.checkpoints import sgd_steps
from tests.helpers.configs import TINY_KW, compose_tool

LORA = {"regime": "lora", "rank": 2, "alpha": 4}


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("cls", [GLSim, ViTClassifier])
def test_linear_freezes_the_encoder_bit_identically(cls: type) -> None:
    kw = {k: v for k, v in TINY_KW.items() if cls is GLSim or k != "top_o"}
    net = cls(num_classes=3, finetune={"regime": "linear"}, **kw)
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith("encoder.") for n in trainable)
    if cls is GLSim:
        assert any(n.startswith("aggregator.") for n in trainable)
    encoder, rest = _snapshot(net.encoder), _snapshot(net.head)
    sgd_steps(net, lr=0.5, momentum=0.9, weight_decay=0.1)
    assert all(torch.equal(v, encoder[k]) for k, v in net.encoder.state_dict().items())
    assert not torch.equal(net.head.weight, rest["weight"])


@pytest.mark.parametrize("regime", ["lora", "dora"])
def test_adapters_train_and_the_base_weights_stay(regime: str) -> None:
    torch.manual_seed(0)
    full = GLSim(num_classes=3, **TINY_KW)
    torch.manual_seed(0)
    net = GLSim(num_classes=3, finetune={**LORA, "regime": regime}, **TINY_KW)
    assert has_adapters(net) and not has_adapters(full)
    trainable, total = param_counts(net)
    assert trainable < total and total > param_counts(full)[1]
    base = {k: v for k, v in _snapshot(net.encoder).items() if "lora_" not in k}
    adapters = {k: v for k, v in _snapshot(net.encoder).items() if "lora_B" in k}
    assert adapters and all("patch_embed" not in k for k in adapters)  # Linear layers of the blocks only
    if regime == "dora":
        assert any("lora_magnitude_vector" in k for k in _snapshot(net.encoder))
    sgd_steps(net, lr=0.5, momentum=0.9, weight_decay=0.1)
    state = net.encoder.state_dict()
    assert all(torch.equal(state[k], v) for k, v in base.items())
    assert any(not torch.equal(state[k], v) for k, v in adapters.items())


def test_targets_pick_layers_and_bad_values_are_refused() -> None:
    net = GLSim(num_classes=3, finetune={**LORA, "targets": ["qkv"]}, **TINY_KW)
    adapted = {k.split(".lora_")[0] for k in net.encoder.state_dict() if ".lora_" in k}
    assert adapted == {f"blocks.{i}.attn.qkv" for i in range(2)}
    with pytest.raises(UserError, match=r"finetune.targets=\['nope'\].*qkv"):
        GLSim(num_classes=3, finetune={**LORA, "targets": ["nope"]}, **TINY_KW)
    with pytest.raises(UserError, match="finetune.rank=0"):
        GLSim(num_classes=3, finetune={**LORA, "rank": 0}, **TINY_KW)
    with pytest.raises(UserError, match="finetune.regime='prompt'"):
        GLSim(num_classes=3, finetune={"regime": "prompt"}, **TINY_KW)


@pytest.mark.parametrize("regime", ["lora", "dora"])
def test_merged_copy_gives_the_adapted_logits(regime: str) -> None:
    net = GLSim(num_classes=3, finetune={**LORA, "regime": regime}, **TINY_KW)
    sgd_steps(net, lr=0.5, momentum=0.9, weight_decay=0.1)
    net.eval()
    merged = merged_copy(net).eval()
    assert not has_adapters(merged) and has_adapters(net)
    plain = GLSim(num_classes=3, **TINY_KW).eval()
    plain.load_state_dict(merged.state_dict())  # the merged weights are a plain model's keys
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x).logits, plain(x).logits, atol=1e-5)


def test_vpt_deep_prompts_train_in_a_frozen_encoder() -> None:
    net = GLSim(num_classes=3, finetune={"regime": "vpt", "prompt_tokens": 3}, **TINY_KW)
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert {n for n in trainable if n.startswith("encoder.")} == {f"encoder.blocks.{i}.vpt_prompt" for i in range(2)}
    x = torch.randn(2, 3, 32, 32)
    net.eval()
    with torch.no_grad():
        tokens = net.encoder.forward_features(x)
        before = net(x).logits.clone()
    assert tokens.shape == (2, 1 + 16, 32)  # prompts removed after the last block: CLS + the 4x4 grid
    frozen = {k: v for k, v in _snapshot(net.encoder).items() if "vpt_prompt" not in k}
    prompts = {k: v for k, v in _snapshot(net.encoder).items() if "vpt_prompt" in k}
    sgd_steps(net, lr=0.5, momentum=0.9, weight_decay=0.1)
    state = net.encoder.state_dict()
    assert all(torch.equal(state[k], v) for k, v in frozen.items())
    assert all(not torch.equal(state[k], v) for k, v in prompts.items())
    net.head.load_state_dict({"weight": torch.randn(3, 32), "bias": torch.zeros(3)})
    with torch.no_grad():  # the prompts reach the output: other prompts, other tokens
        a = net.encoder.forward_features(x)
        net.encoder.blocks[0].vpt_prompt.add_(torch.randn(3, 32))  # not a constant: LayerNorm would remove it
        assert not torch.allclose(a, net.encoder.forward_features(x))
    assert before.shape == (2, 3)


def test_vpt_refusals() -> None:
    with pytest.raises(UserError, match="finetune=vpt needs timm VisionTransformer blocks; Eva"):
        GLSim(num_classes=3, finetune={"regime": "vpt"}, backbone="vit_base_patch16_dinov3", img_size=32, top_o=2,
              backbone_kwargs={"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2})  # fmt: skip
    with pytest.raises(UserError, match="method.selector='rollout' reads attention maps, and finetune=vpt"):
        GLSim(num_classes=3, finetune={"regime": "vpt"}, selector="rollout", **TINY_KW)
    net = GLSim(num_classes=3, finetune={"regime": "vpt"}, **TINY_KW)
    assert has_prompts(net.encoder)
    with pytest.raises(UserError, match="finetune=vpt"):
        net.selector = "attn_last"


def test_full_regime_keeps_the_paper_hyperparameters(make_cfg) -> None:
    from glsim_pl.config.groups import net_kwargs

    assert "finetune" not in net_kwargs(make_cfg())
    assert net_kwargs(make_cfg("finetune=dora", "finetune.rank=4"))["finetune"]["rank"] == 4


def test_config_time_refusal(make_cfg) -> None:
    from glsim_pl.config.validate import validate_config

    with pytest.raises(UserError, match="finetune.alpha=-1"):
        validate_config(make_cfg("finetune=lora", "finetune.alpha=-1"))
    with pytest.raises(UserError, match="method.selector='psm' reads attention maps, and finetune=vpt"):
        validate_config(make_cfg("finetune=vpt", "method.selector=psm"))
    with pytest.raises(UserError, match="finetune=vpt needs timm VisionTransformer blocks"):
        validate_config(make_cfg("finetune=vpt", "model=dinov3_b16", tiny=False))  # its structure, on meta
    validate_config(make_cfg("finetune=vpt"))


@pytest.mark.slow
@pytest.mark.parametrize("regime", ["linear", "lora", "vpt", "adapter"])
def test_train_eval_export_resume(make_cfg, tmp_path: Path, regime: str) -> None:
    out = tmp_path / regime
    metrics = train(make_cfg(f"finetune={regime}", "logger=none", output_dir=out))
    record = json.loads((out / "metrics.json").read_text())
    flat = json.dumps(record)
    assert "params/trainable" in flat and "params/total" in flat
    assert 0 < metrics["params/trainable"] < metrics["params/total"]
    best = Path(metrics["best_ckpt"])
    module, kind = load_module(best)  # evaluates: the regime is rebuilt from the checkpoint's hyperparameters
    assert kind == "lightning" and has_adapters(module.net) == (regime == "lora")
    assert has_prompts(module.net.encoder) == (regime == "vpt")
    export(compose_tool("export", [f"ckpt_path={best}", f"out={tmp_path / 'exported'}"], tmp_path / "x"))
    exported = glsim_pl.load_pretrained(tmp_path / "exported")
    assert not has_adapters(exported) and has_prompts(exported.encoder) == (regime == "vpt")  # prompts stay tokens
    adapted = has_bottleneck_adapters(module.net.encoder)
    assert has_bottleneck_adapters(exported.encoder) == adapted == (regime == "adapter")  # kept: nothing to fold
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(module.net(x).logits, exported(x).logits, atol=1e-5)
    steps = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    train(make_cfg(f"finetune={regime}", "logger=none", "trainer.max_epochs=2", "ckpt_path=last", output_dir=out))
    last = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (1, 2 * steps)
