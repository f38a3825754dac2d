"""Watching a run (issue 26, item 4): bars that fit the terminal and leave one line per epoch behind, log
lines with ETAs and in-epoch lines (images/s, data time), a notebook widget; the time is a fake clock."""

import importlib.machinery
import io
import re
import sys
import types

import pytest
from rich.console import Console

from ltbench import progress
from ltbench.progress import EpochProgress, clock, display_mode, in_notebook

ROW = {"loss": 1.23456, "lr": 0.05, "val_class_mean": 41.5, "time_s": 2.0}
TITLE = "balanced_softmax/digits_lt/36b3b0a3"  # the longest built-in method's title


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture
def fake_clock(monkeypatch):
    now = FakeClock()
    monkeypatch.setattr(progress, "perf_counter", now)
    return now


def batches(now, n, wait=0.375, size=64):
    """n batches of ``size`` images, each taking ``wait`` seconds to load (on the fake clock)."""
    for _ in range(n):
        now.t += wait
        yield object(), [0] * size


def train(bar, now, epochs, steps, step_s=0.125):
    for epoch in range(epochs):
        bar.start_epoch(epoch)
        for _ in bar.timed(batches(now, steps)):
            now.t += step_s  # the step's compute
            bar.step()
        now.t += 0.5  # evaluation
        bar.end_epoch(epoch, {**ROW, "time_s": steps * 0.5 + 0.5})


def screen(raw: str) -> list[str]:
    """What a terminal shows after ``raw`` (the few controls rich's live display uses), scrollback included."""
    lines, row, col = [""], 0, 0
    for token in re.findall(r"\x1b\[[0-9;?]*[A-Za-z]|\r|\n|[^\x1b\r\n]+", raw):
        if token == "\n":
            row, col = row + 1, 0
            lines += [""] * (row + 1 - len(lines))
        elif token == "\r":
            col = 0
        elif token == "\x1b[2K":
            lines[row] = ""
        elif token.startswith("\x1b[") and token.endswith("A"):
            row -= int(token[2:-1] or 1)
        elif not token.startswith("\x1b"):
            lines[row] = lines[row][:col].ljust(col) + token + lines[row][col + len(token):]
            col += len(token)
    return [ln.rstrip() for ln in lines[:row + 1]]


def terminal(width):
    return Console(width=width, file=io.StringIO(), force_terminal=True, color_system="truecolor",
                   _environ={"TERM": "xterm"})


@pytest.mark.parametrize("width,min_bar", [(80, 25), (60, 10)])
def test_bars_fit_the_terminal_and_are_wide(fake_clock, width, min_bar):
    out = terminal(width)
    bar = EpochProgress(TITLE, 200, 390, live=True, out=out)
    assert bar.mode == "live"
    bar.start_epoch(122)
    for _ in bar.timed(batches(fake_clock, 150)):
        fake_clock.t += 0.125
        bar.step()
    shot = terminal(width)
    shot.print(bar._bar.get_renderable())
    bar.close()
    lines = screen(shot.file.getvalue())
    text = "\n".join(lines)
    assert all(len(line) <= width for line in lines), text
    assert lines[0] == f"[{TITLE}]"
    epoch_row, step_row = lines[1], lines[2]
    assert epoch_row.startswith("epoch 123/200") and step_row.startswith("step 150/390")
    for row in (epoch_row, step_row):
        assert len(re.findall("[━╸╺]", row)) >= min_bar, text  # a bar you can see, not 3 characters
    assert "128 img/s" in step_row and "data 75%" in step_row  # 64 images per 0.5 s, 0.375 s of it waiting
    assert "eta 0:02:00" in step_row  # the epoch's 240 remaining steps at 0.5 s each


def test_bars_go_and_leave_one_line_per_epoch(fake_clock):
    out = terminal(80)
    bar = EpochProgress(TITLE, 3, 4, live=True, out=out)
    train(bar, fake_clock, 3, 4)
    bar.close()
    lines = [ln for ln in screen(out.file.getvalue()) if ln]
    assert lines == [f"[{TITLE}] 3 epochs of 4 steps",
                     "  epoch 1/3 loss 1.2346 lr 0.05 val 41.50 2.5s eta 0:00:05",
                     "  epoch 2/3 loss 1.2346 lr 0.05 val 41.50 2.5s eta 0:00:02",
                     "  epoch 3/3 loss 1.2346 lr 0.05 val 41.50 2.5s"], lines  # no bar left behind
    assert all(len(line) <= 80 for line in lines)


def test_logs_have_a_line_per_epoch_with_the_stage_eta(fake_clock, capsys, monkeypatch):
    monkeypatch.delenv("LTBENCH_LOG_EVERY", raising=False)
    bar = EpochProgress("ce/digits_lt/1144ebf3", 25, 4, live=False)
    assert bar.mode == "log" and bar.every == 120
    train(bar, fake_clock, 25, 4)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 25  # every epoch (not every 10%), and no step lines in 2-second epochs
    assert lines[0] == "[ce/digits_lt/1144ebf3] epoch 1/25 loss 1.2346 lr 0.05 val 41.50 2.5s eta 0:01:00"
    assert lines[23].endswith("] epoch 24/25 loss 1.2346 lr 0.05 val 41.50 2.5s eta 0:00:02")
    assert lines[24].endswith("] epoch 25/25 loss 1.2346 lr 0.05 val 41.50 2.5s")


