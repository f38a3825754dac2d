"""Benchmark data: the Benchmark plugin interface, the splits the engine trains on, image files.

Owns: ``benchmark`` (the interface a dataset plugin implements, long-tailed counts), ``splits``
(in-memory splits, samplers, augmentation, feature splits), ``images`` (the image-file pipeline),
``splitfile`` / ``splitlist`` (published split lists), ``autoaugment`` and ``check`` (`ltbench data
check|prepare`). The plugins themselves live in ``ltbench.datasets``. May import: registry, errors,
files, progress, results.store (data check only).
"""
