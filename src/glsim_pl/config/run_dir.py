"""What a checkpoint's run folder tells the tools: where eval writes, and which dataset the model was trained on.

A training run writes ``<run>/.hydra/config.yaml`` and ``<run>/checkpoints/*.ckpt``. ``glsim-eval ckpt_path=X``
writes to ``<run>/eval/<checkpoint name>/<date>_<time>`` (beside any other checkpoint file: ``<folder>/eval/...``;
``hf-hub:`` ids: ``outputs/<date>/<time>``), and tests on the dataset of ``<run>/.hydra/config.yaml``.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from glsim_pl.config.instantiate import instantiate
from glsim_pl.data.preprocessing import Preprocessing, factor_for
from glsim_pl.errors import UserError
from glsim_pl.model_io.hub import is_hub_id

__all__ = [
    "apply_model_preprocessing",
    "eval_output_dir",
    "explicit_overrides",
    "resolve_preprocessing",
    "run_dataset_config",
    "run_folder",
    "upgrade_target",
    "upgrade_targets",
]


def run_folder(ckpt_path: str | Path) -> Path | None:
    """``<run>`` for ``<run>/checkpoints/x.ckpt``, the file's folder otherwise; None for ``hf-hub:`` ids."""
    if not ckpt_path or is_hub_id(ckpt_path):
        return None
    path = Path(str(ckpt_path)).expanduser().absolute()
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def eval_output_dir(ckpt_path: Any, root_dir: str) -> str:
    """The default ``hydra.run.dir`` of eval (an explicit ``hydra.run.dir=`` still wins)."""
    now = datetime.datetime.now()
    run = run_folder(ckpt_path) if ckpt_path not in (None, "None", "null") else None
    if run is None:
        return str(Path(root_dir) / "outputs" / now.strftime("%Y-%m-%d") / now.strftime("%H-%M-%S"))
    return str(run / "eval" / Path(str(ckpt_path)).stem / now.strftime("%Y-%m-%d_%H-%M-%S"))


if not OmegaConf.has_resolver("glsim_eval_dir"):
    OmegaConf.register_new_resolver("glsim_eval_dir", eval_output_dir, use_cache=True)


# modules that moved into role packages: a run folder written before keeps working (its config names the old paths)
MOVED_MODULES = {
    "glsim_pl.bench._timing.": "glsim_pl.analysis.timing.",
    "glsim_pl.callbacks.eval_report.": "glsim_pl.analysis.eval_report.",
    "glsim_pl.checkpoint_io.": "glsim_pl.model_io.checkpoints.",
    "glsim_pl.config_dir.": "glsim_pl.config.locate.",
    "glsim_pl.data.birds.": "glsim_pl.data.datasets.birds.",
    "glsim_pl.data.cars.": "glsim_pl.data.datasets.cars.",
    "glsim_pl.data.csv_split.": "glsim_pl.data.datasets.csv_split.",
    "glsim_pl.data.dogs.": "glsim_pl.data.datasets.dogs.",
    "glsim_pl.data.folder.": "glsim_pl.data.datasets.folder.",
    "glsim_pl.data.inat.": "glsim_pl.data.datasets.inat.",
    "glsim_pl.data.synthetic.": "glsim_pl.data.datasets.synthetic.",
    "glsim_pl.data.torchvision_sets.": "glsim_pl.data.datasets.torchvision_sets.",
    "glsim_pl.data.ufg.": "glsim_pl.data.datasets.ufg.",
    "glsim_pl.data.vegfru.": "glsim_pl.data.datasets.vegfru.",
    "glsim_pl.demo_panels.": "glsim_pl.plots.panels.",
    "glsim_pl.gate_sweep.": "glsim_pl.analysis.gate_sweep.",
    "glsim_pl.hub.": "glsim_pl.model_io.hub.",
    "glsim_pl.lit_module.": "glsim_pl.training.module.",
    "glsim_pl.metrics.": "glsim_pl.training.metrics.",
    "glsim_pl.model_card.": "glsim_pl.model_io.model_card.",
    "glsim_pl.models.pretrained.": "glsim_pl.models.weights.",
    "glsim_pl.models.selector.": "glsim_pl.models.boxes.",
    "glsim_pl.onnx_export.": "glsim_pl.model_io.onnx.",
    "glsim_pl.preprocessing.": "glsim_pl.data.preprocessing.",
    "glsim_pl.pretrained.": "glsim_pl.model_io.pretrained.",
    "glsim_pl.results_table.": "glsim_pl.analysis.table.",
    "glsim_pl.run_dir.": "glsim_pl.config.run_dir.",
    "glsim_pl.strategies.": "glsim_pl.training.strategies.",
    "glsim_pl.sweeper.": "glsim_pl.config.sweeper.",
    "glsim_pl.utils.atomic_io.": "glsim_pl.training.checkpointing.",
    "glsim_pl.utils.config.": "glsim_pl.config.groups.",
    "glsim_pl.utils.instantiate.": "glsim_pl.config.instantiate.",
    "glsim_pl.utils.plugins.": "glsim_pl.config.plugins.",
    "glsim_pl.utils.run_guard.": "glsim_pl.training.run_guard.",
    "glsim_pl.utils.validate.": "glsim_pl.config.validate.",
}


