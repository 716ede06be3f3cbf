"""The selector zoo: every selector scores the patch tokens (B, N); one box rule and one batched crop follow.

Pure functions. Shapes: B batch, H heads, T = P + N tokens (P prefix tokens: CLS first, then registers),
N patch tokens row-major over the grid (g_h, g_w), D width, L recorded layers. Attention maps are softmax
probabilities (B, H, T, T), row = query, column = key. Larger score = more discriminative for every selector
here except the l1/l2 GLS distances (see :func:`glsim_pl.models.selectors.metric_prefers_largest`).

- ``gls``: GLSim's global-local similarity (CLS vs patch tokens), :func:`gls_scores`.
- ``rollout``: attention rollout (Abnar & Zuidema 2020): heads averaged, identity added, rows renormalised,
  product over all layers, CLS row.
- ``attn_last``: last-layer CLS attention, heads averaged.
- ``psm``: TransFG part selection: per head, product of the attention maps (no residual) of every layer but the
  last, argmax of the CLS row; score = number of heads that chose the patch (+ < 0.5 tie-break by the
  head-averaged product row, so chosen patches always rank first).
- ``maws``: FFVT mutual attention weight a_{0,i} * a_{i,0} (CLS -> patch times patch -> CLS), averaged over heads
  and layers.
- ``random``, ``center``: ablation baselines (uniform random scores; minus the distance to the grid centre).
- ``full``: constant scores; the box is the whole image (every patch, inclusive rule).

A registry, like timm's models: ``@register_selector("name", layers=...)`` on a function of
:class:`SelectorInputs` -> scores (B, N) adds a selector everywhere at once (``method.selector`` choices, the eval
comparison list, the compile rule: a selector that records attention runs eager). Outside the package, register it
in your own module and list that module in the ``imports`` config key, or expose it under the ``glsim_pl.selectors``
entry-point group of your package (docs/extending.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from glsim_pl.errors import UserError

__all__ = [
    "ScoringShape",
    "ENTRY_POINT_GROUP",
    "SELECTORS",
    "SelectorInputs",
    "SelectorSpec",
    "SimMetric",
    "attn_last_scores",
    "capture_plan",
    "center_scores",
    "check_selector",
    "get_selector",
    "gls_scores",
    "head_mean",
    "maws_scores",
    "metric_prefers_largest",
    "psm_scores",
    "random_scores",
    "register_selector",
    "rollout_scores",
    "selector_names",
]

ENTRY_POINT_GROUP = "glsim_pl.selectors"
LayerPlan = str | Callable[[int], list[int]] | None


class SelectorInputs(NamedTuple):
    """What a selector sees after the first pass: cls (B, D) and patches (B, N, D) after the final norm; maps: the
    recorded attention probabilities, one (B, H, T, T) per requested layer (H = 1 with ``head_mean``), else [];
    grid_hw (g_h, g_w); num_prefix tokens before the patches; sim_metric: ``method.sim_metric``.

    Example::

        def cls_dot(inputs: SelectorInputs) -> Tensor:  # a selector's scores, (B, N)
            return (inputs.patches @ inputs.cls[:, :, None]).squeeze(-1)
    """

    cls: Tensor
    patches: Tensor
    maps: Sequence[Tensor]
    grid_hw: tuple[int, int]
    num_prefix: int
    sim_metric: str


class ScoringShape(NamedTuple):
    """What a selector's analytic cost depends on: ``tokens`` N (patches + one CLS), width D, depth L, heads H."""

    tokens: int
    dim: int
    depth: int
    heads: int


