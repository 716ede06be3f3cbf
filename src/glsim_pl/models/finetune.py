"""Fine-tuning regimes: which part of a classifier trains (the ``finetune`` config group, docs/foundation.md).

- ``full`` (the paper): every parameter trains.
- ``linear``: the encoder is frozen; the head (and GLSim's aggregator and norm, the gate head) train.
- ``lora`` / ``dora``: Hugging Face peft adapters on the encoder's Linear layers (low-rank updates; DoRA also learns
  a per-output magnitude); the encoder's own weights stay frozen; head and aggregator train.
- ``vpt``: VPT-deep (Jia et al. 2022): ``prompt_tokens`` learned tokens per block, inserted after the prefix tokens
  (CLS, registers) at the first block, replaced by the next block's at each later one, removed after the last; the
  encoder is frozen. timm ``VisionTransformer`` blocks only (Eva's RoPE covers the patch positions only).
- ``adapter``: a bottleneck adapter (Houlsby et al. 2019) after the MLP of every block,
  ``h + scale * up(GELU(down(h)))`` with ``up`` zero-initialised, so the adapted model starts equal to the pretrained
  one; the encoder is frozen.

GLSim's two passes run the one (adapted) encoder, so the crop pass sees the same adapters as the first pass.
An export folds LoRA / DoRA into the weights (:func:`merged_copy`): the exported model is a plain encoder. Prompts
and bottleneck adapters have nothing to fold (tokens; a nonlinearity): an export keeps them (:data:`EXPORT_KEEPS`).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from glsim_pl.errors import UserError

__all__ = [
    "EXPORT_KEEPS",
    "REGIMES",
    "BottleneckAdapter",
    "apply_finetune",
    "check_finetune",
    "has_adapters",
    "has_bottleneck_adapters",
    "has_prompts",
    "merged_copy",
    "param_counts",
]

REGIMES = ("full", "linear", "lora", "dora", "vpt", "adapter")
EXPORT_KEEPS = ("vpt", "adapter")  # regimes whose added modules an export keeps, rebuilt from its config.json
_DEFAULTS: dict[str, Any] = {
    "regime": "full", "rank": 8, "alpha": 16.0, "dropout": 0.0, "targets": None, "prompt_tokens": 10,
    "bottleneck": 64, "scale": 1.0,
}  # fmt: skip


def check_finetune(finetune: dict[str, Any] | None) -> dict[str, Any]:
    """The regime's settings with defaults filled in; a UserError naming a bad key or value."""
    cfg = {**_DEFAULTS, **(finetune or {})}
    unknown = set(cfg) - set(_DEFAULTS)
    if unknown:
        raise UserError(f"finetune.{sorted(unknown)[0]}: unknown key; expected {', '.join(_DEFAULTS)}")
    if cfg["regime"] not in REGIMES:
        raise UserError(f"finetune.regime={cfg['regime']!r}: expected one of {', '.join(REGIMES)}")
    rank = cfg["rank"]
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise UserError(f"finetune.rank={rank!r}: expected a positive integer")
    alpha = cfg["alpha"]
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or alpha <= 0:
        raise UserError(f"finetune.alpha={alpha!r}: expected a number > 0")
    dropout = cfg["dropout"]
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise UserError(f"finetune.dropout={dropout!r}: expected a number >= 0 and < 1")
    prompts = cfg["prompt_tokens"]
    if isinstance(prompts, bool) or not isinstance(prompts, int) or prompts < 1:
        raise UserError(f"finetune.prompt_tokens={prompts!r}: expected a positive integer")
    bottleneck = cfg["bottleneck"]
    if isinstance(bottleneck, bool) or not isinstance(bottleneck, int) or bottleneck < 1:
        raise UserError(f"finetune.bottleneck={bottleneck!r}: expected a positive integer (the adapter's hidden width)")
    scale = cfg["scale"]
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 < scale < math.inf:
        raise UserError(f"finetune.scale={scale!r}: expected a finite number > 0")
    targets = cfg["targets"]
    if targets is not None and (
        isinstance(targets, str) or not targets or not all(isinstance(t, str) and t for t in targets)
    ):
        raise UserError(f"finetune.targets={targets!r}: expected null (every Linear layer of the blocks) or a list "
                        "of layer names such as [qkv, proj, fc1, fc2]")  # fmt: skip
    return cfg


