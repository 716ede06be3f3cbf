"""Every option of every config group composes with the root config."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.configs import CONF_DIR

GROUPS = ["dataset", "model", "method", "trainer", "augs", "callbacks", "logger", "debug"]
OPTIONS = [
    f"{group}={path.stem}"
    for group in GROUPS
    for path in sorted((Path(CONF_DIR) / group).glob("*.yaml"))
    if not path.stem.startswith("_") and "???" not in path.read_text()  # abstract bases are not options
]


@pytest.mark.parametrize("override", OPTIONS)
def test_group_option_composes(make_cfg, override: str) -> None:
    cfg = make_cfg(override, tiny=False)
    assert "num_classes" in cfg.dataset and cfg.dataset._target_
    assert cfg.model.backbone
    assert cfg.method.method in ("glsim", "vit")


def test_default_is_the_synthetic_embedded_run(make_cfg) -> None:
    cfg = make_cfg(tiny=False)
    assert cfg.dataset._target_.endswith("SyntheticDataModule")
    assert cfg.model.backbone == "vit_tiny_patch16_224" and cfg.model.pretrained is True
    assert cfg.model.pretrained_file == "synthetic:pretrained"  # built on first use, cached by its settings
    assert (cfg.dataset.image_size, cfg.method.top_o, cfg.method.box_rule) == (64, 4, "inclusive")
    assert cfg.callbacks.model_checkpoint.monitor == "val/acc1"


def test_real_dataset_gets_the_paper_recipe(make_cfg) -> None:
    cfg = make_cfg("dataset=nabirds", tiny=False)
    assert cfg.model.backbone == "vit_base_patch16_224.orig_in21k" and cfg.model.pretrained is True
    assert (cfg.optim.optimizer, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == ("sgd", 0.01, 0.9, 0.0)
    assert (cfg.optim.warmup_steps, cfg.optim.warmup_lr, cfg.optim.min_lr) == (500, 1e-6, 1e-5)
    assert (cfg.trainer.max_epochs, cfg.trainer.gradient_clip_val, cfg.dataset.batch_size) == (50, 1.0, 8)
    assert (cfg.augs.label_smoothing, cfg.augs.drop_path_rate, cfg.augs.random_erasing) == (0.1, 0.1, 0.3)
    assert cfg.dataset.root.endswith("/nabirds") and cfg.dataset.num_classes == 555
    assert cfg.method.top_o == 8 and cfg.method.box_rule == "official"


def test_cli_model_override_beats_the_synthetic_default(make_cfg) -> None:
    assert make_cfg("model=vit_s16", tiny=False).model.backbone.startswith("vit_small_patch16_224")


def test_the_configuration_pages_trainer_argument_example_composes(make_cfg) -> None:
    """The ``trainer=`` section's example of a Trainer argument outside conf/trainer/ works as printed."""
    import re

    page = (Path(CONF_DIR).parent / "docs" / "configuration.md").read_text()
    section = page.split("### `trainer=`", 1)[1].split("###", 1)[0]
    examples = re.findall(r"`(\+?trainer\.limit_train_batches=\d+)`", section)
    assert examples
    for example in examples:
        assert make_cfg(example).trainer.limit_train_batches == int(example.rsplit("=", 1)[1])
