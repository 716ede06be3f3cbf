"""A procedural fine-grained dataset: the embedded default, the tests and CI use it; no files needed.

Every image shows one "bird" (an ellipse with a head) at a random position and scale. The classes differ only in the
bird's hue (``num_classes`` hues, ``hue_step`` apart). Two looks (``evidence``):

- ``body`` (the default): the whole bird is pale (saturation ``body_sat``) in its class hue, on a saturated ground
  covered with saturated clutter of random hues. The bird is the evidence, and its box (``boxes``) is what the crop
  box is compared with. Where the selector looks depends on the backbone, not on this set: the default's backbone is
  pretrained so that the bird's patch tokens resemble its CLS (docs/synthetic.md).
- ``marking``: a grey-brown bird on a grey ground with grey clutter, and a small saturated marking of the class hue on
  a random side of the body. The marking is the evidence.

``decoys`` adds pale (``body``) or saturated (``marking``) discs of other classes' hues away from the bird.
Flips keep the class; colour augmentations change the hue, so they are not label-preserving and the data module
turns them off. Each image is a pure function of (seed, split, index), so the set is identical everywhere.
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from glsim_pl.data.base import FGVCDataModule, Splits
from glsim_pl.data.sources import Box

__all__ = ["SyntheticFGVC", "SyntheticDataModule", "write_examples"]

_BODY_RGB = (150, 120, 90)
_SPLIT_IDS = {"train": 0, "test": 1}
_EVIDENCE = ("body", "marking")


def _hsv(hue: float, sat: float, val: float) -> tuple[int, ...]:
    return tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue % 1.0, sat, val))


def _draw_bird(draw: ImageDraw.ImageDraw, rng: np.random.Generator, box: Box, fill: tuple[int, ...]) -> None:
    """Body (an ellipse in the box's lower 85 %) and head (on a random side), in ``fill``."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    draw.ellipse([x1, y1 + 0.15 * h, x2, y2], fill=fill)
    head_r = 0.22 * w
    head_x = x1 + head_r if rng.random() < 0.5 else x2 - head_r
    draw.ellipse([head_x - head_r, y1, head_x + head_r, y1 + 2 * head_r], fill=fill)


class SyntheticFGVC(Dataset):
    """Generated images; ``targets`` cycle through the classes, ``boxes`` are the birds' boxes.

    Args:
        size: number of images.
        num_classes: hues, one class each.
        hue_step: hue distance between neighbouring classes (0..1 scale).
        image_px: side of the generated image.
        seed: dataset seed.
        split: ``train`` or ``test`` (different images for the same seed).
        evidence: ``body`` (pale bird in the class hue on saturated clutter) or ``marking`` (grey-brown bird with a
            saturated marking of the class hue, grey clutter).
        body_sat: saturation of the bird (``body``).
        body_frac: range of the bird's width, fraction of the side.
        clutter: range of the number of clutter shapes.
        margin: the bird and the decoys keep this far (fraction of the side) from the border.
        marking_frac: radius of the marking and of the decoys, fraction of the bird's width.
        decoys: discs of other classes' hues placed away from the bird.
    """

    def __init__(self, size: int, num_classes: int = 10, hue_step: float = 0.07, image_px: int = 96, seed: int = 0,
                 split: str = "train", evidence: str = "body", body_sat: float = 0.3,
                 body_frac: tuple[float, float] = (0.35, 0.55), clutter: tuple[int, int] = (30, 45),
                 margin: float = 0.125, marking_frac: float = 0.22, decoys: int = 0) -> None:  # fmt: skip
        if evidence not in _EVIDENCE:
            raise ValueError(f"evidence must be one of {_EVIDENCE}, not {evidence!r}")
        self.size, self.num_classes, self.hue_step, self.image_px = size, num_classes, hue_step, image_px
        self.evidence, self.body_sat = evidence, body_sat
        self.body_frac, self.clutter = tuple(body_frac), tuple(clutter)
        self.margin, self.marking_frac, self.decoys = margin, marking_frac, decoys
        self.seed, self.split_id = seed, _SPLIT_IDS[split]
        self.targets = [i % self.num_classes for i in range(size)]
        self.boxes = [self._layout(np.random.default_rng(self._key(i)))[0] for i in range(size)]
        self._cache: dict[int, Image.Image] = {}

    def _key(self, index: int) -> list[int]:
        return [self.seed, self.split_id, index]

    def _layout(self, rng: np.random.Generator) -> tuple[Box, float]:
        """Bird box and tilt, drawn first so that ``boxes`` needs no rendering."""
        s, m = self.image_px, self.margin * self.image_px
        w = rng.uniform(*self.body_frac) * s
        h = w * rng.uniform(0.55, 0.8)
        x1, y1 = rng.uniform(m, s - m - w), rng.uniform(m, s - m - h)
        return (x1, y1, x1 + w, y1 + h), rng.uniform(-0.15, 0.15)

    def class_name(self, label: int) -> str:
        """``hue_0.12`` style names (three decimals when the step needs them: ``hue_0.045``)."""
        digits = 2 if float(round(self.hue_step * 100, 9)).is_integer() else 3
        return f"hue_{label * self.hue_step:.{digits}f}"

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
        if self.evidence == "marking":
            return self._draw_marking(rng, box, tilt, label)
        s = self.image_px  # the bird's look: saturated ground and clutter, the bird pale in its class hue
        tint = np.array(_hsv(rng.random(), 0.85, rng.uniform(0.35, 0.75)), dtype=float)
        noise = rng.normal(0.0, 12.0, (s, s, 1)) + tint
        image = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(*self.clutter))):
            cx, cy, r = rng.uniform(0, s), rng.uniform(0, s), rng.uniform(3, s / 6)
            grey = rng.uniform(60, 200)  # drawn before the hue: the order fixes every image of the set
            rgb = _hsv(rng.random(), 0.85, grey / 255)
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape([cx - r, cy - r * rng.uniform(0.4, 1), cx + r, cy + r], fill=rgb)
        hue = label * self.hue_step + rng.normal(0, 0.003)
        _draw_bird(draw, rng, box, _hsv(hue, self.body_sat, 0.8))
        self._draw_decoys(draw, rng, box, self.marking_frac * (box[2] - box[0]), label)
        return image

    def _draw_marking(self, rng: np.random.Generator, box: Box, tilt: float, label: int) -> Image.Image:
        """A grey-brown bird whose small saturated marking is the class, on low-saturation clutter. With the data
        module's defaults (no margin, width 0.28-0.5, 6-11 shapes) the draws are those of the set's first version, so
        a run folder written then evaluates on the same images."""
        s = self.image_px
        tint = rng.uniform(90, 170) + rng.normal(0, 8, 3)  # low saturation: the marking is the colourful part
        noise = rng.normal(0.0, 12.0, (s, s, 1)) + tint
        image = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(*self.clutter))):  # clutter: low-saturation shapes, some body-coloured
            cx, cy, r = rng.uniform(0, s, 2)[0], rng.uniform(0, s), rng.uniform(3, s / 6)
            grey = rng.uniform(60, 200)
            rgb = tuple(int(np.clip(grey + d, 0, 255)) for d in rng.normal(0, 10, 3))
            if rng.random() < 0.3:
                rgb = tuple(int(c + rng.normal(0, 8)) for c in _BODY_RGB)
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape([cx - r, cy - r * rng.uniform(0.4, 1), cx + r, cy + r], fill=rgb)
        _draw_bird(draw, rng, box, _BODY_RGB)
        x1, y1, x2, y2 = box
        w, h = x2 - x1, y2 - y1
        hue = label * self.hue_step + rng.normal(0, 0.003)
        side = 0.3 if rng.random() < 0.5 else 0.7
        mx, my, r = x1 + side * w + tilt * w, y1 + 0.6 * h, self.marking_frac * w
        draw.ellipse([mx - r, my - r, mx + r, my + r], fill=_hsv(hue, 0.85, 0.9))
        self._draw_decoys(draw, rng, box, r, label)
        return image

    def _draw_decoys(self, draw: ImageDraw.ImageDraw, rng: np.random.Generator, box: Box, r: float, label: int) -> None:
        """``decoys`` discs of radius r in other classes' hues, at least 2 r away from the bird's box."""
        s, m = self.image_px, self.margin * self.image_px
        x1, y1, x2, y2 = box
        placed: list[tuple[float, float]] = []
        for _ in range(self.decoys):
            for _try in range(50):
                cx, cy = rng.uniform(m + r, s - m - r, 2)
                off_body = cx < x1 - 2 * r or cx > x2 + 2 * r or cy < y1 - 2 * r or cy > y2 + 2 * r
                if off_body and all((cx - px) ** 2 + (cy - py) ** 2 > (3 * r) ** 2 for px, py in placed):
                    break
            else:
                continue
            placed.append((cx, cy))
            other = (label + int(rng.integers(1, self.num_classes))) % self.num_classes
            hue = other * self.hue_step + rng.normal(0, 0.003)
            rgb = _hsv(hue, self.body_sat, 0.8) if self.evidence == "body" else _hsv(hue, 0.85, 0.9)
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=rgb)


