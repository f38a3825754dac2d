"""``--log wandb``: each stage of a run is a Weights & Biases run (the optional ``wandb`` package).

- Mode: WANDB_MODE when it is set (online, offline, disabled); otherwise online where wandb finds an API
  key (WANDB_API_KEY, `wandb login`), else offline, which needs no account and no network: the run's
  files go to ``<run>/wandb/offline-run-*`` (`wandb sync <run>/wandb/offline-run-*` uploads them later).
- Files: under the run directory (``<run>/wandb/``, removed with the run by `ltbench rm`) unless WANDB_DIR
  says where.
- Project: WANDB_PROJECT, else "ltbench"; entity: wandb's default (WANDB_ENTITY). Name: method/benchmark/
  run id; tags: method, benchmark, stage; config: the stage's hyperparameters (``logs.stage_hparams``).
- Resumption: the wandb run id is the ltbench run id, the stage and the run directory's ``log_id``
  (``wandb_id``), so a resumed run, and its final record once result.json is written, continue the same
  wandb run (offline: one more folder of the same run id, which `wandb sync` uploads in order), while the
  same run id in another store, or trained anew after `ltbench rm`, is a wandb run of its own. An epoch is logged at step = its number; an
  epoch that a killed process had logged already keeps its first values (wandb ignores a step it has).
- Per epoch: the metrics of ``logs.epoch_metrics``; the final record: ``logs.final_metrics`` in the run's
  summary.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .logs import epoch_metrics, final_metrics, log_id, run_name

if TYPE_CHECKING:
    from .store import RunDir

PROJECT = "ltbench"


def wandb_id(rd: RunDir, stage: str) -> str:
    """The wandb run id of a run's stage: its run id, the stage and the run directory's ``log_id``, the same
    on every start of that directory, so a resumed run continues it."""
    return f"{rd.run_id}-{stage}-{log_id(rd)}"


def wandb_mode() -> str:
    """WANDB_MODE where it is set; else online when wandb has credentials (checked without the network
    and without a prompt), else offline. (Passed to wandb.init, as are the project and the folder: wandb
    reads its environment once a process, and ltbench reads it at every run.)"""
    import wandb

    if os.environ.get("WANDB_MODE"):  # wandb's older names too
        return {"dryrun": "offline", "run": "online"}.get(os.environ["WANDB_MODE"], os.environ["WANDB_MODE"])
    try:
        has_key = wandb.login(prompt=False, verify=False)
    except TypeError:  # a wandb without login(prompt=): the environment's key only
        has_key = bool(os.environ.get("WANDB_API_KEY"))
    return "online" if has_key else "offline"


class WandbLog:
    """One stage of a run as a wandb run."""

    def __init__(self, rd: RunDir, stage: str, hparams: dict[str, Any]):
        import wandb

        self.finished = False
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or PROJECT, id=wandb_id(rd, stage), resume="allow",
            name=run_name(hparams), tags=[str(hparams["method"]), str(hparams["benchmark"]), stage],
            job_type=stage, config=hparams, mode=wandb_mode(), dir=os.environ.get("WANDB_DIR") or rd.path,
            settings=wandb.Settings(console="off", save_code=False, quiet=True))

    def epoch(self, row: dict[str, Any], norms: list[float] | None) -> None:
        self.run.log(epoch_metrics(row, norms), step=int(row["epoch"]))

    def final(self, record: dict[str, Any]) -> None:
        self.run.summary.update(final_metrics(record))
        self.finished = True

    def close(self) -> None:
        """Finish the wandb run: exit code 0 once the final record is in, else 1 (the stage stopped before
        it, or this is not the run's last stage)."""
        self.run.finish(exit_code=0 if self.finished else 1)
