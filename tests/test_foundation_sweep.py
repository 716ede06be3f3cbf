"""Per-family recipes, the foundation sweep's table (GLSim - ViT per backbone x regime) and what each regime costs."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from glsim_pl.analysis.aggregate import aggregate
from glsim_pl.bench._regimes import build_regime, render_regimes, step_fn
from glsim_pl.bench.train import _parser
from glsim_pl.config.validate import validate_values
from glsim_pl.errors import UserError
from tests.helpers.configs import CONF_DIR, compose_cfg

RECIPES = sorted(p.stem for p in (Path(CONF_DIR) / "recipe").glob("*.yaml") if not p.stem.startswith("_"))
# recipe -> (optimizer, full-FT lr, layer decay): what each family's sources give (comments in conf/recipe/)
EXPECTED = {"vit_b16": ("sgd", 0.01, None), "dinov2_b14_reg": ("adamw", 5e-5, 0.75),
            "dinov2_b14": ("adamw", 5e-5, 0.75), "dinov3_b16": ("adamw", 5e-5, 0.75), "clip_b16": ("adamw", 3e-5, 0.65),
            "siglip2_b16": ("adamw", 3e-5, 0.65), "pe_core_b16": ("adamw", 3e-5, 0.65),
            "eva02_b14": ("adamw", 3e-5, 0.7)}  # fmt: skip


def test_every_model_preset_of_the_sweep_has_a_recipe() -> None:
    assert set(RECIPES) == set(EXPECTED)
    assert all((Path(CONF_DIR) / "model" / f"{name}.yaml").is_file() for name in RECIPES)  # experiment: recipe=${model}


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_composes_and_the_regime_shapes_lr_and_drop_path(recipe: str, tmp_path: Path) -> None:
    optimizer, lr, layer_decay = EXPECTED[recipe]
    full = compose_cfg([f"recipe={recipe}", "finetune=full"], tmp_path)
    assert (full.optim.optimizer, full.optim.lr, full.optim.layer_decay) == (optimizer, lr, layer_decay)
    assert full.augs.drop_path_rate == 0.1
    for regime in ("linear", "lora", "dora", "vpt"):
        cfg = compose_cfg([f"recipe={recipe}", f"finetune={regime}"], tmp_path)
        assert cfg.optim.lr > full.optim.lr, regime  # few, fresh parameters: a larger LR
        assert cfg.augs.drop_path_rate == 0.0, regime  # no stochastic depth through a frozen encoder
        validate_values(cfg)


def test_the_foundation_experiment_picks_the_models_recipe(tmp_path: Path) -> None:
    cfg = compose_cfg(["experiment=foundation", "dataset=cub", "model=clip_b16", "finetune=lora"], tmp_path)
    assert (cfg.recipe.name, cfg.optim.lr, cfg.optim.layer_decay) == ("clip", 1e-3, 0.65)
    cfg = compose_cfg(["experiment=foundation", "dataset=cub"], tmp_path)  # no model=: the paper backbone, its recipe
    assert (cfg.model.backbone, cfg.optim.optimizer, cfg.optim.lr) == ("vit_base_patch16_224.orig_in21k", "sgd", 0.01)
    plain = compose_cfg(["dataset=cub", "model=clip_b16"], tmp_path)  # without a recipe nothing changes
    assert "recipe" not in plain and plain.optim.optimizer == "sgd" and plain.optim.layer_decay is None


def test_a_regime_the_recipe_does_not_list_is_refused_by_name(tmp_path: Path) -> None:
    cfg = compose_cfg(["recipe=clip_b16", "finetune=vpt", "~recipe.lr.vpt"], tmp_path)
    with pytest.raises(UserError, match=r"finetune=vpt: recipe 'clip' has no recipe.lr for this regime"):
        validate_values(cfg)


# -- the table ------------------------------------------------------------------------------------------------------
def _job(root: Path, num: int, model: str, regime: str, method: str, seed: int, acc: float) -> None:
    job = root / str(num)
    job.mkdir(parents=True)
    lr = 1e-3 if regime != "full" else 5e-5
    record = {
        "experiment": "foundation", "seed": seed, "metrics": {"test/acc1": acc, "params/trainable": 1000.0 * (num + 1)},
        "overrides": ["experiment=foundation", "dataset=cub", f"model={model}", f"finetune={regime}",
                      f"method={method}", f"seed={seed}"],
        "protocol": {"train_split": "first 0.8 of train/class", "selection_split": "val", "test_split": "official test",
                     "epochs": 50, "tta": "off"},
        "config": {"finetune": {"regime": regime}, "recipe": {"name": model.split("_")[0]},
                   "optim": {"optimizer": "adamw", "lr": lr, "layer_decay": 0.75}, "ema": {"decay": None}},
        "cost": {"gflops": 35.0 if method == "glsim" else 17.6, "fit_img_s": 50.0}, "wall_time_s": 1.0,
    }  # fmt: skip
    (job / "metrics.json").write_text(json.dumps(record))


def test_paired_delta_per_backbone_and_regime_with_params_and_protocol(tmp_path: Path) -> None:
    sweep, num = tmp_path / "sweep", 0
    accs = {("dinov2_b14_reg", "full"): (0.80, 0.85), ("dinov2_b14_reg", "lora"): (0.70, 0.69),
            ("clip_b16", "full"): (0.60, 0.66), ("clip_b16", "lora"): (0.50, 0.50)}  # fmt: skip
    for (model, regime), (vit, glsim) in accs.items():
        for method, acc in (("vit", vit), ("glsim", glsim)):
            for seed in (1, 2):
                _job(sweep, num, model, regime, method, seed, acc + 0.01 * seed)
                num += 1
    aggregate(sweep, tmp_path / "r", name="foundation_cub", formats=[], quiet=True, pair="method=vit")
    md = (tmp_path / "r" / "foundation_cub.md").read_text()
    header = ("| model | finetune | method | n | top-1 (%) | macro top-1 (%) | GFLOPs/img | trainable params "
              "| fit img/s | Δ top-1 | protocol |")  # fmt: skip
    assert header in md
    assert "| dinov2_b14_reg | full | vit | 2 | 81.50 ± 0.71 | n/a | 17.60 | 1.0 k | 50.0 | baseline |" in md
    assert "| dinov2_b14_reg | full | glsim | 2 | 86.50 ± 0.71 | n/a | 35.00 | 3.0 k | 50.0 | +5.00 |" in md
    assert "| dinov2_b14_reg | lora | glsim | 2 | 70.50 ± 0.71 | n/a | 35.00 | 7.0 k | 50.0 | -1.00 |" in md
    assert "| clip_b16 | full | glsim | 2 | 67.50 ± 0.71 | n/a | 35.00 | 11.0 k | 50.0 | +6.00 |" in md
    assert "| clip_b16 | lora | glsim | 2 | 51.50 ± 0.71 | n/a | 35.00 | 15.0 k | 50.0 | +0.00 |" in md
    assert "| finetune full; recipe dinov2; lr 5e-05 |" in md.replace("adamw ", "")  # what differs between rows
    assert "Protocol (every row): train: first 0.8 of train/class;" in md and "layer decay 0.75; EMA off; TTA off" in md
    rows = list(csv.DictReader((tmp_path / "r" / "foundation_cub.csv").open()))
    assert [r["baseline"] for r in rows[:2]] == ["True", "False"] and float(rows[1]["delta"]) == pytest.approx(5.0)
    assert float(rows[1]["trainable"]) == 3000.0
    with pytest.raises(UserError, match=r"--pair 'method=deit' matches no row; the rows have method=glsim, method=vit"):
        aggregate(sweep, tmp_path / "r", formats=[], quiet=True, pair="method=deit")


def test_a_row_without_its_pair_has_no_delta(tmp_path: Path) -> None:
    _job(tmp_path / "s", 0, "clip_b16", "full", "vit", 1, 0.5)
    _job(tmp_path / "s", 1, "clip_b16", "full", "glsim", 1, 0.6)
    _job(tmp_path / "s", 2, "clip_b16", "lora", "glsim", 1, 0.6)  # its ViT row failed
    aggregate(tmp_path / "s", tmp_path / "r", name="t", formats=[], quiet=True, pair="method=vit")
    md = (tmp_path / "r" / "t.md").read_text()
    assert "| full | glsim | 1 | 60.00 | n/a | 35.00 | 2.0 k | 50.0 | +10.00 |" in md  # one model: no model column
    assert "| lora | glsim | 1 | 60.00 | n/a | 35.00 | 3.0 k | 50.0 | n/a |" in md


# -- cost per regime ------------------------------------------------------------------------------------------------
TINY_BENCH = ["--tiny", "--device", "cpu", "--size", "32", "--batch", "4", "--classes", "3", "--warmup", "0",
              "--steps", "1", "--rounds", "2"]  # fmt: skip


@pytest.mark.parametrize("method", ["vit", "glsim"])
def test_each_regime_trains_only_its_own_parameters(method: str) -> None:
    args = _parser().parse_args([*TINY_BENCH, "--regimes", "full,linear,lora"])
    counts = {}
    for regime in ("full", "linear", "lora"):
        torch.manual_seed(0)
        net, optimizer, counts[regime] = build_regime(args, method, regime)
        optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
        assert optimized == {id(p) for p in net.parameters() if p.requires_grad}
        frozen = {k: v.clone() for k, v in net.encoder.state_dict().items() if "lora_" not in k}
        step_fn(net, optimizer, 4, 32, 3, "cpu")()
        moved = [k for k, v in net.encoder.state_dict().items() if k in frozen and not torch.equal(v, frozen[k])]
        assert bool(moved) == (regime == "full"), regime
    assert counts["linear"] < counts["lora"] < counts["full"]


def test_regime_table_gives_ratios_to_full() -> None:
    rows = [{"method": "vit", "regime": "full", "trainable": 2e7, "ms_per_step": 400.0, "img_s": 20.0,
             "speedup": 1.0, "peak_rss_mib": 900.0, "step_mib": 300.0},
            {"method": "vit", "regime": "linear", "trainable": 7.7e4, "ms_per_step": 100.0, "img_s": 80.0,
             "speedup": 3.8, "peak_rss_mib": 700.0, "step_mib": 30.0}]  # fmt: skip
    text = render_regimes(rows, "h")
    assert "| vit | full | 20.00 M | 20.0 | 400 | 1.00 | 900 | 300 | 1.00 |" in text
    assert "| vit | linear | 77.0 k | 80.0 | 100 | 3.80 | 700 | 30 | 0.10 |" in text  # the per-round ratio's median


@pytest.mark.slow
def test_bench_train_regimes_cli_measures_every_regime(tmp_path: Path) -> None:
    """The command of docs/foundation.md's cost table, tiny: timed rows plus one memory child per regime."""
    cmd = [sys.executable, "-m", "glsim_pl.bench", "train", *TINY_BENCH, "--regimes", "full,linear,lora",
           "--methods", "vit", "--out", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "regimes.json").read_text())["rows"]
    assert [r["regime"] for r in rows] == ["full", "linear", "lora"]
    assert all(r["img_s"] > 0 and r["peak_rss_mib"] > 0 and "error" not in r for r in rows), rows
    assert rows[0]["speedup"] == 1.0 and all(r["speedup"] > 0 for r in rows)
    assert "| vit | full |" in (tmp_path / "regimes.md").read_text()


