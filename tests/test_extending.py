"""docs/extending.md's examples (examples/extending/): a selector, a dataset, a backbone and a logger of your own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from glsim_pl.config.plugins import import_user_modules
from glsim_pl.errors import UserError
from glsim_pl.models import GLSim
from glsim_pl.models.selectors import get_selector, register_selector, selector_names
from glsim_pl.train import train
from glsim_pl.utils.compile import _runs_eager

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "extending"
TINY_NET = {"backbone": "vit_tiny_patch16_224", "num_classes": 3, "img_size": 32,
            "backbone_kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}}  # fmt: skip


def test_a_selector_from_outside_the_package_trains(make_cfg, monkeypatch, tmp_path: Path) -> None:
    """imports=[my_selectors] registers token_norm; it is then a method.selector choice and a tiny run trains."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    cfg = make_cfg(
        "imports=[my_selectors]", "method.selector=token_norm", "logger=none", "callbacks.crop_visualizer=null"
    )
    metrics = train(cfg)
    assert "token_norm" in selector_names()  # the eval comparison list (eval.selectors=null) includes it
    assert 0.0 <= metrics["test/acc1"] <= 1.0
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["config"]["method"]["selector"] == "token_norm"


def test_registry_gives_choices_and_the_compile_rule() -> None:
    @register_selector("test_last_attention", layers="last")
    def last(x):
        return x.maps[-1].float().mean(1)[:, 0, x.num_prefix :]

    model = GLSim(**TINY_NET, selector="test_last_attention")
    out = model(torch.randn(2, 3, 32, 32))
    assert out.boxes.shape == (2, 4)
    images = torch.randn(2, 3, 32, 32)
    assert _runs_eager(model, images, None)  # records attention: hooks, so eager
    model.selector = "gls"
    assert not _runs_eager(model, images, None)
    assert get_selector("test_last_attention").plan(12) == [11]
    with pytest.raises(UserError, match="expected one of gls, rollout.*test_last_attention.*imports="):
        get_selector("nope")
    with pytest.raises(ValueError, match="registered already"):
        register_selector("gls")(last)


def test_imports_errors_name_the_key() -> None:
    with pytest.raises(UserError, match="imports: cannot import 'no_such_module_here'"):
        import_user_modules(["no_such_module_here"])
    with pytest.raises(UserError, match=r"expected a list of module names, e.g. imports=\[abc\]"):
        import_user_modules("abc")


def _list_dataset(root: Path) -> None:
    root.mkdir(parents=True)
    (root / "classes.txt").write_text("red\ngreen\nblue\n")
    for split, n in (("train", 24), ("test", 9)):
        lines = []
        for i in range(n):
            label = i % 3
            colour = [(200, 30, 30), (30, 200, 30), (30, 30, 200)][label]
            Image.new("RGB", (40, 40), colour).save(root / f"{split}_{i}.png")
            lines.append(f"{split}_{i}.png {label}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.slow
def test_the_extending_page_example_runs_end_to_end(tmp_path: Path) -> None:
    """The docs' command: a dataset, a backbone, a logger and a selector of your own, from their own folder."""
    _list_dataset(tmp_path / "my_list")
    root = tmp_path / "my_list"
    cmd = [sys.executable, "-m", "glsim_pl.train", "-cd", "conf", "dataset=my_list", f"dataset.root={root}",
           "model=my_vit", "logger=jsonl", "imports=[my_selectors,my_backbone]", "method.selector=token_norm",
           "dataset.image_size=32", "dataset.batch_size=8", "dataset.num_workers=0", "trainer.accelerator=cpu",
           "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "optim.warmup_steps=2",
           f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=EXAMPLES, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["config"]["model"]["backbone"] == "my_vit_patch8"
    assert record["config"]["dataset"]["_target_"] == "my_dataset.ListFileDataModule"
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert any("test/acc1" in json.loads(line) for line in lines)
    from glsim_pl.model_io.model_card import model_card

    pre = {"resize_size": 42, "resize_factor": 1.34, "input_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3}
    config = {"preprocessing": pre, "num_classes": 3, "method": "vit", "backbone": "my_vit_patch8"}
    card = model_card(config, record, {})  # the training command reruns only with the run's config folder
    assert f"glsim-train -cd conf {' '.join(cmd[5:-1])}" in card


@pytest.mark.parametrize("name", ["my_selectors", "my_dataset", "my_backbone", "my_logger"])
def test_the_docs_show_the_examples_as_they_are(name: str) -> None:
    """docs/extending.md carries each example's code verbatim (after its docstring): what the tests run."""
    source = (EXAMPLES / f"{name}.py").read_text()
    code = source.split('"""', 2)[2].strip()
    assert code in (EXAMPLES.parents[1] / "docs" / "extending.md").read_text()
