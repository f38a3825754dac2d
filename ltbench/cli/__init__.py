"""The command line (`ltbench ...`, Typer): parsing, printing and one-line errors; no training logic.

Owns: the commands (app: run, list, status, show, table, plot; sweep and status; data; eval and
export, report and its HTML page) and the dry-run/show text. May import every other part of ltbench;
nothing imports it but the console script (``ltbench.cli.app:main``) and the Python API (``ltbench.api``),
which prints the same texts. torch is imported only by the commands that train.
"""
