"""The foundation paths under torch.compile (Dynamo + AOTAutograd on CPU, as tests/test_compile.py): one graph, the
eager model's outputs. CUDA runs compile by default, so a graph break here would cost speed there."""

from __future__ import annotations

import copy

import pytest
import torch

from glsim_pl.models import GLSim
from glsim_pl.utils.compile import compile_classifier
from tests.helpers.configs import TINY_KW

TINY = {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
CASES = {
    "lora": dict(TINY_KW, finetune={"regime": "lora", "rank": 2}),
    "vpt": dict(TINY_KW, finetune={"regime": "vpt", "prompt_tokens": 2}),
    "adapter": dict(TINY_KW, finetune={"regime": "adapter", "bottleneck": 4}),
    "siglip2_map": dict(TINY_KW, backbone="vit_base_patch16_siglip_224", backbone_kwargs=TINY),
    "dinov3": dict(TINY_KW, backbone="vit_base_patch16_dinov3", backbone_kwargs={**TINY, "global_pool": "token"}),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_one_graph_and_the_eager_outputs(case: str) -> None:
    torch.manual_seed(0)
    eager = GLSim(num_classes=3, **CASES[case]).eval()
    compiled = copy.deepcopy(eager)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compile_classifier(compiled, "default", static_batch=4, backend="aot_eager")
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        want, got = eager(x), compiled(x)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    assert not torch._dynamo.utils.counters["graph_break"]
    assert (got.logits - want.logits).abs().max() < 1e-4 and torch.equal(got.boxes, want.boxes)
