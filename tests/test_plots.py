"""`ltbench plot`: each figure renders from records into a real PNG image."""

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ltbench.cli.app import app
from ltbench.results.store import Store
from ltbench.results.tables import done_results

pytest.importorskip("matplotlib")
RECORDS = Path(__file__).parent / "golden" / "results"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _ids(method):
    return [r["run_id"] for r in done_results(Store(RECORDS)) if r["method"] == method and r["seed"] == 0]


@pytest.mark.parametrize("kind,methods", [("norms", ["ce", "wb"]), ("accuracy", ["ce", "tau_norm", "wb"]),
                                          ("wd", [])])
def test_each_plot_renders_a_png(tmp_path, kind, methods):
    ids = [i for m in methods for i in _ids(m)]
    out = tmp_path / f"{kind}.png"
    r = CliRunner().invoke(app, ["plot", kind, *ids, "-o", str(out), "--results", str(RECORDS)])
    assert r.exit_code == 0, r.output
    w, h = png_size(out)
    assert w >= 600 and h >= 300
    import matplotlib.image

    pixels = matplotlib.image.imread(out)
    assert pixels.std() > 0.05  # something was drawn, not a blank canvas
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically


def test_plot_errors(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(app, ["plot", "histogram", "--results", str(RECORDS)])
    assert bad.exit_code == 2 and "expected one of norms, accuracy, wd" in bad.output
    none = runner.invoke(app, ["plot", "norms", "--results", str(RECORDS)])
    assert none.exit_code == 2 and "needs run ids" in none.output
    unknown = runner.invoke(app, ["plot", "norms", "ffffffff", "--results", str(RECORDS)])
    assert unknown.exit_code == 2 and "no run" in unknown.output
    single = runner.invoke(app, ["plot", "wd", "--method", "wb", "--results", str(RECORDS)])
    assert single.exit_code == 2 and "two or more weight decays" in single.output
    # an unfinished run is refused
    copy = tmp_path / "res"
    shutil.copytree(RECORDS, copy)
    victim = next((copy / "runs" / "digits_lt" / "wb").iterdir())
    (victim / "DONE").unlink()
    r = runner.invoke(app, ["plot", "norms", victim.name, "--results", str(copy)])
    assert r.exit_code == 2 and "not finished" in r.output


def test_the_api_returns_the_figure_for_a_notebook_and_writes_it_when_asked(tmp_path):
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    import ltbench
    from ltbench.errors import LtbenchError

    ids = _ids("ce") + _ids("wb")
    fig = ltbench.plot("norms", ids, results=RECORDS)
    assert isinstance(fig, Figure) and len(fig.axes[0].lines) == len(ids)  # drawn: one line per run
    assert not plt.fignum_exists(fig.number)  # not among pyplot's open figures: a notebook shows it once, as the value
    fig.savefig(tmp_path / "later.png")  # a returned figure still draws
    assert png_size(tmp_path / "later.png")[0] >= 600
    out = tmp_path / "norms.png"
    again = ltbench.plot("norms", ",".join(ids), results=RECORDS, output=out)
    assert isinstance(again, Figure) and png_size(out)[0] >= 600
    assert isinstance(ltbench.plot("wd", results=RECORDS), Figure)  # wd: every done run by default
    with pytest.raises(LtbenchError, match="expected one of norms, accuracy, wd, confusion"):
        ltbench.plot("histogram", results=RECORDS)
    with pytest.raises(LtbenchError, match="needs run ids"):
        ltbench.plot("norms", results=RECORDS)
