"""Tiny dataset trees in each official layout (generated images, real metadata formats and quirks) for the tests.

Every builder writes 3 classes with 5 train and 2 test images each (40x30 px) under ``tmp`` and returns a
:class:`Tree` with what the parser must find: labels in official order, class names, boxes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat

from glsim_pl.config.groups import transform_augs
from glsim_pl.config.instantiate import instantiate
from tests.helpers.configs import TINY

N_TRAIN, N_TEST = 5, 2  # images per class and split
SIZE = (40, 30)


@dataclass
class Tree:
    root: Path
    num_classes: int
    class_names: list[str]
    train_labels: list[int]  # in official order
    test_labels: list[int]
    test_boxes: list[tuple[float, float, float, float]] | None = None
    overrides: list[str] = field(default_factory=list)  # extra Hydra overrides the dataset needs


def write_image(path: Path, seed: int = 0, size: tuple[int, int] = SIZE) -> Path:
    """A small noisy RGB image; the format follows the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def truncate(path: Path) -> None:
    """Cut a file to a third: a JPEG that starts fine and ends early (a broken download)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _rows(n: int) -> list[tuple[int, int]]:
    """(class 0..2, k) for n images per class, class-major (the order most official lists use)."""
    return [(c, k) for c in range(3) for k in range(n)]


def _box(c: int, k: int) -> tuple[float, float, float, float]:
    return (1.0 + c, 2.0 + k, 30.0 - c, 25.0 - k)


def _cell(strings: list[str]) -> np.ndarray:
    """A MATLAB (N, 1) cell array of strings, as the official lists store file names."""
    cell = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        cell[i, 0] = s
    return cell


def _struct_array(records: list[dict]) -> np.ndarray:
    """A MATLAB (1, N) struct array, as the Stanford Cars annotation files store one struct per image."""
    dtype = [(k, object) for k in records[0]]
    array = np.zeros((1, len(records)), dtype=dtype)
    for i, record in enumerate(records):
        for k, v in record.items():
            array[0, i][k] = v
    return array


def birds(tmp: Path, nabirds: bool = False) -> Tree:
    """CUB / NABirds text files; NABirds class ids are non-contiguous and classes.txt lists inner nodes too."""
    root = tmp / ("nabirds" if nabirds else "CUB_200_2011")
    ids = ["0295", "0313", "1010"] if nabirds else ["1", "2", "3"]
    raw = ["Cooper's Hawk", "Bald Eagle", "Wood Duck"] if nabirds else ["001.Albatross", "002.Auklet", "003.Ani"]
    lines = {"images": [], "labels": [], "split": [], "boxes": []}
    train, test, boxes = [], [], []
    for image_id, (c, k) in enumerate(_rows(N_TRAIN + N_TEST), start=1):
        rel = f"{ids[c]}/img_{c}_{k}.jpg"
        write_image(root / "images" / rel, image_id)
        is_train = k < N_TRAIN
        x1, y1, x2, y2 = _box(c, k)
        lines["images"].append(f"{image_id} {rel}")
        lines["labels"].append(f"{image_id} {ids[c]}")
        lines["split"].append(f"{image_id} {int(is_train)}")
        lines["boxes"].append(f"{image_id} {x1} {y1} {x2 - x1} {y2 - y1}")
        (train if is_train else test).append(c)
        if not is_train:
            boxes.append((x1, y1, x2, y2))
    classes = [f"{i} {n}" for i, n in zip(ids, raw, strict=True)] + (["0001 Birds (inner node)"] if nabirds else [])
    for name, rows in (
        ("images", lines["images"]),
        ("image_class_labels", lines["labels"]),
        ("train_test_split", lines["split"]),
        ("bounding_boxes", lines["boxes"]),
        ("classes", classes),
    ):
        (root / f"{name}.txt").write_text("\n".join(rows) + "\n")
    names = raw if nabirds else ["Albatross", "Auklet", "Ani"]
    return Tree(root, 3, names, train, test, boxes)


def cars_annos(tmp: Path) -> Tree:
    """``car_ims/`` + ``cars_annos.mat``: all images in one struct array with a test flag, 1-based classes."""
    root, names = tmp / "stanford_cars", ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Audi R8 Coupe 2012"]
    records, train, test, boxes = [], [], [], []
    for i, (c, k) in enumerate(_rows(N_TRAIN + N_TEST)):
        write_image(root / "car_ims" / f"{i + 1:06d}.jpg", i)
        is_test = k >= N_TRAIN
        x1, y1, x2, y2 = _box(c, k)
        records.append(dict(relative_im_path=f"car_ims/{i + 1:06d}.jpg", bbox_x1=x1, bbox_y1=y1, bbox_x2=x2,
                            bbox_y2=y2, **{"class": c + 1}, test=int(is_test)))  # fmt: skip
        (test if is_test else train).append(c)
        if is_test:
            boxes.append((x1, y1, x2, y2))
    savemat(root / "cars_annos.mat", {"annotations": _struct_array(records), "class_names": np.array([names], object)})
    return Tree(root, 3, names, train, test, boxes, ["dataset=cars"])


def cars_devkit(tmp: Path) -> Tree:
    """``cars_train/``, ``cars_test/`` + devkit ``.mat`` files + ``cars_test_annos_withlabels.mat`` at the root."""
    root, names = tmp / "stanford_cars", ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Audi R8 Coupe 2012"]
    labels, boxes = {"train": [], "test": []}, []
    for split, n, mat in (("train", N_TRAIN, "devkit/cars_train_annos.mat"),
                          ("test", N_TEST, "cars_test_annos_withlabels.mat")):  # fmt: skip
        records = []
        for i, (c, k) in enumerate(_rows(n)):
            write_image(root / f"cars_{split}" / f"{i + 1:05d}.jpg", i)
            x1, y1, x2, y2 = _box(c, k)
            records.append(dict(bbox_x1=x1, bbox_y1=y1, bbox_x2=x2, bbox_y2=y2, **{"class": c + 1},
                                fname=f"{i + 1:05d}.jpg"))  # fmt: skip
            labels[split].append(c)
            if split == "test":
                boxes.append((x1, y1, x2, y2))
        (root / mat).parent.mkdir(parents=True, exist_ok=True)
        savemat(root / mat, {"annotations": _struct_array(records)})
    savemat(root / "devkit/cars_meta.mat", {"class_names": np.array([names], object)})
    return Tree(root, 3, names, labels["train"], labels["test"], boxes, ["dataset=cars"])


def aircraft(tmp: Path) -> Tree:
    """``data/variants.txt`` is not sorted; labels must follow the sorted variant names (the official GLSim order)."""
    data = tmp / "fgvc-aircraft-2013b" / "data"
    variants = ["DC-3", "A320", "Cessna 172"]  # sorted: A320, Cessna 172, DC-3
    sorted_label = {v: i for i, v in enumerate(sorted(variants))}
    (data / "variants.txt").parent.mkdir(parents=True)
    (data / "variants.txt").write_text("\n".join(variants) + "\n")
    labels, boxes, box_rows, image_id = {"trainval": [], "test": []}, [], [], 1000000
    for split, n in (("trainval", N_TRAIN), ("test", N_TEST)):
        rows = []
        for c, k in _rows(n):
            image_id += 1
            write_image(data / "images" / f"{image_id}.jpg", image_id)
            rows.append(f"{image_id} {variants[c]}")
            labels[split].append(sorted_label[variants[c]])
            box_rows.append(f"{image_id} " + " ".join(str(int(v)) for v in _box(c, k)))
            if split == "test":
                boxes.append(_box(c, k))
        (data / f"images_variant_{split}.txt").write_text("\n".join(rows) + "\n")
    (data / "images_box.txt").write_text("\n".join(box_rows) + "\n")
    return Tree(tmp / "fgvc-aircraft-2013b", 3, sorted(variants), labels["trainval"], labels["test"], boxes,
                ["dataset=aircraft"])  # fmt: skip


def dogs(tmp: Path) -> Tree:
    """``*_list.mat`` (cells of paths, 1-based labels), ``Images/`` and VOC-XML ``Annotation/`` (one has 2 dogs)."""
    root, folders = tmp / "stanford_dogs", ["n02085620-Chihuahua", "n02085782-Japanese_spaniel", "n02116738-dhole"]
    labels, boxes = {"train": [], "test": []}, []
    for split, n, offset in (("train", N_TRAIN, 0), ("test", N_TEST, 100)):
        files, annotations = [], []
        for c, k in _rows(n):
            stem = f"{folders[c].split('-')[0]}_{offset + k}"
            write_image(root / "Images" / folders[c] / f"{stem}.jpg", offset + 10 * c + k)
            x1, y1, x2, y2 = _box(c, k)
            objects = [(x1, y1, x2, y2)] + ([(0.0, 20.0, 10.0, 29.0)] if (split, c, k) == ("test", 0, 0) else [])
            xml = "".join(f"<object><name>dog</name><bndbox><xmin>{a:g}</xmin><ymin>{b:g}</ymin><xmax>{d:g}</xmax>"
                          f"<ymax>{e:g}</ymax></bndbox></object>" for a, b, d, e in objects)  # fmt: skip
            ann = root / "Annotation" / folders[c] / stem
            ann.parent.mkdir(parents=True, exist_ok=True)
            ann.write_text(f"<annotation><filename>%s</filename>{xml}</annotation>")
            files.append(f"{folders[c]}/{stem}.jpg")
            annotations.append(f"{folders[c]}/{stem}")
            labels[split].append(c)
            if split == "test":
                x1s, y1s, x2s, y2s = zip(*objects, strict=True)
                boxes.append((min(x1s), min(y1s), max(x2s), max(y2s)))
        savemat(root / f"{split}_list.mat", {"file_list": _cell(files), "annotation_list": _cell(annotations),
                                             "labels": np.array([[c + 1.0] for c in labels[split]])})  # fmt: skip
    return Tree(root, 3, ["Chihuahua", "Japanese_spaniel", "dhole"], labels["train"], labels["test"], boxes,
                ["dataset=dogs"])  # fmt: skip


def pets(tmp: Path) -> Tree:
    """``annotations/{trainval,test}.txt``: ``<image> <class 1..37> <species> <breed id>`` rows."""
    root, breeds = tmp / "oxford-iiit-pet", ["Abyssinian", "american_bulldog", "great_pyrenees"]
    labels = {"trainval": [], "test": []}
    (root / "annotations").mkdir(parents=True)
    for split, n, offset in (("trainval", N_TRAIN, 0), ("test", N_TEST, 100)):
        rows = []
        for c, k in _rows(n):
            write_image(root / "images" / f"{breeds[c]}_{offset + k}.jpg", offset + 10 * c + k)
            rows.append(f"{breeds[c]}_{offset + k} {c + 1} {1 if c == 0 else 2} {k + 1}")
            labels[split].append(c)
        (root / "annotations" / f"{split}.txt").write_text("\n".join(rows) + "\n")
    names = ["Abyssinian", "American Bulldog", "Great Pyrenees"]
    return Tree(root, 3, names, labels["trainval"], labels["test"], None, ["dataset=pets"])


def flowers(tmp: Path) -> Tree:
    """``imagelabels.mat`` (1-based labels of image_00001.jpg...) and ``setid.mat`` (trnid, valid, tstid)."""
    from torchvision.datasets import Flowers102

    root = tmp / "flowers-102"
    n_train = 2  # per class in trnid and in valid (the official split has 10 + 10)
    ids = {"trnid": [], "valid": [], "tstid": []}
    labels, image_id = [], 0
    for c in range(3):
        for split, n in (("tstid", N_TEST), ("valid", n_train), ("trnid", n_train)):  # ids interleave splits
            for _ in range(n):
                image_id += 1
                write_image(root / "jpg" / f"image_{image_id:05d}.jpg", image_id)
                ids[split].append(image_id)
                labels.append(c + 1)
    savemat(root / "imagelabels.mat", {"labels": np.array([labels], np.uint8)})
    savemat(root / "setid.mat", {k: np.array([v], np.uint16) for k, v in ids.items()})
    label_of = dict(zip(range(1, image_id + 1), labels, strict=True))
    train = [label_of[i] - 1 for i in ids["trnid"] + ids["valid"]]
    test = [label_of[i] - 1 for i in ids["tstid"]]
    return Tree(root, 102, list(Flowers102.classes), train, test, None, ["dataset=flowers"])


def food(tmp: Path) -> Tree:
    """``meta/{train,test}.json``: {class: ["class/id", ...]}; classes sorted alphabetically."""
    root, classes = tmp / "food-101", ["apple_pie", "baby_back_ribs", "waffles"]
    (root / "meta").mkdir(parents=True)
    labels = {"train": [], "test": []}
    for split, n, offset in (("train", N_TRAIN, 0), ("test", N_TEST, 100)):
        meta = {}
        for c, k in _rows(n):
            write_image(root / "images" / classes[c] / f"{offset + k}.jpg", offset + 10 * c + k)
            meta.setdefault(classes[c], []).append(f"{classes[c]}/{offset + k}")
            labels[split].append(c)
        (root / "meta" / f"{split}.json").write_text(json.dumps(meta))
    return Tree(root, 3, classes, labels["train"], labels["test"], None, ["dataset=food"])


def inat17(tmp: Path) -> Tree:
    """COCO-style ``train2017.json`` / ``val2017.json``; file_name starts with ``train_val_images/``."""
    root = tmp / "inat17"
    species = [("Plantae", "Abies concolor"), ("Aves", "Anas crecca"), ("Insecta", "Apis mellifera")]
    categories = [{"id": c, "name": name, "supercategory": sup} for c, (sup, name) in enumerate(species)][::-1]
    labels, image_id = {"train": [], "val": []}, 0
    for split, n in (("train", N_TRAIN), ("val", N_TEST)):
        images, annotations = [], []
        for c, k in _rows(n):
            image_id += 1
            sup, name = species[c]
            file_name = f"train_val_images/{sup}/{name}/{split}_{k}.jpg"
            write_image(root / file_name, image_id)
            images.append({"id": image_id, "file_name": file_name, "width": SIZE[0], "height": SIZE[1]})
            annotations.append({"id": 10 * image_id, "image_id": image_id, "category_id": c})
            labels[split].append(c)
        content = {"images": images, "annotations": annotations[::-1], "categories": categories}
        (root / f"{split}2017.json").write_text(json.dumps(content))
    return Tree(root, 3, [name for _, name in species], labels["train"], labels["val"], None, ["dataset=inat17"])


def vegfru(tmp: Path) -> Tree:
    """``vegfru_list/vegfru_{train,val,test}.txt``: ``<relative path> <0-based label>``; vegetables then fruits."""
    root, classes = tmp / "vegfru", ["veg200_images/amaranth", "veg200_images/basil", "fru92_images/apple"]
    (root / "vegfru_list").mkdir(parents=True)
    labels = {"train": [], "val": [], "test": []}
    for split, n in (("train", 4), ("val", 1), ("test", N_TEST)):
        rows = []
        for c, k in _rows(n):
            rel = f"{classes[c]}/{split}_{k}.jpg"
            write_image(root / rel, 100 * len(split) + 10 * c + k)
            rows.append(f"{rel} {c}")
            labels[split].append(c)
        (root / "vegfru_list" / f"vegfru_{split}.txt").write_text("\n".join(rows) + "\n")
    return Tree(root, 3, ["amaranth", "basil", "apple"], labels["train"] + labels["val"], labels["test"], None,
                ["dataset=vegfru"])  # fmt: skip


def ufg(tmp: Path, cotton: bool = False) -> Tree:
    """Flat folder of ``<class>_<k>_<split>.png`` (1-based class); written in shuffled order on purpose."""
    name, folder = ("cotton", "cotton_square_new") if cotton else ("soylocal", "soybean200_square")
    root = tmp / name
    for c, k in reversed(_rows(N_TRAIN + N_TEST)):
        split = "train" if k < N_TRAIN else "test"
        write_image(root / folder / f"{c + 1}_{k + 1}_{split}.png", 10 * c + k)
    train, test = [c for c, _ in _rows(N_TRAIN)], [c for c, _ in _rows(N_TEST)]
    return Tree(root, 3, ["1", "2", "3"], train, test, None, ["dataset=cotton" if cotton else "dataset=soy"])


def folder(tmp: Path, separate_test: bool = False) -> Tree:
    """ImageFolder tree(s); without a test tree the last 20% of each class's sorted files are the test split."""
    root, classes = tmp / "mine", ["blue_jay", "cardinal", "robin"]
    n = N_TRAIN if separate_test else N_TRAIN + N_TEST
    for c, k in _rows(n):
        write_image(root / classes[c] / f"{k:02d}.jpg", 10 * c + k)
    overrides = ["dataset=folder"]
    if separate_test:
        for c, k in _rows(N_TEST):
            write_image(tmp / "mine_test" / classes[c] / f"{k:02d}.jpg", 100 + 10 * c + k)
        overrides.append(f"dataset.test_root={tmp / 'mine_test'}")
    else:
        overrides.append("dataset.test_fraction=0.3")  # int(7 * 0.7) = 4 train + 3 test
    test_n = N_TEST if separate_test else 3
    train = [c for c in range(3) for _ in range(n - (0 if separate_test else test_n))]
    return Tree(root, 3, classes, train, [c for c in range(3) for _ in range(test_n)], None, overrides)


