"""Writing files that others read: atomically (temp file + rename), with the user's umask, and, for
the files a later run trusts (checkpoints, model.pt, kept features), with a recorded checksum.

A checked file ``F`` has a sidecar ``F.sha256`` in sha256sum's format (`sha256sum -c F.sha256`
verifies it by hand). The sidecar is removed before ``F`` is replaced and written after, so a sidecar
never names an older file: a missing sidecar means "not verified" (a record of an older ltbench, or
a crash in between), never "damaged". No torch and no other ltbench module here (a leaf).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


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
    write_atomically(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_atomically(path: Path, write: Callable[[str], Any]) -> None:
    """``write(tmp)`` fills a temporary file beside ``path``, which then replaces ``path`` in one step;
    on any failure (a full disk) ``path`` keeps its old content and no temporary file stays."""
    fd, tmp = temp_file(path.parent, path.name)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_torch(obj: Any, tmp: str) -> None:
    """``torch.save(obj)`` into the file ``tmp``, through memory: torch names the archive's records after a
    file name it is given (a random temporary one here), and "archive" for a file object, so equal objects
    give equal bytes; and torch's writer turns a write interrupted by Ctrl-C into a RuntimeError, which a
    buffer in memory cannot be (the file is written by Python, where Ctrl-C stays a KeyboardInterrupt)."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    with open(tmp, "wb") as f:
        f.write(buf.getbuffer())


def file_sha256(path: Path | str) -> str:
    """The sha256 of a file's bytes, as hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checksum_file(path: Path) -> Path:
    return path.with_name(f"{path.name}.sha256")


def write_checked(path: Path, write: Callable[[str], Any]) -> str:
    """Write ``path`` atomically (``write(tmp)`` fills it) and record its sha256 beside it; returns it."""
    digest: list[str] = []

    def fill(tmp: str) -> None:
        write(tmp)
        digest.append(file_sha256(tmp))
        checksum_file(path).unlink(missing_ok=True)  # from here until the new one, "not verified"

    write_atomically(path, fill)
    atomic_write_bytes(checksum_file(path), f"{digest[0]}  {path.name}\n".encode())
    return digest[0]


def recorded_sha256(path: Path) -> str | None:
    """The sha256 recorded for ``path`` (None: none recorded, or the sidecar is unreadable)."""
    try:
        text = checksum_file(path).read_text().split()
    except (OSError, UnicodeDecodeError):
        return None
    return text[0] if text and len(text[0]) == 64 else None


def damage(path: Path) -> str | None:
    """What is wrong with a checked file: None when it matches its recorded sha256 or none is recorded
    (not verified), else a short reason ("missing", "its bytes do not match ...")."""
    if not path.is_file():
        return "missing"
    expected = recorded_sha256(path)
    if expected is None:
        return None
    try:
        actual = file_sha256(path)
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if actual != expected:
        return f"damaged (its sha256 {actual[:12]}... is not the {expected[:12]}... recorded when it was written)"
    return None
