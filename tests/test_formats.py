"""`ltbench table --format markdown | csv-wide | latex` on small tables built from hand-made records: the
markdown pipe table and its notes, the wide CSV read back as numbers, LaTeX's best mean per column in
bold (ties too, never a published number), and the Python API and the command line taking the same
formats."""

import copy
import csv
import io
import re

import pytest
from typer.testing import CliRunner

import ltbench
from ltbench.cli.app import app
from ltbench.errors import LtbenchError
from ltbench.results.store import Store
from ltbench.results.tables import BOLD_NOTE, FORMATS, GROUPS, build_table, done_results, render
from tests.test_tables import RECORDS

DIGITS, CIFAR = "digits-LT IR20", "CIFAR-100-LT IR100"


@pytest.fixture(scope="module")
def base():
    return next(r for r in done_results(Store(RECORDS)) if r["method"] == "ce")


def _record(base, method, label, seed, all_, many, medium, few):
    """A copy of a real ce record as ``method``'s run on ``label`` with these test accuracies."""
    r = copy.deepcopy(base)
    r["method"], r["spec"]["method"], r["label"] = method, method, label
    r["run_id"] = f"{method}-{'d' if label == DIGITS else 'c'}{seed}".ljust(12, "0")
    r["seed"] = r["spec"]["seed"] = seed
    r["test"].update(top1=all_, many=many, medium=medium, few=few)
    return r


@pytest.fixture(scope="module")
def records(base):
    """ce (2 seeds), cb and focal on digits; ce and cb tie on the CIFAR column, where focal has no run."""
    return [_record(base, "ce", DIGITS, 0, 69.0, 90.0, 60.0, 40.0), _record(base, "ce", DIGITS, 1, 71.0, 90.0, 62.0, 44.0),
            _record(base, "cb", DIGITS, 0, 75.5, 88.0, 70.0, 50.0), _record(base, "focal", DIGITS, 0, 72.25, 90.0, 61.0, 45.5),
            _record(base, "ce", CIFAR, 0, 20.0, 30.0, 20.0, 10.0), _record(base, "cb", CIFAR, 0, 20.0, 28.0, 21.0, 11.0)]


def _latex_rows(text):
    """method -> its cells, from the LaTeX table's body lines."""
    lines = text.split("\\midrule\n", 1)[1].split("\n\\bottomrule", 1)[0].splitlines()
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in (line.rstrip(" \\").split("&") for line in lines)}


def test_latex_bolds_the_best_mean_of_each_column_and_every_tie(records):
    t = build_table(records, columns=[DIGITS, CIFAR])
    text = render(t, "latex")
    rows = _latex_rows(text)
    assert rows["cb"] == [r"\textbf{75.50}", r"\textbf{20.00}"]  # the best on digits; tied best on CIFAR
    assert rows["ce"] == [r"70.00 $\pm$ 1.41 (2)", r"\textbf{20.00}"]
    assert rows["focal"] == ["72.25", "-"]
    assert text.count(r"\textbf") == 3 and f"% - {BOLD_NOTE}" in text
    one = _latex_rows(render(build_table(records, columns=[DIGITS]), "latex"))  # many / medium / few / all
    assert one["ce"][:4] == [r"\textbf{90.00 $\pm$ 0.00 (2)}", r"61.00 $\pm$ 1.41 (2)", r"42.00 $\pm$ 2.83 (2)",
                             r"70.00 $\pm$ 1.41 (2)"]
    assert one["focal"][:3] == [r"\textbf{90.00}", "61.00", "45.50"] and one["cb"][1:4] == [
        r"\textbf{70.00}", r"\textbf{50.00}", r"\textbf{75.50}"]
    assert not any(r"\textbf" in c for c in one["ce"][4:] + one["cb"][4:])  # the norm ratio is no accuracy


def test_latex_never_bolds_a_published_number(records):
    t = build_table(records, columns=[CIFAR], reference=True)
    rows = _latex_rows(render(t, "latex"))  # many, medium, few, all, paper, delta, norm max/min
    assert rows["cb"][3] == r"\textbf{20.00}" and rows["cb"][4] == "39.60"  # published 39.60 is higher: not compared
    assert rows["PaCo (not in ltbench)"][3:5] == ["-", "52.00"]  # a published-only row: never bold
    paper = t["rows"]["ce"][CIFAR]["paper"]["many"]
    assert rows["ce"][0] == r"\textbf{30.00}" + ("" if paper is None else f" [{paper:.2f}]")
    assert "published numbers (paper) are not compared" in render(t, "latex")


def test_latex_escapes_what_tex_reads_as_commands(records, base):
    odd = _record(base, "ce", DIGITS, 2, 99.0, 99.0, 99.0, 99.0)
    odd["table_row"] = "ce & 100% #1 {x}_y"
    text = render(build_table([*records, odd], columns=[DIGITS]), "latex")
    assert r"ce \& 100\% \#1 \{x\}\_y" in text and r"\textbf{99.00}" in text


