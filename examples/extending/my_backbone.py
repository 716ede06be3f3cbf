"""A backbone of your own, registered with timm (any ViT with a CLS token works): ``model=my_vit``."""

from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer


@register_model
def my_vit_patch8(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """A small ViT, 8-pixel patches; glsim_pl passes img_size, num_classes and drop_path_rate as keywords."""
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):  # timm's factory keywords, not the model's
        kwargs.pop(key, None)
    defaults = {"patch_size": 8, "embed_dim": 48, "depth": 2, "num_heads": 2}
    return VisionTransformer(**{**defaults, **kwargs})
