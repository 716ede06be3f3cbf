"""dataset=wds and glsim-data convert: a round trip keeps images, labels, boxes and class names; every train sample
is read exactly once per epoch across ranks x workers; a shard cut short is one line naming it."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from lightning.pytorch.callbacks import Callback
from PIL import Image

from glsim_pl.config.groups import transform_augs
from glsim_pl.config.instantiate import instantiate
from glsim_pl.data.datasets.wds import ShardStream, decode_sample
from glsim_pl.errors import UserError
from tests.helpers.configs import TINY
from tests.helpers.data_trees import N_TRAIN, birds, folder, write_image


def _dm(make_cfg, *overrides: str):
    cfg = make_cfg(*TINY, *overrides, "logger=none", "callbacks=none", tiny=False)
    return instantiate(cfg.dataset, augs=transform_augs(cfg))


def test_convert_round_trip_keeps_images_labels_boxes_and_trains(make_cfg, tmp_path: Path, capsys) -> None:
    from glsim_pl.dataset import main
    from glsim_pl.train import train

    tree = birds(tmp_path)
    out = tmp_path / "cub-wds"
    source = [
        "dataset=cub",
        "dataset.num_classes=3",
        f"dataset.root={tree.root}",
        f"dataset.check_cache_dir={tmp_path / 'check'}",
    ]
    main(["convert", *source, "--to", "wds", "--out", str(out), "--shard-size", "4", "--no-progress"])
    assert "train 12 in 3 shards, val 3 in 1 shards, test 6 in 2 shards; 3 classes" in capsys.readouterr().out
    assert not (tmp_path / "cub-wds.partial").exists()
    info = json.loads((out / "info.json").read_text())
    assert info["class_names"] == tree.class_names and info["has_boxes"]

    cub = _dm(make_cfg, *source)
    cub.check()
    train_idx, val_idx = cub.train_val_indices(cub.splits.train)
    expected = {"train": (cub.splits.train, train_idx), "val": (cub.splits.train, val_idx),
                "test": (cub.splits.test, list(range(len(cub.splits.test))))}  # fmt: skip
    for split, (src, indices) in expected.items():
        stream = ShardStream([str(out / s) for s in info["splits"][split]["shards"]], transform=None)
        got = [decode_sample(s, None, True) for s in stream.raw()]
        assert len(got) == len(indices)
        for (image, label, box), i in zip(got, indices, strict=True):
            want_image, want_label, want_box = src[i]
            assert label == want_label and box == pytest.approx(want_box)
            assert np.array_equal(np.asarray(image), np.asarray(want_image))

    main(["info", "dataset=wds", f"dataset.root={out}"])
    shown = json.loads(capsys.readouterr().out)
    assert shown["splits"] == {"train": 12, "val": 3, "test": 6} and shown["classes"] == 3 and shown["boxes"]

    metrics = train(make_cfg(*TINY, "dataset=wds", f"dataset.root={out}", "dataset.batch_size=4", "logger=none",
                             tiny=False, output_dir=tmp_path / "run"))  # fmt: skip
    assert 0.0 <= metrics["test/acc1"] <= 1.0 and metrics["best_ckpt"]  # checkpointed on the val shards


def test_convert_keeps_a_given_val_split(tmp_path: Path, capsys) -> None:
    """A folder dataset with its own val folder: the val shards hold those images (they follow train in the source)."""
    from glsim_pl.dataset import main

    tree = folder(tmp_path, separate_test=True)
    val_dir = tmp_path / "mine_val"
    val_files = [write_image(val_dir / c / f"v{k}.jpg", 200 + k) for c in tree.class_names for k in (0, 1)]
    out = tmp_path / "mine-wds"
    main(["convert", *tree.overrides, f"dataset.root={tree.root}", f"dataset.num_classes={tree.num_classes}",
          f"dataset.val_root={val_dir}", f"dataset.check_cache_dir={tmp_path / 'check'}", "--to", "wds",
          "--out", str(out), "--shard-size", "4", "--no-progress"])  # fmt: skip
    assert f"train {3 * N_TRAIN} in" in capsys.readouterr().out
    info = json.loads((out / "info.json").read_text())
    stream = ShardStream([str(out / s) for s in info["splits"]["val"]["shards"]], transform=None)
    got = [decode_sample(s, None, False) for s in stream.raw()]  # a folder dataset has no boxes
    assert sorted(label for _, label, _ in got) == [0, 0, 1, 1, 2, 2]
    want = sorted(np.asarray(Image.open(f).convert("RGB")).tobytes() for f in val_files)
    assert sorted(np.asarray(image).tobytes() for image, _, _ in got) == want


def _write_shards(folder: Path, shards: int, per_shard: int) -> list[str]:
    import webdataset as wds

    folder.mkdir()
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(buffer, format="PNG")
    urls = []
    for s in range(shards):
        urls.append(str(folder / f"shard-{s:06d}.tar"))
        with wds.TarWriter(urls[-1]) as sink:
            for k in range(per_shard):
                sink.write({"__key__": f"s{s}-{k}", "png": buffer.getvalue(), "cls": b"0"})
    return urls


def test_every_train_sample_once_per_epoch_across_ranks_and_workers(tmp_path: Path) -> None:
    urls = _write_shards(tmp_path / "shards", shards=8, per_shard=6)
    everything = {f"s{s}-{k}" for s in range(8) for k in range(6)}
    orders = []
    for epoch in (0, 1):
        seen: list[str] = []
        for rank in range(2):
            stream = ShardStream(urls, None, seed=7, shuffle=True, rank=rank, world_size=2, buffer=5)
            stream.set_epoch(epoch)
            for worker in range(2):
                seen += [s["__key__"] for s in stream.raw(worker, num_workers=2)]
        assert Counter(seen) == Counter(everything)  # no duplicates, no losses
        orders.append(seen)
    assert orders[0] != orders[1]  # reshuffled per epoch
    again = ShardStream(urls, None, seed=7, shuffle=True, rank=0, world_size=2, buffer=5)
    assert [s["__key__"] for s in again.raw(0, 2)] == orders[0][:12]  # the same seed, the same order

    from glsim_pl.data.datasets.wds import _EpochLoader

    stream = ShardStream(urls, None, seed=7, shuffle=True, rank=0, world_size=2)
    loader = _EpochLoader(SimpleNamespace(trainer=None), stream, [6] * 8, batch_size=4, num_workers=2)
    assert [loader.batches(e) for e in range(3)] == [6, 6, 6]  # 2 shards of 6 per worker: 3 full batches each
    short = _EpochLoader(SimpleNamespace(trainer=None), stream, [6] * 7 + [2], batch_size=4, num_workers=2)
    assert {short.batches(e) for e in range(6)} == {5}  # the rank holding the short shard fills 5 full batches


def test_a_shard_cut_mid_record_is_one_line(tmp_path: Path) -> None:
    urls = _write_shards(tmp_path / "shards", shards=1, per_shard=3)
    data = Path(urls[0]).read_bytes()
    with tarfile.open(urls[0]) as tar:
        cut = tar.getmembers()[-1].offset_data + 10
    Path(urls[0]).write_bytes(data[:cut])  # inside the last image: the tar stream ends early
    with pytest.raises(UserError, match=r"shard-000000.tar: cannot read the shard \(ReadError: unexpected end of "
                                        r"data\); it may end mid-record") as info:  # fmt: skip
        list(ShardStream(urls, lambda x: x).samples())
    assert "\n" not in str(info.value)
    with tarfile.open(tmp_path / "cut.tar", "w") as tar:  # ends between the image and the label of a sample
        with tarfile.open(urls[0] + ".ok", "w") as _:
            pass
        member = tarfile.TarInfo("a1.png")
        png = io.BytesIO()
        Image.new("RGB", (4, 4)).save(png, format="PNG")
        member.size = len(png.getvalue())
        tar.addfile(member, io.BytesIO(png.getvalue()))
    with pytest.raises(UserError, match=r"cut.tar: sample a1: has no label \(cls\); its files are png\. The shard "
                                        r"may end mid-record"):  # fmt: skip
        list(ShardStream([str(tmp_path / "cut.tar")], lambda x: x).samples())


def _parquet(folder: Path) -> list[str]:
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["x", "y"])})
    rng = np.random.default_rng(1)
    overrides = []
    for split, n in (("train", 10), ("test", 4)):
        images = [Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)) for _ in range(n)]
        path = folder / f"{split}.parquet"
        datasets.Dataset.from_dict({"image": images, "label": [i % 2 for i in range(n)]}, features=features).to_parquet(
            str(path)
        )
        overrides.append(f"{split}: '{path}'")
    return ["dataset=hf", "dataset.data_files={" + ", ".join(overrides) + "}", f"dataset.hf_cache_dir={folder / 'hf'}"]


@pytest.mark.parametrize("source", ["synthetic", "hf"])
def test_convert_keeps_generated_and_hub_images(make_cfg, tmp_path: Path, source: str) -> None:
    from glsim_pl.dataset import main

    if source == "synthetic":
        overrides = ["dataset=synthetic", "dataset.train_size=10", "dataset.test_size=4"]
    else:
        overrides = _parquet(tmp_path)
    out = tmp_path / "shards"
    main(["convert", *overrides, "--out", str(out), "--shard-size", "3", "--no-progress"])
    dm = _dm(make_cfg, *overrides)
    dm.setup()
    info = json.loads((out / "info.json").read_text())
    assert info["class_names"] == dm.class_names
    stream = ShardStream([str(out / s) for s in info["splits"]["test"]["shards"]], transform=None)
    got = [decode_sample(s, None, False) for s in stream.raw()]
    assert len(got) == len(dm.data_test) == 4
    for (image, label, _), i in zip(got, dm.data_test.indices, strict=True):
        want_image, want_label, _ = dm.splits.test[i]
        assert label == want_label and np.array_equal(np.asarray(image), np.asarray(want_image))


@pytest.mark.slow
def test_two_process_ddp_on_shards_matches_single_process(make_cfg, tmp_path: Path) -> None:
    """A real 2-process fit on shards (each rank its own shards), then validation: 2 processes give the single
    process's numbers, as every val image is scored once over the ranks."""
    import lightning as L
    import torch

    from glsim_pl.dataset import main
    from glsim_pl.train import train
    from glsim_pl.training.module import GLSimLitModule

    out = tmp_path / "shards"
    main(["convert", "dataset=synthetic", "dataset.train_size=80", "dataset.test_size=20", "--out", str(out),
          "--shard-size", "4", "--no-progress"])  # fmt: skip
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy.start_method=spawn"]
    data = ["dataset=wds", f"dataset.root={out}", "dataset.batch_size=4", "dataset.num_workers=0"]
    cfg = make_cfg(*TINY, *data, "logger=none", "test=false", "callbacks.crop_visualizer=null", *ddp, tiny=False,
                   output_dir=tmp_path / "ddp")  # fmt: skip
    fitted = train(cfg)
    assert fitted["val/loss"] > 0
    module = GLSimLitModule.load_from_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.ckpt")
    torch.manual_seed(0)  # decisive logits
    torch.nn.init.normal_(module.net.head.weight, std=1.0)
    quiet = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    single = L.Trainer(**quiet).validate(module, datamodule=_dm(make_cfg, *data))[0]
    two = instantiate(cfg.trainer, callbacks=[], **quiet).validate(module, datamodule=_dm(make_cfg, *data))[0]
    assert two["val/acc1"] == pytest.approx(single["val/acc1"], abs=1e-6)
    assert two["val/loss"] == pytest.approx(single["val/loss"], rel=1e-5)


