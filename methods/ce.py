"""CE: plain cross-entropy with instance-balanced sampling (the baseline every LTR paper reports)."""

from __future__ import annotations

from ltbench.method import Method, Presentation
from ltbench.registry import methods


@methods.register()
class CE(Method):
    name = "ce"
    presentation = Presentation(order=0)
    description = "cross-entropy, instance-balanced sampling"
