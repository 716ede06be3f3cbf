"""Train GLSim (or the plain-ViT baseline), select on validation, test the best checkpoint once.

python -m glsim_pl.train                                   # embedded default: synthetic set, CPU, minutes
python -m glsim_pl.train dataset=nabirds model=vit_b16     # the paper's main setting
python -m glsim_pl.train -m seed=1,10,100                  # a Hydra multirun
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig, open_dict

from glsim_pl.analysis.run_record import protocol, resolved_config, write_failure, write_run_record
from glsim_pl.callbacks.divergence_guard import DivergenceGuard
from glsim_pl.callbacks.ema import WeightEMA
from glsim_pl.callbacks.progress_log import display_callbacks
from glsim_pl.callbacks.rng_state import RNGStateCheckpoint
from glsim_pl.config.groups import module_kwargs, resolve_trainer_precision, transform_augs
from glsim_pl.config.instantiate import instantiate, instantiate_collection
from glsim_pl.config.locate import CONFIG_DIR
from glsim_pl.config.plugins import import_user_modules
from glsim_pl.config.run_dir import upgrade_target
from glsim_pl.config.synthetic_backbone import resolve_backbone
from glsim_pl.config.validate import validate_config
from glsim_pl.data.verify import write_removed_files
from glsim_pl.errors import UserError, exit_on_user_error, user_message
from glsim_pl.models.finetune import check_finetune, param_counts
from glsim_pl.training.checkpointing import AtomicCheckpointIO, check_checkpoint_readable, resume_steps
from glsim_pl.training.module import GLSimLitModule
from glsim_pl.training.run_guard import (
    SAVED_CONFIG,
    FolderRefused,
    RunIdentityCheckpoint,
    check_resume,
    claim_output_dir,
    drop_staged_config,
    keep_saved_config,
    run_identity,
)
from glsim_pl.utils.compile import prepare_classifier, uses_cuda
from glsim_pl.utils.logging import HeldFileLines, RankedLogger, quiet_library_notices
from glsim_pl.utils.trackers import continue_logger_runs, describe_loggers, finish_trackers, log_run_config

__all__ = ["main", "train"]

log = RankedLogger(__name__)

# SLURM sweeps (hydra/launcher=slurm): submitit asks SLURM for its pre-timeout signal as USR2 unless told otherwise;
# Lightning's SLURMEnvironment saves an hpc checkpoint and requeues on USR1. Read by submitit when the launcher
# imports it, after this module.
os.environ.setdefault("SUBMITIT_PREEMPT_SIGNAL", "USR1")


def _resume_path(cfg: DictConfig) -> str | None:
    """``ckpt_path=last`` -> this run's ``checkpoints/last.ckpt``; a path must exist."""
    ckpt = cfg.get("ckpt_path")
    if ckpt is None:
        return None
    path = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt" if ckpt == "last" else Path(ckpt)
    if not path.is_file():
        hint = " (resume in the same folder with hydra.run.dir=outputs/<date>/<time>)" if ckpt == "last" else ""
        raise UserError(f"ckpt_path={ckpt!r}: no checkpoint at {path}{hint}")
    check_checkpoint_readable(path)  # e.g. truncated by a copy: name the newest loadable one instead
    return str(path)


def _slurm_requeue_path(cfg: DictConfig) -> Path | None:
    """The ``hpc_ckpt_<n>.ckpt`` a requeued SLURM job restores by itself (Lightning's rule: the highest n)."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if not SLURMEnvironment.detect():
        return None
    found = {int(p.stem.rsplit("_", 1)[1]): p for p in Path(cfg.paths.output_dir).glob("hpc_ckpt_*.ckpt")
             if p.stem.rsplit("_", 1)[1].isdigit()}  # fmt: skip
    return found[max(found)] if found else None


def _inactive_callbacks(cfg: DictConfig) -> set[str]:
    """The step checkpoint is off without a step interval (built anyway, it would write a second last.ckpt)."""
    step = (cfg.get("callbacks") or {}).get("step_checkpoint")
    return {"step_checkpoint"} if step is not None and not step.get("every_n_train_steps") else set()


@quiet_library_notices()  # no library tips or known deprecation warnings in the run's output
def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit on train, select on val, test the best checkpoint; returns the logged metrics (never the model)."""
    out, staged = cfg.paths.output_dir, _staged_config_subdir()
    held = None
    try:
        # first, before a line is logged: a run refused here leaves the folder byte for byte as it was
        with claim_output_dir(out, check=lambda: _refuse_a_finished_run(cfg)):  # a second run: refused by name
            import_user_modules(cfg.get("imports"))  # what they register (a selector) is then a valid choice
            validate_config(cfg)  # every value and the model arguments, before any data or weights are read
            held = HeldFileLines(out)  # train.log gets the lines once the run has passed every check (resume's too)

            def started() -> None:
                held.release(keep=True)
                keep_saved_config(out, staged)

            return _train(cfg, started=started)
    except FolderRefused:
        drop_staged_config(out, staged)
        raise
    finally:
        earlier_run = _settle_staged_config(out, staged)
        if held is not None:  # failed before it started: a fresh folder keeps its lines, an earlier run's log stays
            held.release(keep=not earlier_run)


