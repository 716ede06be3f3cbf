"""A sweep's jobs -> the table of a paper: one row per setting (jobs that differ only in ``seed``), labelled by the
settings that differ between rows, with mean ± std over seeds, cost columns and Δ to the baseline row.

One result per (setting, seed): a seed run again (a re-run, a resume that wrote its own record) counts once, the most
recently written record is kept and the others are named under the table. Δ compares the seeds both rows have.

Pure functions over the job records (``metrics.json`` dicts, see :mod:`glsim_pl.aggregate`); Markdown, CSV and LaTeX
(booktabs) renderers.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from typing import Any

from glsim_pl.analysis.protocol_text import protocol_text, split_protocols

__all__ = [
    "Job",
    "build_rows",
    "format_params",
    "one_per_seed",
    "render_csv",
    "render_latex",
    "render_markdown",
    "setting_of",
]

Job = dict[str, Any]
_NOT_SETTINGS = ("seed", "hydra.", "paths.", "logger", "callbacks", "trainer.enable_", "ckpt_path", "task_name", "tags")
_ABSENT = "—"
_NOT_CSV = ("label", "by_seed", "base_seeds")  # row entries that are not CSV columns


def setting_of(job: Job) -> dict[str, str]:
    """The overrides that define a job's row: everything but the seed, folders, loggers and display switches."""
    out = {}
    for override in job.get("overrides", []):
        key, _, value = override.lstrip("+~").partition("=")
        if not key.startswith(_NOT_SETTINGS):
            out[key] = value
    return out


def one_per_seed(jobs: list[Job]) -> tuple[list[Job], list[str]]:
    """(one job per (setting, seed), a line per job left out). The kept one is the most recently written record
    (``job["written"]``, the file's time; ties: the later folder), i.e. the re-run or the resume that completed."""
    groups: dict[tuple, list[Job]] = defaultdict(list)
    for job in jobs:
        groups[(tuple(sorted(setting_of(job).items())), _seed_key(job))].append(job)
    kept, notes = [], []
    for (setting, seed), members in groups.items():
        newest = max(enumerate(members), key=lambda item: (item[1].get("written") or 0.0, item[0]))[1]
        kept.append(newest)
        if len(members) > 1:
            dropped = ", ".join(f"`{j.get('dir')}`" for j in members if j is not newest)
            label = " ".join(f"{k}={v}" for k, v in setting) or "(as configured)"
            notes.append(f"{label} seed={seed} has {len(members)} results: kept the newest, `{newest.get('dir')}`; "
                         f"left out {dropped}")  # fmt: skip
    order = {id(job): num for num, job in enumerate(jobs)}
    return sorted(kept, key=lambda job: order[id(job)]), notes


def _config_value(job: Job, key: str) -> str:
    """``method.selector`` read from the job's resolved config (a group choice such as ``method`` reads its name)."""
    node: Any = job.get("config", {})
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    if isinstance(node, dict):  # a config group: its own name key (method.method), else absent
        node = node.get(key.rsplit(".", 1)[-1], _ABSENT)
    return _ABSENT if node in (None, "none") else str(node)


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _pct(job: Job, key: str) -> float | None:
    value = job.get("metrics", {}).get(key)
    return None if value is None else 100.0 * float(value)


