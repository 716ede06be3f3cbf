"""GLSim: Global-Local Similarity for efficient fine-grained image recognition with vision transformers.

Rios, Hu, Lai, "Global-Local Similarity for Efficient Fine-Grained Image Recognition with Vision Transformers",
arXiv:2407.12891 (ISCAS 2025). https://arxiv.org/abs/2407.12891

The method, as this file implements it:
1. A ViT encodes the image; the final CLS token is the global representation, patch tokens the local ones.
2. GLS = cosine(CLS, patch_i) ranks the patches; the smallest patch-grid box around the top-O is cropped
   from the input and resized back to the input size.
3. The crop goes through the *same* encoder.
4. [CLS_original, CLS_crop] go through a 1-layer transformer aggregator + LayerNorm; token 0 goes to the head.

Acknowledgments: timm (ViT blocks, weights), the original GLSim code (github.com/arkel23/GLSim).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from glsim_pl.errors import UserError
from glsim_pl.models.aggregator import Aggregator
from glsim_pl.models.attention import capture_attention
from glsim_pl.models.boxes import BoxRule, select_boxes
from glsim_pl.models.crop import crop_and_resize
from glsim_pl.models.encoder import create_encoder
from glsim_pl.models.families import check_selector_support, global_feature
from glsim_pl.models.finetune import apply_finetune
from glsim_pl.models.gate import cascade, check_gate
from glsim_pl.models.official import convert_official_state_dict, is_official_checkpoint, official_model_kwargs
from glsim_pl.models.selectors import (
    SelectorInputs,
    SelectorSpec,
    SimMetric,
    get_selector,
    head_mean,
    metric_prefers_largest,
)
from glsim_pl.models.tta import with_tta
from glsim_pl.models.weights import load_head_weights, read_checkpoint

__all__ = [
    "GLSIM_ONLY_KEYS",
    "FirstPass",
    "GLSim",
    "GLSimFeatures",
    "GLSimOutput",
    "ViTClassifier",
    "build_classifier",
    "load_official_checkpoint",
]

# method keys the plain ViT has no use for (no crop, no aggregator): a sweep over them collapses for method=vit
GLSIM_ONLY_KEYS = ("top_o", "sim_metric", "box_rule", "aggregator_layers", "selector", "gate_threshold")


class GLSimOutput(NamedTuple):
    """What a classifier returns: logits (B, K); boxes (B, 4) pixel xyxy of the crop; scores (B, N) GLS.

    With ``gate=confidence`` also: first_logits (B, K) of the first-pass head and second_pass (B,) bool, the images
    whose logits came from the crop -> second pass -> aggregator -> head (all of them in training).
    """

    logits: Tensor
    boxes: Tensor | None
    scores: Tensor | None
    first_logits: Tensor | None = None
    second_pass: Tensor | None = None


class FirstPass(NamedTuple):
    """``GLSim.first_pass``: global CLS (B, D) after the final norm, crop boxes (B, 4), selector scores (B, N)."""

    cls_global: Tensor
    boxes: Tensor
    scores: Tensor


class GLSimFeatures(NamedTuple):
    """``forward_features`` output: aggregated tokens (B, 2, D), boxes (B, 4), GLS scores (B, N)."""

    tokens: Tensor
    boxes: Tensor | None
    scores: Tensor | None


class GLSim(nn.Module):
    """GLSim classifier on a timm ViT.

    Args:
        backbone: timm ViT or Eva name (a CLS token or a pooled feature, docs/foundation.md; registers are skipped).
        num_classes: number of classes K.
        img_size: input side in pixels.
        top_o: number of patches whose bounding box is cropped.
        sim_metric: ``cos`` (paper), ``l1`` or ``l2``.
        box_rule: ``official`` (last selected patch row/column excluded, quirk Q2) or ``inclusive`` (the fix).
        aggregator_layers: transformer blocks in the aggregator (paper: 1).
        pretrained: load the backbone weights named by the tag.
        pretrained_file: local backbone weights file.
        drop_path_rate: stochastic depth of encoder and aggregator blocks.
        drop_path_uniform: same rate in every encoder block, as the official architecture (timm ramps it).
        layer_norm_eps: LayerNorm epsilon of encoder and aggregator (official architecture: 1e-12).
        backbone_kwargs: extra timm constructor keywords (plain values).
        selector: what scores the patches for the crop: ``gls`` (the paper) or any registered selector of
            :mod:`glsim_pl.models.selectors` (``rollout``, ``attn_last``, ``psm``, ``maws``, ``random``, ``center``,
            ``full``, or one of your own); attention is recorded during the first pass only when the selector needs it.
        gate: ``none`` (the paper) or ``confidence``: a first-pass head on the global CLS; at evaluation images
            whose first-pass confidence reaches ``gate_threshold`` exit early (:mod:`glsim_pl.models.gate`).
        gate_threshold: tau of the gate (max softmax probability); 0 = first pass only, > 1 = always two passes.
        finetune: what trains (:mod:`glsim_pl.models.finetune`): None or ``{regime: full}`` (the paper), ``linear``
            (frozen encoder), ``lora`` / ``dora`` (peft adapters: ``rank``, ``alpha``, ``dropout``, ``targets``),
            ``vpt`` (deep prompts: ``prompt_tokens``), ``adapter`` (bottleneck adapters: ``bottleneck``, ``scale``).

    Example:
        >>> model = GLSim("vit_tiny_patch16_224", num_classes=200, pretrained=False).eval()
        >>> out = model(torch.randn(2, 3, 224, 224))
        >>> out.logits.shape, out.boxes.shape        # boxes: crop (x1, y1, x2, y2) in input pixels
        (torch.Size([2, 200]), torch.Size([2, 4]))
    """

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        img_size: int = 224,
        top_o: int = 8,
        sim_metric: SimMetric = "cos",
        box_rule: BoxRule = "official",
        aggregator_layers: int = 1,
        pretrained: bool = False,
        pretrained_file: str | None = None,
        drop_path_rate: float = 0.0,
        drop_path_uniform: bool = False,
        layer_norm_eps: float | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        selector: str = "gls",
        gate: str = "none",
        gate_threshold: float = 0.9,
        finetune: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.selector = selector  # a registered name; the spec itself is kept (it pickles into spawned workers)
        self.tta = "none"  # test-time augmentation at eval (models/tta.py), set by glsim-eval tta=; not trained
        self.gate, self.gate_threshold = check_gate(gate), float(gate_threshold)
        self.largest = metric_prefers_largest(sim_metric)
        self.sim_metric, self.box_rule, self.top_o = sim_metric, box_rule, top_o
        self.encoder = create_encoder(
            backbone, img_size, pretrained, pretrained_file, drop_path_rate, drop_path_uniform, layer_norm_eps,
            backbone_kwargs,
        )  # fmt: skip
        self.backbone = backbone
        dim = self.encoder.num_features
        self.num_prefix_tokens = self.encoder.num_prefix_tokens
        self.patch_px = self.encoder.patch_embed.patch_size[0]
        self.aggregator = Aggregator(dim, aggregator_layers, drop_path_rate, layer_norm_eps or 1e-6)
        self.head = nn.Linear(dim, num_classes)
        nn.init.zeros_(self.head.weight)  # as the official init: start from uniform logits
        nn.init.zeros_(self.head.bias)
        if self.gate != "none":  # gate=none registers nothing: the paper's state dict, official parity
            self.gate_head = nn.Linear(dim, num_classes)
            nn.init.zeros_(self.gate_head.weight)
            nn.init.zeros_(self.gate_head.bias)
        apply_finetune(self, finetune)  # last: the regime freezes or adapts the encoder built above
        check_selector_support(self._selector, self.encoder, backbone)  # after the regime: vpt prompts change support

    def forward_features(self, images: Tensor) -> GLSimFeatures:
        """Encode, select, crop, encode the crop, aggregate. images (B, 3, H, W)."""
        first = self.first_pass(images)
        return GLSimFeatures(self.second_pass(images, first.boxes, first.cls_global), first.boxes, first.scores)

    def first_pass(self, images: Tensor) -> FirstPass:
        """Encode images (B, 3, H, W) and select the crop boxes (the selector runs without gradient)."""
        h, w = images.shape[-2:]
        grid_hw = (h // self.patch_px, w // self.patch_px)
        spec = self._selector
        layers = spec.plan(len(self.encoder.blocks))
        maps: list[Tensor] = []
        if layers is None:
            tokens = self.encoder.forward_features(images)  # (B, P + N, D), after the final norm
        else:  # the same pass, with attention probabilities recorded
            with capture_attention(self.encoder, layers, head_mean if spec.head_mean else None) as maps:
                tokens = self.encoder.forward_features(images)
        cls_global = global_feature(self.encoder, tokens)  # (B, D): the CLS token, or the backbone's pooled feature
        patches = tokens[:, self.num_prefix_tokens :]  # (B, N, D)
        with torch.no_grad():
            inputs = SelectorInputs(cls_global, patches, maps, grid_hw, self.num_prefix_tokens, self.sim_metric)
            scores = spec.scores(inputs)  # (B, N)
            boxes = self._boxes(spec, scores, grid_hw)  # (B, 4)
        return FirstPass(cls_global, boxes, scores)

    def second_pass(self, images: Tensor, boxes: Tensor, cls_global: Tensor) -> Tensor:
        """Crop images (M, 3, H, W) to boxes (M, 4), encode the crops, aggregate with cls_global (M, D) -> (M, 2, D)."""
        with torch.no_grad():
            crops = crop_and_resize(images, boxes, images.shape[-2:])  # (M, 3, H, W)
        cls_local = global_feature(self.encoder, self.encoder.forward_features(crops))  # (M, D), same encoder
        return self.aggregator(torch.stack([cls_global, cls_local], dim=1))  # (M, 2, D)

    @property
    def selector(self) -> str:
        """The registered selector that scores the patches (:mod:`glsim_pl.models.selectors`); assignable."""
        return self._selector.name

    @selector.setter
    def selector(self, name: str) -> None:
        spec = get_selector(name)
        if "encoder" in self._modules:  # __init__ checks once the encoder exists
            check_selector_support(spec, self.encoder, self.backbone)
        self._selector = spec

    def _boxes(self, spec: SelectorSpec, scores: Tensor, grid_hw: tuple[int, int]) -> Tensor:
        """Boxes (B, 4) from scores (B, N): the top-O box, or every patch (the whole image) for ``whole_image``."""
        if spec.whole_image:
            return select_boxes(scores, grid_hw, self.patch_px, scores.shape[-1], "inclusive")
        largest = self.largest if spec.largest is None else spec.largest
        return select_boxes(scores, grid_hw, self.patch_px, self.top_o, self.box_rule, largest)

    def forward_head(self, feats: GLSimFeatures, pre_logits: bool = False) -> Tensor:
        """Token 0 (the original image's aggregated CLS) -> logits (B, K), or the token itself."""
        x = feats.tokens[:, 0]  # (B, D)
        return x if pre_logits else self.head(x)

    def forward(self, images: Tensor) -> GLSimOutput:
        """images (B, 3, H, W) -> GLSimOutput(logits (B, K), boxes (B, 4), scores (B, N)[, first_logits, mask])."""
        if self.tta != "none" and not self.training:
            return with_tta(self._forward, images, self.tta)
        return self._forward(images)

    def _forward(self, images: Tensor) -> GLSimOutput:
        if self.gate == "none":
            feats = self.forward_features(images)
            return GLSimOutput(self.forward_head(feats), feats.boxes, feats.scores)
        return self.forward_gated(images, None if self.training else self.gate_threshold)

    def forward_gated(self, images: Tensor, threshold: float | None) -> GLSimOutput:
        """The gate's cascade at ``threshold`` (tau); None runs both passes on every image (training), static shapes.

        With a threshold, the second pass runs on the unsure subset only (gathered, run, scattered back): its batch
        size is data-dependent, so this part runs eager (or under ``torch.compile(dynamic=True)``), see gate.py.
        """
        first = self.first_pass(images)
        first_logits = self.gate_head(first.cls_global)  # (B, K)
        if threshold is None:
            tokens = self.second_pass(images, first.boxes, first.cls_global)  # (B, 2, D)
            every = torch.ones(images.shape[0], dtype=torch.bool, device=images.device)
            return GLSimOutput(self.head(tokens[:, 0]), first.boxes, first.scores, first_logits, every)

        def second(index: Tensor) -> Tensor:  # index (M,) -> logits (M, K)
            sub = self.second_pass(images[index], first.boxes[index], first.cls_global[index])
            return self.head(sub[:, 0])

        logits, mask = cascade(first_logits, threshold, second)
        return GLSimOutput(logits, first.boxes, first.scores, first_logits, mask)

    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay (timm convention)."""
        return {f"encoder.{name}" for name in self.encoder.no_weight_decay()}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Trade compute for memory in the encoder (448 px on one GPU)."""
        self.encoder.set_grad_checkpointing(enable)


class ViTClassifier(nn.Module):
    """The plain ViT baseline of the paper's comparison: final CLS token -> linear head; no crop, no aggregator.

    Example:
        >>> model = ViTClassifier("vit_tiny_patch16_224", num_classes=200, pretrained=False).eval()
        >>> model(torch.randn(1, 3, 224, 224)).logits.shape
        torch.Size([1, 200])
    """

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        img_size: int = 224,
        pretrained: bool = False,
        pretrained_file: str | None = None,
        drop_path_rate: float = 0.0,
        drop_path_uniform: bool = False,
        layer_norm_eps: float | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        finetune: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = create_encoder(
            backbone, img_size, pretrained, pretrained_file, drop_path_rate, drop_path_uniform, layer_norm_eps,
            backbone_kwargs,
        )  # fmt: skip
        self.tta = "none"  # as GLSim's
        self.num_prefix_tokens = self.encoder.num_prefix_tokens
        self.patch_px = self.encoder.patch_embed.patch_size[0]
        self.head = nn.Linear(self.encoder.num_features, num_classes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        apply_finetune(self, finetune)

    def forward_features(self, images: Tensor) -> GLSimFeatures:
        """images (B, 3, H, W) -> tokens (B, 1, D): the final CLS token (or the backbone's pooled feature)."""
        return GLSimFeatures(global_feature(self.encoder, self.encoder.forward_features(images))[:, None], None, None)

    def forward_head(self, feats: GLSimFeatures, pre_logits: bool = False) -> Tensor:
        """CLS (B, D) -> logits (B, K), or the token itself."""
        x = feats.tokens[:, 0]
        return x if pre_logits else self.head(x)

    def _forward(self, images: Tensor) -> GLSimOutput:
        return GLSimOutput(self.forward_head(self.forward_features(images)), None, None)

    forward = GLSim.forward  # images (B, 3, H, W) -> GLSimOutput(logits (B, K), None, None); tta at eval
    no_weight_decay = GLSim.no_weight_decay
    set_grad_checkpointing = GLSim.set_grad_checkpointing


def build_classifier(method: str, pretrained_head: bool = False, **kwargs: Any) -> GLSim | ViTClassifier:
    """``method='glsim'`` -> GLSim; ``method='vit'`` -> the plain ViT (GLSim-only keywords are ignored).

    ``pretrained_head``: also load head and aggregator from ``pretrained_file`` when its class count matches.
    """
    net = _build(method, **kwargs)
    if pretrained_head and kwargs.get("pretrained_file"):
        load_head_weights(net, kwargs["pretrained_file"])
    return net


def classifier_keywords(candidates: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``candidates`` that :func:`build_classifier` takes: ``method``, ``pretrained_head`` and
    :class:`GLSim`'s keywords (a superset of the plain ViT's). A new model knob is a new GLSim argument, nothing else.
    """
    names = (set(inspect.signature(GLSim.__init__).parameters) - {"self", "num_classes"}) | {
        "method",
        "pretrained_head",
    }
    return {key: value for key, value in candidates.items() if key in names}


def _build(method: str, **kwargs: Any) -> GLSim | ViTClassifier:
    if method == "glsim":
        return GLSim(**kwargs)
    if method == "vit":
        if kwargs.pop("gate", "none") != "none":
            raise UserError("method.gate needs method=glsim: the plain ViT is the gate's first pass already")
        for key in GLSIM_ONLY_KEYS:
            kwargs.pop(key, None)
        return ViTClassifier(**kwargs)
    raise ValueError(f"method must be 'glsim' or 'vit', got {method!r}")


def load_official_checkpoint(path_or_dict: str | Path | dict[str, Any]) -> GLSim:
    """Build a :class:`GLSim` from an official GLSim checkpoint; eval outputs equal the official model's.

    Example:
        >>> model = load_official_checkpoint("cub_vit_b16_16_2.pth").eval()     # doctest: +SKIP
        >>> model(images).logits                                                # images (B, 3, 224, 224)
    """
    ckpt = path_or_dict if isinstance(path_or_dict, dict) else read_checkpoint(path_or_dict, "path")
    if not is_official_checkpoint(ckpt):
        where = "checkpoint" if isinstance(path_or_dict, dict) else str(path_or_dict)
        raise UserError(
            f"{where}: not an official GLSim checkpoint "
            "(expected a dict with an argparse 'config' and a 'model' state dict)"
        )
    model = GLSim(**official_model_kwargs(ckpt["config"]))
    try:
        model.load_state_dict(convert_official_state_dict(ckpt["model"]), strict=True)
    except (KeyError, RuntimeError) as exc:
        raise UserError(f"official checkpoint does not match its config: {exc}") from exc
    return model
