"""A selector of your own: the patches whose tokens have the largest norm. Train with it:

python -m glsim_pl.train imports=[my_selectors] method.selector=token_norm
"""

from torch import Tensor

from glsim_pl.models.selectors import ScoringShape, SelectorInputs, register_selector


def token_norm_flops(s: ScoringShape) -> float:
    """Analytic cost of the scoring: a square and a sum per token channel."""
    return 2 * (s.tokens - 1) * s.dim


@register_selector("token_norm", flops=token_norm_flops)  # no attention needed (layers=None): the run may compile
def token_norm(x: SelectorInputs) -> Tensor:
    """L2 norm of every patch token after the final norm. (B, N, D) -> (B, N); larger = selected."""
    return x.patches.float().norm(dim=-1)
