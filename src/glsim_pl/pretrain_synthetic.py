"""The embedded default's backbone: a tiny ViT pretrained on its own synthetic images, one label per patch.

    python -m glsim_pl.pretrain_synthetic     # -> src/glsim_pl/backbones/synthetic_vit_tiny.safetensors
    python -m glsim_pl.pretrain_synthetic --out /tmp/b.safetensors --epochs 3 dataset.body_frac=[0.3,0.5]

The images come from ``dataset=synthetic`` with its look (any ``dataset.*`` override applies) but another data seed
(``--data-seed``, 1), so no image of the default's train, val or test splits is seen here, and coarse classes: ten
hues 0.1 apart around the whole wheel (``--hue-step``), where the default's classes are hues 0.01 apart. The
fine distinctions are learnt in the default run, as a backbone pretrained on a large generic set is fine-tuned on a
fine-grained one. Each image goes through
the evaluation transform (resize, centre crop) and the model preset's encoder is trained from scratch with
:func:`glsim_pl.training.patch_pretrain.patch_pretrain` (the CLS names the class; every patch token names the class
of the bird it lies on, or background). The file holds the encoder only (timm names, float32); the run's settings
and the selector check below are stored in its metadata and printed.

Selector check: on the pretraining seed's test split, the share of the ``method.top_o`` patches most similar to the
CLS that lie in the bird's box, before and after training, beside the share of a random patch.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from glsim_pl.config.compose import compose_train
from glsim_pl.config.instantiate import instantiate
from glsim_pl.data.base import TransformedView
from glsim_pl.data.datasets.synthetic import SyntheticDataModule
from glsim_pl.data.transforms import build_eval_transform
from glsim_pl.errors import UserError, exit_on_user_error
from glsim_pl.models.encoder import create_encoder
from glsim_pl.training.patch_pretrain import PatchPretrainConfig, patch_pretrain, selector_hit_rate

__all__ = ["main", "DEFAULT_OUT"]

DEFAULT_OUT = Path(__file__).resolve().parent / "backbones" / "synthetic_vit_tiny.safetensors"


def _tensors(data_module, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images, labels, boxes) of a split after the evaluation transform (boxes in model-input pixels)."""
    source = getattr(data_module.read_splits(), split)
    transform = build_eval_transform(data_module.image_size, data_module.resize_size, data_module.mean,
                                     data_module.std)  # fmt: skip
    view = TransformedView(source, range(len(source)), transform, return_boxes=True)
    images, labels, boxes = zip(*(view[i] for i in range(len(view))), strict=True)
    return torch.stack(images), torch.tensor(labels), torch.stack(boxes)


def pretrain(
    overrides: list[str], out: Path, data_seed: int, size: int, config: PatchPretrainConfig, hue_step: float = 0.1
) -> dict:
    if size < config.batch_size or config.epochs < 1:
        raise UserError(f"pretrain_synthetic: --size {size} / --epochs {config.epochs}: expected at least one batch "
                        f"({config.batch_size} images) and one epoch")  # fmt: skip
    cfg = compose_train(overrides, what="pretrain_synthetic: bad overrides")
    target = str(cfg.dataset.get("_target_", ""))
    if target.rsplit(".", 1)[-1] != SyntheticDataModule.__name__:
        raise UserError(f"pretrain_synthetic: dataset must be synthetic (its images are drawn with their boxes), "
                        f"not {target!r}")  # fmt: skip
    cfg.dataset.seed, cfg.dataset.train_size, cfg.dataset.test_size = data_seed, size, 500
    cfg.dataset.hue_step = hue_step
    data_module = instantiate(cfg.dataset)
    started = time.time()
    images, labels, boxes = _tensors(data_module, "train")
    test_images, _, test_boxes = _tensors(data_module, "test")
    torch.manual_seed(config.seed)
    encoder = create_encoder(cfg.model.backbone, int(cfg.dataset.image_size), pretrained=False,
                             backbone_kwargs=dict(cfg.model.get("backbone_kwargs") or {}))  # fmt: skip
    top_o = int(cfg.method.get("top_o", 4))
    encoder.eval()
    before, base = selector_hit_rate(encoder, test_images, test_boxes, top_o)
    losses = patch_pretrain(encoder, images, labels, boxes, int(cfg.dataset.num_classes), config)
    after, _ = selector_hit_rate(encoder, test_images, test_boxes, top_o)
    record = dict(command=" ".join(["python -m glsim_pl.pretrain_synthetic", *overrides]), data_seed=data_seed,
                  images=size, image_size=int(cfg.dataset.image_size), resize_size=data_module.resize_size,
                  look={k: v for k, v in data_module.options.items() if k != "seed"}, backbone=cfg.model.backbone,
                  backbone_kwargs=dict(cfg.model.get("backbone_kwargs") or {}), **config.__dict__,
                  loss_per_epoch=[round(v, 4) for v in losses], top_o=top_o, in_box_before=round(before, 3),
                  in_box_after=round(after, 3), in_box_random=round(base, 3),
                  seconds=round(time.time() - started, 1))  # fmt: skip
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    state = {k: v.detach().float().contiguous() for k, v in encoder.state_dict().items()}
    save_file(state, str(partial), metadata={"glsim_pl_pretrain": json.dumps(record)})
    partial.replace(out)
    return record


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m glsim_pl.pretrain_synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/train.yaml (dataset.*, model.*)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the safetensors file to write")
    parser.add_argument("--data-seed", type=int, default=1, help="data seed of the images (the default's is 0)")
    parser.add_argument("--size", type=int, default=3000, help="pretraining images")
    parser.add_argument(
        "--hue-step",
        type=float,
        default=0.1,
        help="hue distance of the pretraining classes (coarse: the default's fine classes are unseen)",
    )
    parser.add_argument("--epochs", type=int, default=PatchPretrainConfig.epochs)
    parser.add_argument(
        "--patch-weight",
        type=float,
        default=PatchPretrainConfig.patch_weight,
        help="weight of the per-patch loss beside the CLS loss",
    )
    parser.add_argument("--seed", type=int, default=0, help="initialisation and batch order")
    args = parser.parse_args(argv)
    record = pretrain(args.overrides, args.out, args.data_seed, args.size,
                      PatchPretrainConfig(epochs=args.epochs, patch_weight=args.patch_weight, seed=args.seed),
                      args.hue_step)  # fmt: skip
    print(json.dumps(record, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
