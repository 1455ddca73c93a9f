"""Errors that end a command with a one-line message and a non-zero exit."""


class SnapprofError(Exception):
    """A failure the user can act on. The message is one line; exit_code is the status."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (its type's name when it has none), for
    the one-line errors made of a library's longer ones."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
