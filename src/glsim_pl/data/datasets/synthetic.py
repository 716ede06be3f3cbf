"""A procedural fine-grained dataset: the embedded default, the tests and CI use it; no files needed.

Every image shows a cluttered background and one grey-brown "bird" (an ellipse with a head) at a random position
and scale. All classes share that body; they differ only in the hue of a small marking on it (``num_classes`` hues,
``hue_step`` apart), which sits on a random side of the body. Flips keep the class; colour augmentations change the
hue, so they are not label-preserving and the data module turns them off. (A chiral code -- class = hue x side --
was tried first: a tiny from-scratch ViT learnt the hue but not the side within minutes of CPU training.)
The marking must cover about one patch at the model's input: a from-scratch ViT starts by averaging all patches
into its CLS token, so a marking much smaller than a patch leaves it at chance level for a seed-dependent number of
epochs (docs/synthetic.md).
Each image is a pure function of (seed, split, index), so the set is identical everywhere.
"""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from glsim_pl.data.base import FGVCDataModule, Splits
from glsim_pl.data.sources import Box

__all__ = ["SyntheticFGVC", "SyntheticDataModule"]

_BODY_RGB = (150, 120, 90)
_SPLIT_IDS = {"train": 0, "test": 1}


class SyntheticFGVC(Dataset):
    """Generated images; ``targets`` cycle through the classes, ``boxes`` are the bodies' boxes.

    Args:
        size: number of images.
        num_classes: marking hues, one class each.
        hue_step: hue distance between neighbouring classes (0..1 scale).
        image_px: side of the generated image.
        seed: dataset seed.
        split: ``train`` or ``test`` (different images for the same seed).
        marking_frac: marking radius as a fraction of the body width.
    """

    def __init__(self, size: int, num_classes: int = 10, hue_step: float = 0.07, image_px: int = 96, seed: int = 0,
                 split: str = "train", marking_frac: float = 0.22) -> None:  # fmt: skip
        self.size, self.num_classes, self.hue_step, self.image_px = size, num_classes, hue_step, image_px
        self.marking_frac = marking_frac
        self.seed, self.split_id = seed, _SPLIT_IDS[split]
        self.targets = [i % self.num_classes for i in range(size)]
        self.boxes = [self._layout(np.random.default_rng(self._key(i)))[0] for i in range(size)]
        self._cache: dict[int, Image.Image] = {}

    def _key(self, index: int) -> list[int]:
        return [self.seed, self.split_id, index]

    def _layout(self, rng: np.random.Generator) -> tuple[Box, float]:
        """Body box and tilt, drawn first so that ``boxes`` needs no rendering."""
        s = self.image_px
        w = rng.uniform(0.28, 0.5) * s
        h = w * rng.uniform(0.55, 0.8)
        x1, y1 = rng.uniform(0, s - w), rng.uniform(0, s - h)
        return (x1, y1, x1 + w, y1 + h), rng.uniform(-0.15, 0.15)

    def class_name(self, label: int) -> str:
        """``hue_0.12`` style names."""
        return f"hue_{label * self.hue_step:.2f}"

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[Image.Image, int, Box]:
        if index not in self._cache:  # drawing costs ~2 ms; a loader worker keeps what it drew (~28 KB an image)
            self._cache[index] = self._draw(index)
        return self._cache[index].copy(), self.targets[index], self.boxes[index]

    def _draw(self, index: int) -> Image.Image:
        rng = np.random.default_rng(self._key(index))
        box, tilt = self._layout(rng)
        label = self.targets[index]
        s = self.image_px
        tint = rng.uniform(90, 170) + rng.normal(0, 8, 3)  # low saturation: the marking is the colourful part
        noise = rng.normal(0.0, 12.0, (s, s, 1)) + tint
        image = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(6, 12))):  # clutter: low-saturation shapes, some body-coloured
            cx, cy, r = rng.uniform(0, s, 2), rng.uniform(0, s), rng.uniform(3, s / 6)
            grey = rng.uniform(60, 200)
            rgb = tuple(int(np.clip(grey + d, 0, 255)) for d in rng.normal(0, 10, 3))
            if rng.random() < 0.3:
                rgb = tuple(int(c + rng.normal(0, 8)) for c in _BODY_RGB)
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape([cx[0] - r, cy - r * rng.uniform(0.4, 1), cx[0] + r, cy + r], fill=rgb)
        x1, y1, x2, y2 = box
        w, h = x2 - x1, y2 - y1
        draw.ellipse([x1, y1 + 0.15 * h, x2, y2], fill=_BODY_RGB)  # body
        head_r = 0.22 * w
        head_x = x1 + head_r if rng.random() < 0.5 else x2 - head_r
        draw.ellipse([head_x - head_r, y1, head_x + head_r, y1 + 2 * head_r], fill=_BODY_RGB)  # head
        hue = label * self.hue_step + rng.normal(0, 0.003)
        marking = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue % 1.0, 0.85, 0.9))
        side = 0.3 if rng.random() < 0.5 else 0.7
        mx, my = x1 + side * w + tilt * w, y1 + 0.6 * h
        mr = self.marking_frac * w
        draw.ellipse([mx - mr, my - mr, mx + mr, my + mr], fill=marking)
        return image


class SyntheticDataModule(FGVCDataModule):
    """DataModule over :class:`SyntheticFGVC` (train / test of the given sizes; val carved from train).

    Args:
        train_size: images in the official train split (val is carved from it).
        test_size: images in the test split.
        num_classes: marking hues, one class each (from ``dataset.num_classes``).
        hue_step: hue distance between neighbouring classes.
        image_px: side of the generated images (resized to ``resize_factor * image_size`` by the transforms).
        seed: dataset seed (independent of the run's seed, so every run sees the same images).
        marking_frac: marking radius as a fraction of the body width.
        **kwargs: :class:`FGVCDataModule` arguments.
    """

    name = "synthetic"
    color_preserves_label = False  # the marking's hue is the class

    def __init__(self, train_size: int = 3000, test_size: int = 1000, hue_step: float = 0.07, image_px: int = 96,
                 seed: int = 0, marking_frac: float = 0.22, **kwargs) -> None:  # fmt: skip
        super().__init__(**kwargs)
        self.options = dict(num_classes=self.num_classes, hue_step=hue_step, image_px=image_px, seed=seed,
                            marking_frac=marking_frac)  # fmt: skip
        self.train_size, self.test_size = train_size, test_size

    def read_splits(self) -> Splits:
        """Generate both splits (lazily: images are drawn when indexed)."""
        train = SyntheticFGVC(self.train_size, split="train", **self.options)
        test = SyntheticFGVC(self.test_size, split="test", **self.options)
        return Splits(train, test, [train.class_name(k) for k in range(train.num_classes)])
