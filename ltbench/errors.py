"""The one exception type for mistakes a user can make (and fix)."""

from __future__ import annotations

from pathlib import Path


class LtbenchError(Exception):
    """A user-facing error: its message says what is wrong, where, and how to fix it.

    The CLI prints the message alone (no traceback) and exits with status 2.
    """


class DamagedRecord(LtbenchError, ValueError):
    """A file of the results store that cannot be read as what it should hold (not JSON, the wrong
    shape, missing): ``path``, what is wrong with it (``problem``, e.g. "is not JSON") and ``fix``.
    A ValueError too, as the json errors it replaces were."""

    def __init__(self, path: Path | str, problem: str, fix: str):
        self.path, self.problem, self.fix = Path(path), problem, fix
        super().__init__(f"{path} {problem}; {fix}.")

    def __reduce__(self) -> tuple[type, tuple[Path, str, str]]:  # pickles (submitit) with its three parts
        return type(self), (self.path, self.problem, self.fix)
