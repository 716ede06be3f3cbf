"""The Hugging Face model card (``README.md``) of an exported model: task, dataset, metrics, preprocessing, the
training command, the paper citation and the licence. Facts come from ``config.json`` and, when the checkpoint sits
in its run folder (``<run>/checkpoints/*.ckpt``), from the run's ``metrics.json``. The run's test metrics are shown only
for the checkpoint the run tested, with the selector it tested; any other (``last.ckpt``, another epoch, another
selector) gets none."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from glsim_pl.model_io.hub import is_hub_id
from glsim_pl.model_io.pretrained import CONFIG
from glsim_pl.utils.atomic_io import atomic_write

__all__ = ["CITATION", "metrics_for", "model_card", "run_record", "write_model_card"]

CITATION = """@article{rios2024glsim,
  title   = {Global-Local Similarity for Efficient Fine-Grained Image Recognition with Vision Transformers},
  author  = {Rios, Edwin Arkel and Hu, Min-Chun and Lai, Bo-Cheng},
  journal = {arXiv preprint arXiv:2407.12891},
  year    = {2024}
}"""


def run_record(ckpt_path: str | Path) -> dict[str, Any]:
    """The training run's ``metrics.json`` beside the checkpoint (``<run>/checkpoints/x.ckpt`` or ``<run>/x.ckpt``),
    or ``{}`` (official files, Hub ids, moved checkpoints)."""
    if is_hub_id(ckpt_path):
        return {}
    path = Path(ckpt_path).expanduser()
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    record = run / "metrics.json"
    try:
        return json.loads(record.read_text()) if record.is_file() else {}
    except json.JSONDecodeError:
        return {}


def metrics_for(record: dict[str, Any], ckpt_path: str | Path | None, config: dict[str, Any]) -> tuple[dict, str]:
    """(the run's test metrics if they are the exported model's, else {}; why not, in words)."""
    metrics = {m: v for m, v in (record.get("metrics") or {}).items() if m.startswith("test/")}
    if not metrics:
        return {}, "No metrics.json beside the exported checkpoint"
    tested = record.get("tested_checkpoint")
    if not tested or ckpt_path is None:
        return {}, "The run's record does not name the checkpoint it tested"
    exported = Path(str(ckpt_path)).expanduser()
    try:
        same = os.path.samefile(exported, tested)
    except OSError:  # the run folder was moved: the file of the same name beside that record
        same = exported.name == Path(tested).name
    if not same:
        return {}, f"The run tested `{Path(tested).name}`, not the exported `{exported.name}`"
    trained = ((record.get("config") or {}).get("method") or {}).get("selector")
    if config.get("method") == "glsim" and trained and config.get("selector") != trained:
        return {}, f"The run tested selector `{trained}`, the export uses `{config.get('selector')}`"
    return metrics, ""


def _dataset_name(record: dict[str, Any]) -> str | None:
    dataset = (record.get("config") or {}).get("dataset") or {}
    target = str(dataset.get("_target_") or "")
    root = dataset.get("root")
    if root:
        return Path(str(root)).name
    return target.rsplit(".", 1)[-1].removesuffix("DataModule").lower() or None


def model_card(
    config: dict[str, Any], record: dict[str, Any], hub: dict[str, Any], ckpt_path: str | Path | None = None
) -> str:
    """Markdown with Hub metadata (YAML front matter) for ``config`` (config.json) and the run ``record``;
    ``ckpt_path``: the exported checkpoint (the run's metrics are shown only when it is the one the run tested)."""
    p, k = config["preprocessing"], config["num_classes"]
    name = hub.get("repo_id") or "glsim-model"
    dataset = hub.get("dataset") or _dataset_name(record)
    metrics, why_none = metrics_for(record, ckpt_path, config)
    licence = hub.get("license") or "mit"
    front = ["---", f"license: {licence}", "library_name: glsim_pl", "pipeline_tag: image-classification",
             "tags:", "- image-classification", "- fine-grained-visual-classification", "- vision-transformer",
             "- glsim", "- timm"]  # fmt: skip
    if dataset:
        front += ["datasets:", f"- {dataset}"]
    front += ["metrics:", "- accuracy", "---", ""]
    method = "GLSim (Global-Local Similarity crop + aggregator)" if config["method"] == "glsim" else "ViT baseline"
    lines = [f"# {name}", "",
             f"Fine-grained image classification: {method} on the timm backbone `{config['backbone']}`, {k} classes"
             + (f", trained on **{dataset}**" if dataset else "") + ". Exported with glsim_pl.", "",
             "## Use", "", "```python", "import glsim_pl",
             f'model = glsim_pl.load_pretrained("hf-hub:{name}")',
             'print(glsim_pl.predict_image(model, "image.jpg"))  # top-5 (class, probability), crop box in pixels',
             "```", "", "```bash", f"glsim-predict ckpt_path=hf-hub:{name} input=photos/", "```", "",
             "## Results", ""]  # fmt: skip
    if metrics:
        lines += ["| metric | value |", "|---|---|", *[f"| {m} | {v:.4f} |" for m, v in sorted(metrics.items())]]
        if record.get("device"):
            lines.append(f"\nTest split of the training run (device: {record['device']}).")
    else:
        lines.append(f"None. {why_none}; evaluate with `glsim-eval ckpt_path=...`.")
    lines += ["", "## Preprocessing", "",
              f"Square bicubic resize (antialiased) to {p['resize_size']} x {p['resize_size']} "
              f"(resize factor {p['resize_factor']!r} x {p['input_size']}), centre crop {p['input_size']} x "
              f"{p['input_size']}, scale to [0, 1], normalise with mean {p['mean']} and std {p['std']}. "
              "`model.preprocess` (or `glsim_pl.transforms_for(model)`) applies it to a PIL image or a path.", "",
              "## Training", ""]  # fmt: skip
    overrides = record.get("overrides")
    if overrides is not None:
        cd = ["-cd", record["config_dir"]] if record.get("config_dir") else []  # the run's own config groups
        lines += ["```bash", " ".join(["glsim-train", *cd, *overrides]), "```"]
        if record.get("git_commit"):
            lines.append(f"\nglsim_pl commit `{record['git_commit']}`, seed {record.get('seed')}.")
    else:
        lines.append("Training command unknown (no metrics.json beside the exported checkpoint).")
    if config["method"] == "glsim":
        kw = config["model_kwargs"]
        lines += ["", f"Selector `{config.get('selector')}`, top-O {kw.get('top_o')}, similarity "
                      f"`{kw.get('sim_metric', 'cos')}`, box rule `{kw.get('box_rule', 'official')}`, aggregator "
                      f"layers {kw.get('aggregator_layers', 1)}."]  # fmt: skip
    lines += ["", "## Citation", "", "```bibtex", CITATION, "```", "", "## Licence", "",
              f"{licence.upper() if licence == 'mit' else licence}. The backbone's pretrained weights may carry their "
              "own licence terms.", ""]  # fmt: skip
    return "\n".join(front + lines)


def write_model_card(
    folder: Path, record: dict[str, Any], hub: dict[str, Any], ckpt_path: str | Path | None = None
) -> Path:
    """``<folder>/README.md`` from ``<folder>/config.json`` (atomic, mode 0644)."""
    config = json.loads((folder / CONFIG).read_text())
    text = model_card(config, record, dict(hub or {}), ckpt_path)
    return atomic_write(folder / "README.md", lambda t: t.write_text(text))