def test_markdown_is_a_pipe_table_with_its_notes_as_a_list(records, base):
    odd = _record(base, "ce", CIFAR, 3, 1.0, 1.0, 1.0, 1.0)
    odd["table_row"] = "ce | eval"
    t = build_table([*records, odd], columns=[DIGITS, CIFAR], reference=True)
    text = render(t, "markdown")
    table, notes = text.split("\n\n", 1)
    lines = table.splitlines()
    assert lines[0].startswith("| method ") and lines[0].endswith("|")
    assert lines[1].startswith("|:--") and lines[1].endswith("--:|")  # methods left, numbers right
    assert len(lines) == 2 + len(t["rows"])
    assert all(line.count("|") - line.count("\\|") == len(lines[0].split("|")) - 1 for line in lines)
    assert any(line.startswith(r"| ce \| eval ") for line in lines)
    assert re.search(r"^\| ce +\| +70\.00 ± 1\.41 \(2\) \| +- \| +- \| +20\.00 \| +38\.32 \| +-18\.32 \|$", table, re.M)
    assert notes.splitlines()[0].startswith("- ")
    assert "Missing cells, and the commands that fill them:\n\n- " in notes
    assert "`ltbench run --method " in notes  # a command as code


def test_csv_wide_is_one_line_per_row_with_the_numbers_of_the_table(records):
    t = build_table(records, columns=[DIGITS, CIFAR], reference=True)
    lines = list(csv.DictReader(io.StringIO(render(t, "csv-wide"))))
    assert [line["method"] for line in lines] == list(t["rows"])
    header = list(lines[0])
    assert header[:4] == ["method", f"{DIGITS}/many/mean", f"{DIGITS}/many/std", f"{DIGITS}/many/n"]
    assert len(header) == 1 + 2 * len(GROUPS) * 5 + 2 and header[-2:] == [f"{DIGITS}/marks", f"{CIFAR}/marks"]
    by_row = {line["method"]: line for line in lines}
    for name, cells in t["rows"].items():
        for col in (DIGITS, CIFAR):
            for g in GROUPS:
                s = cells.get(col, {}).get(g, {"mean": None, "std": None, "n": 0})
                line = by_row[name]
                assert (line[f"{col}/{g}/mean"] == "") if s["mean"] is None else float(line[f"{col}/{g}/mean"]) == s["mean"]
                assert int(line[f"{col}/{g}/n"]) == s["n"]
    assert by_row["ce"][f"{DIGITS}/all/mean"] == "70.0" and by_row["ce"][f"{DIGITS}/all/std"] == "1.41"  # unformatted
    assert by_row["focal"][f"{CIFAR}/all/mean"] == "" and by_row["focal"][f"{CIFAR}/all/n"] == "0"
    assert float(by_row["cb"][f"{CIFAR}/all/paper"]) == t["rows"]["cb"][CIFAR]["paper"]["all"]
    assert float(by_row["cb"][f"{CIFAR}/all/delta"]) == round(20.0 - t["rows"]["cb"][CIFAR]["paper"]["all"], 2)
    plain = next(csv.reader(io.StringIO(render(build_table(records, columns=[DIGITS]), "csv-wide"))))
    assert "paper" not in ",".join(plain)  # without --reference: mean, std, n


def test_the_api_and_the_command_line_take_every_format():
    assert set(FORMATS) == {"github", "markdown", "latex", "csv", "csv-wide", "json"}
    md = ltbench.table("digits_lt", results=RECORDS, fmt="markdown")
    title, table = md.split("\n\n", 1)
    assert title.startswith("digits-LT IR20: test top-1 (%)") and table.startswith("| method ")
    wide = ltbench.table("digits_lt", results=RECORDS, fmt="csv-wide")
    assert wide.startswith("method,digits-LT IR20/many/mean,")
    assert r"\textbf{" in ltbench.table("digits_lt", results=RECORDS, fmt="latex")
    runner = CliRunner()
    out = runner.invoke(app, ["table", "--results", str(RECORDS), "--format", "csv-wide"])
    assert out.exit_code == 0 and out.stdout.startswith("method,"), out.output
    out = runner.invoke(app, ["table", "--results", str(RECORDS), "--format", "markdown", "-d", "digits_lt"])
    assert out.exit_code == 0 and "|:---" in out.stdout
    bad = runner.invoke(app, ["table", "--results", str(RECORDS), "--format", "html"])
    assert bad.exit_code == 2 and "expected one of github, markdown, latex, csv, csv-wide, json" in bad.output
    with pytest.raises(LtbenchError, match="expected one of github, markdown"):
        ltbench.table(results=RECORDS, fmt="tsv")
