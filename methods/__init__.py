"""Built-in methods (importable as ltbench.methods.<name>); each module registers itself."""

from . import ce  # noqa: F401