def test_brace_patterns_and_pipe_urls(make_cfg, tmp_path: Path) -> None:
    from glsim_pl.data.datasets.wds import expand_urls

    urls = _write_shards(tmp_path / "shards", shards=3, per_shard=2)
    pattern = str(tmp_path / "shards" / "shard-{000000..000002}.tar")
    assert expand_urls(pattern) == urls
    piped = ShardStream([f"pipe:cat {u}" for u in urls], None)
    assert sorted(s["__key__"] for s in piped.raw()) == sorted(f"s{s}-{k}" for s in range(3) for k in range(2))
    dm = _dm(make_cfg, "dataset=wds", f"dataset.urls='{pattern}'", f"dataset.test_urls='pipe:cat {urls[0]}'",
             "dataset.num_classes=1")  # fmt: skip
    dm.check()
    splits = dm.shard_info["splits"]
    assert splits["train"]["counts"] == [2, 2, 2] and splits["test"]["counts"] is None  # a pipe is not counted
    assert dm.class_names == ["0"]
    dm.setup()
    with pytest.raises(UserError, match="dataset=wds is read as a stream and has no image by index"):
        dm.data_val[0]  # glsim-visualize picks images by index


def test_a_plain_jpeg_sample_takes_the_image_files_fast_path() -> None:
    import torch
    from torchvision.transforms.v2.functional import pil_to_tensor

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(4).integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(buffer, "JPEG")
    sample = {"__key__": "a", "__url__": "x.tar", "jpg": buffer.getvalue(), "cls": b"1"}
    fast, label, _ = decode_sample(sample, None, False, plain_jpeg_tensor=True)
    checked, _, _ = decode_sample(sample, None, False)
    assert isinstance(fast, torch.Tensor) and label == 1 and torch.equal(fast, pil_to_tensor(checked))


