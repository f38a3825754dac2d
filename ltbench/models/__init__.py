"""Backbones: every model is an ``LTModel`` (a feature extractor and a final classifier kept apart).

Owns: ``backbones`` (ResNets, the small CNN, initial weights) and ``experts`` (multi-expert models).
Registered in ``ltbench.registry.backbones``. May import: registry, errors, files.
"""
