"""A CUB-200-2011-layout folder of generated real-size JPEGs, for benchmarks of the real data path (``bench train``).

Images are smooth colour fields with blobs and mild noise, so they compress and decode like photographs (pure noise
would be several times larger and slower to decode than a real CUB image).
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["write_cub_tree"]

_TABLES = ("images", "image_class_labels", "train_test_split", "bounding_boxes", "classes")


def _write_one(args: tuple[Path, int, int, int]) -> None:
    path, seed, width, height = args
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.empty((height, width, 3), np.float32)
    for c in range(3):  # a random gradient per channel
        a, b, base = rng.uniform(-0.4, 0.4, 3)
        image[..., c] = 128 + 100 * base + a * (xx - width / 2) * 200 / width + b * (yy - height / 2) * 200 / height
    for _ in range(6):  # soft blobs: edges at several scales, as objects give
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.05, 0.3) * min(width, height)
        mask = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
        image = image * (1 - mask) + mask * rng.uniform(0, 255, 3)
    image += rng.normal(0, 6, image.shape)  # texture
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path, quality=90)


def write_cub_tree(root: Path, num_images: int, num_classes: int, size: tuple[int, int] = (500, 375),
                   workers: int = 8) -> Path:  # fmt: skip
    """Write ``num_images`` JPEGs of ``size`` (width, height) over ``num_classes`` classes in CUB's layout, 90 % of
    them in the train split (a benchmark wants long epochs).

    Returns ``root`` (pass it as ``dataset=cub dataset.root=<root> dataset.num_classes=<num_classes>``). An existing
    tree with the same image count is reused.
    """
    root = Path(root)
    done = root / "images.txt"
    if done.is_file() and len(done.read_text().splitlines()) == num_images:
        return root
    rows: dict[str, list[str]] = {name: [] for name in _TABLES}
    jobs = []
    for i in range(num_images):
        image_id, label = i + 1, i % num_classes + 1
        rel = f"{label:03d}.class_{label}/img_{image_id:06d}.jpg"
        jobs.append((root / "images" / rel, image_id, size[0], size[1]))
        rows["images"].append(f"{image_id} {rel}")
        rows["image_class_labels"].append(f"{image_id} {label}")
        rows["train_test_split"].append(f"{image_id} {int((i // num_classes) % 10 != 0)}")
        rows["bounding_boxes"].append(f"{image_id} {size[0] / 4} {size[1] / 4} {size[0] / 2} {size[1] / 2}")
    rows["classes"] = [f"{c} {c:03d}.class_{c}" for c in range(1, num_classes + 1)]
    with ProcessPoolExecutor(max(workers, 1)) as pool:
        list(pool.map(_write_one, jobs, chunksize=16))
    for name in _TABLES:  # images.txt last: its presence marks a complete tree
        if name != "images":
            (root / f"{name}.txt").write_text("\n".join(rows[name]) + "\n")
    done.write_text("\n".join(rows["images"]) + "\n")
    return root
