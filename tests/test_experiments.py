"""Every paper-reproduction experiment composes, carries its paper number, and changes only what it should."""

from __future__ import annotations

from pathlib import Path

import pytest

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*_vit_b16.yaml"))
ROWS = ["cub", "nabirds", "inat17", "dogs", "pets", "flowers", "food", "vegfru", "cub448"]


def _dataset_of(name: str) -> str:
    row = name.split("_")[1]
    return "cub" if row == "cub448" else row


def test_every_table_row_has_both_methods() -> None:
    expected = {f"{m}_{row}_vit_b16" for m in ("glsim", "vit") for row in ROWS}
    assert set(EXPERIMENTS) == expected


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes(name: str, make_cfg) -> None:
    dataset = _dataset_of(name)
    if not (Path(CONF_DIR) / "dataset" / f"{dataset}.yaml").is_file():
        pytest.skip(f"conf/dataset/{dataset}.yaml does not exist")
    cfg = make_cfg(f"experiment={name}", tiny=False)
    method = name.split("_")[0]
    assert cfg.hydra.runtime.choices.dataset == dataset
    assert cfg.model.backbone == "vit_base_patch16_224.orig_in21k"
    assert cfg.model.pretrained is True
    assert cfg.method.method == method
    assert cfg.dataset.protocol == "paper"
    assert cfg.dataset.image_size == (448 if "cub448" in name else 224)
    assert cfg.trainer.max_epochs == 50
    assert cfg.dataset.batch_size == 8
    assert cfg.optim.optimizer == "sgd"
    assert cfg.optim.lr == 0.01
    assert cfg.task_name == name
    assert "paper" in cfg.tags
    assert cfg.paper.metric == "test/acc1"
    assert 50.0 < cfg.paper.acc1 < 100.0
    if method == "glsim":
        assert cfg.method.top_o == (16 if dataset == "dogs" else 8)


def test_glsim_beats_its_baseline_in_the_paper() -> None:
    """The recorded numbers are the paper's: GLSim above the ViT baseline on every row (Table 4)."""
    from omegaconf import OmegaConf

    for row in ROWS:
        glsim = OmegaConf.load(Path(CONF_DIR) / "experiment" / f"glsim_{row}_vit_b16.yaml").paper
        vit = OmegaConf.load(Path(CONF_DIR) / "experiment" / f"vit_{row}_vit_b16.yaml").paper
        assert glsim.acc1 > vit.acc1, row


def test_smoke_reproduce_composes(make_cfg) -> None:
    cfg = make_cfg("experiment=smoke_reproduce", tiny=False)
    assert cfg.dataset.protocol == "paper"
    assert cfg.trainer.accelerator == "cpu"
    assert cfg.paper is None
