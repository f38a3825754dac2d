"""The results store: one directory per run, content-addressed by the spec.

    <root>/runs/<benchmark>/<method>/<run_id>/
        spec.json  metrics.jsonl  checkpoint.pt  result.json  DONE  (lock while running; lock.guard, see RunDir.locked)
        features/  (stage-1 runs) kept features of the frozen backbone, shared by stage-2 runs

Every file is written atomically (temp file + rename); DONE is written last.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DamagedRecord, LtbenchError
from ..files import (  # noqa: F401
    FILE_MODE,
    atomic_write_bytes,
    atomic_write_json,
    damage,
    file_sha256,
    recorded_sha256,
    temp_file,
    write_checked,
    write_torch,
)
from ..spec.run_spec import RunSpec

STALE_AFTER_S = 600.0  # a lock held on another host is abandoned when its heartbeat is older than this
HEARTBEAT_S = 30.0  # how often the holder of a lock refreshes its heartbeat (the lock file's mtime)
UNREADABLE_STALE_S = 10.0  # a lock file that holds no owner's record is abandoned when older than this
GUARD_WAIT_S = 60.0  # the longest wait for lock.guard, which is held for the moment of taking or releasing a lock
EVALS = "evals"  # <root>/evals/<benchmark>/<eval_id>/: records of `ltbench eval` (ltbench.cli.eval)
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}  # link() errors of such file systems


def load_checked(path: Path, fix: str) -> Any:
    """torch.load of a file that a later run trusts (checkpoint.pt, model.pt), after checking it against
    its recorded sha256; a missing, damaged or unreadable file is one LtbenchError: ``path``, what is
    wrong, and ``fix``."""
    import torch

    problem = damage(path)
    if problem is None:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            problem = f"unreadable ({type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:100]})"
    raise LtbenchError(f"{path} is {problem}; {fix}.")


def pid_alive(pid: int) -> bool:
    if pid <= 0:  # kill() would signal a process group
        return False
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


def _process_start(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks after boot (field 22 of /proc/<pid>/stat); None where
    unknown. With the pid it names one process: a later process that reuses the pid starts later."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])  # after "pid (name) ": field 3 is index 0
    except (OSError, ValueError, IndexError):
        return None


def _boot_id() -> str | None:
    """This boot of this host (Linux); None where unknown."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _owner_record(info: Any) -> bool:
    """Whether ``info`` (a lock file's JSON) is an owner's record that lock_live can judge."""
    return (isinstance(info, dict) and isinstance(info.get("host"), str) and type(info.get("pid")) is int
            and type(info.get("restart", 0)) is int and type(info.get("pid_start")) in (int, type(None))
            and type(info.get("boot")) in (str, type(None)))


def owner_alive(info: dict[str, Any]) -> bool:
    """Whether the process that a lock of this host names still runs: its pid exists, and, where the lock
    recorded them, the host has not rebooted since and the pid's start time is the recorded one (not a
    later process that reuses the pid)."""
    boot, now = info.get("boot"), _boot_id()
    if boot is not None and now is not None and boot != now:
        return False
    if not pid_alive(info["pid"]):
        return False
    start = info.get("pid_start")
    return start is None or _process_start(info["pid"]) in (None, start)


def lock_live(info: dict[str, Any]) -> bool:
    """Whether a lock (``RunDir.lock_info()``) belongs to a process that may still write its run.

    - A lock left by an earlier run of this SLURM job (requeued: same job id, lower SLURM_RESTART_COUNT, or
      another node) is stale.
    - On this host the owner's process decides: live while it runs, however old the heartbeat (an ImageNet
      epoch, a stopped process). Other hosts cannot be asked: there a heartbeat older than STALE_AFTER_S
      (the holder refreshes it every HEARTBEAT_S) means stale.
    - A lock file that holds no owner's record (a partial write of an older ltbench, a damaged file) is
      live for UNREADABLE_STALE_S, then stale: a lock is never empty while it is being taken.
    """
    if "unreadable" in info:
        return info["age_s"] < UNREADABLE_STALE_S
    here = socket.gethostname()
    job = os.environ.get("SLURM_JOB_ID")
    if job and info.get("job") == job and (info["host"] != here or info.get("restart", 0) < _slurm_restart_count()):
        return False  # left by an earlier run of this SLURM job, which was requeued (maybe to another node)
    if info["host"] == here:
        return owner_alive(info)
    return info["age_s"] < STALE_AFTER_S


