"""Built-in benchmarks (importable as ltbench.datasets.<name>); each module registers itself."""

from . import (  # noqa: F401
    cifar_lt,
    digits_lt,
    imagefolder,  # noqa: F401  (issue 15: a user's own image folder)
    imagenet_lt,
    inat2018,
    places_lt,
)
