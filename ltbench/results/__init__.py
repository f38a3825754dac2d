"""Results: the store of records on disk and everything made from them.

Owns: ``store`` (run directories, locks, record checks), ``tables`` (comparison tables),
``reference`` (published numbers), ``plots``, ``logs`` (metrics.csv, TensorBoard). May import:
spec, registry, errors, files. Never the engine or torch at import time.
"""

import os
from pathlib import Path

DEFAULT_RESULTS = Path(os.environ.get("LTBENCH_RESULTS", "results"))  # the results root unless --results says