def test_logs_have_a_line_every_few_minutes_within_an_epoch(fake_clock, capsys, monkeypatch):
    monkeypatch.setenv("LTBENCH_LOG_EVERY", "5")  # seconds; each step takes 0.5 s on the fake clock
    bar = EpochProgress("ce/cifar100_lt/1144ebf3", 2, 30, live=False)
    train(bar, fake_clock, 2, 30)
    lines = capsys.readouterr().err.splitlines()
    steps = [ln for ln in lines if " step " in ln]
    assert [ln.split(" step ")[1].split()[0] for ln in steps] == ["10/30", "20/30"] * 2
    # the first epoch's ETA is its own pace (15 s an epoch); the second knows an epoch's time, evaluation included
    assert steps[0] == "[ce/cifar100_lt/1144ebf3] epoch 1/2 step 10/30 128 img/s data 75% eta 0:00:10 (stage 0:00:25)"
    assert steps[3] == "[ce/cifar100_lt/1144ebf3] epoch 2/2 step 20/30 128 img/s data 75% eta 0:00:05 (stage 0:00:05)"
    assert lines[2].startswith("[ce/cifar100_lt/1144ebf3] epoch 1/2 loss")  # after its step lines


def test_a_slow_loader_shows_in_the_data_time(fake_clock, capsys, monkeypatch):
    monkeypatch.setenv("LTBENCH_LOG_EVERY", "0")
    bar = EpochProgress("x", 1, 3, live=False)
    bar.start_epoch(0)
    for _ in bar.timed(batches(fake_clock, 3, wait=0.125, size=10)):
        fake_clock.t += 0.375
        bar.step()
    first = capsys.readouterr().err.splitlines()[0]
    assert first == "[x] epoch 1/1 step 1/3 20 img/s data 25% eta 0:00:01 (stage 0:00:01)"


def test_a_bad_log_every_is_a_warning_and_the_default(monkeypatch, capsys):
    monkeypatch.setattr(progress, "_warned", set())
    for text in ("soon", "-1", "nan"):
        monkeypatch.setenv("LTBENCH_LOG_EVERY", text)
        assert progress.log_every() == progress.LOG_EVERY_S
    err = capsys.readouterr().err
    assert "LTBENCH_LOG_EVERY='soon' is not a number of seconds" in err and err.count("\n") == 3
    monkeypatch.setenv("LTBENCH_LOG_EVERY", "0.5")
    assert progress.log_every() == 0.5


def test_other_ranks_show_nothing(fake_clock, capsys, monkeypatch):
    monkeypatch.setenv("LTBENCH_LOG_EVERY", "0")
    bar = EpochProgress("x", 2, 3, live=None, enabled=False)
    train(bar, fake_clock, 2, 3)
    bar.close()
    assert bar.mode == "off" and capsys.readouterr().err == ""


# --- notebooks ---------------------------------------------------------------------------------------

def fake_module(monkeypatch, name, **attrs):
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.__dict__.update(attrs)
    monkeypatch.setitem(sys.modules, name, module)
    return module


def fake_kernel(monkeypatch, kernel=True):
    shell = types.SimpleNamespace(kernel=object() if kernel else None)
    fake_module(monkeypatch, "IPython", get_ipython=lambda: shell)
    fake_module(monkeypatch, "ipykernel")


def test_notebook_detection_imports_nothing(monkeypatch):
    for name in ("IPython", "ipykernel", "ipywidgets"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert not in_notebook() and "IPython" not in sys.modules
    assert display_mode(None, terminal=False) == "log" and display_mode(None, terminal=True) == "live"
    fake_kernel(monkeypatch, kernel=False)  # IPython in a terminal: no kernel
    assert not in_notebook()
    fake_kernel(monkeypatch)
    assert in_notebook()
    monkeypatch.delitem(sys.modules, "ipykernel")
    assert not in_notebook()


def test_a_notebook_without_ipywidgets_gets_lines_and_a_hint(monkeypatch, capsys, fake_clock):
    fake_kernel(monkeypatch)
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # not importable
    monkeypatch.setattr(progress, "_warned", set())
    bar = EpochProgress("x", 1, 2, live=None)
    train(bar, fake_clock, 1, 2)
    err = capsys.readouterr().err
    assert bar.mode == "log" and "install ipywidgets" in err and "[x] epoch 1/1 loss" in err


def test_a_notebook_shows_the_bars_in_a_widget_and_keeps_the_epoch_lines(monkeypatch, fake_clock):
    shown, widgets = [], []

    class Output:
        closed = False

        def __init__(self):
            widgets.append(self)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def clear_output(self, wait=False):
            pass

        def close(self):
            self.closed = True

    fake_kernel(monkeypatch)
    fake_module(monkeypatch, "IPython.display", display=shown.append)
    fake_module(monkeypatch, "ipywidgets", Output=Output)
    bar = EpochProgress(TITLE, 2, 3, live=None)
    assert bar.mode == "notebook" and bar.console.is_jupyter
    train(bar, fake_clock, 2, 3)
    bar._bar.refresh()
    bar.close()
    assert widgets and shown[0] is widgets[0] and widgets[0].closed  # the bars: one widget, gone at the end
    texts = [getattr(x, "text", "") for x in shown]
    assert any("epoch 1/2 loss 1.2346" in t for t in texts) and any("epoch 2/2 loss" in t for t in texts)


def test_clock():
    assert (clock(0), clock(59.6), clock(3600 * 26 + 61)) == ("0:00:00", "0:01:00", "26:01:01")
