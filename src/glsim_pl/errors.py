"""User-facing errors: their message is the whole story, so entry points print it without a traceback."""

__all__ = ["UserError"]


class UserError(ValueError):
    """Bad input (a file, a config key or a value) with a message that says what was expected."""
