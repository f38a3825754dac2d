"""Built-in benchmarks (importable as ltbench.datasets.<name>); each module registers itself."""

from . import cifar_lt, digits_lt, imagenet_lt, inat2018, places_lt  # noqa: F401
from . import imagefolder  # noqa: F401  (issue 15: a user's own image folder)