def csv_split(tmp: Path) -> Tree:
    """``train_val.csv`` / ``test.csv`` with ``class_id,dir`` rows and ``classid_classname.csv`` (official GLSim)."""
    root, names = tmp / "daf", ["Asuka", "Rei", "Misato"]
    rows = {"train_val": ["class_id,dir"], "test": ["class_id,dir"]}
    labels = {"train_val": [], "test": []}
    for split, n in (("train_val", N_TRAIN), ("test", N_TEST)):
        for c, k in _rows(n):
            rel = f"{c:04d}/{split}_{k}.jpg"
            write_image(root / "images" / rel, 10 * c + k)
            rows[split].append(f"{c},{rel}")
            labels[split].append(c)
        (root / f"{split}.csv").write_text("\n".join(rows[split]) + "\n")
    (root / "classid_classname.csv").write_text("class_id,class_name\n" + "".join(f"{i},{n}\n" for i, n in
                                                                                   enumerate(names)))  # fmt: skip
    return Tree(root, 3, names, labels["train_val"], labels["test"], None, ["dataset=csv"])


TREES: dict[str, Callable[[Path], Tree]] = {
    "cub": lambda tmp: _with(birds(tmp), "dataset=cub"),
    "nabirds": lambda tmp: _with(birds(tmp, nabirds=True), "dataset=nabirds"),
    "cars_annos": cars_annos,
    "cars_devkit": cars_devkit,
    "aircraft": aircraft,
    "dogs": dogs,
    "pets": pets,
    "flowers": flowers,
    "food": food,
    "inat17": inat17,
    "vegfru": vegfru,
    "soy": ufg,
    "cotton": lambda tmp: ufg(tmp, cotton=True),
    "folder": folder,
    "folder_separate_test": lambda tmp: folder(tmp, separate_test=True),
    "csv": csv_split,
}


