"""glsim-demo: the page's results equal predict's, boxes in original pixels, the gate panel, bad files, the browser."""

from __future__ import annotations

import csv
import inspect
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from glsim_pl.data.datasets.synthetic import SyntheticFGVC, write_examples
from glsim_pl.data.image_io import read_image
from glsim_pl.demo import (
    MISSING_GRADIO,
    analyse,
    build_app,
    example_images,
    load_demo_model,
    paths_allowed,
    serve,
    supported_selectors,
    upload_limit,
)  # fmt: skip
from glsim_pl.errors import UserError
from glsim_pl.plots.panels import draw_box
from glsim_pl.predict import predict
from tests.helpers.checkpoints import save_lightning_ckpt
from tests.helpers.configs import compose_tool

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_cfg(ckpt: Path, tmp_path: Path, *extra: str):
    return compose_tool("demo", [f"ckpt_path={ckpt}", f"demo.port={free_port()}", *extra], tmp_path / "run")


def predict_row(ckpt: Path, image: Path, tmp_path: Path) -> dict[str, str]:
    cfg = compose_tool("predict", [f"ckpt_path={ckpt}", f"input={image}", f"output={tmp_path / 'preds'}"],
                       tmp_path / "run_predict")  # fmt: skip
    return next(csv.DictReader(predict(cfg).open()))


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    """A non-square RGB image, so that original and model-input pixels differ on both axes."""
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (50, 72, 3), dtype=np.uint8)).save(path)
    return path


def test_page_upload_matches_predict(tmp_path: Path, photo: Path) -> None:
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    ckpt = tmp_path / "tiny.ckpt"
    save_lightning_ckpt(ckpt)
    row = predict_row(ckpt, photo, tmp_path)
    app = serve(demo_cfg(ckpt, tmp_path), block=False)
    try:
        client = Client(app.local_url, verbose=False)
        label, _, _, _, summary, details = client.predict(handle_file(str(photo)), "gls", api_name="/predict")
        got = [(t["class"], f"{t['prob']:.6f}") for t in details["topk"]]
        assert got == [(row[f"class_{j}"], row[f"prob_{j}"]) for j in range(1, 6)]
        assert label["label"] == row["class_1"]
        assert details["box_input_px"] == [int(row[f"input_{k}"]) for k in ("x1", "y1", "x2", "y2")]
        assert details["box_original_px"] == [float(row[k]) for k in ("x1", "y1", "x2", "y2")]
        assert details["image_size"] == [72, 50]
        assert f"Top-1: {row['class_1']}" in summary
        centre = client.predict(handle_file(str(photo)), "center", api_name="/predict")[5]
        assert centre["selector"] == "center"
        assert centre["checkpoint_top1"] == row["class_1"]
        assert centre["box_input_px"] == [8, 8, 16, 16]  # top-2 of a 4 x 4 grid's centre, official box rule
        bad = tmp_path / "notes.txt"
        bad.write_text("not an image")
        with pytest.raises(AppError) as err:
            client.predict(handle_file(str(bad)), "gls", api_name="/predict")
        assert str(err.value).startswith("notes.txt: ")  # read_image's one line, under the user's file name
        assert "\n" not in str(err.value)
    finally:
        app.close()


def test_box_is_drawn_on_the_same_content_of_the_original(tmp_path: Path) -> None:
    """Content at a model-input box is at the page's original-pixel box, and the red frame is drawn there."""
    ckpt = tmp_path / "tiny.ckpt"
    save_lightning_ckpt(ckpt)
    model = load_demo_model(demo_cfg(ckpt, tmp_path, "resize_factor=1.5"))
    image = np.zeros((90, 150, 3), dtype=np.uint8)
    image[36:54, 75:100] = 255  # original pixels x 75..100, y 36..54
    x = model.transform(Image.fromarray(image))  # (3, 32, 32), normalised
    ys, xs = np.nonzero(x[0].numpy() > 1.0)
    box = model.pre.box_to_original([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], 150, 90)
    assert box == pytest.approx([75, 36, 100, 54], abs=150 / 48 + 0.01)
    shown = np.asarray(draw_box(Image.fromarray(image), [75, 36, 100, 54], [0, 0, 150, 90]))  # shown 3x
    red = (shown[..., 0] == 255) & (shown[..., 1] == 0) & (shown[..., 2] == 0)
    ry, rx = np.nonzero(red)
    assert [rx.min(), ry.min(), rx.max() + 1, ry.max() + 1] == pytest.approx([225, 108, 300, 162], abs=2)


@pytest.mark.parametrize(("tau", "ran"), [(0.05, False), (0.5, True)])
def test_gated_checkpoint_says_whether_the_second_pass_ran(tmp_path: Path, photo: Path, tau: float, ran: bool) -> None:
    ckpt = tmp_path / "gated.ckpt"
    save_lightning_ckpt(ckpt, gate="confidence", gate_threshold=tau)  # zero gate head: confidence 1/10
    out = analyse(load_demo_model(demo_cfg(ckpt, tmp_path)), str(photo), None)
    assert out["details"]["second_pass"] is ran
    assert out["details"]["first_pass_confidence"] == pytest.approx(0.1)
    assert ("Second pass **ran**" if ran else "Second pass **skipped**") in out["summary"]


