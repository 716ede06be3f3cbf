"""Export a checkpoint (ours, official GLSim, or an ``hf-hub:`` id) to a self-contained, Hub-ready folder or ONNX.

    glsim-export ckpt_path=best.ckpt out=exported/                          # model.safetensors, config.json, README.md
    glsim-export ckpt_path=best.ckpt out=exported/ hub.repo_id=USER/NAME hub.push=true   # and upload it
    glsim-export ckpt_path=best.ckpt out=exported/ format=onnx              # model.onnx (+ config.json)
    >>> import glsim_pl; model = glsim_pl.load_pretrained("exported/")       # or "hf-hub:USER/NAME"

``config.json`` holds the method, every constructor keyword of the classifier (``model_kwargs``), class names and
the preprocessing (input size, resize rule and factor, interpolation, mean/std); rebuilding needs no network.
Every file is written atomically with mode 0644.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from glsim_pl.config.locate import CONFIG_DIR
from glsim_pl.errors import UserError, exit_on_user_error
from glsim_pl.model_io.checkpoints import load_module
from glsim_pl.model_io.pretrained import CONFIG, WEIGHTS, load_pretrained, save_pretrained
from glsim_pl.models import GLSim
from glsim_pl.utils.logging import RankedLogger

__all__ = ["export", "load_pretrained", "main", "save_pretrained"]

log = RankedLogger(__name__)


def export(cfg: DictConfig) -> Path:
    """``ckpt_path`` -> ``out`` (``format=safetensors``: Hub-ready folder; ``format=onnx``: ONNX graph too)."""
    from glsim_pl.config.run_dir import resolve_preprocessing
    from glsim_pl.model_io.model_card import run_record, write_model_card

    if not cfg.get("ckpt_path") or not cfg.get("out"):
        raise UserError("ckpt_path and out are required: glsim-export ckpt_path=... out=dir/")
    fmt = str(cfg.get("format") or "safetensors")
    if fmt not in ("safetensors", "onnx"):
        raise UserError(f"format={fmt!r}: expected safetensors or onnx")
    module, kind = load_module(cfg.ckpt_path, cfg.get("class_names_file"))
    if cfg.get("selector") and isinstance(module.net, GLSim):
        from glsim_pl.models.selectors import check_selector

        module.net.selector = check_selector(cfg.selector)
    names, pre = resolve_preprocessing(cfg, module)
    out = Path(cfg.out).expanduser()
    if out.exists() and any(out.iterdir()) and not cfg.get("overwrite"):
        raise UserError(f"out={str(out)!r} is not empty; choose a new folder or pass overwrite=true")
    hub = cfg.get("hub") or {}
    record = run_record(cfg.ckpt_path)
    folder = save_pretrained(module.net, dict(module.hparams.net), out, names, pre,
                             extra={"source_checkpoint_kind": kind})  # fmt: skip
    write_model_card(folder, record, hub, cfg.ckpt_path)  # its metrics only if they are this checkpoint's
    written = [WEIGHTS, CONFIG, "README.md"]
    if fmt == "onnx":
        from glsim_pl.model_io.onnx import export_onnx

        export_onnx(module.net, folder / "model.onnx", pre.input_size, int(cfg.get("opset") or 18))
        written.append("model.onnx")
    log.info(f"exported the {kind} checkpoint {cfg.ckpt_path} -> {folder} ({', '.join(written)})")
    if hub.get("push"):
        from glsim_pl.model_io.hub import push_folder

        if not hub.get("repo_id"):
            raise UserError("hub.push=true needs hub.repo_id=USER/NAME")
        url = push_folder(folder, str(hub.repo_id), bool(hub.get("private")))
        log.info(f"uploaded {folder} to https://huggingface.co/{hub.repo_id} ({url}); load it with "
                 f"glsim_pl.load_pretrained('hf-hub:{hub.repo_id}')")  # fmt: skip
    return folder


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    """Hydra entry point; bad input ends with one clear message."""
    export(cfg)


if __name__ == "__main__":
    main()