@dataclass(frozen=True)
class SelectorSpec:
    """A registered selector.

    Attributes:
        name: the ``method.selector`` value.
        scores: SelectorInputs -> (B, N) scores (run without gradient).
        layers: attention to record during the first pass: None (none), ``all``, ``last``, ``all_but_last`` or a
            function depth -> layer indices.
        head_mean: keep only the head mean of the recorded maps (less memory) instead of every head.
        largest: the box takes the largest scores (False: the smallest; None: as ``method.sim_metric`` prefers).
        whole_image: the box is every patch (the ``full`` ablation): top_o and box_rule do not apply.
        flops: :class:`ScoringShape` -> analytic FLOPs of the scoring (box and crop excluded, as the paper's Table 1);
            None: unknown, reported as "n/a" by the cost tables (never as 0).
    """

    name: str
    scores: Callable[[SelectorInputs], Tensor]
    layers: LayerPlan = None
    head_mean: bool = True
    largest: bool | None = True
    whole_image: bool = False
    flops: Callable[[ScoringShape], float] | None = None

    def plan(self, depth: int) -> list[int] | None:
        """Layer indices to record in an encoder of ``depth`` blocks, or None."""
        if self.layers is None or callable(self.layers):
            return self.layers(depth) if self.layers else None
        return {"all": list(range(depth)), "last": [depth - 1], "all_but_last": list(range(max(depth - 1, 1)))}[
            self.layers
        ]

    @property
    def records_attention(self) -> bool:
        """Recording patches the attention modules (no fused kernel, hooks): such selectors run eager."""
        return self.layers is not None


_REGISTRY: dict[str, SelectorSpec] = {}
_entry_points_loaded = False


def register_selector(
    name: str,
    *,
    layers: LayerPlan = None,
    head_mean: bool = True,
    largest: bool | None = True,
    whole_image: bool = False,
    flops: Callable[[ScoringShape], float] | None = None,
    overwrite: bool = False,
) -> Callable[[Callable[[SelectorInputs], Tensor]], Callable[[SelectorInputs], Tensor]]:
    """Decorator: register ``fn(inputs: SelectorInputs) -> (B, N)`` as selector ``name`` (see :class:`SelectorSpec`).

    Example::

        import glsim_pl

        @glsim_pl.register_selector("token_norm")   # flops=<function of ScoringShape> gives its analytic cost
        def token_norm(inputs: glsim_pl.SelectorInputs):
            return inputs.patches.norm(dim=-1)  # (B, N): the box covers the top-O patches by norm

        # then: python -m glsim_pl.train imports=[my_selectors] method.selector=token_norm
    """
    if isinstance(layers, str) and layers not in ("all", "last", "all_but_last"):
        raise ValueError(f"layers={layers!r}: expected None, 'all', 'last', 'all_but_last' or a function of depth")

    def add(fn: Callable[[SelectorInputs], Tensor]) -> Callable[[SelectorInputs], Tensor]:
        old = _REGISTRY.get(name)
        if old is not None and not overwrite and old.scores is not fn:
            raise ValueError(f"selector {name!r} is registered already (by {old.scores.__module__}); overwrite=True")
        _REGISTRY[name] = SelectorSpec(name, fn, layers, head_mean, largest, whole_image, flops)
        return fn

    return add


