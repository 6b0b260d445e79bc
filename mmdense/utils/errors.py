"""Errors the user can act on: each message names the file or key and the reason.

:func:`mmdense.utils.cli.run_cli` prints a :class:`UserError` as one ``error: <message>`` line
(exit status 2); any other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """An input mistake the user can act on; the message names the file/key and the reason."""


class UserValueError(UserError, ValueError):
    """A bad value in the user's input (a ``ValueError`` too)."""


class UserKeyError(UserError, KeyError):
    """A missing key in the user's input (a ``KeyError`` too, printed without quotes)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ''
