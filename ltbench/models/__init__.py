"""Backbones: every model is an ``LTModel`` (a feature extractor and a final classifier kept apart).

Owns: ``backbones`` (ResNets, the small CNN, initial weights), ``experts`` (multi-expert models),
``pretrained`` (open_clip and timm backbones and their weights) and ``peft`` (parameter-efficient tuning).
Registered in ``ltbench.registry.backbones``. May import: registry, errors, files.
"""
