"""A selector of your own: the patches whose tokens have the largest norm. Train with it:

python -m glsim_pl.train imports=[my_selectors] method.selector=token_norm
"""

from torch import Tensor

from glsim_pl.models.selectors import SelectorInputs, register_selector


@register_selector("token_norm")  # no attention needed: layers=None (the default), so the run may compile
def token_norm(x: SelectorInputs) -> Tensor:
    """L2 norm of every patch token after the final norm. (B, N, D) -> (B, N); larger = selected."""
    return x.patches.float().norm(dim=-1)
