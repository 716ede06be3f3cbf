"""Model arguments are checked from the config before any data, weights or checkpoint is read."""

from __future__ import annotations

import pytest

from glsim_pl.config.validate import patch_size_of, validate_config
from glsim_pl.errors import UserError
from glsim_pl.eval import evaluate
from glsim_pl.train import train
from tests.helpers.configs import compose_cfg


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("method.top_o=0", r"method.top_o=0: expected an integer in 1..16, the patches of the 4x4 grid"),
        ("method.top_o=17", r"method.top_o=17: expected an integer in 1..16"),
        ("dataset.image_size=60", r"dataset.image_size=60 is not a multiple of the patch size 8 .*image_size=56 or 64"),
        ("method.selector=attention", r"method.selector='attention': expected one of gls, rollout"),
        ("method.sim_metric=dot", r"method.sim_metric='dot': expected one of cos, l1, l2"),
        ("method.box_rule=outer", r"method.box_rule='outer': expected one of official, inclusive"),
        ("method.method=resnet", r"method.method='resnet': expected one of glsim, vit"),
    ],
)
def test_bad_model_arguments_fail_with_one_message(make_cfg, override: str, expected: str) -> None:
    with pytest.raises(UserError, match=expected):
        validate_config(make_cfg(override))


def test_valid_configs_pass(make_cfg) -> None:
    validate_config(make_cfg())
    validate_config(make_cfg("method.top_o=16"))
    validate_config(make_cfg("method=vit", "++method.top_o=0"))  # the plain ViT has no crop: top_o is unused


def test_patch_size_from_kwargs_or_timm_name() -> None:
    assert patch_size_of("vit_base_patch16_224.orig_in21k", None) == 16
    assert patch_size_of("vit_base_patch14_dinov2.lvd142m", None) == 14
    assert patch_size_of("vit_tiny_patch16_224", {"patch_size": 8}) == 8
    assert patch_size_of("some_model", None) is None


def test_train_checks_before_reading_data_or_weights(tmp_path) -> None:
    """CUB is not under the test's data dir and vit_b16 would download weights: the top_o error must come first."""
    cfg = compose_cfg(["dataset=cub", "dataset.root=/nonexistent", "model=vit_b16", "method.top_o=0"], tmp_path)
    with pytest.raises(UserError, match="method.top_o=0: expected an integer in 1..196"):
        train(cfg)


def test_eval_checks_selectors_before_reading_the_checkpoint(tmp_path) -> None:
    cfg = compose_cfg(["ckpt_path=/nonexistent.ckpt", "method.selector=bogus"], tmp_path, config_name="eval")
    with pytest.raises(UserError, match="method.selector='bogus'"):
        evaluate(cfg)
