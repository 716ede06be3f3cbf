"""A compiler failure at the first compiled call: ``compile=auto`` warns once and runs eagerly, ``compile=true`` stops.

The failure is forced on CPU with a ``torch.compile`` backend that raises (as an inductor / Triton error would).
"""

from __future__ import annotations

import logging

import pytest
import torch

from glsim_pl.errors import UserError
from glsim_pl.models import build_classifier
from glsim_pl.utils import compile as compile_utils
from glsim_pl.utils.compile import is_compiled, prepare_classifier

TINY = dict(backbone="vit_tiny_patch16_224", num_classes=5, img_size=32,
            backbone_kwargs={"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2})  # fmt: skip


def _failing_backend(gm: torch.fx.GraphModule, example_inputs: list) -> None:
    raise RuntimeError("triton: no kernel for this op (forced)")


def _compiled_net(compile_value: object, monkeypatch: pytest.MonkeyPatch) -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_classifier("glsim", **TINY).eval()
    monkeypatch.setattr(compile_utils, "resolve_compile", lambda value, cuda: True)  # auto compiles, as on CUDA
    assert prepare_classifier(net, compile_value, "auto", cuda=False, batch_size=2)
    net.forward.backend = _failing_backend  # what the first compiled call will meet
    return net


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_auto_falls_back_to_eager_with_one_warning(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = _compiled_net("auto", monkeypatch)
    images = torch.randn(2, 3, 32, 32)
    expected = type(net).forward(net, images).logits
    with caplog.at_level(logging.WARNING, logger="glsim_pl.utils.compile"):
        first = net(images).logits
        second = net(images).logits
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "compile=auto" in warnings[0] and "forced" in warnings[0] and "eager" in warnings[0]
    torch.testing.assert_close(first, expected, rtol=0, atol=0)
    torch.testing.assert_close(second, expected, rtol=0, atol=0)
    assert is_compiled(net) and net.forward.failed is not None


@pytest.mark.parametrize("value", [True, "true"])
def test_true_stops_with_the_error(value: object, monkeypatch: pytest.MonkeyPatch) -> None:
    net = _compiled_net(value, monkeypatch)
    with pytest.raises(UserError, match=r"compile=true: torch.compile failed .*forced.*compile=false") as info:
        net(torch.randn(2, 3, 32, 32))
    assert info.value.__cause__ is not None  # the compiler's own error stays attached for a traceback


def test_first_compiled_step_time_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    net = build_classifier("vit", **TINY).eval()
    assert prepare_classifier(net, "auto", "auto", cuda=False, batch_size=2) is False  # auto on CPU: eager
    assert prepare_classifier(net, True, "auto", cuda=False, batch_size=2)
    net.forward.backend = "eager"  # dynamo tracing without code generation: fast on CPU
    with caplog.at_level(logging.INFO, logger="glsim_pl.utils.compile"):
        net(torch.randn(2, 3, 32, 32))
        net(torch.randn(2, 3, 32, 32))
    lines = [r.getMessage() for r in caplog.records if "first compiled step" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("torch.compile: first compiled step") and net.forward.failed is None