def _staged_config_subdir() -> str | None:
    """Where Hydra saved this run's config (conf/train.yaml stages it; moved to .hydra when the run starts)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().output_subdir
    except ValueError:  # not under Hydra
        return None


def _settle_staged_config(out: str, staged: str | None) -> bool:
    """A run that failed before it started: a fresh folder keeps the config (the aggregation lists the job), a folder
    of an earlier run keeps that run's config. True when the folder is an earlier run's."""
    earlier_run = (Path(out) / SAVED_CONFIG / "config.yaml").is_file()
    if staged is None or not (Path(out) / staged).is_dir():
        return earlier_run
    if earlier_run:
        drop_staged_config(out, staged, detach_log=False)
    else:
        keep_saved_config(out, staged)
    return earlier_run


def _refuse_a_finished_run(cfg: DictConfig) -> None:
    """A fresh run in a folder that holds another run's checkpoints or metrics would overwrite and mix them."""
    if cfg.get("ckpt_path") is not None or not cfg.get("train", True) or _slurm_requeue_path(cfg) is not None:
        return
    out = Path(cfg.paths.output_dir)
    earlier = [
        p.name for p in (out / "metrics.json", out / "checkpoints") if p.exists() and (p.is_file() or any(p.iterdir()))
    ]
    if earlier:
        raise FolderRefused(f"output folder {out} holds an earlier run ({', '.join(earlier)}); resume it with "
                        "ckpt_path=last, or start this run in another folder (hydra.run.dir=...)")  # fmt: skip


def _train(cfg: DictConfig, started: Callable[[], None] | None = None) -> dict[str, Any]:
    start = time.perf_counter()
    seed = L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.dataset, augs=transform_augs(cfg))
    datamodule.run_seed = seed  # training order and augmentations: functions of (seed, epoch, sample)
    datamodule.check()
    with open_dict(cfg):
        cfg.dataset.num_classes = datamodule.num_classes  # read from the files when left unset (folder, csv)
    resolve_backbone(cfg)  # the synthetic default's pretrained backbone: its cached file, built on first use
    resume = _resume_path(cfg)
    check_resume(cfg, resume, upgrade_target)  # a resume with another lr / batch / dataset / model: refused by name
    if started is not None:
        started()  # every refusal is behind us: this run's config replaces the folder's
    cuda = uses_cuda(cfg.trainer.get("accelerator"))
    if datamodule.device_normalize == "auto":  # "on CUDA": setup builds the transforms before the trainer exists
        datamodule.device_normalize = "true" if cuda else "false"
    datamodule.setup("fit")  # the data check of every split, before the model is built
    module = GLSimLitModule(**module_kwargs(cfg, datamodule.class_names))
    params = param_counts(module.net)  # (trainable, total)
    regime = check_finetune(cfg.get("finetune"))["regime"]
    log.info(f"parameters: {params[0]:,} trainable of {params[1]:,} (finetune={regime})")
    resolve_trainer_precision(cfg)
    prepare_classifier(module.net, cfg.get("compile"), cfg.get("compile_mode"), cuda, int(datamodule.batch_size))
    loggers = instantiate_collection(cfg.get("logger"))
    resumed_from = resume or _slurm_requeue_path(cfg)
    # the fit's img/s counts only the optimizer steps this process trains (start_step on)
    logging_step, start_step = resume_steps(resumed_from) if resumed_from else (0, 0)
    if resumed_from:  # same TensorBoard / CSV version folder
        continue_logger_runs(loggers, resumed_from, logging_step)
    callbacks = instantiate_collection(cfg.get("callbacks"), skip=_inactive_callbacks(cfg))
    callbacks = [c for c in callbacks if loggers or not isinstance(c, LearningRateMonitor)]  # it needs a logger
    display, display_overrides = display_callbacks(cfg.get("progress"), cfg.trainer, cuda, callbacks)  # lines / bar
    callbacks += display + [RNGStateCheckpoint(), DivergenceGuard(**(cfg.get("guard") or {}))]  # exact resume
    callbacks += [RunIdentityCheckpoint(run_identity(cfg))]
    if (cfg.get("ema") or {}).get("decay") is not None:
        callbacks.append(WeightEMA(float(cfg.ema.decay)))
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()], **display_overrides
    )
    log_run_config(loggers, resolved_config(cfg), protocol(cfg, trainer.world_size))  # every tracker gets them

    fit_start = time.perf_counter()
    if cfg.get("train", True):
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    fit_seconds = time.perf_counter() - fit_start
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

    if cfg.get("test", True):
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best:
            log.warning("no best-on-validation checkpoint (no validation or no checkpointing): testing current weights")
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        metrics["best_ckpt"] = best
        last = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else ""
        # the file holding the tested weights (the model card shows test/* for that file only)
        metrics["tested_ckpt"] = best or (last if cfg.get("train", True) and last and Path(last).is_file() else "")
    metrics.update(_input_metrics(cfg, datamodule, module, params))
    write_run_record(cfg, trainer, metrics, time.perf_counter() - start, fit_seconds, start_step)  # for aggregate
    _summary(cfg, trainer, metrics)
    finish_trackers(trainer.loggers)  # the next job of a sweep (same process) gets its own W&B run
    return metrics


