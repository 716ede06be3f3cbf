"""User-facing errors: their message is the whole story, so entry points print it without a traceback."""

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

__all__ = ["UserError", "exit_on_user_error"]

P = ParamSpec("P")
R = TypeVar("R")


class UserError(ValueError):
    """Bad input (a file, a config key or a value) with a message that says what was expected."""


def exit_on_user_error(fn: Callable[P, R]) -> Callable[P, R]:
    """Entry points: a :class:`UserError` ends the program with its message alone (exit 1, no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            raise SystemExit(f"error: {exc}") from None

    return wrapper
