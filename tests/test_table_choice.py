"""What a table chooses among (issue 26): runs of other epoch counts, recipes or backbones never join a
row's choice on validation unless asked (--mix-protocols), the note says what it chose among, rows of
one method sort by their values as numbers, and `ltbench eval` records stay in a table of their own."""

import copy
import json

import pytest
from typer.testing import CliRunner

from ltbench.cli.app import app
from ltbench.results.store import Store
from ltbench.results.tables import build_table, done_results, natural_key, protocol_of
from tests.test_tables import RECORDS


@pytest.fixture(scope="module")
def results():
    return done_results(Store(RECORDS))


def _variant(r, run_id, val, **train):
    """A copy of record ``r`` with other training settings, another id and validation score ``val``."""
    v = copy.deepcopy(r)
    v["run_id"] = run_id
    v["spec"]["stages"]["train"].update(train)
    v["val"]["class_mean"] = val
    v["test"]["top1"] = 11.0
    return v


def test_a_smoke_test_run_never_joins_the_choice(results):
    ce = [r for r in results if r["method"] == "ce"]
    smoke = _variant(ce[0], "smoke0000001", 99.0, epochs=3)  # best on validation by far, but 3 epochs
    t = build_table([*results, smoke], benchmarks=["digits_lt"])
    col = "digits-LT IR20"
    assert t["rows"]["ce"][col]["all"]["mean"] != 11.0  # the 40-epoch choice stands
    assert t["rows"]["ce (epochs=3)"][col]["all"]["mean"] == 11.0  # the smoke run: a row of its own
    assert list(t["rows"]).index("ce (epochs=3)") == list(t["rows"]).index("ce") + 1
    assert any("runs of 2 protocols" in n and "--mix-protocols" in n for n in t["notes"])
    chosen = next(n for n in t["notes"] if n.startswith("ce on digits-LT IR20:") and "chosen" in n)
    assert "among 3 configurations (weight_decay 0.0, 0.0005, 0.001)" in chosen

    mixed = build_table([*results, smoke], benchmarks=["digits_lt"], mix_protocols=True)
    assert mixed["rows"]["ce"][col]["all"]["mean"] == 11.0 and "ce (epochs=3)" not in mixed["rows"]
    assert any("epochs=3, weight_decay=" in n and "among 4 configurations" in n for n in mixed["notes"])


def test_recipes_and_backbones_are_protocols_too(results):
    ce = next(r for r in results if r["method"] == "ce")
    other = copy.deepcopy(ce)
    other["spec"]["recipe"], other["spec"]["backbone"] = "kang", "resnet32"
    assert protocol_of(ce["spec"]) != protocol_of(other["spec"])
    assert protocol_of(ce["spec"]) == {"backbone": "small_cnn", "recipe": "paper", "train.epochs": 15}
    wb = next(r for r in results if r["method"] == "wb")
    assert {"stage1.epochs", "stage2.epochs"} <= set(protocol_of(wb["spec"]))


def test_a_stage1_row_of_another_protocol_keeps_its_method(results):
    """WB's stage-1 row comes from its parent run; a 3-epoch stage-1 run is a row of its own, still WB's."""
    ce_parent = next(r for r in results if r["run_id"] == next(
        x for x in results if x["method"] == "wb")["method_record"]["parent"])
    smoke = _variant(ce_parent, "smoke0000002", 99.0, epochs=3)
    wb_smoke = copy.deepcopy(next(x for x in results if x["method"] == "wb"))
    wb_smoke["run_id"], wb_smoke["method_record"]["parent"] = "smoke0000003", smoke["run_id"]
    wb_smoke["spec"]["parent"] = smoke["spec"]
    t = build_table([*results, smoke, wb_smoke], benchmarks=["digits_lt"], methods=["wb"])
    assert {"wb", "wb (stage1.epochs=3)", "wb stage 1 (ce + tuned WD)",
            "wb stage 1 (ce + tuned WD) (epochs=3)"} <= set(t["rows"])
    assert "ce" not in t["rows"]


