"""`ltbench tune`: hyperparameter search on Optuna, whose trials are ordinary runs.

Optuna owns the search (samplers, pruners) and the study's storage (a journal file under
``<results>/studies/``, which every worker on a shared file system can use); ltbench supplies the
objective (the validation score that tables select on, never test), turns each trial into a run of the
store through the one planner (``ltbench.spec.request.RunRequest``), and shows studies in tables,
``ltbench status`` and ``ltbench plot tune``.

- ``space``: ``--search STAGE.KEY=[log:|int:|choice:]LO..HI`` parsed and checked against the schema and
  the method's stages; the spaces that methods declare (``Method.search_space``);
- ``plan``: ``StudyPlan``, what a study is asked to do, and what its name stands for (its identity);
- ``planner``: a command's studies, checked before anything is written, and a trial's run spec;
- ``study``: a study's storage (a journal file), the guard of its claims, and its summary;
- ``samplers``: Optuna's samplers and pruners as `tune` configures them;
- ``worker``: the loop each worker runs (claim a trial, run it, report per-epoch validation, tell);
- ``launch``: workers inline, as local processes or as a SLURM array (submitit);
- ``rows``: tuned rows and the effort column of ``ltbench table``;
- ``plots``: ``ltbench plot tune STUDY`` (Optuna's matplotlib figures).

May import ltbench.spec, ltbench.results, ltbench.launch and (in ``worker``) ltbench.engine; Optuna is
imported inside the functions that need it, never by ``import ltbench`` or ``ltbench --help``.
"""