def _target_names(encoder: nn.Module, targets: list[str] | None) -> list[str]:
    """Full names of the Linear layers inside the encoder's blocks whose last name part is in ``targets`` (all: None).

    Full names, not suffixes: a suffix such as ``proj`` would also match the patch embedding's Conv2d.
    """
    blocks = getattr(encoder, "blocks", None)
    if blocks is None:
        raise UserError(f"finetune: {type(encoder).__name__} has no transformer blocks (encoder.blocks) to adapt")
    names = [f"blocks.{name}" for name, mod in blocks.named_modules() if isinstance(mod, nn.Linear)]
    if targets is not None:
        names = [n for n in names if n.rsplit(".", 1)[-1] in set(targets)]
        if not names:
            leaves = sorted({n.rsplit(".", 1)[-1] for n, m in blocks.named_modules() if isinstance(m, nn.Linear)})
            raise UserError(f"finetune.targets={list(targets)}: no Linear layer of this encoder's blocks has such a "
                            f"name; its Linear layers are {', '.join(leaves)}")  # fmt: skip
    return names


def apply_finetune(net: nn.Module, finetune: dict[str, Any] | None) -> None:
    """Freeze or adapt ``net.encoder`` in place for the regime; ``full`` (or None) leaves the model untouched."""
    cfg = check_finetune(finetune)
    regime = cfg["regime"]
    if regime == "full":
        return
    if regime == "linear":
        net.encoder.requires_grad_(False)
        return
    if regime == "vpt":
        net.encoder.requires_grad_(False)
        _add_deep_prompts(net.encoder, cfg["prompt_tokens"])
        return
    if regime == "adapter":
        net.encoder.requires_grad_(False)
        _add_bottleneck_adapters(net.encoder, cfg["bottleneck"], float(cfg["scale"]))
        return
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise UserError(f"finetune={regime} needs Hugging Face peft: pip install 'glsim_pl[peft]'") from None

    config = LoraConfig(
        r=cfg["rank"], lora_alpha=cfg["alpha"], lora_dropout=float(cfg["dropout"]),
        target_modules=_target_names(net.encoder, cfg["targets"]), use_dora=regime == "dora", bias="none",
    )  # fmt: skip
    inject_adapter_in_model(config, net.encoder)
    for name, param in net.encoder.named_parameters():
        param.requires_grad_("lora_" in name)  # the adapters only; the pretrained weights stay as loaded


def has_adapters(net: nn.Module) -> bool:
    """True when the model holds peft adapter layers."""
    return any(n.startswith("lora_") or ".lora_" in n for n, _ in net.named_parameters())