# -- 3 ranks: shard and sample counts that divide by neither the ranks nor the workers ----------------------------
SIZES = [5, 5, 5, 5, 4, 4, 3]  # 7 shards, 31 samples; each sample's label is its id


def _write_id_shards(folder: Path, sizes: list[int]) -> list[str]:
    import webdataset as wds

    folder.mkdir()
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(buffer, format="PNG")
    urls, ident = [], 0
    for s, size in enumerate(sizes):
        urls.append(str(folder / f"shard-{s:06d}.tar"))
        with wds.TarWriter(urls[-1]) as sink:
            for _ in range(size):
                sink.write({"__key__": f"id{ident:04d}", "png": buffer.getvalue(), "cls": str(ident).encode()})
                ident += 1
    return urls


def _ids_per_rank(urls: list[str], epoch: int, ranks: int, workers: int, batch: int) -> tuple[list[list[int]], int]:
    """The sample ids each rank's train loader gives in ``epoch`` (real loader workers) and the epoch's batch count."""
    import torch

    from glsim_pl.data.datasets.wds import _EpochLoader

    trainer = SimpleNamespace(current_epoch=epoch)
    seen, limits = [], set()
    for rank in range(ranks):
        stream = ShardStream(urls, _Blank(), seed=3, shuffle=True, rank=rank, world_size=ranks, buffer=4)
        loader = _EpochLoader(SimpleNamespace(trainer=trainer), stream, SIZES, batch_size=batch, num_workers=workers)
        batches = list(loader)
        limits.add(len(batches))
        assert len(batches) == len(loader)  # the length Lightning plans is the length the loader gives
        seen.append(torch.cat([labels for _, labels in batches]).tolist())
    assert len(limits) == 1  # every rank takes the same number of steps
    return seen, limits.pop()


