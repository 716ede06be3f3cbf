"""``bench data --only sources``: one JPEG tree read as files, as parquet and as shards, each row printed with its
rate and its ratio to the files' (tiny: 60 images, 32 px crops, one round)."""

from __future__ import annotations

import re
from pathlib import Path

from glsim_pl.bench.data import main


def test_source_rows_run_and_print_the_three_sources(tmp_path: Path, capsys) -> None:
    main(["--only", "sources", "--images", "60", "--rounds", "1", "--batch-size", "4", "--image-size", "32",
          "--root", str(tmp_path)])  # fmt: skip
    out = capsys.readouterr().out
    rows = {m[1]: float(m[2]) for m in re.finditer(r"^\| (folder|hf|wds): [^|]+\| (\d+) \|", out, re.M)}
    assert set(rows) == {"folder", "hf", "wds"} and all(rate > 0 for rate in rows.values())
    assert re.search(r"^hf / folder per round: median \d+\.\d\dx", out, re.M)
    assert re.search(r"^wds / folder per round: median \d+\.\d\dx", out, re.M)
    assert (tmp_path / "sources_cub_60" / "parquet" / "train.parquet").is_file()
    assert (tmp_path / "sources_cub_60" / "shards" / "info.json").is_file()
