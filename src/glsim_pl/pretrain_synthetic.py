"""The embedded default's backbone: a tiny ViT pretrained on its own synthetic images, one label per patch.

    python -m glsim_pl.pretrain_synthetic                 # -> the cache file the default run uses (built on first use)
    python -m glsim_pl.pretrain_synthetic --out /tmp/b.safetensors --epochs 3 dataset.body_frac=[0.3,0.5]

``python -m glsim_pl.train`` builds this file itself the first time it needs it
(:mod:`glsim_pl.config.synthetic_backbone`); the command builds it ahead, or elsewhere, and prints what the build did.
The images come from ``dataset=synthetic`` with its look (any ``dataset.*`` override applies) but another data seed
(``--data-seed``, 1), so no image of the default's train, val or test splits is seen here, and coarse classes: ten
hues 0.1 apart around the whole wheel (``--hue-step``), where the default's classes are hues 0.015 apart. The fine
distinctions are learnt in the default run, as a backbone pretrained on a large generic set is fine-tuned on a
fine-grained one. Each image goes through the evaluation transform (resize, centre crop) and the model preset's
encoder is trained from scratch with :func:`glsim_pl.training.patch_pretrain.patch_pretrain` (the CLS names the class;
every patch token names the class of the bird it lies on, or background). The file holds the encoder only (timm
names, float32); its settings and the selector check below are stored in its metadata and printed.

Selector check: on the pretraining seed's test split, the share of the ``method.top_o`` patches most similar to the
CLS that lie in the bird's box, before and after training, beside the share of a random patch.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from glsim_pl.config.compose import compose_train
from glsim_pl.config.synthetic_backbone import Pretraining, backbone_path, build_backbone
from glsim_pl.errors import exit_on_user_error
from glsim_pl.training.patch_pretrain import PatchPretrainConfig

__all__ = ["main"]


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m glsim_pl.pretrain_synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/train.yaml (dataset.*, model.*)")
    parser.add_argument("--out", type=Path, default=None, help="the file to write (default: the run's cache file)")
    parser.add_argument("--data-seed", type=int, default=Pretraining.data_seed, help="data seed (the default's is 0)")
    parser.add_argument("--size", type=int, default=Pretraining.images, help="pretraining images")
    parser.add_argument("--hue-step", type=float, default=Pretraining.hue_step,
                        help="hue distance of the pretraining classes (coarse: unlike the default's)")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=PatchPretrainConfig.epochs)
    parser.add_argument("--patch-weight", type=float, default=PatchPretrainConfig.patch_weight,
                        help="weight of the per-patch loss beside the CLS loss")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="initialisation and batch order")
    args = parser.parse_args(argv)
    loop = PatchPretrainConfig(epochs=args.epochs, patch_weight=args.patch_weight, seed=args.seed)
    pretraining = Pretraining(args.data_seed, args.size, args.hue_step, loop)
    cfg = compose_train(args.overrides, what="pretrain_synthetic: bad overrides")
    out = args.out or backbone_path(cfg, pretraining)
    print(json.dumps(build_backbone(cfg, out, pretraining), indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
