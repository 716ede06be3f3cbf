"""Figures: the numbers that go into each plot, and each written file is a valid image of the expected size."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from matplotlib.container import BarContainer
from PIL import Image

from glsim_pl.errors import UserError
from glsim_pl.plots import check_formats, ellipsize, figure_to_array, save_figure, tick_indices
from glsim_pl.plots.classes import (
    confused_pairs_figure,
    confusion_figure,
    per_class_accuracy_figure,
    row_normalised,
    sorted_accuracy,
    top_confused_pairs,
    write_pairs_csv,
)
from glsim_pl.plots.cost import accuracy_cost_figure, accuracy_cost_points, model_cost_figure, reproduction_figure

NAMES = ["cardinal", "blue_jay", "crow", "raven"]
# rows: true, columns: predicted. crow -> raven 5 times (of 10) is the top confusion; raven -> crow 3 (of 8) next
CONFUSION = np.array([[9, 1, 0, 0], [0, 10, 0, 0], [0, 0, 5, 5], [0, 0, 3, 5]])


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.verify()  # a truncated or non-PNG file raises here
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_top_confused_pairs_ranks_off_diagonal_cells() -> None:
    pairs = top_confused_pairs(CONFUSION, NAMES, k=10)
    assert [(p["true_name"], p["pred_name"], p["count"]) for p in pairs] == [
        ("crow", "raven", 5), ("raven", "crow", 3), ("cardinal", "blue_jay", 1)]  # fmt: skip
    assert [p["rank"] for p in pairs] == [1, 2, 3]
    assert pairs[1]["rate"] == pytest.approx(3 / 8)
    assert top_confused_pairs(CONFUSION, NAMES, k=1)[0]["pred_id"] == 3
    assert top_confused_pairs(np.eye(3, dtype=int) * 4, ["a", "b", "c"]) == []  # no mistakes, no pairs


def test_pairs_csv_round_trips(tmp_path: Path) -> None:
    path = write_pairs_csv(top_confused_pairs(CONFUSION, NAMES), tmp_path / "pairs.csv")
    rows = list(csv.DictReader(path.open()))
    assert rows[0]["true_name"] == "crow" and rows[0]["count"] == "5"
    assert float(rows[0]["rate"]) == pytest.approx(0.5)


def test_row_normalised_and_sorted_accuracy() -> None:
    norm = row_normalised(np.array([[3, 1], [0, 0]]))
    assert norm.tolist() == [[0.75, 0.25], [0.0, 0.0]]  # an empty row stays zero, never NaN
    assert sorted_accuracy([0.5, float("nan"), 0.25], ["a", "b", "c"]) == [("c", 0.25), ("a", 0.5)]


def test_tick_thinning_and_ellipsis() -> None:
    assert tick_indices(10, 60) == list(range(10))
    ticks = tick_indices(555, 60)
    assert len(ticks) <= 60 and ticks[0] == 0 and ticks[1] - ticks[0] == 10
    short = ellipsize("Black_footed_Albatross_of_the_north_pacific", 22)
    assert len(short) == 22 and short.startswith("Black_foot") and short.endswith("pacific")
    assert ellipsize("crow") == "crow"


def test_confusion_figure_at_555_classes_is_thinned_with_a_colour_bar(tmp_path: Path) -> None:
    k = 555
    rng = np.random.default_rng(0)
    counts = rng.poisson(0.05, (k, k)) + np.diag(rng.integers(5, 20, k))
    names = [f"a_rather_long_class_name_number_{i}" for i in range(k)]
    fig = confusion_figure(counts, names)
    heat, bar = fig.axes
    assert heat.images[0].get_array().shape == (k, k)
    np.testing.assert_allclose(heat.images[0].get_array(), row_normalised(counts))
    labels = [t.get_text() for t in heat.get_yticklabels()]
    assert len(labels) <= 60 and all(len(t) <= 24 for t in labels)
    assert bar.get_ylabel().startswith("fraction of the true class")
    assert fig.get_figheight() == 16  # about 4 px per class at 150 dpi
    small = confusion_figure(CONFUSION, NAMES)  # side 6 + 4/40 in, plus 1.2 in for the colour bar
    (png,) = save_figure(small, tmp_path / "cm", ["png"])
    assert _png_size(png) == (round(7.3 * 150), round(6.1 * 150))


def test_small_confusion_prints_cell_values_and_raw_counts_on_request() -> None:
    fig = confusion_figure(CONFUSION, NAMES, normalize=False)
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {"9", "5", "3"} <= texts
    assert fig.axes[0].images[0].get_array().max() == 10


def test_formats_sizes_and_the_tracker_raster(tmp_path: Path) -> None:
    fig = confused_pairs_figure(top_confused_pairs(CONFUSION, NAMES))
    paths = save_figure(fig, tmp_path / "pairs", check_formats("png,pdf,svg"))
    assert [p.suffix for p in paths] == [".png", ".pdf", ".svg"]
    assert _png_size(paths[0]) == (1200, round((1.2 + 0.3 * 3) * 150))
    assert paths[1].read_bytes()[:5] == b"%PDF-"
    assert b"<svg" in paths[2].read_bytes()[:1000]
    raster = figure_to_array(fig)
    assert raster.shape == (round((1.2 + 0.3 * 3) * 150), 1200, 3) and raster.dtype == np.uint8
    with pytest.raises(UserError, match="png, pdf, svg"):
        check_formats(["png", "jpeg"])


def test_per_class_chart_sorts_worst_first_and_names_the_worst_when_many(tmp_path: Path) -> None:
    fig = per_class_accuracy_figure([0.9, 0.2, 0.6, 0.4], NAMES)
    bars = [p.get_height() for p in fig.axes[0].patches]
    assert bars == pytest.approx([20.0, 40.0, 60.0, 90.0])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["blue_jay", "raven", "crow", "cardinal"]
    acc = np.linspace(0, 1, 300)[::-1]
    many = per_class_accuracy_figure(acc, [f"c{i}" for i in range(300)], worst=5)
    assert len(many.axes) == 2
    assert [t.get_text() for t in many.axes[1].get_yticklabels()] == ["c299", "c298", "c297", "c296", "c295"]
    (png,) = save_figure(many, tmp_path / "pc")
    assert _png_size(png) == (14 * 150, 5 * 150)


def test_accuracy_cost_points_from_eval_results(tmp_path: Path) -> None:
    glsim = {"method": "glsim", "selector": "gls", "test/acc1": 0.9, "gflops": 35.2,
             "cost": {"throughput_img_s": 100.0},
             "localization": {"gls": {"acc1": 0.9, "gflops": 35.2},
                              "rollout": {"acc1": 0.85, "gflops": 35.9}}}  # fmt: skip
    vit = {"method": "vit", "selector": None, "test/acc1": 0.8, "gflops": 17.6, "cost": {"throughput_img_s": 210.0}}
    points = accuracy_cost_points([glsim, vit])
    assert [(p["label"], p["acc1"], p["gflops"]) for p in points] == [
        ("glsim[gls]", 90.0, 35.2), ("glsim[rollout]", 85.0, 35.9), ("vit", 80.0, 17.6)]  # fmt: skip
    assert [p["throughput_img_s"] for p in points] == [100.0, None, 210.0]  # measured for the own selector only
    fig = accuracy_cost_figure(points, x="throughput_img_s")
    assert len(fig.axes[0].collections) == 2 and "1 without" in fig.axes[0].get_title()
    (png,) = save_figure(accuracy_cost_figure(points), tmp_path / "acc_cost")
    assert _png_size(png) == (975, 675)


def test_model_cost_and_reproduction_figures(tmp_path: Path) -> None:
    rows = [{"model": "vit", "throughput_img_s": 50.0, "batch_size": 8, "device": "cpu"},
            {"model": "glsim[gls]", "throughput_img_s": 24.0, "batch_size": 8, "device": "cpu"}]  # fmt: skip
    flops = [{"img": s, "backbone_gflops": 17.0 * (s / 224) ** 2, "gls_mflops": 0.3 * (s / 224) ** 2,
              "rollout_mflops": 90.0 * (s / 224) ** 4} for s in (224, 448)]  # fmt: skip
    fig = model_cost_figure(rows, flops, ["gls", "rollout"])
    assert [p.get_width() for p in fig.axes[0].patches] == [50.0, 24.0]
    assert {line.get_label() for line in fig.axes[1].lines} == {"gls", "rollout", "ViT-B/16 backbone"}
    (cost_png,) = save_figure(fig, tmp_path / "model_cost")
    assert _png_size(cost_png) == (11 * 150, round(4.2 * 150))
    summary = [{"setting": "(as configured)", "n": 3, "acc1_mean": 91.0, "acc1_std": 1.0, "paper_acc1": 90.93,
                "paper_std": 0.24, "delta": 0.07}]  # fmt: skip
    rep = reproduction_figure("glsim_cub_vit_b16", summary)
    ours, paper = [c for c in rep.axes[0].containers if isinstance(c, BarContainer)]
    assert ours.patches[0].get_width() == 91.0 and paper.patches[0].get_width() == 90.93
    (png,) = save_figure(rep, tmp_path / "rep")
    assert _png_size(png)[0] == round(6.0 * 150)


def test_sweep_figure_labels_whole_axes_contain_error_bars_no_empty_legend() -> None:
    """Two long selector labels that share a prefix stay distinct; 57.3 ± 13.3 fits the axis; no paper entry."""
    row = lambda s, m, sd: {"setting": s, "n": 3, "acc1_mean": m, "acc1_std": sd, "paper_acc1": None, "delta": None}
    rows = [row("method=glsim method.selector=attention_rollout_mean", 57.3, 13.3),
            row("method=glsim method.selector=attention_rollout_max", 60.1, 0.5)]  # fmt: skip
    fig = reproduction_figure("sweep", rows)
    ax = fig.axes[0]
    labels = [t.get_text().replace("\n", " ") for t in ax.get_yticklabels()]
    assert sorted(labels) == sorted(r["setting"] for r in rows)  # wrapped, never cut
    low, high = ax.get_xlim()
    assert low <= 57.3 - 13.3 and high >= 57.3 + 13.3
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["ours (mean ± std over seeds)"]
    assert len([c for c in ax.containers if isinstance(c, BarContainer)]) == 1
