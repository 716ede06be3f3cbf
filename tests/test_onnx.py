"""glsim-export format=onnx: the inference forward (crop included) in onnxruntime equals eager PyTorch."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

import glsim_pl
from tests.helpers.configs import compose_tool

ort = pytest.importorskip("onnxruntime", reason="format=onnx needs the [onnx] extra (part of [dev])")


@pytest.mark.slow  # torch.export + onnxscript translation: ~20 s on a 2-core CPU
def test_onnx_matches_eager_on_the_official_fixture(official_fixture: dict, tmp_path: Path) -> None:
    from glsim_pl.export import export

    ckpt = tmp_path / "official.pth"
    torch.save(official_fixture["checkpoint"], ckpt)
    out = export(compose_tool("export", [f"ckpt_path={ckpt}", f"out={tmp_path / 'e'}", "format=onnx"], tmp_path / "r"))
    assert stat.S_IMODE((out / "model.onnx").stat().st_mode) == 0o644
    model = glsim_pl.load_pretrained(out)
    images = official_fixture["images"]
    with torch.no_grad():
        eager = model(images)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert session.get_inputs()[0].shape[0] not in (1, 2, 3)  # the batch dimension is symbolic
    for batch in (3, 1):  # dynamic batch size
        logits, boxes = session.run(None, {"images": images[:batch].numpy()})
        np.testing.assert_allclose(logits, eager.logits[:batch].numpy(), atol=1e-4, rtol=0)
        np.testing.assert_array_equal(boxes, eager.boxes[:batch].numpy())
    torch.testing.assert_close(torch.from_numpy(logits), official_fixture["logits"][:1], atol=1e-4, rtol=1e-4)
    assert json.loads((out / "config.json").read_text())["preprocessing"]["input_size"] == 96
