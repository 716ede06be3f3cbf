"""glsim-data: dataset tools. ``convert`` writes any dataset the project reads as WebDataset shards; ``info`` prints
a dataset's classes and split sizes; ``download`` fetches a benchmark's official archives.

    glsim-data convert dataset=cub dataset.root=/data/CUB_200_2011 --to wds --out /scratch/cub-wds --shard-size 1000
    glsim-data info dataset=hf_cub
    glsim-data download cub
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from glsim_pl.errors import UserError

__all__ = ["load_datamodule", "main"]


def load_datamodule(overrides: list[str]) -> Any:
    """The dataset module ``glsim-train <overrides>`` would build (the train config composed with them)."""
    from glsim_pl.config.compose import compose_train
    from glsim_pl.config.groups import transform_augs
    from glsim_pl.config.instantiate import instantiate

    cfg = compose_train(overrides, what="glsim-data: bad overrides")  # paths resolve as in a run
    return instantiate(cfg.dataset, augs=transform_augs(cfg))


def _info(datamodule: Any) -> dict[str, Any]:
    from glsim_pl.data.datasets.wds import WDSDataModule

    datamodule.check()
    out: dict[str, Any] = {"dataset": datamodule.name, "classes": len(datamodule.class_names)}
    if isinstance(datamodule, WDSDataModule):
        splits = datamodule.shard_info["splits"]
        out["splits"] = {s: sum(v["counts"]) if v["counts"] else None for s, v in splits.items()}
        out["shards"] = {s: len(v["urls"]) for s, v in splits.items()}
        out["boxes"] = bool(datamodule.shard_info.get("has_boxes"))
    else:
        splits = datamodule.splits
        _, train, val = datamodule.train_val_split()  # a given val split and the protocol, as training reads them
        out["splits"] = {"train": len(train), "val": len(val), "test": len(splits.test)}
        out["val_split"] = datamodule.val_split
        out["boxes"] = getattr(splits.test, "boxes", None) is not None
    out["first_classes"] = list(datamodule.class_names[:5])
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="glsim-data", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    convert = sub.add_parser("convert", help="write a dataset as WebDataset shards")
    convert.add_argument("overrides", nargs="*", help="dataset config overrides, as for glsim-train")
    convert.add_argument("--to", choices=["wds"], default="wds", help="output format")
    convert.add_argument("--out", required=True, type=Path, help="output folder (must not exist or be empty)")
    convert.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    convert.add_argument("--no-progress", action="store_true", help="no progress bar")
    fetch = sub.add_parser("download", help="download and extract a benchmark's official archives")
    fetch.add_argument("name", help="cub, flowers, pets or food (others: the command says where to get them)")
    fetch.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("GLSIM_DATA_DIR", "data")),
        help="where dataset folders live (paths.data_dir; default $GLSIM_DATA_DIR, else ./data)",
    )
    fetch.add_argument("--base-url", default=None, help="fetch every file from <base-url>/<file name> (a mirror)")
    fetch.add_argument("--no-progress", action="store_true", help="no progress bars")
    info = sub.add_parser("info", help="classes and split sizes of a dataset")
    info.add_argument("overrides", nargs="*", help="dataset config overrides, as for glsim-train")
    args = parser.parse_args(argv)
    try:
        if args.command == "download":
            from glsim_pl.data.download import download

            folder = download(args.name, args.data_dir, not args.no_progress, args.base_url)
            print(f"{args.name}: {folder}")
            return
        overrides = [o for o in args.overrides if "=" in o or o.startswith(("+", "~"))]
        if len(overrides) != len(args.overrides):
            bad = next(o for o in args.overrides if o not in overrides)
            raise UserError(f"glsim-data: {bad!r} is not a config override (expected key=value, e.g. dataset=cub)")
        datamodule = load_datamodule(overrides)
        if args.command == "convert":
            from glsim_pl.data.datasets.wds_convert import write_shards

            written = write_shards(datamodule, args.out, args.shard_size, progress=not args.no_progress)
            sizes = ", ".join(
                f"{s} {sum(v['counts'])} in {len(v['counts'])} shards" for s, v in written["splits"].items()
            )
            print(f"wrote {args.out}: {sizes}; {len(written['class_names'])} classes")
        else:
            print(json.dumps(_info(datamodule), indent=1))
    except UserError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
