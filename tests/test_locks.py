"""The run lock (``RunDir.locked``): exactly one of several processes that contend for a free or a stale
lock takes it, a live owner on this host is never taken over however old its heartbeat, the heartbeat
runs in the background, and a lock file with junk in it never ends in a traceback."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ltbench.cli.app import app
from ltbench.errors import LtbenchError
from ltbench.results import store as store_mod
from ltbench.results.store import RunDir, Store
from ltbench.spec.run_spec import resolve

FORK = multiprocessing.get_context("fork")
CONTENDERS = 4
TRIALS = 400
STALE_KINDS = ("free", "other_host", "dead_pid", "junk")  # the lock each trial starts from, in turn
WAIT_S = 60.0  # generous limits for waits on conditions (2 loaded cores)


def wait_for(condition: Any, what: str, limit: float = WAIT_S) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit:.0f} s waiting for {what}")
        time.sleep(0.005)


def age(path: Path, seconds: float) -> None:
    """Set the mtime of ``path`` (the heartbeat of a lock) ``seconds`` into the past."""
    t = time.time() - seconds
    os.utime(path, (t, t))


def dead_pid() -> int:
    child = FORK.Process(target=int)
    child.start()
    child.join()
    return child.pid


def write_lock(rd: RunDir, content: dict[str, Any] | bytes, seconds_old: float) -> None:
    data = content if isinstance(content, bytes) else json.dumps(content).encode()
    rd.lock_file.write_bytes(data)
    age(rd.lock_file, seconds_old)


def stale_lock(rd: RunDir, kind: str, gone: int) -> None:
    """Leave the lock that a trial of ``kind`` starts from (none for "free")."""
    if kind == "other_host":  # alive or not, its heartbeat stopped 20 minutes ago
        write_lock(rd, {"host": "another-node.invalid", "pid": os.getpid(), "job": None, "restart": 0}, 1200)
    elif kind == "dead_pid":  # this host, a process that has exited (start time 0: a reused pid is not it)
        write_lock(rd, {"host": socket.gethostname(), "pid": gone, "pid_start": 0, "restart": 0}, 5)
    elif kind == "junk":
        write_lock(rd, b"\x00garbage{", 120)


def contender(path: str, index: int, barrier: Any, tried: Any, won: Any, trials: int) -> None:
    """Per trial: wait for the start, try the lock; a winner holds it until every contender has tried."""
    rd = RunDir(Path(path))
    for _ in range(trials):
        barrier.wait()
        try:
            try:
                with rd.locked():
                    with won.get_lock():
                        won.value += 1
                    with tried.get_lock():
                        tried.value += 1
                    wait_for(lambda: tried.value >= CONTENDERS, "the other contenders")
            except LtbenchError as exc:
                assert "already running" in str(exc), str(exc)
                with tried.get_lock():
                    tried.value += 1
        except BaseException:
            (Path(path) / f"error-{index}.txt").write_text(traceback.format_exc())
            with tried.get_lock():
                tried.value += 1
        barrier.wait()


def test_exactly_one_contender_takes_a_free_or_stale_lock(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    barrier = FORK.Barrier(CONTENDERS + 1, timeout=WAIT_S)
    tried, won = FORK.Value("i", 0), FORK.Value("i", 0)
    workers = [FORK.Process(target=contender, args=(str(tmp_path), i, barrier, tried, won, TRIALS), daemon=True)
               for i in range(CONTENDERS)]
    for w in workers:
        w.start()
    gone = dead_pid()
    winners: dict[str, list[int]] = {kind: [] for kind in STALE_KINDS}
    t0 = time.monotonic()
    try:
        for trial in range(TRIALS):
            kind = STALE_KINDS[trial % len(STALE_KINDS)]
            stale_lock(rd, kind, gone)
            tried.value = won.value = 0
            barrier.wait()  # go
            barrier.wait()  # every contender has tried, the winner has let go
            winners[kind].append(won.value)
            assert not rd.lock_file.exists(), f"trial {trial} ({kind}): the winner left its lock"
    finally:
        for w in workers:
            w.join(timeout=WAIT_S)
            if w.is_alive():
                w.kill()
    total = sum(len(w) for w in winners.values())
    print(f"\n{total} trials of {CONTENDERS} contenders in {time.monotonic() - t0:.1f} s; winners per trial: "
          + ", ".join(f"{kind} {sorted(set(w))} ({len(w)} trials, {sum(w)} winners)" for kind, w in winners.items()))
    assert total == TRIALS
    for kind, w in winners.items():
        assert w == [1] * len(w), f"{kind}: trials with {sorted(set(w) - {1})} winners"
    errors = sorted(tmp_path.glob("error-*.txt"))
    assert not errors, errors[0].read_text()
    assert not list(tmp_path.glob(".lock.*.tmp"))  # no temporary file is left behind


def hold_then_wait(path: str, ready: Any, release: Any) -> None:
    with RunDir(Path(path)).locked():
        ready.set()
        release.wait()


def test_a_stopped_owner_on_this_host_is_not_taken_over(tmp_path: Path) -> None:
    ready, release = FORK.Event(), FORK.Event()
    owner = FORK.Process(target=hold_then_wait, args=(str(tmp_path), ready, release), daemon=True)
    owner.start()
    try:
        assert ready.wait(WAIT_S), "the owner did not take the lock"
        os.kill(owner.pid, signal.SIGSTOP)
        rd = RunDir(tmp_path)
        age(rd.lock_file, 11 * 60)  # its heartbeat is 11 minutes old: past STALE_AFTER_S
        info = rd.lock_info()
        assert info is not None and info["pid"] == owner.pid and info["age_s"] > store_mod.STALE_AFTER_S
        assert rd.lock_is_live() and rd.state() == "running"
        with pytest.raises(LtbenchError) as err:
            with rd.locked():
                pass
        print(f"\nsecond locked() while the owner is stopped: {err.value}")
        assert "already running" in str(err.value) and f"pid {owner.pid}" in str(err.value)
        assert json.loads(rd.lock_file.read_text())["pid"] == owner.pid  # untouched
        if Path("/proc/self/stat").exists():
            assert info.get("pid_start") is not None  # recorded: a later process reusing the pid is not it
    finally:
        os.kill(owner.pid, signal.SIGCONT)
        release.set()
        owner.join(WAIT_S)
    assert owner.exitcode == 0
    assert not RunDir(tmp_path).lock_file.exists()


def test_a_reused_pid_or_a_reboot_does_not_keep_a_lock_alive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rd = RunDir(tmp_path)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "restart": 0}
    write_lock(rd, me, 0)
    assert rd.lock_is_live()  # no start time recorded: the pid decides
    start = store_mod._process_start(os.getpid())
    if start is not None:
        write_lock(rd, {**me, "pid_start": start}, 0)
        assert rd.lock_is_live()
        write_lock(rd, {**me, "pid_start": start + 1}, 0)  # another process with the same pid
        assert not rd.lock_is_live()
    monkeypatch.setattr(store_mod, "_boot_id", lambda: "this-boot")
    write_lock(rd, {**me, "boot": "an-earlier-boot"}, 0)
    assert not rd.lock_is_live()
    write_lock(rd, {**me, "boot": "this-boot"}, 0)
    assert rd.lock_is_live()


def heartbeat_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("ltbench-heartbeat")]


def test_the_heartbeat_thread_refreshes_the_lock_and_stops_on_exit(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_mod, "HEARTBEAT_S", 0.02)
    rd = RunDir(tmp_path)
    with rd.locked():
        assert len(heartbeat_threads()) == 1 and heartbeat_threads()[0].daemon
        age(rd.lock_file, 3600)
        wait_for(lambda: time.time() - rd.lock_file.stat().st_mtime < 60, "a heartbeat")
        age(rd.lock_file, 3600)
        rd.heartbeat()  # the engine's per-epoch call refreshes too
        assert time.time() - rd.lock_file.stat().st_mtime < 60
    assert not heartbeat_threads()  # stopped (and joined) when the context exited
    assert not rd.lock_file.exists()
    rd.heartbeat()  # holding nothing: nothing happens
    assert not rd.lock_file.exists()


def test_a_lock_taken_over_meanwhile_is_left_to_its_new_owner(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_mod, "HEARTBEAT_S", 0.02)
    rd = RunDir(tmp_path)
    other = {"host": "another-node.invalid", "pid": 1, "restart": 0, "token": "theirs"}
    with rd.locked():
        write_lock(rd, other, 3600)  # as if another host had judged this process dead and taken over
        rd.heartbeat()
        assert rd.lock_file.stat().st_mtime < time.time() - 1800  # not refreshed: not this process's lock
    assert json.loads(rd.lock_file.read_text())["token"] == "theirs"  # not removed on exit either


JUNK = {"empty": b"", "spaces": b"  \n", "truncated": b'{"host": "n1", "pi', "binary": b"\xff\xfe\x00",
        "a list": b"[1, 2]", "wrong types": b'{"host": 5, "pid": "12"}'}


@pytest.mark.parametrize("junk", sorted(JUNK))
def test_junk_in_a_lock_file_gives_no_traceback(junk: str, tmp_path: Path) -> None:
    store = Store(tmp_path)
    rd = store.create(resolve("ce", "digits_lt", epochs=1))
    write_lock(rd, JUNK[junk], 1)  # young: it may be a lock being written by an older ltbench
    info = rd.lock_info()
    assert info is not None and "unreadable" in info
    assert rd.state() == "running"
    with pytest.raises(LtbenchError, match="cannot be read.*try again in a few seconds"):
        with rd.locked():
            pass
    r = CliRunner().invoke(app, ["status", "--results", str(tmp_path)])
    assert r.exit_code == 0 and r.exception is None, r.output
    assert "running" in r.output

    age(rd.lock_file, 3600)  # old: stale
    assert not rd.lock_is_live() and rd.state() == "unfinished"
    r = CliRunner().invoke(app, ["status", "--results", str(tmp_path)])
    assert r.exit_code == 0 and r.exception is None, r.output
    with rd.locked():
        assert json.loads(rd.lock_file.read_text())["pid"] == os.getpid()
    assert not rd.lock_file.exists()


def test_lock_files_get_the_users_umask(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    with rd.locked():
        assert rd.lock_file.stat().st_mode & 0o777 == store_mod.FILE_MODE
        assert rd.guard_file.stat().st_mode & 0o777 == store_mod.FILE_MODE


def test_a_run_directory_removed_under_its_lock_exits_quietly(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    with rd.locked():
        Store(tmp_path).remove(rd)  # what the engine does with a run that recorded nothing
        rd.heartbeat()
    assert not rd.path.exists() and "warning" not in capfd.readouterr().err


def test_an_unwritable_run_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LtbenchError, match="cannot take the lock .*writable --results"):
        with RunDir(tmp_path / "missing").locked():
            pass