def build_rows(jobs: list[Job], metric: str = "test/acc1", baseline: str | None = None,
               pair: str | None = None) -> tuple[list[str], list[dict]]:  # fmt: skip
    """(setting keys that differ between rows, rows). ``baseline``: ``key=value`` pairs (space separated) naming the
    baseline row; None picks the ``method=vit`` row when there is exactly one. Δ = row mean - baseline mean.
    ``pair``: ``key=value`` pairs instead of one baseline: each row is compared with the row that has the same
    labels but these values (``method=vit``: every backbone x regime gets its own GLSim - ViT Δ)."""
    groups: dict[tuple, list[Job]] = defaultdict(list)
    for job in jobs:
        groups[tuple(sorted(setting_of(job).items()))].append(job)
    keys = sorted({k for job in jobs for k in setting_of(job)})
    labels = {g: {k: dict(g).get(k) or _config_value(members[0], k) for k in keys} for g, members in groups.items()}
    differing = [k for k in keys if len({lab[k] for lab in labels.values()}) > 1]
    if pair:  # the command line's order (backbone, regime), the compared setting last
        given = {k: n for n, k in enumerate(dict.fromkeys(k for job in jobs for k in setting_of(job)))}
        differing = sorted(differing, key=lambda k: (k in _pairs(pair), given[k]))
    rows = []
    for g, members in groups.items():
        by_seed = {_seed_key(j): v for j in members if (v := _pct(j, metric)) is not None}
        mean, std = _mean_std(list(by_seed.values()))
        macro_mean, macro_std = _mean_std([v for v in (_pct(j, metric + "_macro") for j in members) if v is not None])
        cost = [j.get("cost") or {} for j in members]
        img_s = [c["fit_img_s"] for c in cost if c.get("fit_img_s")]
        paper = members[0].get("paper") or {}
        rows.append({
            "label": {k: labels[g][k] for k in differing},
            "setting": " ".join(f"{k}={v}" for k, v in labels[g].items() if k in differing and v != _ABSENT)
            or _experiment(members) or "(as configured)",
            "by_seed": by_seed,
            "n": len(members),
            "seeds": " ".join(sorted((str(j.get("seed")) for j in members), key=_seed_order)),
            "acc1_mean": mean, "acc1_std": std, "acc1_macro_mean": macro_mean, "acc1_macro_std": macro_std,
            "gflops": cost[0].get("gflops"),
            "img_s": statistics.fmean(img_s) if img_s else None,
            "paper_acc1": paper.get("acc1"), "paper_std": paper.get("std"),
            "protocol": protocol_text(members[0].get("protocol", {}), members[0].get("config")),
            "trainable": members[0].get("metrics", {}).get("params/trainable"),
            "wall_time_s": round(sum(j.get("wall_time_s", 0.0) for j in members), 1),
        })  # fmt: skip
    bases = _paired_rows(rows, pair) if pair else {id(r): _baseline_row(rows, baseline) for r in rows}
    for row in rows:
        base = bases.get(id(row))
        row["paired"] = bool(pair)
        row["baseline"] = row is base or (bool(pair) and _matches(row, pair))
        row["delta"], row["delta_seeds"] = None, ""
        row["delta_paper"] = row["acc1_mean"] - row["paper_acc1"] if row["paper_acc1"] is not None else None
        row["base_seeds"] = None if base is None or row is base else _seeds(base)
        if base is None or row is base:
            continue
        common = sorted(set(row["by_seed"]) & set(base["by_seed"]), key=_seed_order)
        if common:  # the same seeds on both sides: a seed's luck does not pass for a method's gain
            row["delta"] = statistics.fmean(row["by_seed"][s] - base["by_seed"][s] for s in common)
        if set(row["by_seed"]) != set(base["by_seed"]):
            row["delta_seeds"] = " ".join(common)
    return differing, rows


def _experiment(members: list[Job]) -> str | None:
    """A row that differs from no other (a single row) is named after its experiment."""
    names = {j.get("experiment") for j in members}
    return str(names.pop()) if len(names) == 1 and None not in names else None


def _seeds(row: dict) -> str:
    return " ".join(sorted(row["by_seed"], key=_seed_order)) or "none"


def _seed_key(job: Job) -> str:
    """The seed as a key; a record without one stands for itself."""
    seed = job.get("seed")
    return str(seed) if seed is not None else f"? {job.get('dir', id(job))}"


def _seed_order(seed: str) -> tuple:
    return (0, int(seed), "") if seed.lstrip("-").isdigit() else (1, 0, seed)


