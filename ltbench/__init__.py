"""ltbench: a benchmark harness for long-tailed recognition."""

__version__ = "0.1.0"
PROTOCOL_VERSION = 1
