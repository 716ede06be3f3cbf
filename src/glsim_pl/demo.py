"""An interactive demo in the browser: what GLSim predicts on an image and where it looks.

    glsim-demo ckpt_path=best.ckpt                      # or: python -m glsim_pl.demo ckpt_path=...
    glsim-demo ckpt_path=exported/ demo.port=8080       # an export folder (glsim-export), or hf-hub:<id>

For an uploaded image, a path on this machine or a shipped example: top-5 classes, the crop box on the original
image, the selector's score map as a heat map, the second-pass crop and, for a gated checkpoint, whether the second
pass ran. A selector switch redraws map, box and crop under another selector and says whether the prediction changes.
Gradio is an optional extra (``pip install 'glsim_pl[demo]'``), imported only here; analytics are off and the page
needs no network. The page listens on 127.0.0.1 unless ``demo.host`` says otherwise; the box that reads a path on
this machine is there only on a loopback host (or with ``demo.allow_paths=true``), never with a public link.
"""

from __future__ import annotations

import ipaddress
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig
from PIL import Image
from torch import nn

from glsim_pl.config.locate import CONFIG_DIR
from glsim_pl.config.run_dir import resolve_preprocessing
from glsim_pl.config.validate import check_range, validate_selectors
from glsim_pl.data.image_io import read_image
from glsim_pl.data.preprocessing import Preprocessing
from glsim_pl.errors import UserError, exit_on_user_error, user_message
from glsim_pl.model_io.checkpoints import load_module
from glsim_pl.model_io.pretrained import prediction_rows
from glsim_pl.models import GLSim
from glsim_pl.models.families import usable_selectors
from glsim_pl.models.gate import apply_gate_threshold
from glsim_pl.models.selectors import check_selector
from glsim_pl.plots.panels import crop_panel, draw_box, heat_overlay
from glsim_pl.utils.logging import RankedLogger

__all__ = ["DemoModel", "Prediction", "build_app", "load_demo_model", "main", "paths_allowed", "predict_one", "serve",
           "upload_limit", "view_box"]  # fmt: skip

log = RankedLogger(__name__)
EXAMPLES_DIR = Path(__file__).with_name("demo_examples")
MISSING_GRADIO = "the demo needs Gradio, an optional extra: pip install 'glsim_pl[demo]'"


@dataclass
class DemoModel:
    """A classifier ready for single images: eval mode on its device, with the checkpoint's own preprocessing."""

    net: nn.Module
    names: list[str]
    pre: Preprocessing
    device: torch.device
    topk: int
    lock: threading.Lock  # the selector is switched on the shared model: one request at a time

    def __post_init__(self) -> None:
        self.transform = self.pre.transform()

    @property
    def selector(self) -> str | None:
        """The checkpoint's selector (None for the plain ViT)."""
        return getattr(self.net, "selector", None)


@dataclass
class Prediction:
    """One image under one selector. Boxes are xyxy: ``box_input`` in model-input pixels, ``box_original`` in
    the original image's; ``second_pass`` / ``first_confidence`` are None without a gate."""

    topk: list[tuple[str, float]]
    box_input: list[int] | None
    box_original: list[float] | None
    scores: torch.Tensor | None
    grid_hw: tuple[int, int]
    input: torch.Tensor
    selector: str | None
    second_pass: bool | None
    first_confidence: float | None


def supported_selectors(net: nn.Module) -> list[str]:
    """The selectors the model can switch to at inference (none for the plain ViT)."""
    return list(usable_selectors(net.encoder)) if isinstance(net, GLSim) else []


def load_demo_model(cfg: DictConfig) -> DemoModel:
    """``cfg.ckpt_path`` -> model, class names and its stored eval preprocessing, loaded as predict loads them."""
    if not cfg.get("ckpt_path"):
        raise UserError("ckpt_path is required: glsim-demo ckpt_path=<checkpoint | export folder | hf-hub:id>")
    validate_selectors(cfg.get("selector"), "selector")  # before the checkpoint is read, as predict
    check_range("topk", cfg.get("topk"), low=1, integer=True)
    check_range("gate_threshold", cfg.get("gate_threshold"), low=0, optional=True)
    check_range("demo.port", cfg.demo.get("port"), low=1, high=65535, integer=True, optional=True)
    module, _ = load_module(cfg.ckpt_path, cfg.get("class_names_file"))
    net = module.net
    if cfg.get("selector") and isinstance(net, GLSim):
        net.selector = check_selector(cfg.selector)
    apply_gate_threshold(net, cfg.get("gate_threshold"))
    names, pre = resolve_preprocessing(cfg, module)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))  # fmt: skip
    net.to(device).eval()
    topk = min(int(cfg.topk), len(names))
    return DemoModel(net, names, pre, device, topk, threading.Lock())