def _load_entry_points() -> None:
    """Import every module installed under the ``glsim_pl.selectors`` entry-point group (once)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:
            where = f"entry point {ep.name} = {ep.value} ({ENTRY_POINT_GROUP})"
            raise UserError(f"{where}: import failed ({exc})") from None


def selector_names() -> tuple[str, ...]:
    """Every registered selector, built-ins first (the ``glsim_pl.selectors`` entry-point group is imported first).

    Example::

        >>> import glsim_pl
        >>> glsim_pl.selector_names()[:2]
        ('gls', 'rollout')
    """
    _load_entry_points()
    return tuple(_REGISTRY)


def get_selector(name: str, key: str = "method.selector") -> SelectorSpec:
    """The registered selector ``name``, else a UserError naming the choices and how to register one."""
    if name not in _REGISTRY:
        _load_entry_points()
    if name not in _REGISTRY:
        raise UserError(f"{key}={name!r}: expected one of {', '.join(_REGISTRY)} (a selector of your own: "
                        "register it with glsim_pl.models.selectors.register_selector in a module listed in "
                        "imports=[...], see docs/extending.md)")  # fmt: skip
    return _REGISTRY[name]


def check_selector(selector: str) -> str:
    """Return ``selector`` if registered, else raise a UserError naming the choices."""
    return get_selector(selector).name


def head_mean(attn: Tensor) -> Tensor:
    """Average over heads, keeping the axis. (B, H, T, T) -> (B, 1, T, T)."""
    return attn.mean(1, keepdim=True)


def capture_plan(selector: str, depth: int) -> tuple[list[int] | None, bool]:
    """Which encoder layers a selector records (None: no attention) and whether a head mean is enough."""
    spec = get_selector(selector)
    return spec.plan(depth), spec.head_mean


def rollout_scores(attns: Sequence[Tensor], num_prefix: int = 1) -> Tensor:
    """Attention rollout, CLS row over the patches. L x (B, H, T, T) (H may be 1) -> (B, N)."""
    joint = None
    for attn in attns:
        a = attn.float().mean(1)  # (B, T, T)
        a = a + torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
        a = a / a.sum(-1, keepdim=True)  # rows sum to 1
        joint = a if joint is None else a @ joint  # (B, T, T), layer l composed after layers < l
    return joint[:, 0, num_prefix:]


def attn_last_scores(attn: Tensor, num_prefix: int = 1) -> Tensor:
    """Head-averaged CLS attention of one (the last) layer. (B, H, T, T) -> (B, N)."""
    return attn.float().mean(1)[:, 0, num_prefix:]


def psm_scores(attns: Sequence[Tensor], num_prefix: int = 1) -> Tensor:
    """TransFG part selection as scores. L x (B, H, T, T) (the layers before the last) -> (B, N)."""
    joint = attns[0].float()
    for attn in attns[1:]:
        joint = attn.float() @ joint  # (B, H, T, T), per head, no residual
    cls = joint[:, :, 0, num_prefix:]  # (B, H, N)
    chosen = cls.argmax(-1)  # (B, H): one patch per head
    votes = torch.zeros_like(cls[:, 0]).scatter_add_(1, chosen, torch.ones_like(chosen, dtype=cls.dtype))  # (B, N)
    order = cls.mean(1)  # (B, N)
    order = (order - order.amin(-1, keepdim=True)) / (order.amax(-1, keepdim=True) - order.amin(-1, keepdim=True))
    return votes + 0.49 * order.nan_to_num(0.0)


def maws_scores(attns: Sequence[Tensor], num_prefix: int = 1) -> Tensor:
    """FFVT mutual attention weight, averaged over heads and layers. L x (B, H, T, T) -> (B, N)."""
    total = None
    for attn in attns:
        a = attn.float()
        mutual = (a[:, :, 0, num_prefix:] * a[:, :, num_prefix:, 0]).mean(1)  # (B, N)
        total = mutual if total is None else total + mutual
    return total / len(attns)


def random_scores(
    batch: int, num_patches: int, device: torch.device, generator: torch.Generator | None = None
) -> Tensor:
    """Uniform random scores (ablation). -> (B, N)."""
    return torch.rand(batch, num_patches, device=device, generator=generator)


def center_scores(batch: int, grid_hw: tuple[int, int], device: torch.device) -> Tensor:
    """Minus the squared distance of each patch centre to the grid centre (ablation). -> (B, N)."""
    g_h, g_w = grid_hw
    rows = torch.arange(g_h, device=device, dtype=torch.float32) - (g_h - 1) / 2  # (g_h,)
    cols = torch.arange(g_w, device=device, dtype=torch.float32) - (g_w - 1) / 2  # (g_w,)
    dist = rows[:, None] ** 2 + cols[None, :] ** 2  # (g_h, g_w)
    return (-dist).flatten().expand(batch, -1)  # (B, N)


# -- analytic FLOPs of the built-in selectors' scoring (calc_flops convention; module-level so a spec pickles)
def _gls_flops(s: ScoringShape) -> float:  # cosine of the CLS with each patch: dot product and two norms
    return (s.tokens - 1) * (s.dim + 2 * (s.dim + 1) + 1)


def _rollout_flops(s: ScoringShape) -> float:  # head mean + identity + renormalise per layer, then L - 1 products
    n = s.tokens
    return s.depth * (s.heads * n**2 + n**2 + n + 1) + (s.depth - 1) * n**2 * (2 * n - 1)


def _psm_flops(s: ScoringShape) -> float:  # as implemented here: products of the first L - 1 layers' per-head maps
    return (s.depth - 2) * s.heads * s.tokens**2 * (2 * s.tokens - 1)


def _maws_flops(s: ScoringShape) -> float:  # a_0i * a_i0 per head and layer, then the means
    return s.depth * s.heads * 2 * (s.tokens - 1)


def _attn_last_flops(s: ScoringShape) -> float:  # the head mean of the last CLS attention row
    return s.heads * (s.tokens - 1)


def _no_flops(s: ScoringShape) -> float:  # random / center / full: nothing that depends on the model
    return 0.0


# -- the built-in selectors, in the order the docs and eval list them (module-level functions: a model holding their
# spec pickles, e.g. into spawned DDP workers)
@register_selector("gls", largest=None, flops=_gls_flops)
def _gls(x: SelectorInputs) -> Tensor:
    return gls_scores(x.cls, x.patches, x.sim_metric)


@register_selector("rollout", layers="all", flops=_rollout_flops)
def _rollout(x: SelectorInputs) -> Tensor:
    return rollout_scores(x.maps, x.num_prefix)


@register_selector("attn_last", layers="last", flops=_attn_last_flops)
def _attn_last(x: SelectorInputs) -> Tensor:
    return attn_last_scores(x.maps[-1], x.num_prefix)


@register_selector("psm", layers="all_but_last", head_mean=False, flops=_psm_flops)
def _psm(x: SelectorInputs) -> Tensor:
    return psm_scores(x.maps, x.num_prefix)


@register_selector("maws", layers="all", head_mean=False, flops=_maws_flops)
def _maws(x: SelectorInputs) -> Tensor:
    return maws_scores(x.maps, x.num_prefix)


@register_selector("random", flops=_no_flops)
def _random(x: SelectorInputs) -> Tensor:
    return random_scores(x.patches.shape[0], x.patches.shape[1], x.patches.device)


@register_selector("center", flops=_no_flops)
def _center(x: SelectorInputs) -> Tensor:
    return center_scores(x.patches.shape[0], x.grid_hw, x.patches.device)


@register_selector("full", whole_image=True, flops=_no_flops)
def _full(x: SelectorInputs) -> Tensor:
    return torch.ones(x.patches.shape[:2], device=x.patches.device)


SELECTORS: tuple[str, ...] = tuple(_REGISTRY)  # the built-ins; selector_names() adds the registered ones


SimMetric = Literal["cos", "l1", "l2"]


def metric_prefers_largest(metric: SimMetric) -> bool:
    """Cosine ranks by the largest similarity; the l1/l2 distances rank by the smallest."""
    if metric not in ("cos", "l1", "l2"):
        raise ValueError(f"sim_metric must be one of cos, l1, l2; got {metric!r}")
    return metric == "cos"


def gls_scores(cls: Tensor, patches: Tensor, metric: SimMetric = "cos") -> Tensor:
    """Global-local similarity of every patch token to the CLS token.

    Args:
        cls: global token, post final norm.
        patches: local tokens, post final norm, row-major over the patch grid.
        metric: ``cos`` (cosine similarity, eps 1e-8), ``l1`` (mean absolute difference) or
            ``l2`` (mean squared difference, no square root, as the official code).

    Shape:
        cls (B, D), patches (B, N, D) -> (B, N)
    """
    metric_prefers_largest(metric)
    g = cls.unsqueeze(1)  # (B, 1, D)
    if metric == "cos":
        return F.cosine_similarity(g, patches, dim=-1, eps=1e-8)
    diff = g - patches  # (B, N, D)
    return diff.abs().mean(-1) if metric == "l1" else diff.pow(2).mean(-1)
