"""ltbench: a benchmark harness for long-tailed recognition."""

import sys
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from importlib.util import spec_from_file_location
from pathlib import Path

__version__ = "0.1.0"
PROTOCOL_VERSION = 1

# The plugin packages live at the top of the repository (methods/, datasets/) and are installed as
# ltbench.methods and ltbench.datasets (setuptools' package-dir). A process that imports the
# checkout's own ltbench/ (its working directory is the checkout: `python -m pytest`, a local or SLURM
# job launched from there) finds no such subpackages inside it, whatever the install mode; this
# finder maps them to the sibling folders. An installed copy has them inside and never uses it.
PLUGIN_PACKAGES = ("methods", "datasets")


class _CheckoutPlugins(MetaPathFinder):
    def __init__(self, root: Path):
        self.root = root

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != __name__ or name not in PLUGIN_PACKAGES:
            return None
        init = self.root / name / "__init__.py"
        return spec_from_file_location(fullname, init, submodule_search_locations=[str(init.parent)])


def _map_checkout_plugins() -> None:
    here = Path(__file__).resolve().parent
    if any((here / name).is_dir() for name in PLUGIN_PACKAGES):
        return  # an installed copy: the plugins are inside
    if all((here.parent / name / "__init__.py").is_file() for name in PLUGIN_PACKAGES) and \
            not any(isinstance(f, _CheckoutPlugins) for f in sys.meta_path):
        sys.meta_path.append(_CheckoutPlugins(here.parent))


_map_checkout_plugins()

# The Python API (ltbench.api): `from ltbench import run, table`. Imported on first use, so that
# `import ltbench` (and every command) stays light; torch comes only with what trains.
API = ("run", "table", "plot")


def __getattr__(name: str) -> object:
    if name in API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