def predict_one(model: DemoModel, image: Image.Image, selector: str | None = None) -> Prediction:
    """The model on one RGB image, as predict runs it, under ``selector`` (None: the checkpoint's)."""
    net = model.net
    x = model.transform(image)  # (3, S, S)
    with model.lock, torch.inference_mode():
        own = model.selector
        if selector is not None and own is not None:
            net.selector = check_selector(selector)
        try:
            result = net(x[None].to(model.device))
        finally:
            if own is not None:
                net.selector = own
    row = prediction_rows(result, [image.size], model.pre, model.names, model.topk)[0]
    cropped = result.boxes is not None
    size = model.pre.input_size
    patch = getattr(net, "patch_px", size)
    gated = result.second_pass is not None and getattr(net, "gate", "none") != "none"
    first = float(result.first_logits[0].float().softmax(-1).max()) if gated else None
    return Prediction(
        row["top"], row["box_input"] if cropped else None, row["box"] if cropped else None,
        result.scores[0].cpu() if result.scores is not None else None, (size // patch, size // patch), x,
        (selector or own) if own is not None else None, row["second_pass"] if gated else None, first,
    )  # fmt: skip


def _heat_scores(model: DemoModel, pred: Prediction) -> torch.Tensor | None:
    """Scores with larger = chosen first (the l1/l2 GLS distances choose the smallest)."""
    if pred.scores is None:
        return None
    flip = pred.selector == "gls" and not getattr(model.net, "largest", True)
    return -pred.scores if flip else pred.scores


def _summary(model: DemoModel, pred: Prediction, base: Prediction, image: Image.Image) -> str:
    """The text panel: top-1, the gate's decision, the selector comparison, the box in original pixels."""
    name, p = pred.topk[0]
    lines = [f"**Top-1: {name}** ({p:.3f})"]
    if pred.second_pass is not None:
        tau = float(model.net.gate_threshold)
        if pred.second_pass:
            lines.append(f"Second pass **ran**: first-pass confidence {pred.first_confidence:.3f} < tau {tau:.3f}.")
        else:
            lines.append(
                f"Second pass **skipped**: first-pass confidence {pred.first_confidence:.3f} >= tau {tau:.3f}; "
                "the prediction is the first-pass head's (box and map shown for reference)."
            )
    if pred.selector is None:
        lines.append("Plain ViT checkpoint: one pass, no crop.")
    elif pred.selector != model.selector:
        same = pred.topk[0][0] == base.topk[0][0]
        verdict = "same top-1 as" if same else f"**changed** from {base.topk[0][0]} ({base.topk[0][1]:.3f}) under"
        lines.append(f"Selector `{pred.selector}`: {verdict} the checkpoint's `{model.selector}`.")
    else:
        lines.append(f"Selector `{pred.selector}` (the checkpoint's).")
    if pred.box_original is not None:
        box = ", ".join(f"{v:.0f}" for v in pred.box_original)
        lines.append(f"Crop box ({box}) in the {image.width} x {image.height} original (x1, y1, x2, y2).")
    return "\n\n".join(lines)


def analyse(model: DemoModel, source: str | None, selector: str | None) -> dict[str, Any] | None:
    """Everything the page shows for one image file; None without a file. Bad files raise UserError."""
    if not source:
        return None
    image = read_image(source)
    base = predict_one(model, image)
    pred = base if selector in (None, model.selector) else predict_one(model, image, selector)
    view = view_box(image.size, model.pre)
    details = {
        "file": Path(source).name, "image_size": list(image.size), "selector": pred.selector,
        "topk": [{"class": n, "prob": p} for n, p in pred.topk], "box_input_px": pred.box_input,
        "box_original_px": pred.box_original, "second_pass": pred.second_pass,
        "first_pass_confidence": pred.first_confidence, "checkpoint_selector": model.selector,
        "checkpoint_top1": base.topk[0][0],
    }  # fmt: skip
    return {
        "label": dict(pred.topk),
        "boxed": draw_box(image, pred.box_original, view),
        "heat": heat_overlay(image, _heat_scores(model, pred), pred.grid_hw, view, pred.box_original),
        "crop": crop_panel(pred.input, pred.box_input, model.pre.mean, model.pre.std) if pred.box_input else None,
        "summary": _summary(model, pred, base, image),
        "details": details,
    }


def _import_gradio() -> Any:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before the import: gradio reads it there
    try:
        import gradio
    except ImportError:
        raise UserError(MISSING_GRADIO) from None
    return gradio


def example_images() -> list[str]:
    """The small images shipped with the package."""
    return sorted(str(p) for p in EXAMPLES_DIR.glob("*.jpg"))


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def paths_allowed(demo_cfg: Any) -> bool:
    """``demo.allow_paths``: whether the page reads paths on this machine. ``auto``: only when the page listens on a
    loopback address (another machine's browser could read any file the demo's user can); never with a public link.
    """
    value = str(demo_cfg.get("allow_paths", "auto")).lower()
    if value not in ("auto", "true", "false"):
        raise UserError(f"demo.allow_paths={demo_cfg.get('allow_paths')!r}: expected auto, true or false")
    if demo_cfg.get("share"):
        return False
    return _is_loopback(str(demo_cfg.get("host") or "")) if value == "auto" else value == "true"


def upload_limit(demo_cfg: Any) -> int:
    """``demo.max_file_size`` (bytes, or a number with b, kb, mb or gb) -> bytes."""
    value = demo_cfg.get("max_file_size")
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = re.fullmatch(r"\s*(\d+)\s*(b|kb|mb|gb)\s*", str(value), re.IGNORECASE)
    if not match or int(match.group(1)) == 0:
        raise UserError(f"demo.max_file_size={value!r}: expected a size such as 20mb (b, kb, mb, gb) or bytes > 0")
    return int(match.group(1)) * 1024 ** ("b", "kb", "mb", "gb").index(match.group(2).lower())


def build_app(model: DemoModel, paths: bool = False) -> Any:
    """The Gradio Blocks page around ``model``; ``paths`` adds the box (and its API) that reads paths on this
    machine."""
    gr = _import_gradio()
    selectors = supported_selectors(model.net)

    def run(source: Any, selector: str | None) -> tuple[Any, ...]:
        path = source if isinstance(source, str) or source is None else getattr(source, "name", None)
        path = (path or "").strip() or None
        try:
            out = analyse(model, path, selector)
        except UserError as exc:  # the uploaded copy's name is the user's file name; its temp folder is noise
            message = user_message(exc).replace(repr(path), Path(path).name).replace(path, Path(path).name)
            log.warning(message)
            raise gr.Error(message, print_exception=False) from None
        if out is None:
            return None, None, None, None, "", None, path
        return (out["label"], out["boxed"], out["heat"], out["crop"], out["summary"], out["details"], path)

    with gr.Blocks(title="glsim_pl demo", analytics_enabled=False) as app:
        gr.Markdown("## GLSim: what the model predicts and where it looks")
        source = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Image", type="filepath", elem_id="upload")
                path_box = gr.Textbox(label="...or a path on this machine (Enter)", visible=paths)
                choice = gr.Radio(selectors, value=model.selector, label="Selector", visible=bool(selectors))
                if example_images():
                    gr.Examples(example_images(), inputs=upload, label="Examples")
            with gr.Column(scale=1):
                label = gr.Label(num_top_classes=model.topk, label="Top classes", elem_id="topk")
                summary = gr.Markdown(elem_id="summary")
        with gr.Row():
            boxed = gr.Image(label="Crop box on the original", type="pil", format="png", interactive=False)
            heat = gr.Image(label="Selector score map (red: chosen first)", type="pil", format="png", interactive=False)
            crop = gr.Image(label="Second-pass crop", type="pil", format="png", interactive=False)
        with gr.Accordion("Details (JSON)", open=False):
            details = gr.JSON()
        outputs = [label, boxed, heat, crop, summary, details, source]
        upload.change(run, [upload, choice], outputs, api_name="predict")
        if paths:  # without the box no endpoint either: a client could call it by name
            path_box.submit(run, [path_box, choice], outputs, api_name="predict_path")
        choice.change(run, [source, choice], outputs, api_name="reselect")
    return app


def serve(cfg: DictConfig, block: bool = True) -> Any:
    """Load the model and start the page on ``cfg.demo.host:port``; ``block=False`` returns the running app."""
    _import_gradio()  # the missing extra is reported before the checkpoint is read
    demo_cfg = cfg.demo
    paths, max_file_size = paths_allowed(demo_cfg), upload_limit(demo_cfg)
    model = load_demo_model(cfg)
    if not paths and not demo_cfg.share and str(demo_cfg.get("allow_paths", "auto")).lower() == "auto":
        log.info(f"demo.host={demo_cfg.host}: the page is open to other machines, so it takes uploads only "
                 "(demo.allow_paths=true adds the box that reads paths on this machine)")  # fmt: skip
    app = build_app(model, paths)
    app.queue(default_concurrency_limit=1)
    try:
        app.launch(
            server_name=str(demo_cfg.host), server_port=int(demo_cfg.port) if demo_cfg.port else None,
            share=bool(demo_cfg.share), prevent_thread_lock=not block, show_error=True, ssr_mode=False,
            allowed_paths=[str(EXAMPLES_DIR)], quiet=not block, max_file_size=max_file_size,
        )  # fmt: skip
    except OSError as exc:  # the port is taken, or the host is not an address of this machine
        where = f"demo.host={demo_cfg.host!r} demo.port={demo_cfg.port}"
        raise UserError(f"{where}: cannot listen there ({exc}); pick another demo.port, or demo.port=null") from None
    return app


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="demo")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    """Hydra entry point; bad input ends with one clear message."""
    serve(cfg)


if __name__ == "__main__":
    main()


def view_box(orig_wh: tuple[int, int], pre: Preprocessing) -> list[float]:
    """The part of the original the model sees at all (the centre crop), xyxy in original pixels."""
    return pre.box_to_original([0, 0, pre.input_size, pre.input_size], *orig_wh)
