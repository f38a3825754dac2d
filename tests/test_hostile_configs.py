"""Hostile config files (issue 23): keys YAML does not read as names, alias bombs, duplicated keys, files that
are not files (a device, a FIFO, a directory), too large, not UTF-8, empty, of the wrong shape or nested without
end. Each is one LtbenchError line naming the file (and the line where there is one) and the fix, fast, and
nothing is written. No training."""

import os
import time

import pytest
from typer.testing import CliRunner

from ltbench.cli.app import app
from ltbench.errors import LtbenchError
from ltbench.spec.config import MAX_BYTES, load_config

# 9 levels of 9 aliases: a billion "lol"s once expanded
BOMB = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + "".join(
    f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]\n" for prev, name in zip("abcdefgh", "bcdefghi", strict=True))


def fails(path, *parts):
    """load_config(path) raises one line that names the file and holds every part; it returns the message."""
    with pytest.raises(LtbenchError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    assert all(part in message for part in parts), message
    return message


@pytest.mark.parametrize("name,text,parts", [
    ("int.yaml", "1: 2\n", ["line 1", "the key '1' is not a name: YAML reads it as a number", 'quote it ("1": ...)']),
    ("null.yaml", "method: ce\n~: 1\n", ["line 2", "the key '~'", "null"]),
    ("bool.yaml", "on: 1\n", ["line 1", "the key 'on'", "true/false"]),
    ("date.yaml", "2020-01-01: 1\n", ["line 1", "a date"]),
    ("stage_int.yaml", "stage1:\n  weight_decay: 1\n  1: 2\n", ["line 3", "the key '1' is not a name"]),
    ("stage_null.yaml", "stage1:\n  ~: 2\n", ["line 2", "the key '~'"]),
    ("list_key.yaml", "? [a, b]\n: 1\n", ["line 1", "a key is a list"]),
    ("dup.yaml", "method: ce\nlr: 0.1\n\nlr: 0.2\n", ["line 4", "'lr' is given twice (lines 2 and 4); keep one"]),
    ("dup_stage.yaml", "stage2:\n  lr: 0.1\n  lr: 0.2\n", ["line 3", "'lr' is given twice (lines 2 and 3)"]),
    ("dup_table.yaml", "stage2:\n  lr: 0.1\nstage2:\n  tau: 1\n", ["'stage2' is given twice (lines 1 and 3)"]),
    ("merge.yaml", "base: &b {lr: 1}\nstage2:\n  <<: *b\n", ["line 3", "merge key", "write the keys out"]),
    ("endless.yaml", "lr: &a [1, *a]\n", ["line 1", "alias", "endless"]),
    ("bomb.yaml", BOMB, ["more than 10000 values", "fewer aliases"]),
    ("empty.yaml", "", ["is empty (no keys)", "leave --config out"]),
    ("comments.yaml", "# nothing yet\n", ["is empty"]),
    ("empty.toml", "", ["is empty"]),
    ("scalar.yaml", "hello\n", ["expected keys and values at the top level", "found a string"]),
    ("number.yaml", "3\n", ["found a number"]),
    ("deep.yaml", "lr: " + "[" * 30 + "]" * 30 + "\n", ["line 1", "nested more than 16 levels deep"]),
    ("deeper.yaml", "lr: " + "[" * 5000 + "]" * 5000 + "\n", ["nested more than 16 levels deep"]),
    ("deep.toml", "lr = " + "[" * 30 + "]" * 30 + "\n", ["nested more than 16 levels deep"]),
    ("deeper.toml", "lr = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n", ["nested more than 16 levels deep"]),
    ("month.yaml", "method: ce\nlr: 2020-13-45\n", ["line 2", "cannot read '2020-13-45' as timestamp"]),
    ("tag.yaml", "lr: !!bool maybe\n", ["line 1", "cannot read 'maybe' as bool"]),
    ("digits.yaml", "lr: " + "9" * 5000 + "\n", ["line 1", "as int", "4300 digits"]),
    ("digits.toml", "lr = " + "9" * 5000 + "\n", ["not valid TOML", "4300 digits"]),
    ("nul.yaml", "method: ce\nlr: 1\x00\n", ["line 2", "a control character (U+0000)"]),
])
def test_hostile_text_is_one_line_naming_the_file(tmp_path, name, text, parts):
    path = tmp_path / name
    path.write_text(text)
    start = time.perf_counter()
    fails(path, *parts)
    assert time.perf_counter() - start < 10  # the bomb and the deep ones too: no hang


@pytest.mark.parametrize("data,parts", [
    (b"method: ce\nlr: \xff\n", ["line 2", "not UTF-8 text (byte 0xff)", "save the file as UTF-8"]),
    ("method: ce\n".encode("utf-16"), ["line 1", "not UTF-8"]),
    (b"x" * (MAX_BYTES + 1), ["larger than 64 KiB"]),
])
def test_unreadable_bytes_and_large_files_are_refused(tmp_path, data, parts):
    path = tmp_path / "c.yaml"
    path.write_bytes(data)
    fails(path, *parts)


def test_a_huge_sparse_file_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as f:
        f.truncate(8 * 1024**3)  # 8 GiB of holes: read whole, it would take minutes and the memory
    start = time.perf_counter()
    fails(path, "larger than 64 KiB")
    assert time.perf_counter() - start < 5


def test_a_byte_order_mark_is_dropped(tmp_path):
    for name, text in (("bom.yaml", "method: ce\n"), ("bom.toml", "method = 'ce'\n")):
        path = tmp_path / name
        path.write_bytes(b"\xef\xbb\xbf" + text.encode())
        assert load_config(path).selectors["method"] == ["ce"]


def test_what_is_not_a_file_is_named_for_what_it_is(tmp_path):
    fails(tmp_path, "is a directory, not a file")
    if os.path.exists("/dev/zero"):
        fails("/dev/zero", "is a device, not a file")
        (tmp_path / "zero.yaml").symlink_to("/dev/zero")
        fails(tmp_path / "zero.yaml", "is a device")
    loop = tmp_path / "loop.yaml"
    loop.symlink_to(loop)
    fails(loop, "cannot be read")
    with pytest.raises(LtbenchError, match="is not a file name"):
        load_config("")
    with pytest.raises(LtbenchError, match="is not a file name"):
        load_config("a\x00b.yaml")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "c.yaml"
    os.mkfifo(fifo)
    fails(fifo, "is a named pipe (FIFO), not a file")  # no writer: opening it to read would wait for ever


@pytest.mark.parametrize("text,message", [
    ("method: ce\n1: 2\n", "line 2: the key '1' is not a name"),
    (BOMB, "more than 10000 values"),
    ("method: ce\nepochs: 2\nepochs: 3\n", "'epochs' is given twice (lines 2 and 3)"),
])
def test_the_cli_prints_one_line_and_writes_nothing(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    for command in ("run", "sweep"):
        r = CliRunner().invoke(app, [command, "--config", str(path), "--results", str(tmp_path / "r")])
        out = " ".join(r.output.split())
        assert r.exit_code == 2 and message in out and str(path) in out, r.output
        assert "Traceback" not in r.output and not (tmp_path / "r").exists()