def upgrade_target(value: str) -> str:
    """One dotted path (or a value quoting one) with a moved module's prefix rewritten to where it lives now."""
    for old, new in MOVED_MODULES.items():
        if old in value:
            return value.replace(old, new)
    return value


def upgrade_targets(node: Any) -> Any:
    """``_target_`` paths of an older run's config rewritten to where the classes live now (in place; returned)."""
    if isinstance(node, DictConfig):
        for key in list(node.keys()):
            value = node[key]
            if key == "_target_" and isinstance(value, str):
                node[key] = upgrade_target(value)
            elif isinstance(value, DictConfig):
                upgrade_targets(value)
    return node


def run_dataset_config(ckpt_path: str) -> DictConfig | None:
    """The ``dataset`` node of the run that wrote ``ckpt_path`` (relative roots made absolute against the run's
    working directory), or None when the checkpoint sits in no run folder."""
    run = run_folder(ckpt_path)
    config_file = run / ".hydra" / "config.yaml" if run is not None else None
    if config_file is None or not config_file.is_file():
        return None
    try:
        dataset = OmegaConf.create(OmegaConf.to_container(OmegaConf.load(config_file).dataset, resolve=True))
    except Exception as exc:  # an interpolation of the run that cannot be resolved here
        raise UserError(f"{config_file}: cannot read its dataset config ({exc}); pass dataset=<name>") from exc
    upgrade_targets(dataset)
    hydra_file = config_file.with_name("hydra.yaml")
    root = dataset.get("root")
    if root and not Path(root).is_absolute() and hydra_file.is_file():
        cwd = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.runtime.cwd")
        if cwd:
            dataset.root = str(Path(cwd) / root)
    return dataset


def explicit_overrides(cfg: DictConfig) -> set[str]:
    """The keys given on the command line (``dataset.image_size=448`` -> ``dataset.image_size``)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        task = list(HydraConfig.get().overrides.task)
    except ValueError:  # not under Hydra
        task = list(OmegaConf.select(cfg, "hydra.overrides.task", default=[]) or [])
    return {o.split("=", 1)[0].lstrip("+~") for o in task}


def apply_model_preprocessing(dataset: DictConfig, pre: Any, explicit: set[str]) -> None:
    """Set the dataset's eval transform (image size, resize factor, mean/std) to the model's, except for the keys
    the user set on the command line."""
    with open_dict(dataset):
        if "dataset.image_size" not in explicit:
            dataset.image_size = pre.input_size
        if "dataset.resize_factor" not in explicit:
            dataset.resize_factor = pre.resize_factor
        if not explicit & {"dataset.normalize", "dataset.mean", "dataset.std"}:
            dataset.normalize, dataset.mean, dataset.std = "custom", list(pre.mean), list(pre.std)


def resolve_preprocessing(cfg: DictConfig, module: Any) -> tuple[list[str], Preprocessing]:
    """Class names and preprocessing: the checkpoint's, replaced by ``dataset=`` (names only when the checkpoint
    has none) and then by ``mean`` / ``std`` / ``resize_factor`` given explicitly."""
    stored = getattr(module, "preprocessing", None) or Preprocessing(
        input_size=int(module.hparams.net.get("img_size", 224))
    )
    names, changes = module.hparams.get("class_names"), {}
    if cfg.get("dataset") is not None:
        datamodule = instantiate(cfg.dataset)
        factor = factor_for(datamodule.resize_size, int(datamodule.image_size))
        changes.update(mean=datamodule.mean, std=datamodule.std, resize_factor=factor)
        if not names:
            datamodule.check()
            names = datamodule.class_names
    changes.update({k: cfg.get(k) for k in ("mean", "std", "resize_factor") if cfg.get(k) is not None})
    pre = Preprocessing.from_dict({**stored.to_dict(), **changes}, "mean/std/resize_factor")
    return list(names or [str(i) for i in range(int(module.hparams.num_classes))]), pre
