"""`ltbench report`: one self-contained HTML file of tables and figures, checked as text (every figure an
inline PNG, no address outside the page, every string from a record escaped) and rendered in a real
headless browser (Debian's chromium, when installed: .ci/run installs it; skipped otherwise): its figures
decode, its tables show, a hostile record injects nothing, and the page makes no network request (read from
chromium's NetLog; a page that does request something is caught, so the check can fail)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ltbench.cli.app import app
from ltbench.results.store import Store

pytest.importorskip("matplotlib")
GOLDEN = Path(__file__).parent / "golden" / "results"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
HOSTILE = '<script>document.documentElement.setAttribute("data-pwned","1")</script>'
runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """ce, and wb with its stage-1 ce run, one epoch each on digits-LT."""
    from ltbench.engine.training import RunOptions, execute
    from ltbench.spec.run_spec import resolve

    root = tmp_path_factory.mktemp("report") / "results"
    opts = RunOptions(device="cpu", live_progress=False)
    execute(resolve("ce", "digits_lt", epochs=1), Store(root), opts)
    execute(resolve("wb", "digits_lt", epochs=1, sets=["stage2.epochs=1"]), Store(root), opts)
    return root


@pytest.fixture(scope="module")
def report(store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("page") / "report.html"
    r = invoke("report", "--results", store, "-o", out)
    assert r.exit_code == 0, r.output
    assert r.output.strip() == f"wrote {out} (3 runs, 12 figures)"
    return out


def images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_the_page_is_self_contained_with_tables_figures_and_every_run(report, store):
    page = report.read_text()
    pngs = images(page)
    assert len(pngs) == 12 == page.count("<img ") and all(p[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    addresses = re.findall(r'(?:src|href|action|srcset|poster|data)\s*=\s*["\']?([^"\' >]*)', page)
    assert addresses and all(a.startswith(("data:image/png;base64,", "#run-", "#tables")) for a in addresses)
    assert "default-src 'none'" in page and page.count("<script") == 1 and "@import" not in page and "url(" not in page
    assert "Comparison tables" in page and "digits-LT IR20: test top-1 (%), selected on validation" in page
    for rd in Store(store).runs():  # each run: a section with its settings (ltbench show's text) and provenance
        assert f"run {rd.run_id}" in page
    assert page.count('<section class="run"') == 3
    assert "settings (value, origin):" in page and "git_sha" in page and "model_sha256" in page
    assert "wb stage 1 (ce + tuned WD)" in page and "norm max/min" in page
    assert "Learning curves" in page and "test confusion" in page.lower()
    assert "not recorded" not in page  # a record of this ltbench has it all
    assert not [p for p in report.parent.iterdir() if p.name != report.name]  # written atomically


def test_old_records_say_what_they_lack(tmp_path):
    out = tmp_path / "old.html"
    r = invoke("report", "--results", GOLDEN, "--method", "tau_norm", "-o", out)
    assert r.exit_code == 0, r.output
    page = out.read_text()
    assert "test confusion: not recorded for this run" in page and "class names: not recorded for this run" in page
    assert "no per-epoch metrics: this run trains no epochs of its own (post hoc)" in page
    assert page.count('<section class="run"') == 2 and len(images(page)) == 4  # accuracy and norms of each


def test_filters_and_one_line_errors(store, tmp_path):
    out = tmp_path / "ce.html"
    r = invoke("report", "--results", store, "--method", "ce", "--where", "train.weight_decay=5e-4", "-o", out)
    assert r.exit_code == 0, r.output
    assert out.read_text().count('<section class="run"') == 1  # the plain ce run, not wb's stage 1 (wd 0)

    def error(*args: object) -> str:
        res = invoke("report", *args)
        assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
        assert "Traceback" not in res.output
        return res.output

    assert "no finished runs in" in error("--results", tmp_path / "empty", "-o", tmp_path / "x.html")
    assert "match --where seed=7" in error("--results", store, "--where", "seed=7", "-o", tmp_path / "x.html")
    assert "did you mean" in error("--results", store, "--where", "train.weight_decy=0", "-o", tmp_path / "x.html")
    assert "it is a folder" in error("--results", store, "-o", tmp_path)
    inside = Store(store).runs()[0].path / "report.html"
    assert "inside the store's runs/ records" in error("--results", store, "-o", inside)
    assert not inside.exists() and not (tmp_path / "x.html").exists()


def test_damaged_records_are_named_and_the_rest_reported(store, tmp_path):
    copy = tmp_path / "damaged"
    shutil.copytree(store, copy)
    dirs = Store(copy).runs()
    wb = next(rd for rd in dirs if rd.path.parent.name == "wb")
    wb.result_file.write_text(wb.result_file.read_text()[:100])  # cut mid-record
    ce = next(rd for rd in dirs if rd.path.parent.name == "ce")
    ce.metrics_file.write_bytes(b"not json\n")
    out = tmp_path / "d.html"
    r = invoke("report", "--results", copy, "-o", out)
    assert r.exit_code == 0, r.output
    page = out.read_text()
    assert page.count('<section class="run"') == 2 and "left out as damaged" in page
    assert f"{ce.metrics_file} line 1 is not a JSON record" in page.replace("&#x27;", "'")


def hostile_store(store: Path, tmp_path: Path) -> Path:
    """A copy of the store whose ce record carries markup in its class names, label, env and data info."""
    copy = tmp_path / "hostile"
    shutil.copytree(store, copy)
    rd = next(rd for rd in Store(copy).runs() if rd.path.parent.name == "ce")
    record = json.loads(rd.result_file.read_text())
    record["class_names"][0] = HOSTILE
    record["label"] = '<img src="x" alt="pwned">'
    record["env"]["host"] = f"</pre>{HOSTILE}"
    record["data_info"]["test_source"] = "<style>body{display:none}</style>"
    rd.result_file.write_text(json.dumps(record))
    return copy


def test_strings_from_records_are_escaped(store, tmp_path):
    out = tmp_path / "hostile.html"
    r = invoke("report", "--results", hostile_store(store, tmp_path), "-o", out)
    assert r.exit_code == 0, r.output
    page = out.read_text()
    assert HOSTILE not in page and '<img src="x"' not in page and "<style>body" not in page
    assert "&lt;script&gt;document.documentElement" in page and "&lt;img src=&quot;x&quot;" in page


# --- in a real browser ----------------------------------------------------------------------------

def render(page: Path, tmp: Path) -> tuple[str, list[str]]:
    """Chromium's DOM of ``page`` once loaded, and the addresses the page asked the network for (its NetLog's
    requests initiated by the page; chromium's own background requests, which no page starts, are not). A
    proxy that refuses every connection keeps it all on this machine."""
    netlog = tmp / "netlog.json"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp / 'profile'}", "--proxy-server=http://127.0.0.1:9", f"--log-net-log={netlog}",
           "--virtual-time-budget=10000", "--dump-dom", page.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "<html" in done.stdout, done.stderr[-3000:]
    log = json.loads(netlog.read_text())
    kinds = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    asked = [e["params"]["url"] for e in log["events"] if kinds.get(e["type"]) == "URL_REQUEST_START_JOB"
             and "url" in e.get("params", {}) and e["params"].get("initiator") != "not an origin"]
    return done.stdout, [u for u in asked if not u.startswith(("file:", "data:"))]


@needs_chromium
def test_chromium_shows_every_figure_and_table_and_asks_the_network_nothing(report, tmp_path):
    dom, asked = render(report, tmp_path / "a")
    n = report.read_text().count("<img ")
    assert f'data-figures-shown="{n}/{n}"' in dom
    assert dom.count("<table") >= 4 and "Comparison tables" in dom and dom.count('class="run"') == 3
    assert asked == []
    # the checks can fail: a figure that does not decode is counted out, a page that loads an address is caught
    broken = tmp_path / "broken.html"
    broken.write_text(report.read_text().replace("base64,", "base64,AAAA", 1))
    dom, _ = render(broken, tmp_path / "b")
    assert f'data-figures-shown="{n - 1}/{n}"' in dom
    leaky = tmp_path / "leaky.html"
    leaky.write_text('<html><body><img src="http://example.invalid/x.png"><img src="https://example.org/y.png">'
                     "</body></html>")
    _, asked = render(leaky, tmp_path / "c")
    assert sorted(asked) == ["http://example.invalid/x.png", "https://example.org/y.png"]


@needs_chromium
def test_chromium_runs_nothing_from_a_hostile_record(store, tmp_path):
    out = tmp_path / "hostile.html"
    assert invoke("report", "--results", hostile_store(store, tmp_path), "-o", out).exit_code == 0
    dom, asked = render(out, tmp_path / "h")
    n = out.read_text().count("<img ")
    assert "data-pwned" not in dom.split("<body", 1)[0] and f'data-figures-shown="{n}/{n}"' in dom
    assert '<img src="x"' not in dom and asked == []
