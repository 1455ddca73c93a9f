"""Errors that end a command with a one-line message and a non-zero exit."""


class SnapprofError(Exception):
    """A failure the user can act on. The message is one line; exit_code is the status."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