def merged_copy(net: nn.Module) -> nn.Module:
    """A copy of ``net`` with every adapter folded into its base layer and the adapter layers removed."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    net = copy.deepcopy(net)
    for name, mod in list(net.named_modules()):
        if isinstance(mod, BaseTunerLayer):
            mod.merge()
            parent_name, _, leaf = name.rpartition(".")
            setattr(net.get_submodule(parent_name) if parent_name else net, leaf, mod.get_base_layer())
    net.requires_grad_(True)
    return net


def param_counts(net: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(net.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def has_prompts(encoder: nn.Module) -> bool:
    """True when the encoder carries VPT-deep prompts (extra tokens inside its blocks)."""
    return int(getattr(encoder, "vpt_tokens", 0)) > 0


def _add_deep_prompts(encoder: nn.Module, tokens: int) -> None:
    """One (tokens, D) prompt per block, as a parameter of the block (``blocks.i.vpt_prompt``), moved in by hooks."""
    if type(encoder).__name__ != "VisionTransformer":
        raise UserError(f"finetune=vpt needs timm VisionTransformer blocks; {type(encoder).__name__} has rotary "
                        "position embeddings over the patch tokens only; use finetune=lora or linear")  # fmt: skip
    prefix, dim = encoder.num_prefix_tokens, encoder.embed_dim
    patch = encoder.patch_embed.patch_size
    bound = math.sqrt(6.0 / float(3 * patch[0] * patch[1] + dim))  # VPT's uniform init (Xavier over the patch)
    encoder.vpt_tokens = tokens
    blocks = list(encoder.blocks)
    for i, block in enumerate(blocks):
        block.vpt_prompt = nn.Parameter(torch.empty(tokens, dim).uniform_(-bound, bound))
        block.register_forward_pre_hook(_insert_prompts if i == 0 else _replace_prompts)
        block.vpt_prefix = prefix
    blocks[-1].register_forward_hook(_remove_prompts)


def _insert_prompts(block: nn.Module, args: tuple) -> tuple:
    x, p = args[0], block.vpt_prefix  # (B, P + N, D)
    prompt = block.vpt_prompt.to(x.dtype).expand(x.shape[0], -1, -1)
    return (torch.cat([x[:, :p], prompt, x[:, p:]], dim=1), *args[1:])


def _replace_prompts(block: nn.Module, args: tuple) -> tuple:
    x, p, k = args[0], block.vpt_prefix, block.vpt_prompt.shape[0]  # (B, P + K + N, D)
    prompt = block.vpt_prompt.to(x.dtype).expand(x.shape[0], -1, -1)
    return (torch.cat([x[:, :p], prompt, x[:, p + k :]], dim=1), *args[1:])


def _remove_prompts(block: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
    p, k = block.vpt_prefix, block.vpt_prompt.shape[0]
    return torch.cat([out[:, :p], out[:, p + k :]], dim=1)  # (B, P + N, D): the patch grid as without prompts


class BottleneckAdapter(nn.Module):
    """``h + scale * up(GELU(down(h)))`` on a block's MLP output (B, T, D); ``up`` starts at zero (an identity)."""

    def __init__(self, dim: int, hidden: int, scale: float) -> None:
        super().__init__()
        self.down = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)  # zero: the adapted model starts as the pretrained one
        nn.init.zeros_(self.up.bias)
        self.scale = scale

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.scale * self.up(self.act(self.down(h)))


def has_bottleneck_adapters(encoder: nn.Module) -> bool:
    """True when the encoder's blocks carry bottleneck adapters (``finetune=adapter``)."""
    return any(isinstance(m, BottleneckAdapter) for m in encoder.modules())


def _add_bottleneck_adapters(encoder: nn.Module, hidden: int, scale: float) -> None:
    """One adapter per block as a child of its MLP (``blocks.i.mlp.adapter``), applied by a forward hook.

    A child plus a hook, not a wrapper module: the pretrained keys (``blocks.i.mlp.fc1`` ...) keep their names, so
    weights load before or after the adapters are added, and the MLP class (timm's Mlp, SwiGLU, ...) does not matter.
    """
    blocks = getattr(encoder, "blocks", None)
    if blocks is None or not all(isinstance(getattr(b, "mlp", None), nn.Module) for b in blocks):
        raise UserError(f"finetune=adapter needs transformer blocks with an MLP (blocks[i].mlp); "
                        f"{type(encoder).__name__} has none; use finetune=lora or linear")  # fmt: skip
    dim = int(getattr(encoder, "embed_dim", 0) or encoder.num_features)
    for block in blocks:
        block.mlp.adapter = BottleneckAdapter(dim, hidden, scale)
        block.mlp.register_forward_hook(_adapt_mlp_output)


def _adapt_mlp_output(mlp: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
    return mlp.adapter(out)
