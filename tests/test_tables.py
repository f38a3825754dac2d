"""Tables: golden files from a committed set of records, hyperparameter selection, reference numbers."""

import copy
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ltbench.cli.app import app
from ltbench.results.reference import PUBLISHED, STAGE1, published
from ltbench.results.store import Store
from ltbench.results.tables import build_table, done_results, render

GOLDEN = Path(__file__).parent / "golden"
RECORDS = GOLDEN / "results"  # 10 real digits-LT records: ce (WD 0 = WB stage 1, 5e-4, 1e-3), wb, tau_norm; seeds 0, 1
CASES = {  # golden file -> (build_table arguments, format)
    "table.md": ({}, "github"),
    "table.tex": ({}, "latex"),
    "table.csv": ({}, "csv"),
    "table.json": ({}, "json"),
    "table_reference.md": ({"reference": True}, "github"),
    "table_digits.md": ({"benchmarks": ["digits_lt"]}, "github"),
    "table_digits_last.md": ({"benchmarks": ["digits_lt"], "select": "last"}, "github"),
}


@pytest.fixture(scope="module")
def results():
    return done_results(Store(RECORDS))


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_tables(results, name):
    kwargs, fmt = CASES[name]
    text = render(build_table(results, **kwargs), fmt) + "\n"
    path = GOLDEN / name
    if os.environ.get("LTBENCH_REGEN_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; if intended, regenerate with LTBENCH_REGEN_GOLDEN=1"


def test_every_format_shows_the_same_numbers(results):
    t = build_table(results)
    data = json.loads(render(t, "json"))
    md, tex, csv = render(t, "github"), render(t, "latex"), render(t, "csv")
    cell = data["rows"]["wb"]["digits-LT IR20"]["all"]
    assert cell["n"] == 2
    shown = f"{cell['mean']:.2f} ± {cell['std']:.2f} (2)"
    assert shown in md and shown.replace("±", r"$\pm$") in tex
    assert f"wb,digits-LT IR20,all,{cell['mean']:.2f},{cell['std']:.2f},2,," in csv


def test_hyperparameters_are_chosen_on_validation(results):
    ce = [r for r in results if r["method"] == "ce"]
    by_wd = {}
    for r in ce:
        by_wd.setdefault(r["spec"]["stages"]["train"]["weight_decay"], []).append(r)
    assert sorted(by_wd) == [0.0, 5e-4, 1e-3]
    val = {wd: sum(r["val"]["class_mean"] for r in rs) / len(rs) for wd, rs in by_wd.items()}
    best = max(val, key=val.get)
    test = sum(r["test"]["top1"] for r in by_wd[best]) / 2
    t = build_table(results, benchmarks=["digits_lt"])
    assert t["rows"]["ce"]["digits-LT IR20"]["all"]["mean"] == round(test, 2)
    assert any(n.startswith("ce on digits-LT IR20: weight_decay=") and "among 3 configurations" in n for n in t["notes"])
    # WB's stage 1 is its own row: the ce runs that wb built on (weight decay 0 on digits)
    stage1 = t["rows"][STAGE1]["digits-LT IR20"]["all"]
    assert stage1["mean"] == round(sum(r["test"]["top1"] for r in by_wd[0.0]) / 2, 2)


def test_select_last_shows_every_configuration_and_the_last_epoch(results):
    t = build_table(results, benchmarks=["digits_lt"], select="last")
    assert {"ce (weight_decay=0.0)", "ce (weight_decay=0.0005)", "ce (weight_decay=0.001)"} <= set(t["rows"])
    wb = [r for r in results if r["method"] == "wb"]
    assert all(r["selected"]["epoch"] != 10 for r in wb)  # the best val epochs of stage 2 were not the last
    lasts = [r["selected"]["last_epoch_test"]["top1"] for r in wb]
    assert t["rows"]["wb"]["digits-LT IR20"]["all"]["mean"] == round(sum(lasts) / 2, 2)
    selected = build_table(results, benchmarks=["digits_lt"])["rows"]["wb"]["digits-LT IR20"]["all"]["mean"]
    assert selected == round(sum(r["test"]["top1"] for r in wb) / 2, 2) != t["rows"]["wb"]["digits-LT IR20"]["all"]["mean"]


def test_default_columns_and_missing_cells(results):
    t = build_table(results, reference=True)
    assert t["columns"] == ["CIFAR-100-LT IR100", "CIFAR-100-LT IR50", "CIFAR-100-LT IR10", "ImageNet-LT",
                            "iNaturalist 2018", "digits-LT IR20"]
    wb = t["rows"]["wb"]["CIFAR-100-LT IR100"]
    assert wb["all"]["n"] == 0 and wb["paper"]["all"] == 53.35 and wb["paper"]["few"] == 32.63
    assert "Table 1" in wb["paper"]["source"]
    cifar = next(m for m in t["missing"] if m["column"] == "CIFAR-100-LT IR100")
    # the methods with records, and those with published numbers for that column
    assert cifar["command"].startswith("ltbench run --method ce,wb,cb,focal,cb_focal,ldam_drw,logit_adj,bcl,crt,lws,"
                                       "mislas,disalign,tau_norm,sade,ride,lift --dataset cifar100_lt --imbalance 100")
    assert "PaCo (not in ltbench)" in t["rows"]  # published-only rows are listed, never "missing"
    assert all("PaCo" not in m["rows"] for m in t["missing"])
    md = render(t, "github")
    assert "missing cells, and the commands that fill them:" in md


def test_reference_difference_is_ours_minus_paper(results):
    fake = copy.deepcopy([r for r in results if r["method"] == "wb"])
    for r in fake:  # pretend these were CIFAR-100-LT IR100 runs
        r["label"], r["benchmark"] = "CIFAR-100-LT IR100", "cifar100_lt"
    t = build_table(fake, reference=True, columns=["CIFAR-100-LT IR100"])
    cell = t["rows"]["wb"]["CIFAR-100-LT IR100"]
    assert cell["all"]["delta"] == round(cell["all"]["mean"] - 53.35, 2)
    assert cell["few"]["delta"] == round(cell["few"]["mean"] - 32.63, 2)


def test_published_numbers_match_reference_md():
    assert published("wb", "ImageNet-LT").all == 53.9 and published("wb", "ImageNet-LT").few == 41.5
    assert published(STAGE1, "iNaturalist 2018").many == 74.5
    assert published("ce", "CIFAR-100-LT IR50").all == 43.85
    assert published("ldam_drw", "CIFAR-10-LT IR100").all == 77.03
    assert all(p.source for p in PUBLISHED)


def test_table_cli_options(tmp_path):
    r = CliRunner().invoke(app, ["table", "--results", str(RECORDS), "--dataset", "digits_lt", "--method", "wb"])
    assert r.exit_code == 0, r.output
    rows = [ln.split("|")[1].strip() for ln in r.output.splitlines() if ln.startswith("| ")][1:]
    assert rows == [STAGE1, "wb"]
    bad = CliRunner().invoke(app, ["table", "--results", str(RECORDS), "--select", "best"])
    assert bad.exit_code == 2 and "--select 'best'" in bad.output
    empty = CliRunner().invoke(app, ["table", "--results", str(tmp_path)])
    assert empty.exit_code == 2 and "no finished runs" in empty.output