def _with(tree: Tree, *overrides: str) -> Tree:
    tree.overrides = [*overrides, *tree.overrides]
    return tree


def build_datamodule(make_cfg, tree: Tree, *extra: str):
    """(config, data module) composed through the real Hydra configs for this tree."""
    cfg = make_cfg(*TINY, *tree.overrides, f"dataset.root={tree.root}", f"dataset.num_classes={tree.num_classes}",
                   "logger=none", "callbacks=none", *extra, tiny=False)  # fmt: skip
    return cfg, instantiate(cfg.dataset, augs=transform_augs(cfg))


def write_vpt_splits(make_cfg, tree: Tree, image_dir: str, out: Path | None = None) -> dict[str, dict[str, int]]:
    """VPT split files for ``tree`` in ``out`` (default: its root), made from its official lists: per class the last
    official train image -> val.json, the rest -> train.json, the official test -> test.json. The JSON class of
    official class c is 7 * (K - 1 - c) + 3: non-contiguous and in reverse order, as VPT's renumbering must undo."""
    _, dm = build_datamodule(make_cfg, tree)
    splits, base, k = dm.splits, tree.root / image_dir, len(dm.splits.class_names)
    last = {s.label: i for i, s in enumerate(splits.train.samples)}  # the last train image of each class
    lists: dict[str, dict[str, int]] = {"train": {}, "val": {}, "test": {}}
    for split, source in (("train", splits.train), ("test", splits.test)):
        for i, sample in enumerate(source.samples):
            name = "val" if split == "train" and last[sample.label] == i else split
            lists[name][sample.path.relative_to(base).as_posix()] = 7 * (k - 1 - sample.label) + 3
    folder = out or tree.root
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in lists.items():
        (folder / f"{split}.json").write_text(json.dumps(rows))
    return lists


__all__ = ["build_datamodule", "write_vpt_splits"]