class _Blank:
    """A transform that drops the pixels (the tests follow sample ids, carried by the labels)."""

    def __call__(self, image):
        import torch

        return torch.zeros(1)


def test_three_ranks_two_workers_read_each_sample_once_and_agree_on_the_epoch_length(tmp_path: Path) -> None:
    urls = _write_id_shards(tmp_path / "shards", SIZES)
    for epoch in range(3):
        raw, dealt = [], []
        for rank in range(3):
            stream = ShardStream(urls, None, seed=3, shuffle=True, rank=rank, world_size=3, buffer=4)
            stream.set_epoch(epoch)
            dealt.append({int(bytes(s["cls"])) for w in range(2) for s in stream.raw(w, num_workers=2)})
            raw += sorted(dealt[-1])
        assert sorted(raw) == list(range(31))  # the stream: every sample exactly once over 3 ranks x 2 workers
        seen, limit = _ids_per_rank(urls, epoch, ranks=3, workers=2, batch=2)
        flat = [i for ids in seen for i in ids]
        assert len(flat) == len(set(flat)) == 3 * limit * 2  # no duplicates; the defined epoch length on every rank
        assert all(set(ids) <= mine for ids, mine in zip(seen, dealt, strict=True))  # only the rank's own shards
        assert limit >= 1


class _Counting(_Blank):
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, image):
        self.calls += 1
        return super().__call__(image)


