"""``dataset.cache`` (decode + resize stored once) and ``dataset.device_normalize`` (float work batched after the
transfer) change nothing the model sees: the same tensors, bit for bit, as the uncached per-sample CPU pipeline."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

from glsim_pl.bench._jpeg_tree import write_cub_tree
from glsim_pl.data.base import TransformedView
from glsim_pl.data.cache import PrefixCache, check_cache_args
from glsim_pl.data.datasets.synthetic import SyntheticDataModule
from glsim_pl.data.sampling import mix_seed, seeded_rngs
from glsim_pl.data.sources import ImageFileList, Sample
from glsim_pl.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugConfig,
    UInt8Crop,
    build_eval_transform,
    build_train_transform,
    finish_on_device,
    has_prefix,
    without_prefix,
)  # fmt: skip
from glsim_pl.errors import UserError

S, R = 32, 42


@pytest.fixture(scope="module")
def jpeg_source(tmp_path_factory: pytest.TempPathFactory) -> ImageFileList:
    root = write_cub_tree(tmp_path_factory.mktemp("cub"), 12, 3, size=(120, 90), workers=1)
    files = sorted((root / "images").rglob("*.jpg"))
    return ImageFileList([Sample(f, i % 3, (10.0, 12.0, 90.5, 70.25)) for i, f in enumerate(files)])


def _draw(view: TransformedView, index: int, seed: int):
    with seeded_rngs(seed):
        return view[index]


def _assert_same(a, b) -> None:
    for x, y in zip(a, b, strict=True):
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y)
        else:
            assert x == y


@pytest.mark.parametrize("mode", ["ram", "disk"])
def test_cached_prefix_is_bit_identical(jpeg_source: ImageFileList, tmp_path: Path, mode: str) -> None:
    cache = PrefixCache(jpeg_source, R, mode, cache_dir=tmp_path, key="t")
    train_tf = build_train_transform(S, R, AugConfig(), IMAGENET_MEAN, IMAGENET_STD)
    eval_tf = build_eval_transform(S, R, IMAGENET_MEAN, IMAGENET_STD)
    for tf, boxes in ((train_tf, False), (eval_tf, True)):
        plain = TransformedView(jpeg_source, range(len(jpeg_source)), tf, return_boxes=boxes)
        cached = TransformedView(cache, range(len(jpeg_source)), without_prefix(tf), return_boxes=boxes)
        for i in range(len(jpeg_source)):
            _assert_same(_draw(plain, i, mix_seed(7, i)), _draw(cached, i, mix_seed(7, i)))
    if mode == "disk":
        assert cache.path is not None and cache.path.is_file() and cache.path.parent == tmp_path


def test_disk_cache_reused_and_rebuilt_when_a_file_changes(
    jpeg_source: ImageFileList, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="glsim_pl.data.cache"):
        first = PrefixCache(jpeg_source, R, "disk", cache_dir=tmp_path, key="t")
        assert any("12 images at 42x42 px" in r.getMessage() for r in caplog.records)  # size announced
        caplog.clear()
        PrefixCache(jpeg_source, R, "disk", cache_dir=tmp_path, key="t")
        assert any("reusing" in r.getMessage() for r in caplog.records)
        caplog.clear()
        path = jpeg_source.samples[3].path
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        again = PrefixCache(jpeg_source, R, "disk", cache_dir=tmp_path, key="t")
        assert any("rebuilding" in r.getMessage() for r in caplog.records)
    assert torch.equal(first[3][0], again[3][0]) and again.path == first.path


def test_disk_cache_default_folder_follows_glsim_cache_dir(
    jpeg_source: ImageFileList, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GLSIM_CACHE_DIR", str(tmp_path / "caches"))
    cache = PrefixCache(jpeg_source, R, "disk", key="t")  # no cache_dir: the package's cache root decides
    assert cache.path is not None and cache.path.parent == tmp_path / "caches" / "prefix"


def test_device_normalize_equals_the_cpu_pipeline() -> None:
    """Over a few hundred seeded samples: uint8 crop + erasing rectangle, finished as a batch == the full pipeline."""
    torch.manual_seed(0)
    images = [torch.randint(0, 256, (3, 50, 40), dtype=torch.uint8) for _ in range(16)]
    augs = AugConfig(random_erasing=0.5)
    full = build_train_transform(S, R, augs, IMAGENET_MEAN, IMAGENET_STD)
    split = build_train_transform(S, R, augs, IMAGENET_MEAN, IMAGENET_STD, device_normalize=True)
    expected, crops, rects = [], [], []
    for n in range(256):
        seed = mix_seed(3, n)
        with seeded_rngs(seed):
            expected.append(full(images[n % 16]))
        with seeded_rngs(seed):
            item = split(images[n % 16])
        assert isinstance(item, UInt8Crop) and item.image.dtype == torch.uint8
        crops.append(item.image)
        rects.append(item.erase)
    batch = UInt8Crop(torch.stack(crops), torch.stack(rects))
    erased = (batch.erase[:, 2] > 0).float().mean().item()
    assert 0.35 < erased < 0.65  # erasing p = 0.5 actually drew rectangles
    assert torch.equal(finish_on_device(batch, IMAGENET_MEAN, IMAGENET_STD), torch.stack(expected))


def test_datamodule_cache_and_device_normalize_give_the_same_batches() -> None:
    def first_batches(**kwargs):
        dm = SyntheticDataModule(num_classes=4, train_size=40, test_size=8, image_size=S, batch_size=8,
                                 num_workers=0, augs={"random_erasing": 0.5}, **kwargs)  # fmt: skip
        dm.run_seed = 5
        dm.setup("fit")
        train = [dm.on_after_batch_transfer(b, 0) for b in dm.train_dataloader()][:3]
        return train, next(iter(dm.test_dataloader())), dm

    reference, ref_test, _ = first_batches()
    cached, test, dm = first_batches(cache="ram", device_normalize=True)
    assert isinstance(dm.data_train.source, PrefixCache) and isinstance(dm.data_test.source, PrefixCache)
    for a, b in zip(reference, cached, strict=True):
        _assert_same(a, b)
    _assert_same(ref_test, test)


def test_random_resized_crop_keeps_decoding() -> None:
    dm = SyntheticDataModule(num_classes=4, train_size=20, test_size=4, image_size=S, num_workers=0, cache="ram",
                             augs={"random_resized_crop": True})  # fmt: skip
    dm.setup("fit")
    assert not has_prefix(dm.data_train.transform) and not isinstance(dm.data_train.source, PrefixCache)
    assert isinstance(dm.data_val.source, PrefixCache) and isinstance(dm.data_test.source, PrefixCache)
    assert dm.data_train[0][0].shape == (3, S, S) and dm.data_val[0][0].shape == (3, S, S)


def test_disk_cache_needs_files_and_bad_values_are_named(tmp_path: Path) -> None:
    dm = SyntheticDataModule(num_classes=4, train_size=8, test_size=4, image_size=S, cache="disk",
                             cache_dir=str(tmp_path))  # fmt: skip
    with pytest.raises(UserError, match="dataset.cache=disk: .*use dataset.cache=ram"):
        dm.setup("fit")
    with pytest.raises(UserError, match="dataset.cache='fast'"):
        check_cache_args("fast", None, "auto")
    with pytest.raises(UserError, match="dataset.device_normalize='gpu'"):
        check_cache_args("ram", None, "gpu")
    assert check_cache_args(False, None, True) == ("off", None, "true")  # YAML reads a bare off as false


def test_parallel_build_equals_the_serial_one(jpeg_source: ImageFileList, monkeypatch: pytest.MonkeyPatch) -> None:
    import glsim_pl.data.cache as cache_module

    serial = PrefixCache(jpeg_source, R, "ram", workers=1)
    monkeypatch.setattr(cache_module, "_PARALLEL_FROM", 4)  # fork two builders even for 12 images
    parallel = PrefixCache(jpeg_source, R, "ram", workers=2)
    for i in range(len(jpeg_source)):
        _assert_same(serial[i], parallel[i])


def test_fast_sharpness_equals_torchvision() -> None:
    from torchvision.transforms.v2 import functional as F

    from glsim_pl.data.transforms import sharpness_uint8

    g = torch.Generator().manual_seed(0)
    for shape in ((3, 37, 29), (1, 8, 5), (3, 224, 224)):
        image = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
        image[..., :4, :] = 255  # saturated and flat areas too
        for factor in torch.linspace(0.01, 1.99, 31).tolist():
            assert torch.equal(sharpness_uint8(image, factor), F.adjust_sharpness(image, factor)), (shape, factor)


def test_fast_solarize_equals_torchvision() -> None:
    from torchvision.transforms.v2 import functional as F

    from glsim_pl.data.transforms import solarize_uint8

    image = torch.arange(256, dtype=torch.uint8).repeat(3, 4, 1)  # every byte value
    thresholds = [255.0 * m for m in torch.linspace(1.0, 0.0, 31).tolist()] + [0.0, 127.5, 128.0, 254.9, 255.0]
    for threshold in thresholds:  # TrivialAugmentWide's 31 bins (255 x magnitude) and the edges
        assert torch.equal(solarize_uint8(image, threshold), F.solarize(image, threshold)), threshold


def test_trivial_augment_draws_as_torchvision() -> None:
    from torchvision.transforms import v2 as T

    from glsim_pl.data.transforms import TrivialAugmentWide

    image = torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    ours, theirs = TrivialAugmentWide(), T.TrivialAugmentWide()
    for seed in range(150):  # each of the 14 ops (Sharpness and Solarize among them) drawn ~10 times
        with seeded_rngs(seed):
            a = ours(image)
        with seeded_rngs(seed):
            b = theirs(image)
        assert torch.equal(a, b), seed


def test_plain_jpeg_fast_path_gives_the_pil_pixels(jpeg_source: ImageFileList, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from glsim_pl.data.jpeg import read_plain_jpeg

    base = Image.open(jpeg_source.samples[0].path).convert("RGB")
    variants = {"baseline": {}, "progressive": {"progressive": True}, "444": {"subsampling": 0}}
    for name, options in variants.items():
        base.save(tmp_path / f"{name}.jpg", quality=90, **options)
    base.convert("L").save(tmp_path / "grey.jpg", quality=90)
    for name in [*variants, "grey"]:
        path = tmp_path / f"{name}.jpg"
        expected = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
        assert torch.equal(read_plain_jpeg(path), expected), name
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: PIL's reader applies it, so the fast path must step aside
    base.save(tmp_path / "rotated.jpg", quality=90, exif=exif.tobytes())
    base.convert("CMYK").save(tmp_path / "cmyk.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "baseline.jpg").read_bytes()[:-5000])
    base.save(tmp_path / "png.png")
    for name in ("rotated.jpg", "cmyk.jpg", "cut.jpg", "png.png"):
        assert read_plain_jpeg(tmp_path / name) is None, name
    # through a source and the train transform: the same tensors as from PIL images
    pil_items = [(Image.open(s.path).convert("RGB"), s.label, s.box) for s in jpeg_source.samples]
    assert isinstance(jpeg_source.fast_item(0)[0], torch.Tensor) and not isinstance(jpeg_source[0][0], torch.Tensor)
    train_tf = build_train_transform(S, R, AugConfig(), IMAGENET_MEAN, IMAGENET_STD)
    for tf, boxes in ((train_tf, False), (build_eval_transform(S, R, IMAGENET_MEAN, IMAGENET_STD), True)):
        fast = TransformedView(jpeg_source, range(len(jpeg_source)), tf, return_boxes=boxes)
        slow = TransformedView(pil_items, range(len(pil_items)), tf, return_boxes=boxes)
        for i in range(len(pil_items)):
            _assert_same(_draw(fast, i, i), _draw(slow, i, i))


def test_train_entry_point_with_cache_and_device_normalize(make_cfg) -> None:
    """Hydra keys through ``glsim_pl.train``: the model is fed finished float batches and the run completes."""
    from glsim_pl.train import train

    cfg = make_cfg("dataset.cache=ram", "dataset.device_normalize=true", "augs.random_erasing=0.3", "test=false",
                   "logger=none", "callbacks=none", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
                   "+trainer.num_sanity_val_steps=0", "trainer.max_epochs=1")  # fmt: skip
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss_epoch"]))


def _build_and_read(source: ImageFileList, cache_dir: Path, out: Path, start, flock: bool) -> None:
    """A process that builds (or waits for) the disk cache and saves every pixel it reads."""
    import time

    import numpy as np

    import glsim_pl.data.cache as cache_module

    plain_call = cache_module._Builder.__call__

    def slow_call(self, chunk, out=None):  # widens the build so that the two processes overlap
        time.sleep(0.03 * len(chunk))
        return plain_call(self, chunk, out)

    cache_module._Builder.__call__ = slow_call
    if not flock:  # a file system without locks: each process builds its own copy
        cache_module.fcntl = None
    start.wait()
    cache = PrefixCache(source, R, "disk", cache_dir=cache_dir, key="t", workers=1)
    np.save(out, np.stack([cache[i][0].numpy() for i in range(len(source))]))


@pytest.mark.parametrize("flock", [True, False])
def test_two_processes_build_one_cold_disk_cache(jpeg_source: ImageFileList, tmp_path: Path, flock: bool) -> None:
    """torchrun / SLURM tasks starting together on a shared cache folder: both finish and read the right pixels."""
    import multiprocessing as mp

    import numpy as np

    ctx = mp.get_context("fork")
    start = ctx.Barrier(2)
    outs = [tmp_path / f"read{k}.npy" for k in range(2)]
    procs = [
        ctx.Process(target=_build_and_read, args=(jpeg_source, tmp_path / "cache", out, start, flock)) for out in outs
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    expected = np.stack([PrefixCache(jpeg_source, R, "ram", workers=1)[i][0].numpy() for i in range(len(jpeg_source))])
    for out in outs:
        assert np.array_equal(np.load(out), expected)
    left = sorted(p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith((".u8", ".json", ".npy")))
    assert all(name.endswith(".lock") for name in left), left  # no temporary file is left behind


def test_disk_cache_rebuilt_when_the_decoding_rules_change(
    jpeg_source: ImageFileList, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import glsim_pl.data.cache as cache_module

    first = PrefixCache(jpeg_source, R, "disk", cache_dir=tmp_path, key="t")
    right = first[2][0].clone()
    first.path.write_bytes(bytes(first.path.stat().st_size))  # stands for pixels decoded by older rules
    assert not PrefixCache(jpeg_source, R, "disk", cache_dir=tmp_path, key="t")[2][0].any()  # same rules: reused
    monkeypatch.setattr(cache_module, "DECODE_RULES", cache_module.DECODE_RULES + 1)
    assert torch.equal(PrefixCache(jpeg_source, R, "disk", cache_dir=tmp_path, key="t")[2][0], right)


def test_fast_path_defers_to_pil_for_an_xmp_orientation(jpeg_source: ImageFileList, tmp_path: Path) -> None:
    """An orientation stored only in XMP: training (fast path), the cache and read_image see the same upright image."""
    import numpy as np
    from PIL import Image

    from glsim_pl.data.image_io import read_image
    from glsim_pl.data.jpeg import read_plain_jpeg

    base = Image.open(jpeg_source.samples[0].path).convert("RGB")  # 120 x 90
    xmp = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
    )
    base.save(tmp_path / "xmp6.jpg", quality=90, xmp=xmp)
    base.save(tmp_path / "xmp1.jpg", quality=90, xmp=xmp.replace(b'"6"', b'"1"'))
    upright = read_image(tmp_path / "xmp6.jpg")
    assert upright.size == (90, 120)  # PIL applies the XMP orientation
    assert read_plain_jpeg(tmp_path / "xmp6.jpg") is None
    assert read_plain_jpeg(tmp_path / "xmp1.jpg") is not None  # an upright XMP keeps the fast path
    source = ImageFileList([Sample(tmp_path / "xmp6.jpg", 0)])
    expected = torch.from_numpy(np.array(upright)).permute(2, 0, 1)
    fast = source.fast_item(0)[0]  # PIL's image, where the fast path steps aside
    fast = fast if isinstance(fast, torch.Tensor) else torch.from_numpy(np.array(fast)).permute(2, 0, 1)
    assert torch.equal(fast, expected)
