"""Adaptive GLSim (method.gate): the cascade's exactness, its second-pass batch sizes, training, predict."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from glsim_pl.errors import UserError
from glsim_pl.models import GLSim, GLSimOutput, build_classifier, load_official_checkpoint
from glsim_pl.models.gate import cascade, confidence, merge, split
from glsim_pl.training.module import GLSimLitModule
from tests.helpers.checkpoints import TINY_GATED, gated_model, save_lightning_ckpt
from tests.helpers.configs import TINY_KW, compose_tool


def encoder_batch_sizes(model: GLSim) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    """Batch size of every encoder call (first pass, then the second pass on the crops)."""
    sizes: list[int] = []
    handle = model.encoder.patch_embed.register_forward_hook(lambda m, i, o: sizes.append(int(i[0].shape[0])))
    return sizes, handle


# -- pure functions ---------------------------------------------------------------------------------------------------
def test_confidence_split_merge_on_hand_built_tensors() -> None:
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [0.9, 0.05, 0.05]]))
    conf = confidence(logits)
    torch.testing.assert_close(conf, torch.tensor([0.7, 0.4, 0.9]))
    mask, index = split(conf, 0.7)  # >= tau exits: 0.7 exits, 0.4 goes on
    assert mask.tolist() == [False, True, False] and index.tolist() == [1]
    merged = merge(torch.zeros(3, 2), torch.ones(1, 2), index)
    assert merged.tolist() == [[0, 0], [1, 1], [0, 0]]
    calls: list[list[int]] = []
    out, took = cascade(logits, 0.8, lambda idx: calls.append(idx.tolist()) or torch.full((len(idx), 3), 5.0))
    assert calls == [[0, 1]] and took.tolist() == [True, True, False]
    torch.testing.assert_close(out[2], logits[2])
    assert out[:2].eq(5.0).all()
    out, took = cascade(logits, 0.0, lambda idx: pytest.fail("no image may take the second pass at tau = 0"))
    assert out is logits and not took.any()


# -- the cascade is exact ---------------------------------------------------------------------------------------------
def test_tau_above_every_confidence_equals_always_two_pass_glsim() -> None:
    model = gated_model()
    plain = GLSim("vit_tiny_patch16_224", num_classes=6, top_o=3, **TINY_GATED).eval()  # the paper's model, no gate
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("gate_head.")})
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        ref = plain(x)
        conf = confidence(model.forward_gated(x, None).first_logits)
        for tau in (float(conf.max()) + 1e-6, 1.5):
            out = model.forward_gated(x, tau)
            torch.testing.assert_close(out.logits, ref.logits, atol=1e-6, rtol=0)
            assert torch.equal(out.boxes, ref.boxes) and out.second_pass.all()


def test_tau_zero_equals_the_first_pass_head() -> None:
    model = gated_model()
    x = torch.randn(8, 3, 32, 32)
    sizes, handle = encoder_batch_sizes(model)
    with torch.no_grad():
        out = model.forward_gated(x, 0.0)
        first = model.gate_head(model.encoder.forward_features(x)[:, 0])  # a plain ViT: CLS -> linear head
    handle.remove()
    torch.testing.assert_close(out.logits, first, atol=1e-6, rtol=0)
    assert not out.second_pass.any()
    assert sizes == [8, 8]  # gated run: one encoder call only; then the reference call


def test_partial_tau_runs_the_second_pass_on_the_unsure_subset_only() -> None:
    model = gated_model()
    x = torch.randn(12, 3, 32, 32)
    with torch.no_grad():
        full = model.forward_gated(x, None)  # both heads on every image
    conf = confidence(full.first_logits)
    seconds = []
    for q in (0.75, 0.5, 0.25):  # fewer unsure images -> smaller second-pass batches
        tau = float(conf.quantile(q))
        sizes, handle = encoder_batch_sizes(model)
        with torch.no_grad():
            out = model.forward_gated(x, tau)
        handle.remove()
        unsure = conf < tau
        assert out.second_pass.tolist() == unsure.tolist()
        assert sizes == [12, int(unsure.sum())]  # first pass on all, second pass on the unsure subset only
        expected = torch.where(unsure[:, None], full.logits, full.first_logits)
        torch.testing.assert_close(out.logits, expected, atol=1e-5, rtol=1e-5)
        seconds.append(sizes[1])
    assert seconds[0] > seconds[1] > seconds[2]


def test_eval_forward_uses_the_model_threshold_and_training_runs_both_passes() -> None:
    model = gated_model()
    x = torch.randn(6, 3, 32, 32)
    model.gate_threshold = 0.0
    with torch.no_grad():
        assert not model(x).second_pass.any()
    model.train()
    sizes, handle = encoder_batch_sizes(model)
    out = model(x)
    handle.remove()
    assert sizes == [6, 6] and out.second_pass.all() and out.first_logits.requires_grad


# -- gate=none is the paper, unchanged --------------------------------------------------------------------------------
def test_gate_none_adds_no_state_and_official_parity_holds(official_fixture: dict) -> None:
    plain = GLSim("vit_tiny_patch16_224", num_classes=3, **TINY_GATED)
    gated = GLSim("vit_tiny_patch16_224", num_classes=3, gate="confidence", **TINY_GATED)
    assert not [k for k in plain.state_dict() if "gate" in k]
    assert set(gated.state_dict()) - set(plain.state_dict()) == {"gate_head.weight", "gate_head.bias"}
    model = load_official_checkpoint(official_fixture["checkpoint"]).eval()  # strict load: no extra keys
    with torch.no_grad():
        out = model(official_fixture["images"])
    assert out.first_logits is None and out.second_pass is None
    logits, boxes, scores = out[:3]  # positional users keep working
    torch.testing.assert_close(logits, official_fixture["logits"], atol=1e-4, rtol=0)
    assert isinstance(out, GLSimOutput) and boxes.shape == (3, 4) and scores.shape == (3, 36)


def test_bad_gate_values_are_clear_errors() -> None:
    with pytest.raises(UserError, match="method.gate='maybe'"):
        GLSim("vit_tiny_patch16_224", num_classes=3, gate="maybe", **TINY_GATED)
    with pytest.raises(UserError, match="method=glsim"):
        build_classifier("vit", backbone="vit_tiny_patch16_224", num_classes=3, gate="confidence", **TINY_GATED)


# -- training ---------------------------------------------------------------------------------------------------------
def test_joint_loss_is_glsim_ce_plus_weighted_first_pass_ce() -> None:
    torch.manual_seed(0)
    module = GLSimLitModule(
        num_classes=4, net={"gate": "confidence", **TINY_KW}, gate_loss_weight=0.5, label_smoothing=0.0
    )
    torch.nn.init.normal_(module.net.head.weight)
    torch.nn.init.normal_(module.net.gate_head.weight)
    module.train()
    module.log = lambda *a, **k: None  # no trainer attached
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    torch.manual_seed(1)
    loss = module.training_step((x, y), 0)
    torch.manual_seed(1)
    out = module.net(x)
    expected = F.cross_entropy(out.logits, y) + 0.5 * F.cross_entropy(out.first_logits, y)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert module.net.gate_head.weight.grad.abs().sum() > 0 and module.net.head.weight.grad.abs().sum() > 0


def test_training_with_gate_runs_end_to_end(make_cfg) -> None:
    from glsim_pl.train import train

    cfg = make_cfg("method.gate=confidence", "method.gate_threshold=0.5", "logger=none")
    metrics = train(cfg)
    assert 0.0 <= metrics["test/second_pass_share"] <= 1.0
    assert "train/loss_first" in metrics
    state = torch.load(metrics["best_ckpt"], map_location="cpu", weights_only=True)
    assert "net.gate_head.weight" in state["state_dict"]
    assert state["hyper_parameters"]["net"]["gate"] == "confidence"


# -- predict ----------------------------------------------------------------------------------------------------------
def test_predict_writes_which_images_took_the_second_pass(tmp_path: Path) -> None:
    from glsim_pl.predict import predict

    ckpt = tmp_path / "gated.ckpt"
    save_lightning_ckpt(ckpt, gate="confidence")
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    taken = {}
    for tau in ("0.0", "2.0"):
        cfg = compose_tool("predict", [f"ckpt_path={ckpt}", f"input={tmp_path}", f"output={tmp_path / tau}",
                                       f"gate_threshold={tau}"], tmp_path / "run")  # fmt: skip
        taken[tau] = [r["second_pass"] for r in csv.DictReader(predict(cfg).open())]
    assert taken == {"0.0": ["0"] * 3, "2.0": ["1"] * 3}
    plain = tmp_path / "plain.ckpt"
    save_lightning_ckpt(plain)
    cfg = compose_tool("predict", [f"ckpt_path={plain}", f"input={tmp_path}", f"output={tmp_path / 'p'}",
                                   "gate_threshold=0.5"], tmp_path / "run")  # fmt: skip
    with pytest.raises(UserError, match="no gate"):
        predict(cfg)


@pytest.mark.slow  # dynamo traces the encoder three times (~20 s on a 2-core CPU)
def test_compiled_stages_match_eager_and_the_second_pass_does_not_recompile_per_size() -> None:
    from torch._dynamo.utils import counters

    from glsim_pl.analysis.gate_sweep import compile_stages, uncompile

    torch._dynamo.reset()
    model = gated_model()
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        full = model.forward_gated(x, None)
        conf = confidence(full.first_logits).sort().values
        taus = [float(conf[k]) for k in (3, 5, 7)]  # 3, 5 and 7 unsure images
        eager = [model.forward_gated(x, tau).logits for tau in taus]
        compile_stages(model, backend="eager")  # graph capture only: what dynamo does, without a C++ build
        before = counters["stats"]["unique_graphs"]
        compiled = [model.forward_gated(x, tau).logits for tau in taus]
        graphs = counters["stats"]["unique_graphs"] - before
        uncompile(model)
    for a, b in zip(eager, compiled, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert graphs <= 3  # first pass once, second pass once for every size >= 2 (not once per size)
    assert "first_pass" not in model.__dict__


def test_export_round_trip_keeps_the_gate(tmp_path: Path) -> None:
    from glsim_pl.data.preprocessing import Preprocessing
    from glsim_pl.export import load_pretrained, save_pretrained

    module = GLSimLitModule(num_classes=6, net={"gate": "confidence", "gate_threshold": 0.4, **TINY_KW}).eval()
    torch.nn.init.normal_(module.net.gate_head.weight, std=2.0)
    torch.nn.init.normal_(module.net.head.weight, std=2.0)
    pre = Preprocessing(input_size=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    save_pretrained(module.net, dict(module.hparams), tmp_path, [f"c{i}" for i in range(6)], pre)
    net = load_pretrained(tmp_path)
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        a, b = module.net(x), net(x)
    assert net.gate == "confidence" and net.gate_threshold == 0.4
    torch.testing.assert_close(a.logits, b.logits)
    assert torch.equal(a.second_pass, b.second_pass)