def test_the_epoch_ends_at_its_last_batch_with_the_same_batches_and_nothing_decoded_past_it(tmp_path: Path) -> None:
    from torch.utils.data import DataLoader

    from glsim_pl.data.datasets.wds import _EpochLoader

    urls = _write_id_shards(tmp_path / "shards", SIZES)
    for workers in (0, 2):
        for rank in range(3):
            stream = ShardStream(urls, _Counting(), seed=3, shuffle=True, rank=rank, world_size=3, buffer=4)
            epoch = SimpleNamespace(trainer=SimpleNamespace(current_epoch=1))
            loader = _EpochLoader(epoch, stream, SIZES, batch_size=2, num_workers=workers)
            capped = [labels.tolist() for _, labels in loader]
            assert len(capped) == loader.batches(1) and sum(stream.caps) == 2 * len(capped)
            if workers == 0:
                assert stream.transform.calls == 2 * len(capped)  # no sample decoded only to be dropped
            stream.caps = None  # the same epoch, every worker reading its shards whole
            whole = [labels.tolist() for _, labels in DataLoader(stream, batch_size=2, num_workers=workers,
                                                                  drop_last=True)]  # fmt: skip
            assert capped == whole[: len(capped)]


class RecordIds(Callback):
    """Writes the labels (sample ids) of each train batch this rank took, per epoch, to ``<out>/rank<N>.json``."""

    def __init__(self, out: Path) -> None:
        self.out, self.seen = out, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.setdefault(trainer.current_epoch, []).extend(batch[1].tolist())

    def on_train_end(self, trainer, pl_module) -> None:
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.seen))


@pytest.mark.slow
def test_three_process_fit_takes_the_samples_the_loader_defines(make_cfg, tmp_path: Path, monkeypatch) -> None:
    """A real 3-process DDP fit, 2 loader workers per rank, 2 epochs: each rank trains on exactly the samples the
    data module deals it (computed here in one process), no sample twice in an epoch, the same step count on every
    rank."""
    import torch

    import glsim_pl.train as train_module

    urls = _write_id_shards(tmp_path / "shards", SIZES)
    build = train_module.instantiate

    def with_recorder(cfg, **kwargs):
        if "callbacks" in kwargs:
            kwargs["callbacks"] = [*kwargs["callbacks"], RecordIds(tmp_path)]
        return build(cfg, **kwargs)

    monkeypatch.setattr(train_module, "instantiate", with_recorder)
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=3", "trainer.strategy.start_method=spawn"]
    cfg = make_cfg(*TINY, "dataset=wds", f"dataset.urls={urls}", f"dataset.test_urls={urls}", "dataset.num_classes=31",
                   "dataset.batch_size=2",
                   "dataset.num_workers=2", "dataset.shuffle_buffer=4", "seed=3", "trainer.max_epochs=2",
                   "logger=none", "test=false", "callbacks.crop_visualizer=null", *ddp, tiny=False,
                   output_dir=tmp_path / "ddp")  # fmt: skip
    train_module.train(cfg)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(3)]
    steps = 0
    for epoch in range(2):
        want, limit = _ids_per_rank(urls, epoch, ranks=3, workers=2, batch=2)
        got = [rank[str(epoch)] for rank in ranks]
        assert [sorted(ids) for ids in got] == [sorted(ids) for ids in want]
        flat = [i for ids in got for i in ids]
        assert len(flat) == len(set(flat)) == 3 * 2 * limit
        steps += limit
    assert torch.load(tmp_path / "ddp" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == steps


@pytest.mark.slow
def test_test_split_on_two_and_three_processes_equals_one(make_cfg, tmp_path: Path) -> None:
    """Evaluation of a wds test split of 7 uneven shards (31 images, batch 4): every image is scored once over the
    ranks, so 2 and 3 processes give the single process's accuracy and loss."""
    import lightning as L
    import torch

    from tests.helpers.checkpoints import save_lightning_ckpt

    urls = _write_id_shards(tmp_path / "shards", SIZES)
    module = save_lightning_ckpt(tmp_path / "m.ckpt", num_classes=31)
    torch.manual_seed(0)
    torch.nn.init.normal_(module.net.head.weight, std=1.0)  # decisive logits, some right by chance
    data = ["dataset=wds", f"dataset.urls={urls[:2]}", f"dataset.test_urls={urls}", "dataset.num_classes=31",
            "dataset.batch_size=4", "dataset.num_workers=0"]  # fmt: skip
    quiet = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    single = L.Trainer(**quiet).test(module, datamodule=_dm(make_cfg, *data), verbose=False)[0]
    for devices in (2, 3):
        cfg = make_cfg(*TINY, *data, "trainer=ddp", "trainer.accelerator=cpu", f"trainer.devices={devices}",
                       "trainer.strategy.start_method=spawn", "trainer.precision=32-true", "logger=none",
                       tiny=False)  # fmt: skip
        trainer = instantiate(cfg.trainer, callbacks=[], **quiet)
        many = trainer.test(module, datamodule=_dm(make_cfg, *data), verbose=False)[0]
        assert many["test/acc1"] == pytest.approx(single["test/acc1"], abs=1e-6), devices
        assert many["test/loss"] == pytest.approx(single["test/loss"], rel=1e-5), devices
    assert 0 < single["test/acc1"] < 1


def _one_shard(path: Path, members: dict[str, bytes]) -> str:
    import webdataset as wds

    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path)) as sink:
        sink.write({"__key__": "k0", **members})
    return str(path)


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"png": b"junk", "cls": b"0"}, r"bad.tar: sample k0\.png: not an image format PIL can read"),
        ({"png": None, "cls": b"7"}, r"bad.tar: sample k0\.cls: label 7 is outside the class list \(0\.\.2\)"),
        ({"png": None, "cls": b"x"}, r"bad.tar: sample k0\.cls: expected a 0-based integer label, found b'x'"),
    ],
)
def test_a_bad_sample_is_one_line_naming_shard_and_member(make_cfg, tmp_path: Path, members, message) -> None:
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    members = {k: png.getvalue() if v is None else v for k, v in members.items()}
    good = _one_shard(tmp_path / "good.tar", {"png": png.getvalue(), "cls": b"0"})
    bad = _one_shard(tmp_path / "bad.tar", members)
    dm = _dm(make_cfg, "dataset=wds", f"dataset.urls={good}", f"dataset.test_urls={bad}", "dataset.num_classes=3")
    dm.setup()
    with pytest.raises(UserError, match=message) as info:
        list(dm.test_dataloader())
    assert "\n" not in str(info.value)


