"""Errors that end a command with a one-line message and a non-zero exit."""


class SnapprofError(Exception):
    """A failure the user can act on. The message is one line; exit_code is the status."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def first_line(what: BaseException | str) -> str:
    """A message cut to its first line that is not blank, for the one-line errors made of
    a library's longer ones; an exception without a message gives its type's name."""
    text = str(what).strip()
    if text:
        return text.splitlines()[0].strip()
    return type(what).__name__ if isinstance(what, BaseException) else ""
