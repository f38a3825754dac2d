"""Built-in benchmarks (importable as ltbench.datasets.<name>); each module registers itself."""

from . import cifar_lt, digits_lt, imagenet_lt, inat2018, places_lt  # noqa: F401
