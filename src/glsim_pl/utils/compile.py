"""GPU efficiency switches of the entry points: ``compile``, ``compile_mode`` and TF32 matmuls on CUDA.

``compile=auto`` compiles the classifier (``module.net``) on CUDA and keeps CPU runs eager (inductor's C++ compile
costs minutes on a small CPU for seconds of work). The compiled forward is installed on the instance, not as a
wrapper module, so ``state_dict`` keys stay plain (no ``_orig_mod.`` prefix) and checkpoints load anywhere.

Static shapes: the compiled forward serves one batch size (train batches are ``drop_last``); any other batch (the
ragged last eval batch, bs-1 latency), the selectors that record attention (rollout, attn_last, psm, maws, any
registered with ``layers``: their hooks append to Python lists) and the confidence gate at evaluation (its second-pass
batch is data-dependent) run the same module eagerly. This is what lets ``compile_mode=auto`` use CUDA graphs
(``reduce-overhead``) on CUDA without recompiling or recording a graph per ragged batch.
"""

from __future__ import annotations

from types import MethodType
from typing import Any

import torch
from torch import nn

from ..errors import UserError

__all__ = [
    "CompiledForward",
    "compile_classifier",
    "is_compiled",
    "prepare_classifier",
    "progress_bar_callbacks",
    "resolve_compile",
    "resolve_compile_mode",
    "uses_cuda",
]

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def uses_cuda(accelerator: str | None = "auto") -> bool:
    """Whether a run with this Lightning ``accelerator`` (or predict ``device``) lands on a CUDA GPU."""
    name = str(accelerator or "auto").lower()
    return torch.cuda.is_available() and (name in ("auto", "gpu", "cuda") or name.startswith("cuda:"))


def resolve_compile(value: Any, cuda: bool) -> bool:
    """``compile``: ``auto`` (on for CUDA, off elsewhere), ``true`` or ``false``."""
    if value is None or str(value).lower() == "auto":
        return cuda
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise UserError(f"compile={value!r}: expected auto, true or false")


def resolve_compile_mode(value: Any, cuda: bool) -> str:
    """``compile_mode``: ``auto`` = ``reduce-overhead`` (inductor + CUDA graphs) on CUDA, ``default`` elsewhere."""
    if value is None or str(value).lower() == "auto":
        return "reduce-overhead" if cuda else "default"
    if str(value) not in COMPILE_MODES:
        raise UserError(f"compile_mode={value!r}: expected auto or one of {', '.join(COMPILE_MODES)}")
    return str(value)


def is_compiled(net: nn.Module) -> bool:
    """Whether :func:`compile_classifier` installed a compiled forward on ``net``."""
    return isinstance(net.__dict__.get("forward"), CompiledForward)


class CompiledForward:
    """``net.forward`` replacement: the compiled class forward for the static batch, the eager one otherwise.

    Compiles lazily on the first call; a copy or an unpickled module (``deepcopy``, DDP ``spawn``) compiles its own.
    """

    def __init__(self, net: nn.Module, mode: str, static_batch: int | None, backend: str = "inductor") -> None:
        self.net, self.mode, self.static_batch, self.backend = net, mode, static_batch, backend
        self._compiled: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_compiled": None}

    def __call__(self, images: torch.Tensor) -> Any:
        net = self.net
        eager = MethodType(type(net).forward, net)
        if _runs_eager(net, images, self.static_batch):
            return eager(images)
        if self._compiled is None:
            mode = None if self.mode == "default" or self.backend != "inductor" else self.mode
            self._compiled = torch.compile(eager, backend=self.backend, mode=mode, dynamic=False)
        if self.mode not in ("reduce-overhead", "max-autotune") or self.backend != "inductor":
            return self._compiled(images)
        torch.compiler.cudagraph_mark_step_begin()  # one call = one step: earlier outputs may be reused
        out = self._compiled(images)
        # CUDA-graph outputs live in memory the next replay overwrites; callers keep logits/boxes across steps
        return type(out)(*(t.clone() if isinstance(t, torch.Tensor) else t for t in out))


def compile_classifier(
    net: nn.Module, mode: str = "default", static_batch: int | None = None, backend: str = "inductor"
) -> nn.Module:
    """Install a compiled forward on ``net`` (in place; parameters and ``state_dict`` keys unchanged).

    Args:
        net: a GLSim or ViTClassifier (anything whose forward takes images (B, 3, H, W)).
        mode: ``torch.compile`` mode; ``reduce-overhead`` and ``max-autotune`` record CUDA graphs.
        static_batch: the batch size the compiled graph serves; other sizes run eagerly. None: every size
            goes to the compiled forward (dynamo then recompiles per new size).
        backend: ``torch.compile`` backend; ``aot_eager`` (Dynamo + AOTAutograd, no code generation) lets CPU tests
            check the captured graph in seconds.

    Returns:
        ``net`` itself.
    """
    if not is_compiled(net):
        net.forward = CompiledForward(net, mode, static_batch, backend)
    return net


def _runs_eager(net: nn.Module, images: torch.Tensor, static_batch: int | None) -> bool:
    """Shapes or control flow the compiled graph does not serve (see the module docstring)."""
    if static_batch is not None and images.shape[0] != static_batch:
        return True
    gated_eval = getattr(net, "gate", "none") != "none" and not net.training
    spec = getattr(net, "_selector", None)  # GLSim's registered selector: one that records attention runs eager
    return gated_eval or (spec is not None and spec.records_attention)


def prepare_classifier(net: nn.Module, compile_value: Any, mode_value: Any, cuda: bool, batch_size: int) -> bool:
    """The entry points' one call: TF32 matmuls on CUDA, then compile ``net`` if ``compile`` says so.

    Returns:
        Whether ``net`` was compiled.
    """
    if cuda:
        torch.set_float32_matmul_precision("high")  # TF32 for fp32 matmuls (autocast runs them in bf16/fp16)
    mode = resolve_compile_mode(mode_value, cuda)  # validated even when compile is off
    if not resolve_compile(compile_value, cuda):
        return False
    compile_classifier(net, mode, static_batch=batch_size)
    return True


def progress_bar_callbacks(trainer_cfg: Any, cuda: bool, callbacks: list[Any]) -> list[Any]:
    """On CUDA, a progress bar that reads its (tensor) metrics every ``log_every_n_steps`` steps, not every step.

    Lightning's default bar refreshes each step and turns the logged loss into a Python float there: a host sync
    per step. CPU runs keep the default bar (nothing to overlap with).
    """
    from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

    has_bar = any(isinstance(c, ProgressBar) for c in callbacks)
    if not cuda or has_bar or not trainer_cfg.get("enable_progress_bar", True):
        return []
    return [TQDMProgressBar(refresh_rate=max(int(trainer_cfg.get("log_every_n_steps") or 50), 1))]
