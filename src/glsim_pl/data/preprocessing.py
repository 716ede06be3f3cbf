"""The preprocessing a model was trained and evaluated with, stored with it (as timm's ``pretrained_cfg``).

Every checkpoint (``checkpoint["preprocessing"]``) and every export (``config.json``) records it, so eval, predict,
export and :func:`glsim_pl.load_pretrained` rebuild the exact eval transform without a dataset config:

    square bicubic resize (antialiased) to R x R, R = int(resize_factor * input_size), whatever the aspect ratio
    -> centre crop input_size x input_size -> float in [0, 1] -> normalise with mean / std

Pure torch + torchvision + PIL (no Lightning, Hydra or matplotlib).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps

from glsim_pl.data.image_io import read_image, to_rgb
from glsim_pl.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_eval_transform
from glsim_pl.errors import UserError

__all__ = ["Preprocessing", "factor_for", "open_rgb"]


def factor_for(resize_size: int, input_size: int) -> float:
    """A 4-decimal factor f with int(f * input_size) == resize_size (R / S itself can land just below)."""
    factor = round(resize_size / input_size, 4)
    while int(factor * input_size) < resize_size:
        factor = round(factor + 1e-4, 4)
    return factor


def open_rgb(image: Image.Image | str | Path) -> Image.Image:
    """A PIL image or an image file -> an 8-bit RGB PIL image, read as every dataset reads its files
    (:func:`glsim_pl.data.image_io.read_image`: EXIF orientation, 16-bit and float scaling, transparency, limits)."""
    if isinstance(image, Image.Image):
        return to_rgb(ImageOps.exif_transpose(image))
    return read_image(Path(image).expanduser())


@dataclass(frozen=True)
class Preprocessing:
    """The eval transform of a model, as plain values (``to_dict`` / ``from_dict`` round-trip through JSON).

    Attributes:
        input_size: side S of the square model input (pixels).
        resize_factor: resize side R = int(resize_factor * S) before the centre crop (the paper: 1.34).
        mean, std: per-channel normalisation of the [0, 1] RGB image.
        resize: ``square`` (R x R, aspect ratio not kept), the only rule the project trains with.
        crop: ``center``.
        interpolation: ``bicubic`` (antialiased), as the training and eval transforms.

    Example:
        >>> p = Preprocessing(input_size=224)
        >>> p.resize_size, p("photo.jpg").shape          # doctest: +SKIP
        (300, torch.Size([3, 224, 224]))
    """

    input_size: int = 224
    resize_factor: float = 1.34
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    resize: str = "square"
    crop: str = "center"
    interpolation: str = "bicubic"

    def __post_init__(self) -> None:
        supported = {"resize": "square", "crop": "center", "interpolation": "bicubic"}
        for key, value in supported.items():
            if getattr(self, key) != value:
                raise UserError(f"preprocessing.{key}={getattr(self, key)!r}: only {value!r} is supported")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise UserError(f"preprocessing: mean/std need 3 values each (std > 0), got {self.mean} / {self.std}")
        if int(self.input_size) <= 0 or float(self.resize_factor) < 1:
            raise UserError(f"preprocessing: input_size={self.input_size} > 0 and resize_factor >= 1 expected, "
                            f"got resize_factor={self.resize_factor}")  # fmt: skip
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    @property
    def resize_size(self) -> int:
        """R, the side the image is resized to before the centre crop."""
        return int(self.resize_factor * self.input_size)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values, plus timm's ``pretrained_cfg`` keys (input_size, crop_pct, crop_mode) for other tools."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["resize_size"] = self.resize_size
        d["timm"] = {"input_size": [3, self.input_size, self.input_size], "interpolation": self.interpolation,
                     "mean": list(self.mean), "std": list(self.std), "crop_pct": self.input_size / self.resize_size,
                     "crop_mode": "squash"}  # fmt: skip  # timm's name for "resize both sides, then crop"
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "preprocessing") -> Preprocessing:
        """Inverse of :meth:`to_dict` (derived keys ignored); ``where`` names the source in errors."""
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in d.items() if k in names})
        except TypeError as exc:
            raise UserError(f"{where}: not a preprocessing record ({exc})") from exc

    @classmethod
    def from_datamodule(cls, datamodule: Any) -> Preprocessing:
        """The eval transform of an ``FGVCDataModule`` (its image size, resize side and normalisation)."""
        size = int(datamodule.image_size)
        return cls(input_size=size, resize_factor=factor_for(datamodule.resize_size, size), mean=datamodule.mean,
                   std=datamodule.std)  # fmt: skip

    def transform(self) -> Any:
        """The torchvision transform (PIL image -> normalised float tensor (3, S, S)) that eval uses."""
        return build_eval_transform(self.input_size, self.resize_size, self.mean, self.std)

    def __call__(self, image: Image.Image | str | Path) -> torch.Tensor:
        """A PIL image or a path -> the model's input tensor (3, S, S)."""
        return self.transform()(open_rgb(image))

    def crop_offset(self) -> tuple[int, int]:
        """(left, top) of the centre crop inside the R x R resized image (torchvision's rounding)."""
        off = int(round((self.resize_size - self.input_size) / 2.0))
        return off, off

    def box_to_original(self, box: Sequence[float], width: int, height: int) -> list[float]:
        """A model-input box (x1, y1, x2, y2) -> the same region in the original ``width`` x ``height`` image."""
        left, top = self.crop_offset()
        sx, sy = width / self.resize_size, height / self.resize_size
        x1, y1, x2, y2 = (float(v) for v in box)
        out = [(x1 + left) * sx, (y1 + top) * sy, (x2 + left) * sx, (y2 + top) * sy]
        return [round(min(max(v, 0.0), lim), 2) for v, lim in zip(out, (width, height, width, height), strict=True)]