def test_a_missing_shard_a_failed_command_and_too_few_shards_are_one_line(make_cfg, tmp_path: Path) -> None:
    urls = _write_shards(tmp_path / "shards", shards=2, per_shard=2)
    pattern = str(tmp_path / "shards" / "shard-{000000..000002}.tar")  # one shard more than written
    dm = _dm(make_cfg, "dataset=wds", f"dataset.urls='{pattern}'", f"dataset.test_urls={urls}", "dataset.num_classes=1")
    with pytest.raises(UserError, match=r"shard-000002.tar: no such shard file"):
        dm.check()
    command = f"pipe:cat {tmp_path / 'absent.tar'}"
    with pytest.raises(UserError, match=r"pipe:cat .*absent.tar: (the command failed|nothing came back)") as info:
        list(ShardStream([command], lambda x: x).samples())
    assert "\n" not in str(info.value)
    dm = _dm(
        make_cfg,
        "dataset=wds",
        f"dataset.urls={urls}",
        f"dataset.test_urls={urls[:1]}",
        "dataset.num_classes=1",
        "dataset.batch_size=2",
    )
    dm.setup()  # as glsim-train does, before the trainer exists
    dm.trainer = SimpleNamespace(global_rank=0, world_size=2, current_epoch=0)
    assert len(dm.train_dataloader()) == 1 and dm.train_stream.world_size == 2  # the rank is taken when asked
    with pytest.raises(UserError, match=r"the test split has 1 shard\(s\), fewer than the 2 devices reading it"):
        dm.test_dataloader()


def test_a_convert_that_fails_leaves_nothing_behind(tmp_path: Path, monkeypatch, capsys) -> None:
    import glsim_pl.data.datasets.wds_convert as wds_module
    from glsim_pl.dataset import main

    real, calls = wds_module._image_bytes, []

    def fail_on_the_fifth(source, index):
        calls.append(index)
        if len(calls) == 5:
            raise UserError(f"image {index}: cannot read (a file that changed after the data check)")
        return real(source, index)

    monkeypatch.setattr(wds_module, "_image_bytes", fail_on_the_fifth)
    out = tmp_path / "shards"
    with pytest.raises(SystemExit, match=r"error: image \d+: cannot read"):
        main(["convert", "dataset=synthetic", "dataset.train_size=10", "dataset.test_size=4", "--out", str(out),
              "--shard-size", "2", "--no-progress"])  # fmt: skip
    assert len(calls) == 5 and not out.exists() and not (tmp_path / "shards.partial").exists()
