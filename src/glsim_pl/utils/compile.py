"""GPU efficiency switches of the entry points: ``compile``, ``compile_mode`` and TF32 matmuls on CUDA.

``compile=auto`` compiles the classifier (``module.net``) on CUDA and keeps CPU runs eager (inductor's C++ compile
costs minutes on a small CPU for seconds of work). The compiled forward is installed on the instance, not as a
wrapper module, so ``state_dict`` keys stay plain (no ``_orig_mod.`` prefix) and checkpoints load anywhere.

Static shapes: the compiled forward serves one batch size (train batches are ``drop_last``); any other batch (the
ragged last eval batch, bs-1 latency), the selectors that record attention (rollout, attn_last, psm, maws, any
registered with ``layers``: their hooks append to Python lists) and the confidence gate at evaluation (its second-pass
batch is data-dependent) run the same module eagerly. This is what lets ``compile_mode=auto`` use CUDA graphs
(``reduce-overhead``) on CUDA without recompiling or recording a graph per ragged batch.

First contact: compilation happens at the first compiled call. If it raises (an inductor or Triton error, an op the
installed torch cannot trace), ``compile=auto`` logs one warning saying why and runs eagerly from then on;
``compile=true`` stops with the error. The first compiled call's wall time (compilation included) is logged.
"""

from __future__ import annotations

import time
from types import MethodType
from typing import Any

import torch
from torch import nn

from glsim_pl.errors import UserError
from glsim_pl.utils.logging import RankedLogger

__all__ = [
    "CompiledForward",
    "compile_classifier",
    "is_compiled",
    "prepare_classifier",
    "resolve_compile",
    "resolve_compile_mode",
    "uses_cuda",
]

log = RankedLogger(__name__)
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
    ``on_error``: ``eager`` (a failing first compiled call warns once and the module stays eager) or ``raise``.
    """

    def __init__(self, net: nn.Module, mode: str, static_batch: int | None, backend: Any = "inductor",
                 on_error: str = "raise") -> None:  # fmt: skip
        self.net, self.mode, self.static_batch, self.backend, self.on_error = net, mode, static_batch, backend, on_error
        self._compiled: Any = None
        self._first_done = False  # the first compiled call (where compilation happens) succeeded
        self.failed: str | None = None  # why compilation failed (the module then runs eagerly)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_compiled": None}

    def __call__(self, images: torch.Tensor) -> Any:
        net = self.net
        eager = MethodType(type(net).forward, net)
        if self.failed is not None or _runs_eager(net, images, self.static_batch):
            return eager(images)
        if self._compiled is None:
            mode = None if self.mode == "default" or self.backend != "inductor" else self.mode
            self._compiled = torch.compile(eager, backend=self.backend, mode=mode, dynamic=False)
        if self._first_done:
            return self._call_compiled(images)
        start = time.perf_counter()
        try:
            out = self._call_compiled(images)
        except Exception as exc:  # any compiler failure: dynamo, inductor, Triton, the C++ toolchain
            reason = _failure_reason(exc)
            if self.on_error != "eager":
                raise UserError(
                    f"compile=true: torch.compile failed at the first compiled step ({reason}). "
                    "Set compile=auto to continue eagerly when compiling fails, or compile=false"
                ) from exc
            self.failed = reason
            log.warning(f"compile=auto: torch.compile failed at the first compiled step ({reason}); "
                        "continuing eagerly (compile=false skips the attempt)")  # fmt: skip
            torch._dynamo.reset()  # drop the half-built caches and guards of the failed attempt
            return eager(images)
        self._first_done = True
        log.info(f"torch.compile: first compiled step {time.perf_counter() - start:.1f} s (compilation included)")
        return out

    def _call_compiled(self, images: torch.Tensor) -> Any:
        if self.mode not in ("reduce-overhead", "max-autotune") or self.backend != "inductor":
            return self._compiled(images)
        torch.compiler.cudagraph_mark_step_begin()  # one call = one step: earlier outputs may be reused
        out = self._compiled(images)
        # CUDA-graph outputs live in memory the next replay overwrites; callers keep logits/boxes across steps
        return type(out)(*(t.clone() if isinstance(t, torch.Tensor) else t for t in out))


def _failure_reason(exc: BaseException) -> str:
    """``Outer: root cause: first line``: dynamo wraps a backend error (BackendCompilerFailed) around the real one."""
    root = exc
    while (inner := getattr(root, "inner_exception", None) or root.__cause__) is not None and inner is not root:
        root = inner
    line = (str(root).strip().splitlines() or [""])[0][:300]
    outer = f"{type(exc).__name__}: " if root is not exc else ""
    return f"{outer}{type(root).__name__}: {line}"


def compile_classifier(
    net: nn.Module, mode: str = "default", static_batch: int | None = None, backend: Any = "inductor",
    on_error: str = "raise",
) -> nn.Module:  # fmt: skip
    """Install a compiled forward on ``net`` (in place; parameters and ``state_dict`` keys unchanged).

    Args:
        net: a GLSim or ViTClassifier (anything whose forward takes images (B, 3, H, W)).
        mode: ``torch.compile`` mode; ``reduce-overhead`` and ``max-autotune`` record CUDA graphs.
        static_batch: the batch size the compiled graph serves; other sizes run eagerly. None: every size
            goes to the compiled forward (dynamo then recompiles per new size).
        backend: ``torch.compile`` backend; ``aot_eager`` (Dynamo + AOTAutograd, no code generation) lets CPU tests
            check the captured graph in seconds (a callable backend is passed to ``torch.compile`` as is).
        on_error: what a failing first compiled call does: ``raise`` (a UserError) or ``eager`` (one warning, then
            the eager forward for the rest of the run).

    Returns:
        ``net`` itself.
    """
    if not is_compiled(net):
        net.forward = CompiledForward(net, mode, static_batch, backend, on_error)
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
    strict = isinstance(compile_value, bool) or str(compile_value).lower() == "true"  # auto: fall back to eager
    compile_classifier(net, mode, static_batch=batch_size, on_error="raise" if strict else "eager")
    return True