def test_plain_vit_shows_the_classes_alone(tmp_path: Path, photo: Path) -> None:
    ckpt = tmp_path / "vit.ckpt"
    save_lightning_ckpt(ckpt, method="vit")
    model = load_demo_model(demo_cfg(ckpt, tmp_path))
    assert supported_selectors(model.net) == []
    out = analyse(model, str(photo), None)
    assert out["crop"] is None
    assert out["details"]["box_original_px"] is None
    assert len(out["details"]["topk"]) == 5
    assert "Plain ViT" in out["summary"]


def test_selector_switch_reports_a_changed_prediction(tmp_path: Path, photo: Path) -> None:
    ckpt = tmp_path / "tiny.ckpt"
    save_lightning_ckpt(ckpt)
    model = load_demo_model(demo_cfg(ckpt, tmp_path))
    base = analyse(model, str(photo), "gls")["details"]
    for selector in ("rollout", "attn_last", "psm", "maws", "center", "full"):
        out = analyse(model, str(photo), selector)
        assert out["details"]["selector"] == selector
        assert model.net.selector == "gls"  # the switch does not stick to the shared model
        changed = out["details"]["topk"][0]["class"] != base["topk"][0]["class"]
        assert ("**changed** from" in out["summary"]) is changed
        assert out["heat"].size == out["boxed"].size
    full = analyse(model, str(photo), "full")["details"]
    assert full["box_input_px"] == [0, 0, 32, 32]


