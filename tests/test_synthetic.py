"""The procedural fine-grained set: deterministic, balanced, boxed, and honest about label-changing augmentations."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest

from glsim_pl.data.datasets.synthetic import SyntheticDataModule, SyntheticFGVC


def test_images_are_a_pure_function_of_seed_split_index() -> None:
    a, b = SyntheticFGVC(12, seed=3), SyntheticFGVC(12, seed=3)
    assert np.array_equal(np.asarray(a[5][0]), np.asarray(b[5][0]))
    assert not np.array_equal(np.asarray(a[5][0]), np.asarray(SyntheticFGVC(12, seed=4)[5][0]))
    assert not np.array_equal(np.asarray(a[5][0]), np.asarray(SyntheticFGVC(12, seed=3, split="test")[5][0]))


def test_balanced_labels_and_boxes_inside_the_image() -> None:
    data = SyntheticFGVC(40, num_classes=10, image_px=96)
    assert np.bincount(data.targets).tolist() == [4] * 10
    for x1, y1, x2, y2 in data.boxes:
        assert 0 <= x1 < x2 <= 96 and 0 <= y1 < y2 <= 96
    image, label, box = data[7]
    assert image.size == (96, 96) and label == 7 and box == data.boxes[7]


def _hsv_pixels(image) -> np.ndarray:
    """(H * W, 3) hue, saturation, value in 0..1."""
    rgb = np.asarray(image).reshape(-1, 3).astype(float) / 255
    return np.array([colorsys.rgb_to_hsv(*p) for p in rgb])


def test_the_class_is_the_pale_birds_hue() -> None:
    data = SyntheticFGVC(20, num_classes=10, hue_step=0.07)
    for index in (0, 3, 9):
        image, label, (x1, y1, x2, y2) = data[index]
        centre = np.asarray(image)[int(0.7 * y1 + 0.3 * y2) : int(0.3 * y1 + 0.7 * y2), int(0.7 * x1 + 0.3 * x2) :
                                   int(0.3 * x1 + 0.7 * x2)]  # fmt: skip
        hsv = _hsv_pixels(centre)
        assert np.median(hsv[:, 1]) == pytest.approx(0.3, abs=0.03)  # the bird is pale ...
        assert abs(np.median(hsv[:, 0]) - 0.07 * label) < 0.02  # ... in its class hue


def test_the_class_is_the_marking_hue_in_the_marking_look() -> None:
    data = SyntheticFGVC(20, num_classes=10, hue_step=0.07, marking_frac=0.16, evidence="marking")
    for index in (0, 3, 9):
        hsv = _hsv_pixels(data[index][0])
        vivid = hsv[hsv[:, 1] > 0.7]  # only the marking is that saturated
        assert len(vivid) > 10
        gap = abs(np.median(vivid[:, 0]) - 0.07 * data.targets[index]) % 1.0  # hue is circular: 0.998 is near 0
        assert min(gap, 1.0 - gap) < 0.02


def _pale_share_inside_the_box(data: SyntheticFGVC, count: int = 20) -> float:
    """Of all pale pixels (saturation < 0.5) of the first ``count`` images, the fraction inside the bird's box."""
    inside = total = 0
    for index in range(count):
        image, _, (x1, y1, x2, y2) = data[index]
        pale = _hsv_pixels(image)[:, 1].reshape(image.size[1], image.size[0]) < 0.5
        total += int(pale.sum())
        inside += int(pale[int(y1) : int(np.ceil(y2)), int(x1) : int(np.ceil(x2))].sum())
    return inside / total


def test_in_the_default_look_the_bird_is_the_only_pale_region(make_cfg) -> None:
    # The pale bird is the one region unlike the rest: its box is the evidence the crop box is compared with.
    cfg = make_cfg(tiny=False).dataset
    options = dict(image_px=cfg.image_px, body_sat=cfg.body_sat, body_frac=tuple(cfg.body_frac),
                   clutter=tuple(cfg.clutter), margin=cfg.margin)  # fmt: skip
    assert cfg.evidence == "body"
    assert _pale_share_inside_the_box(SyntheticFGVC(20, evidence=cfg.evidence, **options)) > 0.9
    assert _pale_share_inside_the_box(SyntheticFGVC(20, evidence="marking", **options)) < 0.5


def test_the_bird_stays_inside_the_eval_centre_crop(make_cfg) -> None:
    cfg = make_cfg(tiny=False).dataset
    keep = cfg.image_size / int(cfg.resize_factor * cfg.image_size)  # the centre crop keeps this share of the side
    lo, hi = (1 - keep) / 2 * cfg.image_px, (1 + keep) / 2 * cfg.image_px
    data = SyntheticFGVC(200, image_px=cfg.image_px, body_frac=tuple(cfg.body_frac), margin=cfg.margin)
    assert all(lo <= x1 and lo <= y1 and x2 <= hi and y2 <= hi for x1, y1, x2, y2 in data.boxes)
    assert not all(lo <= b[0] for b in SyntheticFGVC(200, image_px=cfg.image_px, margin=0.0).boxes)


def test_decoys_are_other_classes_hues_away_from_the_bird() -> None:
    plain, decoyed = SyntheticFGVC(10, decoys=0), SyntheticFGVC(10, decoys=3)
    for index in (2, 5):
        image, label, (x1, y1, x2, y2) = decoyed[index]
        hsv = _hsv_pixels(image).reshape(96, 96, 3)
        pale = (np.abs(hsv[..., 1] - 0.3) < 0.03) & (hsv[..., 2] > 0.7)  # bird-like pixels
        outside = pale.copy()
        outside[int(y1) : int(np.ceil(y2)), int(x1) : int(np.ceil(x2))] = False
        assert outside.sum() > 30  # decoy discs outside the box ...
        assert np.all(np.abs(hsv[..., 0][outside] - 0.07 * label) > 0.03)  # ... none of them in the class hue
        assert plain.boxes[index] == decoyed.boxes[index]


def test_the_default_crops_with_the_inclusive_box_and_the_vit_baseline_composes(make_cfg) -> None:
    assert make_cfg(tiny=False).method.box_rule == "inclusive"
    assert make_cfg("dataset=nabirds", tiny=False).method.box_rule == "official"
    assert make_cfg("method=vit", tiny=False).method.method == "vit"


def test_colour_augmentations_are_turned_off_but_flips_kept() -> None:
    dm = SyntheticDataModule(num_classes=10, train_size=20, test_size=10, image_size=32, num_workers=0)
    augs = dm.effective_augs()
    assert augs.hflip and not augs.trivial_aug and not augs.rand_aug
    dm.setup()
    image, label, box = dm.data_test[0]  # eval splits carry the transformed ground-truth box
    assert image.shape == (3, 32, 32) and box.shape == (4,)