class _Heartbeat:
    """A daemon thread that refreshes a held lock's heartbeat every HEARTBEAT_S seconds, from ``start``
    until ``stop``: through training, feature extraction and evaluation alike."""

    def __init__(self, rd: RunDir, token: str):
        self.rd, self.token, self.lost = rd, token, False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"ltbench-heartbeat-{rd.run_id[:12]}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self.beat()

    def beat(self) -> None:
        info = self.rd.lock_info()
        if info is None:
            return  # removed, e.g. with a run directory that keeps no record
        try:
            if info.get("token") == self.token:
                os.utime(self.rd.lock_file)
            elif not self.lost:
                self.lost = True
                sys.stderr.write(f"ltbench: warning: the lock {self.rd.lock_file} is no longer this process's "
                                 "(another process judged it stale and took it over).\n")
        except OSError:
            pass  # e.g. a passing network file system error: the next beat tries again

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# --- reading records: the keys that `table`, `status` and `plot` read; a file without them is damaged ---

def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _numbers(v: Any) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(_number(x) for x in v)


def _stages(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(hp, dict) for hp in v.values())


SPEC_SHAPE: dict[str, Any] = {"benchmark": str, "method": str, "backbone": str, "recipe": str, "seed": int,
                              "data": dict, "stages": _stages,
                              "parent?": lambda v: v is None or (shape_problem(v, SPEC_SHAPE) is None
                                                                 and isinstance(v["stages"].get("train"), dict))}
TEST_SHAPE: dict[str, Any] = {"top1": _number, "many": lambda v: v is None or _number(v),
                              "medium": lambda v: v is None or _number(v), "few": lambda v: v is None or _number(v)}
RESULT_SHAPE: dict[str, Any] = {
    "run_id": str, "benchmark": str, "method": str, "label": str, "seed": int, "backbone": str, "recipe": str,
    "spec": SPEC_SHAPE, "method_record": dict, "val": {"class_mean?": lambda v: v is None or _number(v)},
    "selected": {"last_epoch_test?": lambda v: v is None or shape_problem(v, TEST_SHAPE) is None},
    "test": {**TEST_SHAPE, "per_class": list}, "classifier_norms": _numbers, "class_counts": _numbers}
EVAL_SHAPE: dict[str, Any] = {  # result.json of an `ltbench eval` record: what `ltbench table` reads
    "kind": lambda v: v == "eval", "eval_id": str, "source_run": str, "source_seed": int, "method": str,
    "benchmark": str, "label": str, "spec": dict, "scores": {**TEST_SHAPE, "per_class": list},
    "classifier_norms": _numbers, "class_counts": _numbers}


def shape_problem(obj: Any, shape: dict[str, Any], where: str = "") -> str | None:
    """The first way a JSON value lacks ``shape`` (key -> type, predicate or nested shape; a key ending in
    "?" may be absent), in words ("has no key test.top1"); None when it has it."""
    if not isinstance(obj, dict):
        return f"has a bad value at {where[:-1]}" if where else "is not a JSON object"
    for key, want in shape.items():
        name = key.rstrip("?")
        if name not in obj:
            if key.endswith("?"):
                continue
            return f"has no key {where}{name}"
        value = obj[name]
        if isinstance(want, dict):
            problem = shape_problem(value, want, f"{where}{name}.")
            if problem:
                return problem
        elif not _fits(value, want):
            return f"has a bad value at {where}{name}"
    return None


def _fits(value: Any, want: Any) -> bool:
    """Whether ``value`` is of type ``want`` (an int is no bool), or passes the predicate ``want``."""
    if isinstance(want, type):
        return isinstance(value, want) and not (want is int and isinstance(value, bool))
    return bool(want(value))