def test_rows_of_one_method_sort_as_numbers():
    assert natural_key("ce (lr=0.05)") < natural_key("ce (lr=0.1)")
    assert natural_key("(epochs=3)") < natural_key("(epochs=40)")
    assert sorted(["5e-05", "0.001", "0.0005"], key=natural_key) == ["5e-05", "0.0005", "0.001"]


def test_select_last_rows_sort_by_value(results):
    ce = next(r for r in results if r["method"] == "ce")
    more = [_variant(ce, f"lr{i:010d}", 50.0, lr=lr) for i, lr in enumerate([0.1, 0.05, 0.2])]
    t = build_table([*results, *more], benchmarks=["digits_lt"], methods=["ce"], select="last")
    lrs = [row for row in t["rows"] if "lr=" in row]
    assert lrs == sorted(lrs, key=lambda row: float(row.split("lr=")[1].split(",")[0].rstrip(")")))


def test_a_method_filter_drops_columns_only_others_fill(results, tmp_path):
    ce = next(r for r in results if r["method"] == "ce")
    other = copy.deepcopy(ce)
    other["run_id"], other["method"], other["label"] = "otherbench01", "tau_norm", "digits-LT IR50"
    t = build_table([*results, other], methods=["wb"])
    assert "digits-LT IR50" not in t["columns"] and "digits-LT IR20" in t["columns"]


def _copy_store(tmp_path):
    import shutil

    shutil.copytree(RECORDS, tmp_path / "results")
    return Store(tmp_path / "results")


def _fake_eval(store):
    """An `ltbench eval` record on disk (evals/<benchmark>/<id>/), from a ce run's numbers."""
    rd = next(d for d in store.runs() if d.result()["method"] == "ce")
    r = rd.result()
    ed = store.eval_dir("digits_lt", "evalrecord01")
    ed.path.mkdir(parents=True)
    record = {"kind": "eval", "eval_id": "evalrecord01", "method": "ce", "source_run": rd.run_id, "benchmark": "digits_lt",
              "label": "digits-LT IR50 (train)", "source_seed": r["seed"], "backbone": "small_cnn",
              "recipe": "paper", "spec": {"kind": "eval", "data": {"imbalance": 50.0}},
              "scores": r["test"], "classifier_norms": r["classifier_norms"], "class_counts": r["class_counts"]}
    ed.result_file.write_text(json.dumps(record))
    (ed.path / "spec.json").write_text(json.dumps(record["spec"]))
    (ed.path / "DONE").write_text("")
    return record


def test_eval_records_stay_out_of_the_runs_table(tmp_path):
    store = _copy_store(tmp_path)
    record = _fake_eval(store)
    runner = CliRunner()
    base = ["table", "--results", str(store.root), "--dataset", "digits_lt"]
    plain = runner.invoke(app, [*base, "--format", "json"])
    assert plain.exit_code == 0, plain.output
    t = json.loads(plain.stdout)
    assert t["columns"] == ["digits-LT IR20"] and not any("eval of" in row for row in t["rows"])
    assert "many" in runner.invoke(app, base).stdout  # still a one-benchmark table: many / medium / few
    assert any("`ltbench table --evals`" in n for n in t["notes"])
    evals = runner.invoke(app, [*base, "--evals", "--format", "json"])
    assert evals.exit_code == 0, evals.output
    e = json.loads(evals.stdout)
    assert e["columns"] == ["digits-LT IR50 (train)"] and list(e["rows"]) == [f"ce (eval of {record['source_run']})"]
    assert "`ltbench eval` top-1" in e["title"]
    unrelated = runner.invoke(app, [*base, "-m", "wb", "--format", "json"])
    assert "digits-LT IR50 (train)" not in json.loads(unrelated.stdout)["columns"]
    none = runner.invoke(app, [*base, "-m", "wb", "--evals"])
    assert none.exit_code == 2 and "no `ltbench eval` records" in none.output
