"""torch.compile readiness on CPU: no graph breaks (Dynamo explain), compiled == eager, plain checkpoint keys.

Graph-break checks use ``torch._dynamo.explain`` (tracing only, no inductor): cheap. The compiled-vs-eager check here
uses the ``aot_eager`` backend (the same Dynamo graph through AOTAutograd, no code generation); inductor's C++
code generation costs ~30 s of CPU per tiny model from a cold cache, so its parity tests (official fixture, 20
training steps, the train entry point) are ``slow`` in tests/test_compile_train.py.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo.config as dynamo_config
from torch import nn

from glsim_pl.errors import UserError
from glsim_pl.utils.compile import (
    compile_classifier,
    is_compiled,
    prepare_classifier,
    resolve_compile,
    resolve_compile_mode,
)
from tests.helpers.checkpoints import tiny_classifier


def _breaks(explained) -> list[str]:
    return [str(b.reason).splitlines()[0] for b in explained.break_reasons]


@pytest.mark.parametrize("method", ["glsim", "vit"])
def test_eval_forward_is_one_graph(method: str) -> None:
    net = tiny_classifier(method).eval()
    torch._dynamo.reset()
    with torch.no_grad():
        explained = torch._dynamo.explain(net)(torch.randn(4, 3, 32, 32))
    assert explained.graph_break_count == 0, _breaks(explained)
    assert explained.graph_count == 1


@pytest.mark.parametrize("method", ["glsim", "vit"])
def test_training_step_forward_loss_backward_is_one_graph(method: str) -> None:
    """Forward + label-smoothed CE + backward (grad accumulation included) traced as one Dynamo graph.

    ``trace_autograd_ops`` lets Dynamo trace ``Tensor.backward()`` itself; without it backward is the one graph
    break Dynamo always reports (AOTAutograd then compiles the backward of the forward graph as a whole).
    """
    net = tiny_classifier(method).train()
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)

    def step(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = criterion(net(images).logits, labels)
        loss.backward()
        return loss.detach()

    torch._dynamo.reset()
    with dynamo_config.patch(trace_autograd_ops=True):
        explained = torch._dynamo.explain(step)(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))
    assert explained.graph_break_count == 0, _breaks(explained)
    assert explained.graph_count == 1
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)  # backward ran inside the trace


@pytest.mark.parametrize("name", ["sgd", pytest.param("adamw", marks=pytest.mark.slow)])
def test_clip_and_optimizer_step_are_one_graph_each(name: str) -> None:
    """What Lightning runs after backward: global-norm clipping (no host read) and the foreach optimizer step."""
    net = tiny_classifier("glsim")
    net(torch.randn(2, 3, 32, 32)).logits.sum().backward()
    params = [p for p in net.parameters() if p.requires_grad]
    if name == "sgd":
        optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, foreach=True)
    else:
        optimizer = torch.optim.AdamW(params, lr=1e-3, foreach=True)
    for fn in (lambda: torch.nn.utils.clip_grad_norm_(params, 1.0), optimizer.step):
        torch._dynamo.reset()
        explained = torch._dynamo.explain(fn)()
        assert explained.graph_break_count == 0, _breaks(explained)


def test_switches_resolve_and_reject_bad_values() -> None:
    assert resolve_compile("auto", cuda=False) is False
    assert resolve_compile("auto", cuda=True) is True
    assert resolve_compile(True, cuda=False) is True
    assert resolve_compile("false", cuda=True) is False
    assert resolve_compile_mode("auto", cuda=True) == "reduce-overhead"
    assert resolve_compile_mode("auto", cuda=False) == "default"
    with pytest.raises(UserError, match="compile='yes'"):
        resolve_compile("yes", cuda=False)
    with pytest.raises(UserError, match="compile_mode='fast'"):
        resolve_compile_mode("fast", cuda=False)
    net = tiny_classifier("vit", depth=1)
    assert prepare_classifier(net, "auto", "auto", cuda=False, batch_size=4) is False  # CPU: auto stays eager
    assert not is_compiled(net)


@pytest.fixture(scope="module")
def compiled_pair() -> tuple[nn.Module, nn.Module]:
    """(eager, compiled) copies of one tiny GLSim in eval mode (Dynamo + AOTAutograd, shared by the module's tests)."""
    eager, compiled = tiny_classifier("glsim", depth=1).eval(), tiny_classifier("glsim", depth=1).eval()
    compile_classifier(compiled, "default", static_batch=4, backend="aot_eager")
    return eager, compiled


def test_compiled_forward_matches_eager_and_keeps_plain_keys(compiled_pair) -> None:
    eager, compiled = compiled_pair
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    torch._dynamo.utils.counters.clear()
    with torch.no_grad():
        want, got = eager(x), compiled(x)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # it really went through torch.compile
    assert (got.logits - want.logits).abs().max() < 1e-4
    assert torch.equal(got.boxes, want.boxes)
    assert list(compiled.state_dict()) == list(eager.state_dict())  # no _orig_mod. prefixes
    assert not any("_orig_mod" in k for k in compiled.state_dict())


def test_ragged_batch_and_attention_selectors_run_eager(compiled_pair) -> None:
    eager, compiled = compiled_pair
    torch._dynamo.utils.counters.clear()
    with torch.no_grad():
        x = torch.randn(3, 3, 32, 32)  # not the static batch: no recompile, the eager forward
        assert torch.allclose(compiled(x).logits, eager(x).logits, atol=1e-5)
        compiled.selector = eager.selector = "rollout"  # attention hooks append to lists: eager
        y = torch.randn(4, 3, 32, 32)
        assert torch.equal(compiled(y).boxes, eager(y).boxes)
    compiled.selector = eager.selector = "gls"
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 0


def test_compiled_module_copies_and_pickles_with_its_own_forward() -> None:
    """deepcopy (callbacks) and pickle (DDP spawn) give a module whose forward serves the copy, not the original."""
    import copy
    import pickle

    net = compile_classifier(tiny_classifier("vit", depth=1), "default", static_batch=4)
    for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert is_compiled(clone) and clone.forward.net is clone
        assert clone.forward.static_batch == 4
        assert list(clone.state_dict()) == list(net.state_dict())
