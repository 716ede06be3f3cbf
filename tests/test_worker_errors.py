"""An error raised in a DataLoader worker reaches the user as the same one line as in the main process."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from glsim_pl.errors import UserError, exit_on_user_error, user_message
from glsim_pl.train import train
from tests.helpers.configs import TINY


class _Broken(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> int:
        try:
            raise OSError("image file is truncated")
        except OSError as exc:
            raise UserError(f"/data/img_{index}.jpg: cannot read image ({exc})") from exc


def test_worker_user_error_is_unwrapped() -> None:
    with pytest.raises(UserError) as info:
        next(iter(DataLoader(_Broken(), batch_size=2, num_workers=2)))
    assert "Traceback" in str(info.value)  # what torch re-raises: the worker's traceback inside the message
    assert user_message(info.value) == "/data/img_0.jpg: cannot read image (image file is truncated)"
    assert user_message(UserError("plain")) == "plain"


def test_truncated_jpeg_read_by_a_worker_ends_with_one_line(make_cfg, tmp_path: Path) -> None:
    root = tmp_path / "images"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (40, 40), (40 * i, 100, 0 if label == "a" else 200)).save(root / label / f"{i}.jpg")
    broken = root / "a" / "0.jpg"
    broken.write_bytes(broken.read_bytes()[:200])  # truncated mid-scan
    tiny = [o for o in TINY if "num_workers" not in o and "batch_size" not in o]
    folder = ["dataset=folder", f"dataset.root={root}", "dataset.num_classes=2", "dataset.num_workers=2",
              "dataset.batch_size=2", "logger=none", "callbacks.crop_visualizer=null"]  # fmt: skip
    folder.append("dataset.verify=off")  # the file must reach a loader worker, not the data check
    cfg = make_cfg(*tiny, *folder, tiny=False)
    with pytest.raises(SystemExit) as info:
        exit_on_user_error(train)(cfg)
    message = str(info.value.code)
    assert message.startswith(f"error: {broken}: cannot read image")
    assert "\n" not in message and "Traceback" not in message