def test_bad_and_unusual_files_are_read_as_predict_reads_them(tmp_path: Path) -> None:
    """Unreadable or huge files: one line naming the file; 16-bit and EXIF-rotated images: a correct result."""
    ckpt = tmp_path / "tiny.ckpt"
    save_lightning_ckpt(ckpt)
    model = load_demo_model(demo_cfg(ckpt, tmp_path))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    Image.new("1", (20000, 20000)).save(tmp_path / "huge.png")  # 400 Mpx, a few KB on disk
    for name in ("broken.jpg", "huge.png"):
        with pytest.raises(UserError, match=name.replace(".", r"\.")) as err:
            analyse(model, str(tmp_path / name), None)
        assert "\n" not in str(err.value)
    deep = np.linspace(0, 65535, 40 * 56, dtype=np.uint16).reshape(40, 56)
    Image.fromarray(deep).save(tmp_path / "deep16.png")  # 16-bit greyscale
    Image.fromarray((deep // 257).astype(np.uint8)).save(tmp_path / "deep8.png")
    got, want = (analyse(model, str(tmp_path / f), None)["details"] for f in ("deep16.png", "deep8.png"))
    assert [t["class"] for t in got["topk"]] == [t["class"] for t in want["topk"]]  # scaled, not clipped to white
    assert [t["prob"] for t in got["topk"]] == pytest.approx([t["prob"] for t in want["topk"]], abs=0.01)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(np.zeros((40, 60, 3), dtype=np.uint8)).save(tmp_path / "phone.jpg", exif=exif)
    assert analyse(model, str(tmp_path / "phone.jpg"), None)["details"]["image_size"] == [40, 60]  # upright
    with pytest.raises(UserError, match="no such file"):
        load_demo_model(demo_cfg(tmp_path / "missing.ckpt", tmp_path))


def test_examples_ship_small_and_readable() -> None:
    files = example_images()
    assert len(files) >= 3
    for f in files:
        assert os.path.getsize(f) < 20_000  # JPEG quality 95 without chroma subsampling: ~13 KB
        assert read_image(f).mode == "RGB"


def test_examples_are_the_default_look(tmp_path: Path) -> None:
    """The shipped examples are what ``write_examples`` draws with conf/dataset/synthetic.yaml (not an old look)."""
    cfg = OmegaConf.load(Path(__file__).parents[1] / "conf" / "dataset" / "synthetic.yaml").dataset
    keys = inspect.signature(SyntheticFGVC).parameters.keys() - {"size", "split"}
    fresh = write_examples(tmp_path, {k: OmegaConf.to_object(cfg)[k] for k in keys if k in cfg})
    shipped = {Path(f).name: f for f in example_images()}
    assert sorted(shipped) == sorted(f.name for f in fresh)
    for f in fresh:
        a, b = (np.asarray(read_image(x), dtype=float) for x in (f, shipped[f.name]))
        assert a.shape == b.shape and np.abs(a - b).mean() < 2.0, f.name


def test_bad_options_and_a_taken_port_are_one_line(tmp_path: Path) -> None:
    ckpt = tmp_path / "tiny.ckpt"
    save_lightning_ckpt(ckpt)
    with pytest.raises(UserError, match=r"^selector='bogus': expected one of gls"):
        load_demo_model(demo_cfg(ckpt, tmp_path, "selector=bogus"))
    with pytest.raises(UserError, match=r"^demo\.port=99999: out of range"):
        load_demo_model(compose_tool("demo", [f"ckpt_path={ckpt}", "demo.port=99999"], tmp_path / "run"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = compose_tool("demo", [f"ckpt_path={ckpt}", f"demo.port={port}"], tmp_path / "run")
        with pytest.raises(UserError, match=rf"demo\.port={port}: cannot listen there"):
            serve(cfg, block=False)


def test_missing_gradio_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    with pytest.raises(UserError) as err:
        serve(demo_cfg(tmp_path / "any.ckpt", tmp_path))
    assert str(err.value) == MISSING_GRADIO
    assert "pip install 'glsim_pl[demo]'" in MISSING_GRADIO


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                    reason="no Chromium: apt-get install chromium chromium-driver (docs/demo.md)")  # fmt: skip
def test_browser_upload_shows_top1_offline(tmp_path: Path) -> None:
    """Headless Chromium with every host but 127.0.0.1 unresolvable: upload an example, read top-1, screenshot.

    GLSIM_DEMO_CKPT=<checkpoint> runs it on a trained model instead of a tiny random one (the docs' screenshot);
    GLSIM_DEMO_SCREENSHOT=<file.png> also copies the screenshot there.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    ckpt = Path(os.environ.get("GLSIM_DEMO_CKPT") or tmp_path / "tiny.ckpt")
    if not os.environ.get("GLSIM_DEMO_CKPT"):
        save_lightning_ckpt(ckpt)
    image = Path(example_images()[0])
    expected = predict_row(ckpt, image, tmp_path)["class_1"]
    app = serve(demo_cfg(ckpt, tmp_path), block=False)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1150",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(app.local_url)
        wait = WebDriverWait(driver, 60)
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#upload input[type=file]"))).send_keys(str(image))
        wait.until(EC.text_to_be_present_in_element((By.ID, "summary"), f"Top-1: {expected}"))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "img[src*='/file=']")) >= 3)
        time.sleep(1.0)  # let the three pictures finish painting
        assert expected in driver.find_element(By.ID, "topk").text
        shot = tmp_path / "demo.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("GLSIM_DEMO_SCREENSHOT"):
            shutil.copy(shot, os.environ["GLSIM_DEMO_SCREENSHOT"])
        urls = [json.loads(e["message"])["message"].get("params", {}).get("request", {}).get("url", "")
                for e in driver.get_log("performance")]  # fmt: skip
        network = [urlsplit(u) for u in urls if urlsplit(u).scheme in ("http", "https", "ws", "wss")]
        assert network, "no requests were logged"
        remote = [u.geturl() for u in network if u.hostname != "127.0.0.1"]
        assert not remote, f"the page asked for remote resources: {remote[:5]}"
    finally:
        driver.quit()
        app.close()


def _api_names(app) -> set[str]:
    return {fn.api_name for fn in app.fns.values() if fn.api_name}


def test_path_box_only_on_a_loopback_host_or_by_choice(tmp_path: Path) -> None:
    """Served to other machines (demo.host=0.0.0.0), the page takes uploads only: no path box, no path endpoint,
    unless demo.allow_paths=true; a public link never reads paths. Uploads are limited by demo.max_file_size."""
    ckpt = tmp_path / "tiny.ckpt"
    save_lightning_ckpt(ckpt)

    def allowed(*extra: str) -> bool:
        return paths_allowed(demo_cfg(ckpt, tmp_path, *extra).demo)

    assert allowed() and allowed("demo.host=localhost") and allowed("demo.host=::1")
    assert not allowed("demo.host=0.0.0.0") and not allowed("demo.host=myhost.example.org")
    assert allowed("demo.host=0.0.0.0", "demo.allow_paths=true") and not allowed("demo.allow_paths=false")
    assert not allowed("demo.share=true", "demo.allow_paths=true")
    with pytest.raises(UserError, match=r"^demo\.allow_paths='yes': expected auto, true or false$"):
        allowed("demo.allow_paths=yes")

    model = load_demo_model(demo_cfg(ckpt, tmp_path))
    closed, opened = build_app(model, paths=False), build_app(model, paths=True)
    assert "predict_path" not in _api_names(closed) and "predict" in _api_names(closed)
    assert "predict_path" in _api_names(opened)
    path_boxes = lambda app: [b for b in app.blocks.values() if getattr(b, "label", "") and "path" in b.label]
    assert [b.visible for b in path_boxes(closed)] == [False]
    assert [b.visible for b in path_boxes(opened)] == [True]

    assert upload_limit(demo_cfg(ckpt, tmp_path).demo) == 20 * 1024**2
    assert upload_limit(demo_cfg(ckpt, tmp_path, "demo.max_file_size=3KB").demo) == 3 * 1024
    with pytest.raises(UserError, match=r"^demo\.max_file_size='huge': expected a size such as 20mb"):
        upload_limit(demo_cfg(ckpt, tmp_path, "demo.max_file_size=huge").demo)
    app = serve(demo_cfg(ckpt, tmp_path, "demo.max_file_size=1kb"), block=False)
    try:
        assert app.max_file_size == 1024
    finally:
        app.close()
