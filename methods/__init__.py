"""Built-in methods (importable as ltbench.methods.<name>); each module registers itself."""

from . import (  # noqa: F401  # noqa: F401  (issue 16: focal losses, MiSLAS, DisAlign)
    bcl,  # noqa: F401  (issue 16: balanced contrastive learning)
    cb,
    ce,
    crt,
    disalign,
    focal,
    ldam_drw,
    lift,  # noqa: F401  (issue 24: foundation models; zeroshot too)
    logit_adjust,
    lws,
    mislas,
    ride,
    sade,
    tau_norm,
    wb,
    zeroshot,
)