def _baseline_row(rows: list[dict], baseline: str | None) -> dict | None:
    if baseline:
        found = [r for r in rows if _matches(r, baseline)]
        if len(found) != 1:
            from glsim_pl.errors import UserError

            choices = "; ".join(r["setting"] for r in rows)
            raise UserError(f"--baseline {baseline!r} matches {len(found)} rows; expected one of: {choices}")
        return found[0]
    vit = [r for r in rows if r["label"].get("method") == "vit"]
    return vit[0] if len(vit) == 1 else None


def _pairs(spec: str) -> dict[str, str]:
    return dict(p.partition("=")[::2] for p in spec.split())


def _matches(row: dict, spec: str) -> bool:
    return all(row["label"].get(k, row["setting"]) == v for k, v in _pairs(spec).items())


def _paired_rows(rows: list[dict], pair: str) -> dict[int, dict | None]:
    """Row id -> the row with the same labels except the ``pair`` keys, which take the ``pair`` values (or None)."""
    want = _pairs(pair)
    if not any(_matches(r, pair) for r in rows):
        from glsim_pl.errors import UserError

        labels = sorted({f"{k}={r['label'].get(k, '?')}" for r in rows for k in want})
        raise UserError(f"--pair {pair!r} matches no row; the rows have {', '.join(labels)}")
    by_label = {tuple(sorted({**r["label"], **want}.items())): r for r in rows if _matches(r, pair)}
    return {id(r): by_label.get(tuple(sorted({**r["label"], **want}.items()))) for r in rows}


def format_params(value: float | None) -> str:
    """A parameter count as the tables print it: 5.56 M, 38.6 k."""
    if value is None:
        return _ABSENT
    return f"{value / 1e6:.2f} M" if value >= 1e5 else f"{value / 1e3:.1f} k"


def _pm(mean: float | None, std: float | None, digits: int = 2) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std is not None else f"{mean:.{digits}f}"


def _gflops(value: float | None) -> str:
    return "n/a" if value is None else (f"{value:.2f}" if value >= 1 else f"{value:.3g}")


