"""The Python API (ltbench.run, ltbench.table): the README's example runs as written (with 1 epoch
instead of 40), its records are the result.json files, its run ids are the command line's, and the
table's rows hold the mean and std over seeds of those records."""

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from ltbench.errors import LtbenchError
from ltbench.results.store import Store
from ltbench.spec.run_spec import resolve

# The README's example (section "Python API"), as it is printed there.
README_EXAMPLE = """\
import ltbench

records = ltbench.run(method="ce,wb", dataset="digits_lt", seed=[0, 1], epochs=40, device="cpu")
for r in records:
    print(r["method"], r["seed"], r["run_id"], f"{r['test']['top1']:.2f}")

rows = ltbench.table(dataset="digits_lt")          # one dict per (method, benchmark)
print(ltbench.table(dataset="digits_lt", fmt="github"))
fig = ltbench.plot("norms", [r["run_id"] for r in records if r["seed"] == 0])  # a Figure; shown inline
"""


def test_readme_example_runs_and_matches_the_records_on_disk(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # "results" (the default --results) lands here
    scope: dict = {}
    exec(README_EXAMPLE.replace("epochs=40", "epochs=1"), scope)  # noqa: S102 (the README's own text)
    records, rows = scope["records"], scope["rows"]
    assert len(scope["fig"].axes[0].lines) == 2  # ltbench.plot: the norms of ce and wb (seed 0), a Figure
    # one record per (method, seed), in the order asked; the ids the CLI resolves
    expected = [resolve(m, "digits_lt", epochs=1, seed=s) for m in ("ce", "wb") for s in (0, 1)]
    assert [(r["method"], r["seed"], r["run_id"]) for r in records] == [(s.method, s.seed, s.run_id) for s in expected]
    for r, spec in zip(records, expected, strict=True):
        on_disk = json.loads((tmp_path / "results" / "runs" / "digits_lt" / spec.method / spec.run_id / "result.json").read_text())
        assert r == on_disk
    assert (tmp_path / "results" / "runs" / "digits_lt" / "ce" / expected[2].parent_id / "DONE").exists()  # stage 1
    # rows: mean and sample std over the two seeds of each method's records, rounded to 2 places
    by_method = {row["method"]: row for row in rows}
    assert set(by_method) == {"ce", "wb", "wb stage 1 (ce + tuned WD)"}
    for method in ("ce", "wb"):
        top1 = [r["test"]["top1"] for r in records if r["method"] == method]
        row = by_method[method]
        assert row["benchmark"] == "digits-LT IR20" and row["n"] == 2 and row["seeds"] == [0, 1]
        assert row["all"] == round(statistics.fmean(top1), 2) and row["std"] == round(statistics.stdev(top1), 2)
        few = [r["test"]["few"] for r in records if r["method"] == method]
        assert row["few"] == round(statistics.fmean(few), 2)
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == f"ce 0 {expected[0].run_id} {records[0]['test']['top1']:.2f}"
    assert "digits-LT IR20: test top-1 (%), selected on validation\n| method" in printed
    # every format of the CLI, as the CLI prints it
    import ltbench

    csv = ltbench.table(dataset="digits_lt", fmt="csv")
    assert csv.splitlines()[0] == "method,column,group,mean,std,n,paper,delta"
    assert json.loads(ltbench.table(dataset="digits_lt", fmt="json"))["rows"]["wb"]["digits-LT IR20"]["all"]["n"] == 2
    assert ltbench.table(dataset="digits_lt", fmt="latex").startswith("% digits-LT IR20")
    with pytest.raises(LtbenchError, match="--format 'html'"):
        ltbench.table(dataset="digits_lt", fmt="html")
    with pytest.raises(LtbenchError, match="no finished runs"):
        ltbench.table(dataset="cifar10_lt")
    # a second call skips the finished runs and returns the same records
    assert ltbench.run(method=["wb"], seed=1, epochs=1, device="cpu") == [records[3]]


def test_run_takes_a_dict_of_settings_and_a_config(tmp_path):
    from ltbench.spec.request import RunRequest, make_selection

    a = RunRequest(method="wb", dataset="digits_lt", sets={"stage2.lr": 0.02, "stage1.weight_decay": "5e-3"}, seed="0,1")
    b = RunRequest(method=["wb"], dataset=["digits_lt"], sets=["stage2.lr=0.02", "stage1.weight_decay=5e-3"],
                   seed=[0, 1])
    config = tmp_path / "c.toml"
    config.write_text('method = "wb"\nseed = [0, 1]\n[stage2]\nlr = 0.02\n[stage1]\nweight_decay = 5e-3\n')
    c = RunRequest(config=config)
    store = Store(tmp_path)
    ids = [[s.run_id for s in req.specs(store)] for req in (a, b, c)]
    assert ids[0] == ids[1] == ids[2] and len(set(ids[0])) == 2
    with pytest.raises(LtbenchError, match="seed"):
        make_selection(seed=[0.5])
    with pytest.raises(LtbenchError, match="names nothing"):
        make_selection(method=[])


def test_import_ltbench_stays_light():
    code = ("import sys, ltbench; from ltbench import run, table; "
            "print('torch' in sys.modules, 'ltbench.api' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]
