"""A sweep folder -> the table of a paper: ``results/<name>.{md,csv,tex}`` and a figure.

    glsim-aggregate multirun/2026-01-01/12-00-00                       # any sweep (nested sweeps too)
    python -m glsim_pl.aggregate multirun/reproduce/cub --out results --name cub --baseline method=vit

Each training job writes ``<output_dir>/metrics.json`` (``write_run_record``, rank 0): metrics, cost (analytic GFLOPs
per image, fit img/s), wall time, device, git commit, the protocol and the resolved config; a job that fails writes
``failed.json`` with its error line. Jobs that differ only in ``seed`` form one row (mean ± sample std over seeds),
labelled by the settings that differ between rows; Δ top-1 is against the baseline row (``--baseline key=value``;
default: the ``method=vit`` row if there is one), or per row with ``--pair method=vit`` (each backbone x regime
against its own ViT row: ``make foundation``). Failed jobs and seeds missing from a row are listed under the table;
the protocol is a column when rows differ in it, a note otherwise. The paper's number (an experiment's ``paper:``
node) is shown for paper rows only.
"""

from __future__ import annotations

import argparse

from glsim_pl.analysis.aggregate import METRIC, aggregate
from glsim_pl.errors import UserError
from glsim_pl.plots import check_formats

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="glsim-aggregate", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", help="a Hydra multirun folder (jobs with metrics.json below it, any depth)")
    parser.add_argument("--out", default="results", help="where <name>.md/.csv/.tex and the figure go")
    parser.add_argument("--name", default=None, help="file name (default: the experiment, task or folder name)")
    parser.add_argument("--metric", default=METRIC, help=f"the accuracy of the rows (default: {METRIC})")
    parser.add_argument("--baseline", default=None, help="key=value ...: the baseline row (default: method=vit)")
    parser.add_argument(
        "--pair",
        default=None,
        help="key=value ...: each row's Δ against the row with the same other "
        "settings and these values, e.g. method=vit (GLSim - ViT per backbone x regime)",
    )
    parser.add_argument("--formats", default="png", help="figure formats, comma-separated: png,pdf,svg ('' = none)")
    args = parser.parse_args(argv)
    try:
        formats = check_formats(args.formats) if args.formats else []
        for path in aggregate(args.sweep_dir, args.out, args.name, formats, args.metric, args.baseline, pair=args.pair):
            print(f"wrote {path}")
    except UserError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