def _cells(keys: list[str], rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and cells shared by Markdown and LaTeX; columns only where some row has a value."""
    any_paper = any(r["paper_acc1"] is not None for r in rows)
    any_img_s = any(r["img_s"] for r in rows)
    any_base = any(r["baseline"] for r in rows)
    any_params = any(r.get("trainable") is not None for r in rows)
    show_protocol = len({r["protocol"] for r in rows}) > 1 or any(r.get("paired") for r in rows)
    header = [*(keys or ["setting"]), "n", "top-1 (%)", "macro top-1 (%)", "GFLOPs/img"]
    header += ["trainable params"] * any_params
    header += ["fit img/s"] * any_img_s + ["Δ top-1"] * any_base + ["paper (%)", "Δ paper"] * any_paper
    header += ["protocol"] * show_protocol
    own_protocol = split_protocols(rows)[1]
    table = []
    for r in rows:
        cells = [r["label"][k] for k in keys] if keys else [r["setting"]]
        cells += [str(r["n"]), _pm(r["acc1_mean"], r["acc1_std"]), _pm(r["acc1_macro_mean"], r["acc1_macro_std"])]
        cells.append(_gflops(r["gflops"]))
        if any_params:
            cells.append(format_params(r.get("trainable")))
        if any_img_s:
            cells.append(f"{r['img_s']:.1f}" if r["img_s"] else _ABSENT)
        if any_base:
            cells.append("baseline" if r["baseline"] else (f"{r['delta']:+.2f}" if r["delta"] is not None else "n/a"))
        if any_paper:
            paper = r["paper_acc1"] is not None
            cells += [_pm(r["paper_acc1"], r["paper_std"]) if paper else _ABSENT,
                      f"{r['delta_paper']:+.2f}" if r["delta_paper"] is not None else _ABSENT]  # fmt: skip
        if show_protocol:
            cells.append(own_protocol[id(r)] or _ABSENT)
        table.append(cells)
    return header, table


def _notes(rows: list[dict], failed: list[Job], missing: list[str], metric: str, repeats: list[str]) -> list[str]:
    lines = [f"top-1: `{metric}`, mean ± sample std over the n seeds of a row; GFLOPs: analytic, per image."]
    if any(r.get("paired") for r in rows):
        lines.append("Δ top-1: per row, mean over the seeds both have of (row - its baseline), the baseline being the "
                     "row with the same other settings marked `baseline`.")  # fmt: skip
    elif any(r["baseline"] for r in rows):
        lines.append("Δ top-1: mean over the seeds the row and the baseline both have of (row - baseline).")
    for r in rows:
        if r.get("base_seeds") is not None and _seeds(r) != r["base_seeds"]:
            over = f"over seeds {r['delta_seeds']} only" if r["delta_seeds"] else "n/a: no seed in common"
            lines.append(f"Seed sets differ: {r['setting']} has seeds {_seeds(r)}, the baseline {r['base_seeds']}; "
                         f"its Δ is {over}.")  # fmt: skip
    if any(r.get("trainable") is not None for r in rows):
        lines.append("trainable params: parameters the optimizer updates (`params/trainable` of the job's record).")
    if any(r["img_s"] for r in rows):
        lines.append("fit img/s: training images / fit wall time (validation included), as recorded by the job.")
    common = split_protocols(rows)[0]
    if common:
        lines.append(f"Protocol (every row): {'; '.join(common)}" + ("." if len({r['protocol'] for r in rows}) == 1
                     else "; the protocol column shows the rest."))  # fmt: skip
    if repeats:
        lines += ["", "Seeds with more than one result (each counted once):", ""]
        lines += [f"- {line}" for line in repeats]
    if failed or missing:
        lines += ["", "Failed or missing jobs (not in the table):", ""]
        lines += [f"- `{j['dir']}` ({' '.join(j.get('overrides', []) or ['?'])}): {j['error']}" for j in failed]
        lines += [f"- missing: {m}" for m in missing]
    return lines


def render_markdown(keys: list[str], rows: list[dict], failed: list[Job], missing: list[str], metric: str,
                    repeats: list[str] = ()) -> str:  # fmt: skip
    header, table = _cells(keys, rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table]
    return "\n".join([*lines, "", *_notes(rows, failed, missing, metric, list(repeats))]) + "\n"


def _tex(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"), ("$", r"\$")):
        text = text.replace(a, b)
    return text.replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("—", "--")


def render_latex(keys: list[str], rows: list[dict]) -> str:
    """A booktabs ``tabular`` (needs ``\\usepackage{booktabs}``); settings left-aligned, numbers right-aligned."""
    header, table = _cells(keys, rows)
    left = len(keys or ["setting"])
    spec = "l" * left + "r" * (len(header) - left)
    lines = [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(map(_tex, header)) + r" \\", r"\midrule"]
    lines += [" & ".join(map(_tex, cells)) + r" \\" for cells in table]
    return "\n".join([*lines, r"\bottomrule", r"\end{tabular}"]) + "\n"


def render_csv(keys: list[str], rows: list[dict]) -> str:
    """Raw numbers, one row per setting (the label keys as columns)."""
    fields = [*keys, "setting", "n", "seeds", "acc1_mean", "acc1_std", "acc1_macro_mean", "acc1_macro_std", "gflops",
              "img_s", "trainable", "baseline", "delta", "delta_seeds", "paper_acc1", "paper_std", "delta_paper",
              "protocol", "wall_time_s"]  # fmt: skip
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow(
            {
                **r["label"],
                **{k: ("" if v is None else v) for k, v in r.items() if k not in _NOT_CSV},
            }
        )
    return buffer.getvalue()