def read_json(path: Path) -> tuple[Any, str | None]:
    """(the JSON value of a file, None), or (None, what is wrong: "is missing", "is empty", "is not JSON",
    "cannot be read (...)"); never an exception."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, "is missing"
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or type(exc).__name__})"
    if not data.strip():
        return None, "is empty"
    try:
        return json.loads(data), None
    except ValueError:  # not UTF-8, not JSON
        return None, "is not JSON"


@dataclass
class RunDir:
    path: Path
    _heartbeat: _Heartbeat | None = field(default=None, init=False, repr=False, compare=False)

    spec_file = property(lambda self: self.path / "spec.json")
    metrics_file = property(lambda self: self.path / "metrics.jsonl")
    checkpoint_file = property(lambda self: self.path / "checkpoint.pt")
    result_file = property(lambda self: self.path / "result.json")
    done_file = property(lambda self: self.path / "DONE")
    lock_file = property(lambda self: self.path / "lock")
    failed_file = property(lambda self: self.path / "FAILED")
    pruned_file = property(lambda self: self.path / "PRUNED")  # a pruned `ltbench tune` trial stopped it (not done)
    model_file = property(lambda self: self.path / "model.pt")

    @property
    def run_id(self) -> str:
        return self.path.name

    def is_done(self) -> bool:
        return self.done_file.exists()

    def spec(self) -> dict[str, Any]:
        """spec.json; DamagedRecord when it is missing, not JSON or lacks what readers use."""
        return self._read(self.spec_file, SPEC_SHAPE, f"delete {self.path}, then the same `ltbench run` command "
                          "runs it anew")

    def result(self) -> dict[str, Any]:
        """result.json; DamagedRecord when it is missing, not JSON or lacks what `table`, `status` and `plot`
        read."""
        if self.checkpoint_file.exists():
            fix = f"the same `ltbench run` command redoes the final report from checkpoint.pt, or delete {self.path}"
        else:
            fix = f"delete {self.path}, then the same `ltbench run` command runs it anew"
        return self._read(self.result_file, RESULT_SHAPE, fix)

    def _read(self, path: Path, shape: dict[str, Any], fix: str) -> dict[str, Any]:
        value, problem = read_json(path)
        problem = problem or shape_problem(value, shape)
        if problem:
            raise DamagedRecord(path, problem, fix)
        return value

    def spec_file_damage(self) -> DamagedRecord | None:
        try:
            self.spec()
        except DamagedRecord as exc:
            return exc
        return None

    def record_damage(self) -> DamagedRecord | None:
        """What makes this run's record unusable: its spec.json (where there is one), or, once DONE, its
        result.json; None when both read. (metrics() reports metrics.jsonl.)"""
        try:
            if self.spec_file.exists():
                self.spec()
            if self.is_done():
                self.result()
        except DamagedRecord as exc:
            return exc
        return None

    def model_sha256(self) -> tuple[str | None, str | None]:
        """(the sha256 of model.pt, None) when it is the model this run reported, else (None, what is
        wrong): missing, unreadable, not matching its ``.sha256`` sidecar, or not the model_sha256 that
        result.json records (a model.pt copied in from another run, sidecar and all)."""
        if not self.model_file.is_file():
            return None, "missing"
        try:
            actual = file_sha256(self.model_file)
        except OSError as exc:
            return None, f"unreadable ({exc.strerror})"
        sidecar = recorded_sha256(self.model_file)
        if sidecar is not None and sidecar != actual:
            return None, (f"damaged (its sha256 {actual[:12]}... is not the {sidecar[:12]}... recorded when it was "
                          "written)")
        recorded, _ = read_json(self.result_file)
        recorded = recorded.get("model_sha256") if isinstance(recorded, dict) else None
        if isinstance(recorded, str) and recorded != actual:
            return None, (f"not the model that {self.result_file.name} records (its sha256 {actual[:12]}... is not "
                          f"the recorded model_sha256 {recorded[:12]}...; copied in from another run?)")
        return actual, None

    def failure(self) -> str:
        """The error that FAILED records; DamagedRecord when FAILED cannot be read."""
        info, problem = read_json(self.failed_file)
        if problem is None and not (isinstance(info, dict) and isinstance(info.get("error"), str)):
            problem = "no error in it"
        if problem:
            raise DamagedRecord(self.failed_file, f"is unreadable ({problem.removeprefix('is ')})",
                                "its error is lost; the same `ltbench run` command (or `ltbench sweep "
                                "--retry-failed`) runs it again")
        return info["error"]

    def metrics(self) -> list[dict[str, Any]]:
        """The lines of metrics.jsonl; DamagedRecord at the first complete line that is not a JSON object,
        and, once the run is done (nothing writes the file any more), at a last line cut mid-record. In
        a run that is not done such a last line is one being written (or cut by a kill): left out."""
        done = self.is_done()
        try:
            data = self.metrics_file.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise DamagedRecord(self.metrics_file, f"cannot be read ({exc.strerror})", self._metrics_fix(done, 0)) \
                from None
        lines = data.split(b"\n")
        rows = []
        for n, line in enumerate(lines[:-1], 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:  # not UTF-8, not JSON
                row = None
            if not isinstance(row, dict):
                raise DamagedRecord(self.metrics_file, f"line {n} is not a JSON record", self._metrics_fix(done, n))
            rows.append(row)
        if done and lines[-1].strip():
            n = len(lines)
            raise DamagedRecord(self.metrics_file, f"is cut at line {n}, mid-record", self._metrics_fix(done, n))
        return rows

    def _metrics_fix(self, done: bool, line: int) -> str:
        """How to repair metrics.jsonl damaged at ``line`` (0: the whole file). A run that is not done
        trims it when it resumes; a done run's result.json is intact and only this per-epoch log is hurt."""
        if not done:
            return "the same `ltbench run` command trims it back to the checkpoint and resumes"
        keep = f"keep the lines before line {line} (`sed -i '{line},$d' {self.metrics_file}`), or " if line > 1 else ""
        return (f"the same `ltbench run` command with --force retrains the run to write it anew; or {keep}delete "
                "the file (its result.json is intact: only the per-epoch log is affected, and metrics.csv beside it "
                "may still hold every epoch)")

    def append_metrics(self, row: dict[str, Any]) -> None:
        with open(self.metrics_file, "a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def trim_metrics(self, stage: str, epochs_done: int) -> None:
        """Keep only lines of epochs that the checkpoint holds (a resumed run repeats the rest); a line
        that is not a JSON record (a write cut short by a full disk, a damaged file) goes too."""
        rows = []
        text = self.metrics_file.read_bytes().decode(errors="replace") if self.metrics_file.exists() else ""
        for line in text.splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and isinstance(row.get("epoch"), int) and isinstance(row.get("stage"), str) \
                    and not (row["stage"] == stage and row["epoch"] > epochs_done):
                rows.append(row)
        atomic_write_bytes(self.metrics_file, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode())

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        self._save_torch(state, self.checkpoint_file)

    def save_model(self, state: dict[str, Any]) -> str:
        """The reported model's weights (the selected checkpoint, after any post-hoc transform); its sha256."""
        return self._save_torch(state, self.model_file)

    def _save_torch(self, state: dict[str, Any], path: Path) -> str:
        """Atomically, with its sha256; equal states give equal bytes (files.write_torch)."""
        return write_checked(path, lambda tmp: write_torch(state, tmp))

    def load_checkpoint(self) -> dict[str, Any] | None:
        if not self.checkpoint_file.exists():
            return None
        return load_checked(self.checkpoint_file, "delete it to restart this run from scratch (its finished "
                            "epochs are lost), or rerun with --force")

    def lock_info(self) -> dict[str, Any] | None:
        """What the lock file says (host, pid, ...) plus ``age_s``, the seconds since its last heartbeat;
        None when there is no lock. A lock whose content cannot be read as an owner's record gives
        ``{"age_s": ..., "unreadable": why}`` (never an exception)."""
        try:
            age = time.time() - self.lock_file.stat().st_mtime
            text = self.lock_file.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:  # e.g. no permission: judged as a lock just written, so never taken over
            return {"age_s": 0.0, "unreadable": exc.strerror or type(exc).__name__}
        try:
            info = json.loads(text)
        except ValueError:  # not UTF-8, not JSON
            return {"age_s": age, "unreadable": "empty" if not text.strip() else "not JSON"}
        if not _owner_record(info):
            return {"age_s": age, "unreadable": "not an owner's record"}
        info["age_s"] = age
        return info

    def lock_is_live(self) -> bool:
        info = self.lock_info()
        return info is not None and lock_live(info)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive right to write this run directory while the context lasts.

        The lock file ``lock`` names its owner (host, pid and the pid's start time, boot id, SLURM job and
        restart count, a random token); a background thread refreshes its mtime, the heartbeat, every
        HEARTBEAT_S seconds until the context exits. A live lock (see ``lock_live``) is an error; a stale
        one is taken over. Taking the lock, and judging a lock stale and replacing it, happen under
        ``_guard()``, so exactly one of several processes that find the same stale lock takes it over;
        the lock file is created by link() of a complete temporary file, so it never exists without its
        owner's record."""
        record = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": _process_start(os.getpid()),
                  "boot": _boot_id(), "job": os.environ.get("SLURM_JOB_ID"), "restart": _slurm_restart_count(),
                  "started": time.time(), "token": uuid.uuid4().hex}
        try:
            with self._guard(required=True):
                if not self._publish(record):
                    info = self.lock_info()
                    if info is not None and lock_live(info):
                        raise LtbenchError(self._running_message(info))
                    self.lock_file.unlink(missing_ok=True)  # stale: its owner is gone
                    if not self._publish(record):
                        raise LtbenchError(f"could not take the lock {self.lock_file}: a process that does not "
                                           f"use {self.guard_file.name} (an older ltbench?) took it at the same "
                                           "moment; `ltbench status` shows whether the run is running, else try "
                                           "again.")
        except OSError as exc:
            raise LtbenchError(f"cannot take the lock {self.lock_file} ({exc.strerror or exc}); pass a writable "
                               "--results directory.") from exc
        beat = None
        try:
            beat = self._heartbeat = _Heartbeat(self, record["token"])
            yield
        finally:
            if beat is not None:
                beat.stop()
            self._heartbeat = None
            with self._guard(required=False):
                if self._holds(record["token"]):  # not a lock that another process took over meanwhile
                    self.lock_file.unlink(missing_ok=True)

    def heartbeat(self) -> None:
        """Refresh the heartbeat of the lock that this object holds (``locked()`` also does it in the
        background every HEARTBEAT_S seconds); nothing when it holds none."""
        if self._heartbeat is not None:
            self._heartbeat.beat()

    @property
    def guard_file(self) -> Path:
        return self.path / "lock.guard"

    @contextmanager
    def _guard(self, required: bool) -> Iterator[None]:
        """Hold an flock on ``lock.guard`` (kept beside the lock) for the moment of taking or releasing the lock.

        Judging a lock stale and replacing it must be one step: two processes that both judge the same lock
        stale would otherwise both replace it and both go on. The guard makes the step exclusive among all
        processes of this host, and across NFS clients too (Linux maps flock to NFS byte-range locks). Where a
        file system has no flock (an NFS mount with -o nolock, some FUSE file systems) the step runs unguarded:
        taking a free lock stays atomic (link()), and only processes on different hosts that take over the
        same stale lock at the same moment can both win, as before there was a guard. A held guard is waited
        for up to GUARD_WAIT_S (it is held for milliseconds; longer means a stopped process); then ``required``
        raises, otherwise the step goes on unguarded (releasing a lock never fails)."""
        try:
            fd = os.open(self.guard_file, os.O_RDWR | os.O_CREAT, FILE_MODE)
        except OSError:
            if required:
                raise  # locked() says what is wrong
            yield  # e.g. the run directory was removed with its lock: nothing to guard
            return
        try:
            deadline, pause = time.monotonic() + GUARD_WAIT_S, 0.001
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        if not required:
                            break
                        raise LtbenchError(
                            f"{self.guard_file} has been held for over {GUARD_WAIT_S:.0f} s by another process "
                            f"(a stopped one?); `fuser {self.guard_file}` names it. Resume or end it, then "
                            "try again.") from None
                    time.sleep(pause)
                    pause = min(2 * pause, 0.02)
                except OSError:  # no flock here: unguarded, see above
                    break
            yield
        finally:
            os.close(fd)  # releases the flock

    def _publish(self, record: dict[str, Any]) -> bool:
        """Create the lock file holding ``record`` unless a lock exists; True when this call created it.

        The record goes to a temporary file that is then hard-linked to the lock's name: link() fails when the
        name exists and is atomic (on NFS too), so there is no moment when the lock exists without its owner's
        record. A link whose reply NFS lost and resent can fail although it succeeded: the temporary file's
        link count tells. On a file system without hard links the lock is created empty with O_EXCL and then
        written; readers give such a young unreadable lock UNREADABLE_STALE_S before they call it stale."""
        data = json.dumps(record).encode()
        fd, tmp = temp_file(self.path, self.lock_file.name)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            try:
                os.link(tmp, self.lock_file)
            except FileExistsError:
                return os.stat(tmp).st_nlink == 2
            except OSError as exc:
                if exc.errno not in _NO_HARD_LINKS:
                    raise
                return self._publish_without_link(data)
            return True
        finally:
            os.unlink(tmp)

    def _publish_without_link(self, data: bytes) -> bool:
        try:
            fd = os.open(self.lock_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True

    def _holds(self, token: str) -> bool:
        """Whether the lock file is the one with ``token`` (this process's, not a take-over's)."""
        info = self.lock_info()
        return info is not None and info.get("token") == token

    def _running_message(self, info: dict[str, Any]) -> str:
        if "unreadable" in info:
            return (f"run {self.run_id} may be starting or running: its lock {self.lock_file} cannot be read "
                    f"({info['unreadable']}); try again in a few seconds, or delete that file if no process works "
                    "on this run.")
        who = f"host {info['host']}, pid {info['pid']}, job {info.get('job')}, last heartbeat {info['age_s']:.0f} s ago"
        if info["host"] == socket.gethostname():
            return (f"run {self.run_id} is already running ({who}; that process is alive on this host); wait for "
                    f"it, or end process {info['pid']} first (a stopped process keeps its runs).")
        return (f"run {self.run_id} is already running ({who}); wait for it, or delete {self.lock_file} if that "
                f"process is gone (the lock counts as abandoned {STALE_AFTER_S / 60:.0f} minutes after its last "
                "heartbeat).")

    def state(self) -> str:
        if self.is_done():
            return "done"
        if self.lock_is_live():
            return "running"
        if self.failed_file.exists():
            return "failed"
        if self.pruned_file.exists():
            return "pruned"
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
        if rd.spec_file_damage() is not None:  # missing, or damaged: the spec is known, so write it (again)
            try:
                atomic_write_json(rd.spec_file, spec.to_json())
            except OSError as exc:
                raise LtbenchError(f"cannot write {rd.spec_file} ({exc.strerror}); free space or pass a writable "
                                   "--results directory, then run the same command again.") from exc
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
        # every run directory, also one that lost its spec.json (status lists it as damaged)
        return sorted((RunDir(p) for p in base.glob("*/*/*") if p.is_dir() and not p.name.startswith(".")),
                      key=lambda r: str(r.path))

    def eval_dir(self, benchmark: str, eval_id: str) -> RunDir:
        """The directory of an `ltbench eval` record (spec.json, result.json, DONE): beside ``runs/``, so
        that `ltbench status` and the run readers never meet it."""
        return RunDir(self.root / EVALS / benchmark / eval_id)

    def evals(self) -> list[RunDir]:
        """Every `ltbench eval` record directory of the store (finished or not)."""
        base = self.root / EVALS
        if not base.is_dir():
            return []
        return sorted((RunDir(p) for p in base.glob("*/*") if p.is_dir() and not p.name.startswith(".")),
                      key=lambda r: str(r.path))

    def find(self, run_id: str) -> RunDir:
        hits = [r for r in self.runs() if r.run_id.startswith(run_id)]
        if len(hits) != 1:
            what = "no run" if not hits else f"{len(hits)} runs"
            raise LtbenchError(f"{what} in {self.root} with id {run_id!r}; `ltbench status` lists the runs.")
        return hits[0]
