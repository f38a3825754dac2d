"""--log tensorboard,wandb,mlflow (ltbench.results.loggers, logs, log_wandb, log_mlflow): each logger holds the
stage's hyperparameters, every epoch of metrics.jsonl once and the final record of result.json, read back
with the backend's own readers (TensorBoard's event loader and HParams backend, `wandb leet inspect` on
the offline files, MlflowClient on the store); a resumed run continues the same wandb/MLflow run; a
logger that fails is one warning line and never costs the record; the packages are imported only when
used."""

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ltbench
from ltbench.engine.training import RunOptions, execute
from ltbench.errors import LtbenchError
from ltbench.results import loggers, logs
from ltbench.results.store import RunDir, Store
from ltbench.spec.run_spec import resolve

OPTS = RunOptions(device="cpu", live_progress=False)
# MLflow's SQL store on SQLAlchemy 2.1 warns of its own loader option; nothing of ltbench's
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")
FINAL_TEST = ("top1", "class_mean", "many", "medium", "few")


@pytest.fixture
def no_wandb_account(tmp_path, monkeypatch):
    """No key, no settings, no WANDB_* variables: what a machine without a W&B account has."""
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_BASE_URL",
                "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(home / ".netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(home / ".config" / "wandb"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(home / ".cache" / "wandb"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(home / ".local" / "wandb"))


@pytest.fixture
def own_mlflow(monkeypatch):
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(var, raising=False)


# --- TensorBoard: hyperparameters and the final record beside the run's scalars ------------------------

@pytest.fixture(scope="module")
def tb_run(tmp_path_factory):
    pytest.importorskip("tensorboard")
    store = Store(tmp_path_factory.mktemp("tb"))
    spec = resolve("ce", "digits_lt", epochs=2)
    result = execute(spec, store, dataclasses.replace(OPTS, log=("tensorboard",)))
    return store, store.run_dir(spec), result


def test_tensorboard_holds_the_stage_hyperparameters_and_the_final_record(tb_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    _, rd, result = tb_run
    acc = EventAccumulator(str(rd.path / "tensorboard" / "train"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    assert set(content) == {metadata.SESSION_START_INFO_TAG, metadata.SESSION_END_INFO_TAG}
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    hp = {k: v.string_value if v.HasField("string_value") else v.number_value for k, v in start.hparams.items()}
    spec = rd.spec()
    assert hp["run_id"] == rd.run_id and hp["method"] == "ce" and hp["benchmark"] == "digits_lt"
    assert hp["stage"] == "train" and hp["seed"] == 0 and hp["backbone"] == spec["backbone"]
    assert hp["lr"] == spec["stages"]["train"]["lr"] and hp["epochs"] == 2
    assert hp["milestones"] == json.dumps(spec["stages"]["train"]["milestones"])  # a list: JSON text
    assert hp["data.imbalance"] == spec["data"]["imbalance"]
    assert set(hp) == set(logs.stage_hparams(rd, "train"))
    for key in FINAL_TEST:  # scalars at the last epoch, float32 as TensorBoard keeps them
        [event] = acc.Scalars(f"final/test_{key}")
        assert event.step == 2 and event.value == float(np.float32(result["test"][key])), key
    assert acc.Scalars("final/selected_epoch")[0].value == result["selected"]["epoch"]
    assert acc.Scalars("final/classifier_norm_max")[0].value == pytest.approx(max(result["classifier_norms"]))
    assert acc.Scalars("final/classifier_norm_min")[0].value == pytest.approx(min(result["classifier_norms"]))
    assert [e.step for e in acc.Scalars("loss")] == [1, 2]  # the per-epoch scalars are still there, once


def test_tensorboards_hparams_dashboard_lists_the_stage_with_its_final_metrics(tb_run):
    """What `tensorboard --logdir results` shows: HParams' own backend reads the store's folder."""
    pytest.importorskip("tensorboard")
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups

    store, rd, result = tb_run
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(store.root))
    mux.Reload()
    tb = base_plugin.TBContext(logdir=str(store.root), multiplexer=mux,
                               data_provider=data_provider.MultiplexerDataProvider(mux, str(store.root)))
    request = api_pb2.ListSessionGroupsRequest(start_index=0, slice_size=10, allowed_statuses=[
        api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE, api_pb2.STATUS_RUNNING])
    groups = list_session_groups.Handler(context.RequestContext(), backend_context.Context(tb), "", request).run()
    [group] = groups.session_groups
    assert group.name == f"runs/digits_lt/ce/{rd.run_id}/tensorboard/train"  # beside the run's scalars
    shown = {m.name.tag: m.value for m in group.metric_values}
    assert shown["final/test_top1"] == pytest.approx(result["test"]["top1"], abs=1e-4)
    assert shown["final/test_few"] == pytest.approx(result["test"]["few"], abs=1e-4)
    assert group.hparams["lr"].number_value == rd.spec()["stages"]["train"]["lr"]


# --- wandb: offline without an account, files in the run directory ------------------------------------

def _wandb_records(folder):
    """The records of an offline wandb run folder, read by wandb's own reader (`wandb leet inspect`)."""
    wandb_cli = shutil.which("wandb", path=str(Path(sys.executable).parent))
    out = subprocess.run([wandb_cli or "wandb", "leet", "inspect", "--json", str(folder)], capture_output=True,
                         text=True)
    if out.returncode != 0 and "No such command" in out.stderr:
        pytest.skip("this wandb has no `wandb leet inspect` to read offline runs with")
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def _of(records, kind):
    return [r[kind] for r in records if r["type"] == kind]


def test_wandb_without_an_account_logs_offline_into_the_run_directory(tmp_path, no_wandb_account):
    pytest.importorskip("wandb")
    [result] = ltbench.run("ce", "digits_lt", epochs=2, results=tmp_path / "results", device="cpu", log="wandb",
                           progress=False)
    rd = Store(tmp_path / "results").find(result["run_id"])
    folders = sorted((rd.path / "wandb").glob("offline-run-*"))
    assert len(folders) == 2  # the stage, then its final record once result.json was written
    train, final = (_wandb_records(f) for f in folders)
    for records in (train, final):
        [run] = _of(records, "run")
        assert run["run_id"] == f"{rd.run_id}-train-{logs.log_id(rd)}" and run["project"] == "ltbench"
        assert run["display_name"] == f"ce/digits_lt/{rd.run_id}"
        config = {k: v for k, v in run["config"]["update"].items() if k != "_wandb"}
        assert config == logs.stage_hparams(rd, "train")
    history = [h["item"] for h in _of(train, "history")]
    rows = rd.metrics()
    assert [h["_step"] for h in history] == [1, 2]
    for h, row in zip(history, rows, strict=True):
        assert h["loss"] == row["loss"] and h["val/class_mean"] == row["val_class_mean"] and h["lr"] == row["lr"]
        assert h["classifier_norm/min"] > 0
    summary = {k: v for s in _of(final, "summary") for k, v in s["update"].items()}
    for key in FINAL_TEST:
        assert summary[f"final/test_{key}"] == pytest.approx(result["test"][key], abs=1e-9), key
    assert summary["final/selected_epoch"] == result["selected"]["epoch"]
    assert _of(final, "exit")[-1]["exit_code"] == 0


def test_wandb_honours_wandb_mode_project_and_dir(tmp_path, no_wandb_account, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_PROJECT", "my-lt")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))
    [result] = ltbench.run("ce", "digits_lt", epochs=1, results=tmp_path / "results", device="cpu", log="wandb",
                           progress=False)
    assert not (Store(tmp_path / "results").find(result["run_id"]).path / "wandb").exists()
    folders = sorted((tmp_path / "elsewhere" / "wandb").glob("offline-run-*"))
    assert folders and all(_of(_wandb_records(f), "run")[0]["project"] == "my-lt" for f in folders)
    monkeypatch.setenv("WANDB_MODE", "disabled")  # wandb's own switch: nothing written, the run goes on
    shutil.rmtree(tmp_path / "elsewhere")
    assert ltbench.run("ce", "digits_lt", epochs=1, seed=1, results=tmp_path / "results", device="cpu",
                       log="wandb", progress=False)
    assert not list((tmp_path / "elsewhere").glob("wandb/offline-run-*"))


# --- MLflow: an SQLite store under the results folder ---------------------------------------------------

def _client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_mlflow_store_holds_params_every_epoch_and_the_final_record(tmp_path, own_mlflow):
    pytest.importorskip("mlflow")
    from ltbench.results.log_mlflow import tracking_uri

    results = tmp_path / "results"
    [result] = ltbench.run("tau_norm", "digits_lt", epochs=2, results=results, device="cpu", log="mlflow",
                           progress=False)  # its stage-1 ce run trains first: two runs, two stages
    assert (results / "mlflow.db").is_file() and tracking_uri(results) == f"sqlite:///{results / 'mlflow.db'}"
    client = _client(tracking_uri(results))
    experiment = client.get_experiment_by_name("ltbench")
    runs = {r.data.tags["ltbench.stage"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"train", "posthoc"}
    store = Store(results)
    for stage, run in runs.items():
        rd = store.find(run.data.tags["ltbench.run_id"])
        record = rd.result()
        assert run.info.status == "FINISHED" and run.info.run_name == f"{record['method']}/digits_lt/{rd.run_id}"
        assert run.data.params == {k: str(v) for k, v in logs.stage_hparams(rd, stage).items()}
        for key in FINAL_TEST:
            assert run.data.metrics[f"final/test_{key}"] == pytest.approx(record["test"][key], abs=1e-9), key
        assert run.data.metrics["final/classifier_norm_max"] == pytest.approx(max(record["classifier_norms"]))
    assert runs["posthoc"].data.tags["ltbench.run_id"] == result["run_id"]
    ce = store.find(runs["train"].data.tags["ltbench.run_id"])
    history = client.get_metric_history(runs["train"].info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(r["epoch"], r["loss"]) for r in ce.metrics()]
    assert not client.get_metric_history(runs["posthoc"].info.run_id, "loss")  # a post-hoc stage trains nothing


def test_mlflow_honours_the_tracking_uri_and_experiment_name(tmp_path, own_mlflow, monkeypatch):
    pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'team.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "lt-study")
    [result] = ltbench.run("ce", "digits_lt", epochs=1, results=tmp_path / "results", device="cpu", log="mlflow",
                           progress=False)
    assert not (tmp_path / "results" / "mlflow.db").exists()
    client = _client(uri)
    experiment = client.get_experiment_by_name("lt-study").experiment_id
    [run] = client.search_runs([experiment])
    assert run.data.tags["ltbench.run_id"] == result["run_id"] and run.info.status == "FINISHED"
    store = Store(tmp_path / "results")
    store.remove(store.find(result["run_id"]))  # `ltbench rm`, then the same run again: an MLflow run of its own
    ltbench.run("ce", "digits_lt", epochs=1, results=tmp_path / "results", device="cpu", log="mlflow", progress=False)
    runs = client.search_runs([experiment], filter_string=f"tags.`ltbench.run_id` = '{result['run_id']}'")
    assert len(runs) == 2 and len({r.data.tags["ltbench.log_id"] for r in runs}) == 2
    assert all(len(client.get_metric_history(r.info.run_id, "loss")) == 1 for r in runs)  # one epoch each


def test_a_long_setting_is_cut_to_what_mlflow_takes():
    from ltbench.results.log_mlflow import _param

    assert _param("x" * 10, 10) == "x" * 10
    assert _param("x" * 11, 10) == "xxxxxxx..."


# --- resumption: the same wandb and MLflow run, each epoch once -------------------------------------

def test_a_resumed_run_continues_the_same_wandb_and_mlflow_runs(tmp_path, monkeypatch, no_wandb_account, own_mlflow):
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    from ltbench.results.log_mlflow import tracking_uri

    store = Store(tmp_path / "results")
    spec = resolve("ce", "digits_lt", epochs=2)
    opts = dataclasses.replace(OPTS, log=("wandb", "mlflow"))
    save = RunDir.save_checkpoint

    def killed_in_epoch_2(self, state):  # epoch 2 is logged, then the process dies before its checkpoint
        if state["epoch"] == 2:
            raise KeyboardInterrupt
        save(self, state)

    monkeypatch.setattr(RunDir, "save_checkpoint", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        execute(spec, store, opts)
    client = _client(tracking_uri(store.root))
    [run] = client.search_runs([client.get_experiment_by_name("ltbench").experiment_id])
    assert run.info.status == "KILLED" and [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]
    monkeypatch.setattr(RunDir, "save_checkpoint", save)
    result = execute(spec, store, opts)  # resumes after epoch 1
    [again] = client.search_runs([client.get_experiment_by_name("ltbench").experiment_id])
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]  # each epoch once
    assert again.data.metrics["final/test_top1"] == pytest.approx(result["test"]["top1"], abs=1e-9)
    rd = store.run_dir(spec)
    folders = sorted((rd.path / "wandb").glob("offline-run-*"))
    assert len(folders) == 3  # killed, resumed, final record: one wandb run id, synced in order
    assert {_of(_wandb_records(f), "run")[0]["run_id"] for f in folders} == {f"{rd.run_id}-train-{logs.log_id(rd)}"}


# --- failures: one warning line, the record is kept -----------------------------------------------------

def test_a_failing_logger_is_one_warning_and_the_record_is_published(tmp_path, monkeypatch, capsys, own_mlflow):
    pytest.importorskip("mlflow")
    from ltbench.results import log_mlflow

    def disk_full(self, record):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(log_mlflow.MlflowLog, "final", disk_full)
    store = Store(tmp_path / "results")
    spec = resolve("ce", "digits_lt", epochs=1)
    result = execute(spec, store, dataclasses.replace(OPTS, log=("tensorboard", "mlflow")))
    rd = store.run_dir(spec)
    assert rd.is_done() and rd.result() == json.loads(json.dumps(result))
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    assert warnings == ["warning: --log mlflow failed at the final record ([Errno 28] No space left on device); it "
                        "logs nothing more of this stage. metrics.jsonl and result.json are kept as always."]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(rd.path / "tensorboard" / "train"))
    acc.Reload()
    assert "final/test_top1" in acc.Tags()["scalars"]  # the other logger got it

    def unreachable(self, rd, stage, hparams):
        raise ConnectionError("cannot reach the tracking server")

    monkeypatch.setattr(log_mlflow.MlflowLog, "__init__", unreachable)
    spec = resolve("ce", "digits_lt", epochs=1, seed=1)
    execute(spec, store, dataclasses.replace(OPTS, log=("mlflow",)))
    assert store.run_dir(spec).is_done()
    err = capsys.readouterr().err
    assert "--log mlflow failed at the start of the stage (cannot reach the tracking server)" in err
    assert "--log mlflow failed at the final record (cannot reach the tracking server)" in err


def test_tensorboard_failing_at_the_final_record_leaves_the_others_theirs(tmp_path, monkeypatch, capsys, own_mlflow):
    pytest.importorskip("mlflow")
    pytest.importorskip("tensorboard")
    from ltbench.results.log_mlflow import tracking_uri

    start = logs.TensorBoardLog.__init__

    def read_only_after_training(self, folder, keep_until, hparams):
        if keep_until is None:
            raise PermissionError(13, "Permission denied", str(folder))
        start(self, folder, keep_until, hparams)

    monkeypatch.setattr(logs.TensorBoardLog, "__init__", read_only_after_training)
    store = Store(tmp_path / "results")
    result = execute(resolve("ce", "digits_lt", epochs=1), store, dataclasses.replace(OPTS, log=("tensorboard", "mlflow")))
    assert "warning: --log tensorboard failed at the final record ([Errno 13] Permission denied" in capsys.readouterr().err
    client = _client(tracking_uri(store.root))
    [run] = client.search_runs([client.get_experiment_by_name("ltbench").experiment_id])
    assert run.info.status == "FINISHED" and run.data.metrics["final/test_top1"] == pytest.approx(result["test"]["top1"])


def test_logs_drops_a_logger_that_raises_and_keeps_the_others():
    calls = []

    class Good:
        def epoch(self, row, norms):
            calls.append(("good", row["epoch"]))

        def final(self, record):
            calls.append(("good", "final"))

        def close(self):
            calls.append(("good", "close"))

    class Bad(Good):
        def epoch(self, row, norms):
            raise RuntimeError("network down")

        def close(self):
            calls.append(("bad", "close"))

    both = loggers.Logs({"wandb": Bad(), "mlflow": Good()})
    both.epoch({"epoch": 1}, None)
    both.epoch({"epoch": 2}, None)
    both.final({})
    both.close()
    assert calls == [("bad", "close"), ("good", 1), ("good", 2), ("good", "final"), ("good", "close")]


def test_final_metrics_name_what_the_record_says():
    record = {"test": {"top1": 61.5, "top5": 88.0, "class_mean": 60.0, "many": 70.0, "medium": 55.0, "few": None,
                       "per_class": [1.0]},
              "val": {"top1": 59.0, "class_mean": 58.0}, "test_flip_avg": {"top1": 62.0, "top5": 88.5},
              "selected": {"epoch": 7, "rule": "val"}, "classifier_norms": [0.5, 2.0, 1.0]}
    assert logs.final_metrics(record) == {
        "final/test_top1": 61.5, "final/test_top5": 88.0, "final/test_class_mean": 60.0, "final/test_many": 70.0,
        "final/test_medium": 55.0, "final/val_top1": 59.0, "final/val_class_mean": 58.0,
        "final/test_flip_avg_top1": 62.0, "final/test_flip_avg_top5": 88.5, "final/selected_epoch": 7.0,
        "final/classifier_norm_max": 2.0, "final/classifier_norm_min": 0.5}  # few: None, not logged
    no_training = {"test": {"top1": 50.0}, "test_flip_avg": None, "selected": {"epoch": None}, "classifier_norms": []}
    assert logs.final_metrics(no_training) == {"final/test_top1": 50.0}


# --- the option: names, install hints, lazy imports ----------------------------------------------------

def test_missing_packages_are_one_line_with_the_pip_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    gone = set()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in gone else real(name, *a))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    gone.add("wandb")
    with pytest.raises(LtbenchError, match=r"--log wandb needs the wandb package, which is not installed here; "
                                           r"install it with: pip install 'ltbench\[wandb\]'  \(or: pip install wandb\)"):
        logs.parse_log("tensorboard,wandb")
    gone.clear()
    gone.add("alembic")  # the SQLite store's migrations
    with pytest.raises(LtbenchError, match=r"--log mlflow needs the alembic package.*pip install 'ltbench\[mlflow\]'"):
        logs.parse_log("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")  # a server: mlflow alone is needed
    if real("mlflow") is not None:
        assert logs.parse_log("mlflow, tensorboard,mlflow") == ("mlflow", "tensorboard")
    with pytest.raises(LtbenchError, match=r"--log x: unknown logger 'x'"):
        ltbench.run("ce", "digits_lt", log="x", dry_run=True)


def test_wandb_and_mlflow_are_imported_only_when_used():
    code = ("import sys, ltbench, ltbench.engine.training, ltbench.results.logs, ltbench.results.log_wandb, "
            "ltbench.results.log_mlflow; print(sorted(m for m in ('wandb', 'mlflow', 'tensorboard') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
