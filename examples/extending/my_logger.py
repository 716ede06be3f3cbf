"""A logger of your own: every logged metric as one JSON line in ``<save_dir>/metrics.jsonl``."""

import json
from pathlib import Path

from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only


class JsonLinesLogger(Logger):
    def __init__(self, save_dir: str) -> None:
        super().__init__()
        self.path = Path(save_dir) / "metrics.jsonl"

    @property
    def name(self) -> str:
        return "jsonl"

    @property
    def version(self) -> int:
        return 0

    @rank_zero_only
    def log_hyperparams(self, params) -> None:  # the resolved config arrives here; this logger keeps metrics only
        pass

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