class SyntheticDataModule(FGVCDataModule):
    """DataModule over :class:`SyntheticFGVC` (train / test of the given sizes; val carved from train).

    Args:
        train_size: images in the official train split (val is carved from it).
        test_size: images in the test split.
        hue_step, image_px, evidence, body_sat, body_frac, clutter, margin, marking_frac, decoys: as in
            :class:`SyntheticFGVC` (``num_classes`` comes from ``dataset.num_classes``); the generated images are
            resized to ``resize_factor * image_size`` by the transforms.
        seed: dataset seed (independent of the run's seed, so every run sees the same images).
        **kwargs: :class:`FGVCDataModule` arguments.

    The argument defaults draw the set's first version (the marking look), which is what a run folder written then
    asks for, since its config names none of the newer keys; ``conf/dataset/synthetic.yaml`` sets today's look.
    """

    name = "synthetic"
    color_preserves_label = False  # the bird's hue is the class

    def __init__(self, train_size: int = 3000, test_size: int = 1000, hue_step: float = 0.07, image_px: int = 96,
                 seed: int = 0, evidence: str = "marking", body_sat: float = 0.3,
                 body_frac: tuple[float, float] = (0.28, 0.5), clutter: tuple[int, int] = (6, 12),
                 margin: float = 0.0, marking_frac: float = 0.22, decoys: int = 0, **kwargs) -> None:  # fmt: skip
        super().__init__(**kwargs)
        self.options = dict(num_classes=self.num_classes, hue_step=hue_step, image_px=image_px, seed=seed,
                            evidence=evidence, body_sat=body_sat, body_frac=tuple(body_frac), clutter=tuple(clutter),
                            margin=margin, marking_frac=marking_frac, decoys=decoys)  # fmt: skip
        self.train_size, self.test_size = train_size, test_size

    def read_splits(self) -> Splits:
        """Generate both splits (lazily: images are drawn when indexed)."""
        train = SyntheticFGVC(self.train_size, split="train", **self.options)
        test = SyntheticFGVC(self.test_size, split="test", **self.options)
        return Splits(train, test, [train.class_name(k) for k in range(train.num_classes)])


def write_examples(out_dir: str | Path, options: dict | None = None, labels: tuple[int, ...] = (3, 7)) -> list[Path]:
    """The demo's example images: the first test image of each label, and a wide (3:2) cut of one more class.

    ``options``: :class:`SyntheticFGVC` keywords (``conf/dataset/synthetic.yaml``'s look); files are named by class.
    """
    data = SyntheticFGVC(200, split="test", **(options or {}))
    out = Path(out_dir)
    written = []
    for label in (*labels, 5):
        index = data.targets.index(label)
        image, (_, y1, _, y2) = data[index][0], data.boxes[index]
        name = f"synthetic_{data.class_name(label)}"
        if label == 5:  # not square: original and model-input pixels differ on both axes
            side = data.image_px
            top = int(np.clip((y1 + y2) / 2 - side / 3, 0, side - 2 * side // 3))
            image, name = image.crop((0, top, side, top + 2 * side // 3)), name + "_wide"
        written.append(out / f"{name}.jpg")
        # full-resolution colour: neighbouring classes differ by a few RGB levels, which 4:2:0 chroma subsampling moves
        image.save(written[-1], quality=95, subsampling=0)
    return written
