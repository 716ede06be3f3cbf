"""The dataset-class example of docs/own_data.md runs as printed."""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image

DOC = Path(__file__).resolve().parents[1] / "docs" / "own_data.md"


def test_dataset_class_example_reads_its_splits(tmp_path: Path) -> None:
    section = DOC.read_text().split("## A dataset class of your own", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    lines = []
    for i in range(8):
        path = tmp_path / f"img_{i}.png"
        Image.new("RGB", (40, 30), (30 * i, 0, 0)).save(path)
        lines.append(f"{path.name} {i % 2} {'test' if i >= 6 else 'train'}")
    (tmp_path / "labels.txt").write_text("\n".join(lines) + "\n")
    dm = namespace["LeavesDataModule"](root=str(tmp_path), image_size=32, batch_size=2, num_workers=0)
    dm.setup("fit")
    assert dm.num_classes == 2 and dm.class_names == ["0", "1"]
    assert len(dm.data_train) + len(dm.data_val) == 6 and len(dm.data_test) == 2
    image, label = dm.data_test[0]
    assert image.shape == (3, 32, 32) and label == 0
