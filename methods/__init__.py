"""Built-in methods (importable as ltbench.methods.<name>); each module registers itself."""

from . import cb, ce, crt, ldam_drw, logit_adjust, lws, ride, sade, tau_norm, wb  # noqa: F401
from . import disalign, focal, mislas  # noqa: F401  (issue 16: focal losses, MiSLAS, DisAlign)
from . import bcl  # noqa: F401  (issue 16: balanced contrastive learning)
