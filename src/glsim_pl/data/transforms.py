"""Train / eval transforms of the paper (torchvision.transforms.v2), boxes carried along where a split has them.

Train: Resize((R, R), bicubic) -> RandomCrop(S) -> HFlip -> TrivialAugmentWide -> Normalize -> RandomErasing.
Eval: Resize((R, R), bicubic) -> CenterCrop(S) -> Normalize. R = int(resize_factor * S) (300 at 224).

The PIL image becomes a uint8 tensor first: torchvision's uint8 resize kernels are ~4x faster than PIL's here and
differ from PIL's bicubic by ~0.004/255 on average. TrivialAugmentWide / RandAugment keep torchvision's default
(nearest) interpolation, as the official runs did.

The first two ops of both pipelines, ToImage + Resize((R, R)), are deterministic: ``dataset.cache`` stores their
uint8 output (:mod:`glsim_pl.data.cache`) and the views run the rest (:func:`without_prefix`). With
``device_normalize`` the train pipeline stops at the uint8 crop and returns an :class:`UInt8Crop`: the crop plus the
RandomErasing rectangle drawn from the sample's RNG exactly as RandomErasing draws it; :func:`finish_on_device` then
does ToDtype + Normalize + the erasing on the whole batch where it lies (the GPU), with the same arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch.utils.data import default_collate
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as F

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "AugConfig", "ErasingRect", "MixUpCutMixCollate", "UInt8Crop",
    "RandAugment", "TrivialAugmentWide", "build_eval_transform", "build_train_transform", "finish_on_device",
    "has_prefix", "sharpness_uint8", "solarize_uint8", "without_prefix",
]  # fmt: skip

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class AugConfig:
    """Train-time augmentation switches (the ``augs`` config group sets them).

    Attributes:
        hflip: random horizontal flip, p 0.5.
        trivial_aug: TrivialAugmentWide.
        rand_aug: RandAugment (the strong preset).
        random_resized_crop: RandomResizedCrop(S) instead of resize + random crop (the strong preset).
        random_erasing: RandomErasing probability (0 = off), after Normalize, value 0.
        mixup_alpha: MixUp Beta(alpha, alpha) parameter per train batch (0 = off; the strong preset).
        cutmix_alpha: CutMix Beta(alpha, alpha) parameter per train batch (0 = off; the strong preset).
    """

    hflip: bool = True
    trivial_aug: bool = True
    rand_aug: bool = False
    random_resized_crop: bool = False
    random_erasing: float = 0.3
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0


def sharpness_uint8(image: torch.Tensor, factor: float) -> torch.Tensor:
    """``F.adjust_sharpness`` of a uint8 (..., C, H, W) image, same output, ~5x faster on CPU.

    torchvision blurs with a float depthwise conv2d (weights 1/13, centre 5/13) and rounds. Here the blur is the exact
    integer sum rounded, ``round(s / 13)``: s / 13 is never halfway between integers and the conv's float error is
    far below 1/26, so both round to the same integers; the blend, clamp and cast are torchvision's own ops.
    """
    x = image.to(torch.int16)
    total = 5 * x[..., 1:-1, 1:-1]
    for dy, dx in ((0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2)):
        total += x[..., dy : dy + x.shape[-2] - 2, dx : dx + x.shape[-1] - 2]
    blurred = torch.div(2 * total + 13, 26, rounding_mode="floor").to(torch.float32)
    output = image.to(torch.float32)
    view = output[..., 1:-1, 1:-1]
    view.add_(blurred.sub_(view), alpha=1.0 - factor)
    return output.clamp_(0, 255).to(torch.uint8)


def solarize_uint8(image: torch.Tensor, threshold: float) -> torch.Tensor:
    """``F.solarize`` of a uint8 image, same output, ~8x faster on CPU: torch compares a uint8 tensor with a Python
    float in float32, and for integers ``x >= t`` is ``x >= ceil(t)``; inverting a byte is XOR with 255
    (torchvision's ``torch.where`` on uint8 is slow here)."""
    bound = math.ceil(torch.tensor(threshold, dtype=torch.float32).item())
    flip = (image >= bound).view(torch.uint8).neg()  # 255 where solarized, else 0
    return image.bitwise_xor(flip)


class _FastOps:
    """Auto-augment mixin: Sharpness and Solarize of uint8 images through :func:`sharpness_uint8` and
    :func:`solarize_uint8` (identical output, ``tests/test_data_cache.py``)."""

    def _apply_image_or_video_transform(self, image: Any, transform_id: str, magnitude: float, *args: Any,
                                        **kwargs: Any) -> Any:  # fmt: skip
        out = None
        if image.dtype == torch.uint8 and transform_id == "Sharpness" and min(image.shape[-2:]) > 2:
            out = sharpness_uint8(image.as_subclass(torch.Tensor), 1.0 + magnitude)
        elif image.dtype == torch.uint8 and transform_id == "Solarize":
            out = solarize_uint8(image.as_subclass(torch.Tensor), 255.0 * float(magnitude))  # torchvision's bound
        if out is not None:
            return tv_tensors.wrap(out, like=image) if isinstance(image, tv_tensors.TVTensor) else out
        return super()._apply_image_or_video_transform(image, transform_id, magnitude, *args, **kwargs)  # type: ignore[misc]


class TrivialAugmentWide(_FastOps, T.TrivialAugmentWide):
    """torchvision's TrivialAugmentWide (same draws, same output) with the fast uint8 Sharpness and Solarize."""


class RandAugment(_FastOps, T.RandAugment):
    """torchvision's RandAugment (same draws, same output) with the fast uint8 Sharpness and Solarize."""


def _to_float_normalised(mean: Sequence[float], std: Sequence[float]) -> list[T.Transform]:
    return [T.ToDtype(torch.float32, scale=True), T.Normalize(mean=list(mean), std=list(std))]


class UInt8Crop(NamedTuple):
    """A train sample before its float work: the uint8 crop (3, S, S) and its erasing rectangle (i, j, h, w), all
    zeros when nothing is erased. ``default_collate`` keeps the type: a batch is (B, 3, S, S) and (B, 4)."""

    image: torch.Tensor
    erase: torch.Tensor


class ErasingRect(T.RandomErasing):
    """RandomErasing's random draws (same calls, same order) without touching pixels: -> the (i, j, h, w) rectangle."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if torch.rand(1) >= self.p:
            return torch.zeros(4, dtype=torch.int64)
        params = self.make_params([image])
        if params["v"] is None:  # no rectangle fitted in ten tries: RandomErasing leaves the image alone
            return torch.zeros(4, dtype=torch.int64)
        return torch.tensor([params["i"], params["j"], params["h"], params["w"]], dtype=torch.int64)


class _SplitErasing:
    """The uint8 train pipeline's last step: (crop) -> UInt8Crop(crop, erasing rectangle)."""

    def __init__(self, ops: T.Compose, erasing: ErasingRect | None) -> None:
        self.ops, self.erasing = ops, erasing

    def __call__(self, image: Any) -> UInt8Crop:
        crop = self.ops(image).as_subclass(torch.Tensor)
        rect = self.erasing(crop) if self.erasing is not None else torch.zeros(4, dtype=torch.int64)
        return UInt8Crop(crop, rect)

    @property
    def transforms(self) -> list[Any]:
        return self.ops.transforms

    def with_ops(self, ops: T.Compose) -> _SplitErasing:
        return _SplitErasing(ops, self.erasing)


def finish_on_device(batch: UInt8Crop, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """ToDtype(float32, scale) + Normalize + erasing (value 0) of a collated :class:`UInt8Crop` batch, where it lies;
    the same elementwise ops as the per-sample CPU pipeline, so equal to it on CPU bit for bit."""
    images = F.normalize(F.to_dtype(batch.image, torch.float32, scale=True), mean=list(mean), std=list(std))
    i, j, h, w = batch.erase.to(images.device).unbind(1)  # (B,) each
    rows = torch.arange(images.shape[-2], device=images.device)[None]  # (1, H)
    cols = torch.arange(images.shape[-1], device=images.device)[None]  # (1, W)
    in_rows = (rows >= i[:, None]) & (rows < (i + h)[:, None])  # (B, H)
    in_cols = (cols >= j[:, None]) & (cols < (j + w)[:, None])  # (B, W)
    return images.masked_fill((in_rows[:, :, None] & in_cols[:, None, :])[:, None], 0.0)  # (B, 3, H, W)


def has_prefix(transform: Any) -> bool:
    """Whether a pipeline starts with ToImage + a square Resize (the part ``dataset.cache`` stores)."""
    ops = getattr(transform, "transforms", [])
    return len(ops) >= 2 and isinstance(ops[0], T.ToImage) and isinstance(ops[1], T.Resize)


def without_prefix(transform: Any) -> Any:
    """The pipeline after its ToImage + Resize prefix: what runs on a cached (3, R, R) uint8 image."""
    rest = T.Compose(transform.transforms[2:])
    return transform.with_ops(rest) if isinstance(transform, _SplitErasing) else rest


def build_train_transform(
    image_size: int, resize_size: int, augs: AugConfig, mean: Sequence[float], std: Sequence[float],
    device_normalize: bool = False,
) -> T.Compose | _SplitErasing:  # fmt: skip
    """The training pipeline for one preset; works on a PIL image (and a ``BoundingBoxes`` if given).

    ``device_normalize``: stop at the uint8 crop and return a :class:`UInt8Crop` (:func:`finish_on_device` does the
    rest on the batch); the random draws are the same as the full pipeline's.
    """
    bicubic = InterpolationMode.BICUBIC
    ops: list[T.Transform] = [T.ToImage()]
    if augs.random_resized_crop:
        ops.append(T.RandomResizedCrop(image_size, interpolation=bicubic, antialias=True))
    else:
        ops += [T.Resize((resize_size, resize_size), interpolation=bicubic, antialias=True), T.RandomCrop(image_size)]
    if augs.hflip:
        ops.append(T.RandomHorizontalFlip())
    if augs.trivial_aug:
        ops.append(TrivialAugmentWide())
    if augs.rand_aug:
        ops.append(RandAugment())
    if device_normalize:
        erasing = ErasingRect(p=augs.random_erasing, scale=(0.02, 0.4), ratio=(0.3, 3.3), value=0)
        return _SplitErasing(T.Compose(ops), erasing if augs.random_erasing > 0 else None)
    ops += _to_float_normalised(mean, std)
    if augs.random_erasing > 0:
        ops.append(T.RandomErasing(p=augs.random_erasing, scale=(0.02, 0.4), ratio=(0.3, 3.3), value=0))
    return T.Compose(ops)


def build_eval_transform(image_size: int, resize_size: int, mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    """The evaluation pipeline: square bicubic resize, center crop, normalise."""
    resize = T.Resize((resize_size, resize_size), interpolation=InterpolationMode.BICUBIC, antialias=True)
    return T.Compose([T.ToImage(), resize, T.CenterCrop(image_size), *_to_float_normalised(mean, std)])


class MixUpCutMixCollate:
    """Train-loader collate that mixes each batch with MixUp or CutMix (one picked at random per batch).

    Labels become soft (B, K) targets that hold both mixed classes with their area / blend weights, so the loss
    sees the mix (the official code mixed the images but kept hard labels, spec quirk Q9).
    """

    def __init__(self, num_classes: int, mixup_alpha: float, cutmix_alpha: float) -> None:
        mixers = []
        if mixup_alpha > 0:
            mixers.append(T.MixUp(alpha=mixup_alpha, num_classes=num_classes))
        if cutmix_alpha > 0:
            mixers.append(T.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
        if not mixers:
            raise ValueError("MixUpCutMixCollate needs mixup_alpha > 0 or cutmix_alpha > 0")
        self.mix = mixers[0] if len(mixers) == 1 else T.RandomChoice(mixers)

    def __call__(self, batch: list) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = default_collate(batch)  # (B, 3, S, S), (B,)
        return self.mix(images, labels)  # (B, 3, S, S), (B, K)
