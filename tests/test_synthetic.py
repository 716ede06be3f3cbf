"""The procedural fine-grained set: deterministic, balanced, boxed, and honest about label-changing augmentations."""

from __future__ import annotations

import colorsys

import numpy as np

from glsim_pl.data.synthetic import SyntheticDataModule, SyntheticFGVC


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


def test_the_class_is_the_marking_hue() -> None:
    data = SyntheticFGVC(20, num_classes=10, hue_step=0.07, marking_frac=0.16)
    for index in (0, 3, 9):
        rgb = np.asarray(data[index][0]).reshape(-1, 3).astype(float)
        saturation = (rgb.max(1) - rgb.min(1)) / np.maximum(rgb.max(1), 1)
        vivid = rgb[saturation > 0.7]  # only the marking is that saturated
        assert len(vivid) > 10
        hue = np.median([colorsys.rgb_to_hsv(*(p / 255))[0] for p in vivid])
        assert abs(hue - 0.07 * data.targets[index]) < 0.02


def test_colour_augmentations_are_turned_off_but_flips_kept() -> None:
    dm = SyntheticDataModule(num_classes=10, train_size=20, test_size=10, image_size=32, num_workers=0)
    augs = dm.effective_augs()
    assert augs.hflip and not augs.trivial_aug and not augs.rand_aug
    dm.setup()
    image, label, box = dm.data_test[0]  # eval splits carry the transformed ground-truth box
    assert image.shape == (3, 32, 32) and box.shape == (4,)
