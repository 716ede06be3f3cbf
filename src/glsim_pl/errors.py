"""User-facing errors: their message is the whole story, so entry points print it without a traceback."""

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

__all__ = ["UserError", "exit_on_user_error", "user_message"]

P = ParamSpec("P")
R = TypeVar("R")


class UserError(ValueError):
    """Bad input (a file, a config key or a value) with a message that says what was expected."""


def user_message(exc: UserError) -> str:
    """The message of ``exc`` itself, also when a DataLoader worker raised it.

    torch re-raises a worker's exception in the main process as the same type whose message is
    ``"Caught UserError in DataLoader worker process 0.\nOriginal Traceback ..."`` followed by the formatted
    traceback; the original message is what follows the last ``<module>.<class>: `` header.
    """
    text = str(exc)
    if not text.startswith(f"Caught {type(exc).__name__} in DataLoader worker"):
        return text
    header = f"{type(exc).__module__}.{type(exc).__qualname__}: "
    cut = text.rfind(header)
    return text[cut + len(header) :].strip() if cut >= 0 else text.splitlines()[-1].strip()


def exit_on_user_error(fn: Callable[P, R]) -> Callable[P, R]:
    """Entry points: a :class:`UserError` ends the program with its message alone (exit 1, no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            raise SystemExit(f"error: {user_message(exc)}") from None

    return wrapper
