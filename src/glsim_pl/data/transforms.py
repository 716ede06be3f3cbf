"""Train / eval transforms of the paper (torchvision.transforms.v2), boxes carried along where a split has them.

Train: Resize((R, R), bicubic) -> RandomCrop(S) -> HFlip -> TrivialAugmentWide -> Normalize -> RandomErasing.
Eval: Resize((R, R), bicubic) -> CenterCrop(S) -> Normalize. R = int(resize_factor * S) (300 at 224).

The PIL image becomes a uint8 tensor first: torchvision's uint8 resize kernels are ~4x faster than PIL's here and
differ from PIL's bicubic by ~0.004/255 on average. TrivialAugmentWide / RandAugment keep torchvision's default
(nearest) interpolation, as the official runs did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import default_collate
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "AugConfig", "MixUpCutMixCollate", "build_eval_transform", "build_train_transform",
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


def _to_float_normalised(mean: Sequence[float], std: Sequence[float]) -> list[T.Transform]:
    return [T.ToDtype(torch.float32, scale=True), T.Normalize(mean=list(mean), std=list(std))]


def build_train_transform(
    image_size: int, resize_size: int, augs: AugConfig, mean: Sequence[float], std: Sequence[float]
) -> T.Compose:
    """The training pipeline for one preset; works on a PIL image (and a ``BoundingBoxes`` if given)."""
    bicubic = InterpolationMode.BICUBIC
    ops: list[T.Transform] = [T.ToImage()]
    if augs.random_resized_crop:
        ops.append(T.RandomResizedCrop(image_size, interpolation=bicubic, antialias=True))
    else:
        ops += [T.Resize((resize_size, resize_size), interpolation=bicubic, antialias=True), T.RandomCrop(image_size)]
    if augs.hflip:
        ops.append(T.RandomHorizontalFlip())
    if augs.trivial_aug:
        ops.append(T.TrivialAugmentWide())
    if augs.rand_aug:
        ops.append(T.RandAugment())
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
