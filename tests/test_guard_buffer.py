"""The divergence guard's per-step record (a device buffer read every N steps) names the first bad step exactly."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from glsim_pl.callbacks.divergence_guard import DivergenceError, DivergenceGuard


def _trainer(step: int) -> SimpleNamespace:
    strategy = SimpleNamespace(reduce_boolean_decision=lambda value, all=True: value)
    return SimpleNamespace(global_step=step, current_epoch=1, log_every_n_steps=4, strategy=strategy,
                           precision_plugin=SimpleNamespace(), checkpoint_callbacks=[])  # fmt: skip


@pytest.mark.parametrize("bad", ["grad", "loss"])
def test_first_bad_step_is_reported_at_the_next_check(bad: str) -> None:
    guard = DivergenceGuard("stop", check_every_n_steps=4)
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=0.5)
    for step in range(8):  # steps 1..8; step 6 is bad, then it stays bad
        trainer = _trainer(step)
        loss = torch.tensor(float("nan") if bad == "loss" and step >= 5 else 1.0 + step)
        guard.on_before_backward(trainer, None, loss)
        weight.grad = torch.full((3,), float("inf") if bad == "grad" and step >= 5 else 0.1)
        guard.on_before_optimizer_step(trainer, None, optimizer)
        trainer.global_step = step + 1
        if step + 1 < 8:
            guard.on_train_batch_end(trainer, None)  # checks at steps 4 and 8 only
            continue
        with pytest.raises(DivergenceError, match=r"at step 6 \(epoch 1, lr 0.5\)") as info:
            guard.on_train_batch_end(trainer, None)
        assert ("grad norm inf" if bad == "grad" else "loss nan") in str(info.value)


def test_finite_steps_pass_every_check() -> None:
    guard = DivergenceGuard("stop", check_every_n_steps=2)
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    for step in range(9):  # the buffer (3 rows) refills after each check
        trainer = _trainer(step)
        guard.on_before_backward(trainer, None, torch.tensor(0.5))
        weight.grad = torch.ones(3)
        guard.on_before_optimizer_step(trainer, None, optimizer)
        trainer.global_step = step + 1
        guard.on_train_batch_end(trainer, None)
    guard.on_train_end(trainer, None)
    assert guard._filled <= 1
