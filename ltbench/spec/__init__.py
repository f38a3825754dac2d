"""What a run is: the settings schema, recipes, config files and the content-addressed run spec.

Owns: ``schema`` (every setting's type, default, allowed values, range and help), ``recipes``
(named presets per benchmark family), ``config`` (YAML/TOML files), ``run_spec`` (RunSpec, its
canonical form and run id, and ``resolve``) and ``request`` (the one request that `ltbench run`,
`ltbench sweep` and ``ltbench.run`` build). May import: errors, registry, method, data.benchmark.
No torch.
"""
