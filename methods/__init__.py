"""Built-in methods (importable as ltbench.methods.<name>); each module registers itself."""

from . import cb, ce, crt, ldam_drw, logit_adjust, lws, tau_norm, wb  # noqa: F401
