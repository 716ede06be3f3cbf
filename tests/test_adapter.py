"""finetune=adapter: bottleneck adapters after every block's MLP of a frozen encoder (ViT and Eva families)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import glsim_pl
from glsim_pl.errors import UserError
from glsim_pl.models import GLSim
from glsim_pl.models.finetune import BottleneckAdapter, has_bottleneck_adapters, param_counts
from glsim_pl.models.glsim import ViTClassifier
from tests.helpers.checkpoints import sgd_steps
from tests.helpers.configs import TINY_KW

ADAPTER = {"regime": "adapter", "bottleneck": 4}
EVA_KW = {"backbone": "vit_base_patch16_dinov3", "img_size": 32, "top_o": 2, "pretrained": False,
          "backbone_kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}}  # fmt: skip
FAMILIES = {"vit": TINY_KW, "eva": EVA_KW}


def _build(cls: type, family: str, finetune: dict | None) -> torch.nn.Module:
    kw = {k: v for k, v in FAMILIES[family].items() if cls is GLSim or k != "top_o"}
    torch.manual_seed(0)
    return cls(num_classes=3, finetune=finetune, **kw)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("cls", [GLSim, ViTClassifier])
def test_adapters_train_in_a_frozen_encoder(cls: type, family: str) -> None:
    plain, net = _build(cls, family, None), _build(cls, family, ADAPTER)
    adapters = [m for m in net.encoder.modules() if isinstance(m, BottleneckAdapter)]
    assert len(adapters) == 2 and has_bottleneck_adapters(net.encoder) and not has_bottleneck_adapters(plain.encoder)
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert {n for n in trainable if n.startswith("encoder.")} == {
        f"encoder.blocks.{i}.mlp.adapter.{layer}.{kind}" for i in range(2) for layer in ("down", "up")
        for kind in ("weight", "bias")
    }  # fmt: skip
    assert "head.weight" in trainable and (cls is ViTClassifier or any(n.startswith("aggregator.") for n in trainable))
    per_adapter = 32 * 4 + 4 + 4 * 32 + 32
    assert param_counts(net)[1] == param_counts(plain)[1] + 2 * per_adapter
    x = torch.randn(2, 3, 32, 32)
    plain.eval(), net.eval()
    with torch.no_grad():  # the pretrained keys keep their names and up starts at zero: the pretrained model's logits
        plain.load_state_dict({k: v for k, v in net.state_dict().items() if ".adapter." not in k})
        assert torch.equal(net(x).logits, plain(x).logits)
    frozen = {k: v.clone() for k, v in net.encoder.state_dict().items() if ".adapter." not in k}
    ups = {k: v.clone() for k, v in net.encoder.state_dict().items() if ".adapter.up." in k}
    sgd_steps(net, lr=0.5, momentum=0.9, weight_decay=0.1)
    state = net.encoder.state_dict()
    assert all(torch.equal(state[k], v) for k, v in frozen.items())
    assert all(not torch.equal(state[k], v) for k, v in ups.items())
    net.eval()
    with torch.no_grad():  # the trained adapters reach the output
        for name, param in net.named_parameters():
            if name.endswith("gamma_2"):  # the random-init Eva's 1e-5 layer scale would hide them in float32
                param.fill_(1.0)
        plain.load_state_dict({k: v for k, v in net.state_dict().items() if ".adapter." not in k})
        assert not torch.equal(net(x).logits, plain(x).logits)


def test_both_glsim_passes_run_the_adapted_encoder() -> None:
    net = _build(GLSim, "vit", ADAPTER).eval()
    calls = []
    net.encoder.blocks[0].mlp.adapter.register_forward_hook(lambda m, args, out: calls.append(args[0].shape))
    with torch.no_grad():
        net(torch.randn(2, 3, 32, 32))
    assert len(calls) == 2  # the global pass and the crop pass


def test_scale_and_bad_values() -> None:
    adapter = BottleneckAdapter(8, 2, scale=0.5)
    torch.nn.init.normal_(adapter.up.weight)
    h = torch.randn(3, 5, 8)
    branch = adapter.up(adapter.act(adapter.down(h)))
    assert torch.allclose(adapter(h), h + 0.5 * branch)
    with pytest.raises(UserError, match="finetune.bottleneck=0"):
        GLSim(num_classes=3, finetune={"regime": "adapter", "bottleneck": 0}, **TINY_KW)
    with pytest.raises(UserError, match="finetune.scale=-1"):
        GLSim(num_classes=3, finetune={"regime": "adapter", "scale": -1}, **TINY_KW)


def test_config_composes_and_validates(make_cfg) -> None:
    from glsim_pl.config.groups import net_kwargs
    from glsim_pl.config.validate import validate_config

    cfg = make_cfg("finetune=adapter", "finetune.bottleneck=8")
    assert net_kwargs(cfg)["finetune"] == {"regime": "adapter", "bottleneck": 8, "scale": 1.0}
    validate_config(cfg)
    with pytest.raises(UserError, match="finetune.scale=0"):
        validate_config(make_cfg("finetune=adapter", "finetune.scale=0"))


@pytest.mark.slow  # torch.export + onnxscript translation
def test_export_and_onnx_keep_the_adapters(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime", reason="format=onnx needs the [onnx] extra (part of [dev])")
    from glsim_pl.data.preprocessing import Preprocessing
    from glsim_pl.model_io.checkpoints import load_module
    from glsim_pl.model_io.onnx import export_onnx
    from glsim_pl.model_io.pretrained import save_pretrained

    net = _build(GLSim, "vit", ADAPTER)
    sgd_steps(net, lr=0.5)
    net.eval()
    hparams = {"net": {"method": "glsim", "num_classes": 3, **TINY_KW, "finetune": ADAPTER}}
    folder = save_pretrained(net, hparams, tmp_path / "e", ["a", "b", "c"], Preprocessing(input_size=32))
    loaded = glsim_pl.load_pretrained(folder)
    module, kind = load_module(folder)  # what eval, predict and the demo load
    assert kind == "export" and has_bottleneck_adapters(loaded.encoder) and has_bottleneck_adapters(module.net.encoder)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        eager = net(x)
        assert torch.equal(loaded(x).logits, eager.logits) and torch.equal(module.net.eval()(x).logits, eager.logits)
    session = ort.InferenceSession(str(export_onnx(net, tmp_path / "m.onnx", 32)), providers=["CPUExecutionProvider"])
    logits, _ = session.run(None, {"images": x.numpy()})
    np.testing.assert_allclose(logits, eager.logits.numpy(), atol=1e-4, rtol=0)
