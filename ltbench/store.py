"""The results store: one directory per run, content-addressed by the spec.

    <root>/runs/<benchmark>/<method>/<run_id>/
        spec.json  metrics.jsonl  checkpoint.pt  result.json  DONE  (lock while running)
        features/  (stage-1 runs) kept features of the frozen backbone, shared by stage-2 runs

Every file is written atomically (temp file + rename); DONE is written last.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import LtbenchError
from .specs import RunSpec

STALE_AFTER_S = 600.0  # a lock whose heartbeat is older than this is abandoned


def _umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it: set, then restore at once
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file under the user's umask (read at import)


def temp_file(folder: Path | str, name: str) -> tuple[int, str]:
    """A new temporary file beside ``name`` in ``folder`` (to be renamed onto it), with the mode that
    the user's umask gives new files: mkstemp's 0600 would keep a group sharing a results directory out."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    os.fchmod(fd, FILE_MODE)
    return fd, tmp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = temp_file(path.parent, path.name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _slurm_restart_count() -> int:
    """How many times SLURM has requeued the current job (0 outside SLURM)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)


@dataclass
class RunDir:
    path: Path

    spec_file = property(lambda self: self.path / "spec.json")
    metrics_file = property(lambda self: self.path / "metrics.jsonl")
    checkpoint_file = property(lambda self: self.path / "checkpoint.pt")
    result_file = property(lambda self: self.path / "result.json")
    done_file = property(lambda self: self.path / "DONE")
    lock_file = property(lambda self: self.path / "lock")
    failed_file = property(lambda self: self.path / "FAILED")
    model_file = property(lambda self: self.path / "model.pt")

    @property
    def run_id(self) -> str:
        return self.path.name

    def is_done(self) -> bool:
        return self.done_file.exists()

    def spec(self) -> dict[str, Any]:
        return json.loads(self.spec_file.read_text())

    def result(self) -> dict[str, Any]:
        return json.loads(self.result_file.read_text())

    def metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_file.exists():
            return []
        text = self.metrics_file.read_text()
        lines = text.splitlines(keepends=True)  # a last line without its newline is still being written
        return [json.loads(line) for line in lines if line.strip() and line.endswith("\n")]

    def append_metrics(self, row: dict[str, Any]) -> None:
        with open(self.metrics_file, "a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def trim_metrics(self, stage: str, epochs_done: int) -> None:
        """Keep only lines of epochs that the checkpoint holds (a resumed run repeats the rest)."""
        rows = [r for r in self.metrics() if not (r.get("stage") == stage and r["epoch"] > epochs_done)]
        atomic_write_bytes(self.metrics_file, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode())

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        self._save_torch(state, self.checkpoint_file)

    def save_model(self, state: dict[str, Any]) -> None:
        """The reported model's weights (the selected checkpoint, after any post-hoc transform)."""
        self._save_torch(state, self.model_file)

    def _save_torch(self, state: dict[str, Any], path: Path) -> None:
        import torch

        fd, tmp = temp_file(self.path, path.stem)
        os.close(fd)
        try:
            torch.save(state, tmp)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def load_checkpoint(self) -> dict[str, Any] | None:
        if not self.checkpoint_file.exists():
            return None
        import torch

        try:
            return torch.load(self.checkpoint_file, map_location="cpu", weights_only=True)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:120]
            raise LtbenchError(f"{self.checkpoint_file} cannot be read ({type(exc).__name__}: {first}); "
                               "delete it to restart this run "
                               "from scratch, or rerun with --force.") from exc

    def lock_info(self) -> dict[str, Any] | None:
        try:
            info = json.loads(self.lock_file.read_text())
            info["age_s"] = time.time() - self.lock_file.stat().st_mtime
            return info
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def lock_is_live(self) -> bool:
        info = self.lock_info()
        if info is None:
            return False
        if info.get("host") == socket.gethostname() and not pid_alive(int(info.get("pid", -1))):
            return False
        job = os.environ.get("SLURM_JOB_ID")
        if job and info.get("job") == job and (info.get("host") != socket.gethostname()
                                               or info.get("restart", 0) < _slurm_restart_count()):
            return False  # left by an earlier run of this SLURM job, which was requeued (maybe to another node)
        return info["age_s"] < STALE_AFTER_S

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive right to write this run directory, with a heartbeat (``heartbeat()``)."""
        me = {"host": socket.gethostname(), "pid": os.getpid(), "job": os.environ.get("SLURM_JOB_ID"),
              "restart": _slurm_restart_count(), "started": time.time()}
        for _ in range(2):
            try:
                fd = os.open(self.lock_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
                with os.fdopen(fd, "w") as f:
                    json.dump(me, f)
                break
            except FileExistsError:
                if self.lock_is_live():
                    info = self.lock_info() or {}
                    raise LtbenchError(
                        f"run {self.run_id} is already running (host {info.get('host')}, pid {info.get('pid')}, "
                        f"job {info.get('job')}); wait for it, or delete {self.lock_file} if that process is gone."
                    ) from None
                self.lock_file.unlink(missing_ok=True)  # stale: its owner died
        else:
            raise LtbenchError(f"could not take the lock {self.lock_file}; another process keeps taking it.")
        try:
            yield
        finally:
            self.lock_file.unlink(missing_ok=True)

    def heartbeat(self) -> None:
        if self.lock_file.exists():
            os.utime(self.lock_file)

    def state(self) -> str:
        if self.is_done():
            return "done"
        if self.lock_is_live():
            return "running"
        if self.failed_file.exists():
            return "failed"
        return "unfinished"


class Store:
    def __init__(self, root: Path | str):
        self.root = Path(root)

    def run_dir(self, spec: RunSpec) -> RunDir:
        return RunDir(self.root / "runs" / spec.benchmark / spec.method / spec.run_id)

    def create(self, spec: RunSpec) -> RunDir:
        """The run directory with its spec.json; checks that the store is writable first."""
        rd = self.run_dir(spec)
        try:
            rd.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LtbenchError(f"cannot create the run directory {rd.path} ({exc.strerror}); "
                               "pass a writable --results directory.") from exc
        if not rd.spec_file.exists():
            atomic_write_json(rd.spec_file, {**spec.canonical(), "run_id": spec.run_id, "origins": spec.origins})
        return rd

    def remove(self, rd: RunDir) -> None:
        shutil.rmtree(rd.path, ignore_errors=True)
        # prune empty parents up to runs/
        for parent in (rd.path.parent, rd.path.parent.parent):
            try:
                parent.rmdir()
            except OSError:
                break

    def runs(self) -> list[RunDir]:
        base = self.root / "runs"
        if not base.is_dir():
            return []
        return sorted((RunDir(p.parent) for p in base.glob("*/*/*/spec.json")), key=lambda r: str(r.path))

    def find(self, run_id: str) -> RunDir:
        hits = [r for r in self.runs() if r.run_id.startswith(run_id)]
        if len(hits) != 1:
            what = "no run" if not hits else f"{len(hits)} runs"
            raise LtbenchError(f"{what} in {self.root} with id {run_id!r}; `ltbench status` lists the runs.")
        return hits[0]
