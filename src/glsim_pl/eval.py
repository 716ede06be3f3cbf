"""Evaluate a checkpoint (ours or an official GLSim ``.pth``) on a dataset's test split.

    glsim-eval ckpt_path=outputs/.../checkpoints/epoch_049-acc1_0.9090.ckpt   # the run's dataset, stored preprocessing
    glsim-eval dataset=cub ckpt_path=cub_vit_b16_16_2.pth             # official checkpoint (or hf-hub:...)
    glsim-eval ckpt_path=... eval.localization=true                   # crop box vs object box
    glsim-eval ckpt_path=... eval.gate_sweep=true                     # gated model: accuracy vs cost

Without ``dataset=`` the test split is the one of the run that wrote the checkpoint (``<run>/.hydra/config.yaml``);
image size, resize and mean/std are the checkpoint's stored preprocessing (``dataset.image_size=`` etc. on the
command line win, as does any other ``dataset.<key>=`` of that run's dataset). ``imports=[mypackage.leaves]`` imports
the module of a dataset class of your own first (as train does). Output folder:
``<run>/eval/<checkpoint name>/<date>_<time>`` (``hydra.run.dir=`` wins).

Writes: ``eval_metrics.json`` (test top-1/top-5, cost figures, localisation per selector),
``test_per_class_acc.csv`` + ``.png``, ``confusion_matrix.png`` (<= ``eval.confusion_max_classes`` classes),
``confused_pairs.csv`` + ``.png`` (the ``eval.confused_pairs`` most confused class pairs), ``error_gallery.png``
(most confident mistakes with their crops), ``localization.csv`` and ``accuracy_vs_cost.png`` (per selector).
Figures also come as PDF/SVG (``eval.figure_formats=[png,pdf]``) and go to the active trackers (``logger=...``).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from glsim_pl.analysis.cost import measure_cost, model_gflops
from glsim_pl.analysis.eval_report import save_error_gallery, write_class_reports
from glsim_pl.analysis.gate_sweep import sweep_from_config
from glsim_pl.callbacks import PerClassAccuracyCSV
from glsim_pl.callbacks.eval_collector import EvalCollector
from glsim_pl.config.groups import resolve_trainer_precision, transform_augs
from glsim_pl.config.instantiate import instantiate, instantiate_collection
from glsim_pl.config.locate import CONFIG_DIR
from glsim_pl.config.plugins import import_user_modules
from glsim_pl.config.run_dir import apply_model_preprocessing, explicit_overrides, run_dataset_config
from glsim_pl.config.validate import validate_selectors, validate_values
from glsim_pl.errors import UserError, exit_on_user_error
from glsim_pl.model_io.checkpoints import check_compatible, load_module
from glsim_pl.models import GLSim
from glsim_pl.models.families import usable_selectors
from glsim_pl.models.gate import apply_gate_threshold
from glsim_pl.models.selectors import check_selector
from glsim_pl.models.tta import check_tta
from glsim_pl.plots import check_formats, save_figure
from glsim_pl.plots.cost import accuracy_cost_figure, accuracy_cost_points
from glsim_pl.training.module import GLSimLitModule
from glsim_pl.utils.compile import prepare_classifier, uses_cuda
from glsim_pl.utils.logging import RankedLogger, quiet_library_notices
from glsim_pl.utils.trackers import finish_trackers, log_figure

__all__ = ["evaluate", "main"]

log = RankedLogger(__name__)


def _choose_dataset(cfg: DictConfig, module: GLSimLitModule) -> None:
    """``dataset=`` if given, else the checkpoint's run's (with the ``dataset.<key>=`` given on the command line);
    its eval transform set to the model's preprocessing."""
    given = cfg.get("dataset")
    if given is None or "_target_" not in given:  # no dataset group: at most a few keys of the run's dataset
        dataset = run_dataset_config(cfg.ckpt_path)
        if dataset is None:
            raise UserError(f"ckpt_path={cfg.ckpt_path!r} sits in no training run folder (no .hydra/config.yaml "
                            "beside it), so its dataset is unknown: pass dataset=<name>")  # fmt: skip
        with open_dict(cfg):
            cfg.dataset = OmegaConf.merge(dataset, given) if given else dataset
    apply_model_preprocessing(cfg.dataset, module.preprocessing, explicit_overrides(cfg))


