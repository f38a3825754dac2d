"""CE: plain cross-entropy with instance-balanced sampling (the baseline every LTR paper reports)."""

from __future__ import annotations

from ltbench.method import Method
from ltbench.registry import methods


@methods.register()
class CE(Method):
    name = "ce"
    table_order = 0  # row order in tables
    description = "cross-entropy, instance-balanced sampling"
