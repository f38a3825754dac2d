"""The engine: owns the training loop and the life of a run in the store.

Owns: ``training`` (execute a spec: stages, epoch loop, checkpoints, selection of the reported epoch),
``schedule`` (the lr schedule), ``stage_options`` (mixup/cutmix, label smoothing, re-weighting,
re-sampling, MaxNorm: options any method can switch on), ``evaluation`` (accuracies, norms,
features), ``distributed`` (torch.distributed), ``environment`` (device and provenance) and
and ``ltbench.progress`` (a leaf beside it) for bars. May import: spec, data, models, results (the store), method, registry, errors.
"""