def _test(cfg: DictConfig, module: GLSimLitModule, datamodule: Any, callbacks: list[L.Callback],
          loggers: list[Any] | None = None) -> dict[str, float]:  # fmt: skip
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    if trainer.world_size > 1 and isinstance(trainer.strategy.launcher, _MultiProcessingLauncher):
        raise UserError("glsim-eval on several devices runs each rank as its own process: use "
                        "trainer.strategy.start_method=popen (trainer=ddp's default), torchrun or SLURM tasks; "
                        "spawned workers would keep the reports to themselves")  # fmt: skip
    trainer.test(module, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


@quiet_library_notices()  # no library tips or known deprecation warnings in the output
def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test the checkpoint and write the reports; returns the metrics written to ``eval_metrics.json``."""
    if cfg.get("ckpt_path") is None:
        raise UserError("ckpt_path is required: glsim-eval ckpt_path=/path/to/ckpt [dataset=<name>]")
    import_user_modules(cfg.get("imports"))  # a dataset class (or selector) of the user's, named by the run
    validate_selectors(cfg.method.get("selector"))  # before the checkpoint and the data are read
    validate_values(cfg)
    for selector in cfg.eval.get("selectors") or []:
        validate_selectors(selector, "eval.selectors")
    L.seed_everything(cfg.seed, workers=True)
    out = Path(cfg.paths.output_dir)
    module, kind = load_module(cfg.ckpt_path, cfg.eval.get("class_names_file"))
    _choose_dataset(cfg, module)
    datamodule = instantiate(cfg.dataset, augs=transform_augs(cfg))
    datamodule.check()
    check_compatible(module, datamodule, cfg.ckpt_path)
    names = list(module.hparams.get("class_names") or datamodule.class_names)
    module.hparams.class_names = names
    is_glsim = isinstance(module.net, GLSim)
    if cfg.method.get("selector") and is_glsim:
        module.net.selector = check_selector(cfg.method.selector)
    module.net.tta = check_tta(cfg.get("tta") or "none")
    method, sweep = cfg.method, bool(cfg.eval.get("gate_sweep"))
    apply_gate_threshold(module.net, method.get("gate_threshold"), method.get("gate"), sweep)
    resolve_trainer_precision(cfg)
    cuda = uses_cuda(cfg.trainer.get("accelerator"))
    prepare_classifier(module.net, cfg.get("compile"), cfg.get("compile_mode"), cuda, int(datamodule.batch_size))
    k = int(module.hparams.num_classes)
    formats = check_formats(cfg.eval.get("figure_formats") or ["png"])
    loggers = instantiate_collection(cfg.get("logger"))
    collector = EvalCollector(k, int(cfg.eval.gallery_size))
    per_class = PerClassAccuracyCSV(str(out), figure_formats=formats)
    metrics = _test(cfg, module, datamodule, [per_class, collector], loggers)
    result: dict[str, Any] = {"checkpoint": str(cfg.ckpt_path), "format": kind, "method": module.hparams.net["method"],
                              "selector": getattr(module.net, "selector", None), **metrics,
                              "gflops": model_gflops(module.net, int(datamodule.image_size))}  # fmt: skip
    if module.net.tta != "none":  # the analytic GFLOPs are of one view
        result["tta"] = module.net.tta
    if cfg.eval.localization:  # every rank takes part in each selector's test
        result["localization"] = _localization(cfg, module, datamodule, collector, out)
    if rank_zero_only.rank != 0:  # on several devices the other ranks have helped test; rank 0 writes the reports
        return result
    datamodule.trainer = None  # the gate sweep's loaders: whole splits, not this rank's block
    write_class_reports(collector.confusion, out, names, formats, loggers, bool(cfg.eval.confusion_normalize),
                        int(cfg.eval.confused_pairs), int(cfg.eval.confusion_max_classes))  # fmt: skip
    save_error_gallery(collector.mistakes, out / "error_gallery.png", names, getattr(module.net, "patch_px", None),
                       loggers)  # fmt: skip
    if cfg.eval.cost:
        device = (
            "cuda" if cfg.trainer.get("accelerator") in ("gpu", "cuda", "auto") and torch.cuda.is_available() else "cpu"
        )
        result["cost"] = measure_cost(module.net, int(datamodule.batch_size), int(datamodule.image_size), device,
                                      int(cfg.eval.cost_repeats))  # fmt: skip
    if cfg.eval.get("gate_sweep"):  # accuracy vs cost over tau on val and test; tau for the target cost from val
        result["gate_sweep"] = sweep_from_config(cfg, module.net, datamodule, out)
    if len(result.get("localization") or {}) > 1:  # the selectors side by side: accuracy against analytic cost
        fig = accuracy_cost_figure(accuracy_cost_points([result]))
        save_figure(fig, out / "accuracy_vs_cost", formats)
        log_figure(loggers, "test/accuracy_vs_cost", fig)
    for logger in loggers:
        logger.finalize("success")
    finish_trackers(loggers)
    (out / "eval_metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    _summary(result, out)
    return result


def _localization(
    cfg: DictConfig, module: GLSimLitModule, datamodule: Any, first: EvalCollector, out: Path
) -> dict[str, dict[str, float]]:
    """Crop box vs object box for every selector in ``eval.selectors`` (the checkpoint's own selector first)."""
    if not isinstance(module.net, GLSim):
        log.warning("eval.localization: method=vit has no crop box; skipped")
        return {}
    if first.localization() is None:
        log.warning(f"eval.localization: dataset '{datamodule.name}' has no object boxes in its test split; skipped")
        return {}
    own = module.net.selector
    img = int(datamodule.image_size)
    per = {own: {"acc1": first.accuracy(), **first.localization(), "gflops": model_gflops(module.net, img, own)}}
    for selector in cfg.eval.get("selectors") or usable_selectors(module.net.encoder):  # null: every one it can run
        if check_selector(selector) in per:
            continue
        module.net.selector = selector
        collector = EvalCollector(int(module.hparams.num_classes), gallery_size=0)
        _test(cfg, module, datamodule, [collector])
        per[selector] = {"acc1": collector.accuracy(), **collector.localization(),
                         "gflops": model_gflops(module.net, img, selector)}  # fmt: skip
    module.net.selector = own
    if rank_zero_only.rank != 0:
        return per
    with (out / "localization.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["selector", "acc1", "mean_iou", "iou50", "n"])
        for name, v in per.items():
            writer.writerow([name, f"{v['acc1']:.6f}", f"{v['mean_iou']:.6f}", f"{v['iou50']:.6f}", v["n"]])
    return per


def _summary(result: dict[str, Any], out: Path) -> None:
    lines = [f"{k}: {v:.4f}" for k, v in sorted(result.items()) if k.startswith("test/") and isinstance(v, float)]
    for name, v in (result.get("localization") or {}).items():
        lines.append(f"{name:>9}: acc1 {v['acc1']:.4f}  mean IoU {v['mean_iou']:.4f}  IoU>=0.5 {v['iou50']:.4f}")
    if "gate_sweep" in result:
        g = result["gate_sweep"]
        lines.append(f"gate: tau {g['tau']:.4f} chosen on val for cost <= {g['target_cost']} x ViT -> test acc1 "
                     f"{g['test_acc1']:.4f} at {g['test_cost_vs_vit']:.3f} x ({g['test_second_pass_share']:.1%} second "
                     f"passes; measured {g['test_measured_cost_vs_vit']:.3f} x); always two passes "
                     f"{g['test_acc1_glsim']:.4f} (gap {g['test_gap_points']:.2f} points), first pass only "
                     f"{g['test_acc1_first_pass']:.4f}")  # fmt: skip
    if "cost" in result:
        c = result["cost"]
        lines.append(f"cost ({c['device']}): {c['throughput_img_s']:.1f} img/s at batch {c['batch_size']}, "
                     f"bs-1 latency {c['latency_bs1_ms']:.1f} ms, peak memory {c['peak_memory_mb']:.0f} MiB, "
                     f"{c['params_m']:.2f} M parameters")  # fmt: skip
    lines.append(f"reports: {out}")
    log.info("eval\n  " + "\n  ".join(lines))


def checkpoint_dataset_overrides(args: list[str]) -> list[str]:
    """Without ``dataset=<name>`` the dataset is the checkpoint's run's, read after Hydra has composed the config:
    ``dataset.<key>=v`` names a key Hydra has not seen, so it goes on as ``+dataset.<key>=v``."""
    if any(a.split("=", 1)[0].lstrip("+~") == "dataset" and a.split("=", 1)[1:] != ["null"] for a in args):
        return args
    return [f"+{a}" if a.startswith("dataset.") and "=" in a else a for a in args]


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
@exit_on_user_error
def _hydra_main(cfg: DictConfig) -> None:
    evaluate(cfg)


def main() -> None:
    """Entry point (``glsim-eval``); bad input ends with one clear message."""
    sys.argv[1:] = checkpoint_dataset_overrides(sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    main()
