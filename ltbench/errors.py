"""The one exception type for mistakes a user can make (and fix)."""


class LtbenchError(Exception):
    """A user-facing error: its message says what is wrong, where, and how to fix it.

    The CLI prints the message alone (no traceback) and exits with status 2.
    """