def _input_metrics(
    cfg: DictConfig, datamodule: Any, module: GLSimLitModule, params: tuple[int, int]
) -> dict[str, float]:
    """Files the data check removed per split (listed in removed_files.csv), the share of pretrained tensors and the
    (trainable, total) parameter counts ``params`` counted at the start."""
    out: dict[str, float] = {}
    check = getattr(datamodule, "data_check", None)
    if check is not None:
        out.update(check.metrics())
        listed = write_removed_files(check, Path(cfg.paths.output_dir))
        if listed is not None:
            log.info(f"files left out by the data check: {listed}")
    out["params/trainable"], out["params/total"] = (float(n) for n in params)
    share = getattr(module.net.encoder, "pretrained_share", None)
    if share is not None:
        out["pretrained/loaded_share"] = float(share)
    return out


def _summary(cfg: DictConfig, trainer: L.Trainer, metrics: dict[str, Any]) -> None:
    out = Path(cfg.paths.output_dir)
    lines = [f"{k}: {v:.4f}" for k, v in sorted(metrics.items()) if k.startswith("test/") and isinstance(v, float)]
    if trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_path:
        lines.append(f"best checkpoint: {trainer.checkpoint_callback.best_model_path}")
    lines += describe_loggers(trainer.loggers)
    if (out / "training_curves.png").is_file():
        lines.append(f"training curves: {out / 'training_curves.png'}")
    if (out / "crops").is_dir():
        lines.append(f"crop images: {out / 'crops'}")
    if (out / "test_per_class_acc.csv").is_file():
        lines.append(f"per-class accuracy: {out / 'test_per_class_acc.csv'}")
    log.info("summary\n  " + "\n  ".join(lines))


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | dict[str, str] | None:
    """Hydra entry point; returns ``cfg.optimized_metric`` for sweepers. Bad input ends with one clear message."""
    try:
        metrics = train(cfg)
    except Exception as exc:  # failed.json: the sweep's aggregation lists this job with its error line
        refused = isinstance(exc, FolderRefused)  # the folder is another run's: nothing written there
        if not refused:
            write_failure(cfg, exc)
        if not _sweep_goes_on():
            raise
        where = "its folder is left as it was" if refused else f"{cfg.paths.output_dir}/failed.json"
        if isinstance(exc, UserError):  # bad input: its one line, no traceback
            log.error(f"error: {user_message(exc)}\nthis job failed; the sweep goes on ({where})")
        else:
            log.exception(f"this job failed; the sweep goes on ({where})")
        return {"failed": user_message(exc)} if refused else None  # the sweeper names it among the failed jobs
    name = cfg.get("optimized_metric")
    value = metrics.get(name)
    if name and value is None and _sweeper_needs_a_value():
        raise UserError(f"optimized_metric={name!r} was not logged by this run (logged: {', '.join(sorted(metrics))}); "
                        "the sweeper needs it: pick one of those, or keep validation on")  # fmt: skip
    return float(value) if value is not None else None


def _sweep_goes_on() -> bool:
    """True in a job of the merging sweeper (the default): one failed job does not stop the others; the sweeper
    exits 1 at the end and names the failed jobs."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
        return hydra_cfg.mode == RunMode.MULTIRUN and "MergingSweeper" in str(hydra_cfg.sweeper.get("_target_", ""))
    except ValueError:  # not under Hydra
        return False


def _sweeper_needs_a_value() -> bool:
    """True under a sweeper that optimises the returned value (Optuna); Hydra's basic sweeper ignores it."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return "optuna" in str(HydraConfig.get().sweeper.get("_target_", "")).lower()
    except ValueError:  # not under Hydra
        return False


if __name__ == "__main__":
    main()
