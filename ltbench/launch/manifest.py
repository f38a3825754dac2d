"""The manifest ``<results>/jobs/manifest.json``: it maps run ids to the jobs launched for them,
across sweeps."""

from __future__ import annotations

import fcntl
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..results.store import atomic_write_json
from .jobstate import _pid_is_local_job

if TYPE_CHECKING:
    from ..spec.run_spec import RunSpec
    from .jobs import Launched

class Manifest:
    """``<results>/jobs/manifest.json``: the sweeps launched into a results root and, per run id, the
    jobs launched for it (newest last). Every update is a read-modify-write under an exclusive lock,
    written atomically (temp file + rename).

    A manifest that cannot be read (not JSON, the wrong shape) only loses the map from runs to jobs: the
    readers go on from the store without it, after one warning line per process, and the next update
    moves it aside (``manifest.json.damaged``) and starts a new one."""

    _reported: set[tuple[str, int, int]] = set()  # damaged manifests warned about (path, mtime, size)

    def __init__(self, results: Path | str):
        self.path = Path(results) / "jobs" / "manifest.json"

    def load(self) -> dict[str, Any]:
        data, problem = self._read()
        if problem is not None:
            self._warn(f"{self.path} {problem}; status and sweep go on without it (it only maps runs to their "
                       "jobs); delete it to drop this warning")
        return data

    def _read(self) -> tuple[dict[str, Any], str | None]:
        """(its content, None), or (an empty manifest, what is wrong with the file)."""
        from ..results.store import read_json, shape_problem

        empty: dict[str, Any] = {"version": 1, "sweeps": [], "runs": {}}
        if not self.path.exists():
            return empty, None
        data, problem = read_json(self.path)
        problem = problem or shape_problem(data, self._SHAPE)
        return (empty, problem) if problem else (data, None)

    def _warn(self, message: str) -> None:
        try:
            st = self.path.stat()
            key = (str(self.path.absolute()), st.st_mtime_ns, st.st_size)
        except OSError:
            key = (str(self.path.absolute()), 0, 0)
        if key not in Manifest._reported:
            Manifest._reported.add(key)
            sys.stderr.write(f"warning: {message}.\n")

    @staticmethod
    def _job_ok(e: Any) -> bool:
        if not isinstance(e, dict) or not isinstance(e.get("launcher"), str):
            return False
        job = e.get("job_id")
        return job is None or (isinstance(job, (int, str)) and isinstance(e.get("folder"), str)
                               and (e["launcher"] != "local" or str(job).isdigit())
                               and isinstance(e.get("gpus", []), list))

    _SHAPE: dict[str, Any] = {  # what status, sweep and the launchers read
        "runs": lambda v: isinstance(v, dict) and all(
            isinstance(r, dict) and isinstance(r.get("benchmark"), str) and isinstance(r.get("method"), str)
            and isinstance(r.get("seed"), int) and isinstance(r.get("jobs"), list)
            and all(Manifest._job_ok(e) for e in r["jobs"]) for r in v.values()),
        "sweeps": lambda v: isinstance(v, list) and all(
            isinstance(s, dict) and isinstance(s.get("id"), str) and isinstance(s.get("time"), (int, float))
            and isinstance(s.get("command"), str) and isinstance(s.get("launcher"), str)
            and isinstance(s.get("runs"), list) and all(isinstance(r, str) for r in s["runs"]) for s in v),
    }

    @contextmanager
    def _updating(self) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data, problem = self._read()
            if problem is not None:  # kept for a look, never overwritten
                aside = self.path.with_name(f"{self.path.name}.damaged")
                os.replace(self.path, aside)
                self._warn(f"{self.path} {problem}; moved it to {aside.name} and started a new one (it only maps "
                           "runs to their jobs)")
            yield data
            atomic_write_json(self.path, data)

    def record(self, command: str, launcher: str, specs: list[RunSpec], launched: list[Launched]) -> str:
        """Add a sweep (all its runs, done or not) and the jobs just launched; returns the sweep id."""
        sweep_id = time.strftime("%Y%m%d-%H%M%S-") + os.urandom(2).hex()
        now = time.time()
        with self._updating() as data:
            for s in specs:
                run = data["runs"].setdefault(s.run_id, {"jobs": []})
                run.update(benchmark=s.benchmark, method=s.method, seed=s.seed,
                           epochs=sum(hp.get("epochs", 0) for hp in s.stages.values()),
                           parent=s.parent_id)
            for x in launched:
                for rid in x.run_ids:
                    data["runs"][rid]["jobs"].append({**x.entry, "sweep": sweep_id, "submitted": now})
            data["sweeps"].append({"id": sweep_id, "time": now, "command": command, "launcher": launcher,
                                   "runs": [s.run_id for s in specs],
                                   "launched": [rid for x in launched for rid in x.run_ids]})
        return sweep_id

    def latest_jobs(self, data: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        """Run id -> the newest job launched for it."""
        data = data or self.load()
        return {rid: run["jobs"][-1] for rid, run in data["runs"].items() if run["jobs"]}

    def live_local_jobs(self) -> list[dict[str, Any]]:
        jobs = {str(e["job_id"]): e for e in self.latest_jobs().values()
                if e.get("launcher") == "local" and e.get("host") == socket.gethostname()}
        return [e for e in jobs.values() if _pid_is_local_job(int(e["job_id"]))]


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in ["ltbench", *sys.argv[1:]])
