"""Launchers: where runs execute (inline, local processes, SLURM through submitit) and sweeps.

Owns: ``dispatch`` (choose and check a launcher, launch), ``jobs`` (the job every launcher starts),
``local``, ``slurm``, ``jobstate`` (the scheduler's view), ``manifest`` (run ids -> jobs) and
``sweep`` (selectors x grid x seeds -> a plan). May import: spec, engine, results, errors.
"""