# -- make smoke-foundation ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_smoke_foundation_gives_every_row_with_numbers_and_a_delta(tmp_path: Path) -> None:
    """`make smoke-foundation` reduced to 2 families x 2 regimes x 2 methods x 2 seeds."""
    repo = Path(CONF_DIR).parent
    cmd = ["make", "-C", str(repo), "smoke-foundation", f"VENV={sys.prefix}", "STAMP=",
           "FOUNDATION_MODELS=dinov2_b14_reg,siglip2_b16", "FOUNDATION_REGIMES=full,lora", "SMOKE_SEEDS=1,2",
           f"SMOKE_FOUNDATION_DIR={tmp_path}"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(repo / "src"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "smoke_foundation.csv").open()))
    got = {(r["model"], r["finetune"], r["method"]) for r in rows}
    assert got == {(m, f, k) for m in ("dinov2_b14_reg", "siglip2_b16") for f in ("full", "lora")
                   for k in ("vit", "glsim")}  # fmt: skip
    for r in rows:
        assert r["n"] == "2" and r["acc1_mean"] and r["acc1_std"] and float(r["trainable"]) > 0
        assert float(r["gflops"]) > 0 and float(r["img_s"]) > 0
        assert (r["baseline"] == "True") == (r["method"] == "vit")
        assert r["method"] == "vit" or r["delta"] != ""
    md = (tmp_path / "smoke_foundation.md").read_text()
    assert "| Δ top-1 | protocol |" in md and "recipe dinov2" in md and "recipe siglip2" in md
