"""Built-in benchmarks (importable as ltbench.datasets.<name>); each module registers itself."""

from . import cifar_lt, digits_lt  # noqa: F401
