"""Faults that `ltbench run` meets in its own records: every file a later run trusts carries a checksum
(checkpoint.pt, model.pt, kept features), a damaged one is extracted again or is one clear error, a
finished record that lost its result or its model is redone from its checkpoint, a garbage metrics line
is trimmed on resume, and a full disk is one line after which the same command gives the identical
result. Each case prints "fault: ... -> ..." for the closing note's counts."""

import errno
import shutil

import pytest

from ltbench.engine.training import RunOptions, execute
from ltbench.errors import LtbenchError
from ltbench.files import checksum_file, file_sha256, recorded_sha256
from ltbench.results.store import RunDir, Store
from ltbench.spec.run_spec import resolve

OPTS = RunOptions(device="cpu", live_progress=False)
STAGE2 = ["stage2.epochs=2"]
EPOCHS = 8  # enough for accuracies well above chance, so that "equal numbers" means something


def crt():
    return resolve("crt", "digits_lt", epochs=EPOCHS, sets=STAGE2)


def ce():
    return resolve("ce", "digits_lt", epochs=EPOCHS)


def numbers(result):
    return {k: result[k] for k in ("val", "test", "test_flip_avg", "classifier_norms", "selected")}


@pytest.fixture(scope="module")
def intact(tmp_path_factory):
    """A store with a crt run (and its stage-1 ce run) and a plain ce run, untouched: the reference."""
    root = tmp_path_factory.mktemp("intact")
    store = Store(root)
    results = {"crt": execute(crt(), store, OPTS), "ce": execute(ce(), store, OPTS)}
    results["stage1"] = store.run_dir(crt().parent_spec()).result()
    return root, results


@pytest.fixture
def copy(intact, tmp_path):
    root, results = intact
    shutil.copytree(root, tmp_path / "r")
    return Store(tmp_path / "r"), results


def overwrite_middle(path, n=64):
    """Damage in place, size unchanged: what a bad disk or a stray write does."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + n] = bytes(b ^ 0xFF for b in data[mid:mid + n])
    path.write_bytes(bytes(data))


def report(fault, outcome):
    print(f"fault: {fault} -> {outcome}")


def test_every_trusted_file_has_its_checksum_recorded(copy):
    store, results = copy
    stage1 = store.run_dir(crt().parent_spec())
    files = [stage1.model_file, stage1.checkpoint_file, store.run_dir(crt()).model_file,
             *sorted((stage1.path / "features").glob("*.pt"))]
    for f in files:
        assert recorded_sha256(f) == file_sha256(f), f
        assert checksum_file(f).read_text() == f"{file_sha256(f)}  {f.name}\n"  # sha256sum -c reads it
    assert results["crt"]["method_record"]["parent_model_sha256"] == file_sha256(stage1.model_file)
    assert results["crt"]["model_sha256"] == file_sha256(store.run_dir(crt()).model_file)


def test_damaged_features_are_extracted_again_with_the_intact_numbers(copy):
    store, results = copy
    kept = next((store.run_dir(crt().parent_spec()).path / "features").glob("*.pt"))
    overwrite_middle(kept)
    again = execute(crt(), store, OPTS, force=True)
    how = again["method_record"]["stage2_features"]
    assert how.startswith(f"extracted again (the kept file {kept.name} was damaged"), how
    assert numbers(again) == numbers(results["crt"])
    assert recorded_sha256(kept) == file_sha256(kept)  # replaced by intact features
    report("features overwritten in place", f"{how[:60]}...; test top-1 {again['test']['top1']:.2f} = intact")


@pytest.mark.parametrize("damage", ["overwritten", "truncated"])
def test_a_damaged_checkpoint_is_one_clear_error(copy, damage):
    store, _ = copy
    rd = store.run_dir(ce())
    rd.done_file.unlink()
    rd.result_file.unlink()  # an unfinished run, about to resume from its checkpoint
    if damage == "overwritten":
        overwrite_middle(rd.checkpoint_file)
    else:
        rd.checkpoint_file.write_bytes(rd.checkpoint_file.read_bytes()[:100])
    with pytest.raises(LtbenchError) as exc:
        execute(ce(), store, OPTS)
    assert str(exc.value) == (f"{rd.checkpoint_file} is damaged (its sha256 {file_sha256(rd.checkpoint_file)[:12]}... "
                              f"is not the {recorded_sha256(rd.checkpoint_file)[:12]}... recorded when it was "
                              "written); delete it to restart this run from scratch (its finished epochs are lost), "
                              "or rerun with --force.")
    report(f"checkpoint {damage}", str(exc.value))


@pytest.mark.parametrize("fault", ["result.json missing", "result.json not JSON", "result.json {}",
                                   "model.pt overwritten", "model.pt missing", "spec.json missing",
                                   "spec.json not JSON"])
def test_a_finished_record_is_redone_from_its_checkpoint(copy, fault, capsys):
    store, results = copy
    rd = store.run_dir(ce())
    if fault == "result.json missing":
        rd.result_file.unlink()
    elif fault == "result.json not JSON":
        rd.result_file.write_text('{"run_id": "')
    elif fault == "result.json {}":
        rd.result_file.write_text("{}")
    elif fault == "spec.json missing":
        rd.spec_file.unlink()
    elif fault == "spec.json not JSON":
        rd.spec_file.write_bytes(b"\x00\x01")
    elif fault == "model.pt overwritten":
        overwrite_middle(rd.model_file)
    else:
        rd.model_file.unlink()
    redone = execute(ce(), store, OPTS)
    printed = capsys.readouterr()
    assert f"{rd.run_id}: {fault.split()[0]}" in printed.err + printed.out
    assert "redoing its final report from its last checkpoint" in printed.err + printed.out
    assert numbers(redone) == numbers(results["ce"]) and rd.is_done()
    assert recorded_sha256(rd.model_file) == file_sha256(rd.model_file) == redone["model_sha256"]
    assert [m["epoch"] for m in rd.metrics()] == list(range(1, EPOCHS + 1))
    assert rd.spec() == ce().to_json()
    report(fault, "redone from checkpoint.pt, identical numbers")


def test_a_damaged_stage1_model_is_redone_before_the_stage2_run_builds_on_it(copy):
    store, results = copy
    stage1 = store.run_dir(crt().parent_spec())
    overwrite_middle(stage1.model_file)
    other = resolve("lws", "digits_lt", epochs=EPOCHS, sets=STAGE2)  # a new stage-2 method on that stage 1
    result = execute(other, store, OPTS)
    assert result["method_record"]["parent_model_sha256"] == file_sha256(stage1.model_file)
    assert numbers(stage1.result()) == numbers(results["stage1"])
    report("stage-1 model.pt overwritten", "stage 1 redone from its checkpoint, then the stage-2 run")


def test_without_a_checkpoint_the_error_names_the_directory_to_delete(copy):
    store, _ = copy
    stage1 = store.run_dir(crt().parent_spec())
    stage1.model_file.unlink()
    stage1.checkpoint_file.unlink()
    with pytest.raises(LtbenchError) as exc:
        execute(resolve("lws", "digits_lt", epochs=EPOCHS, sets=STAGE2), store, OPTS)
    assert str(exc.value) == (f"run {stage1.run_id}: model.pt is missing, and it has no checkpoint.pt to redo its "
                              f"final report from; delete {stage1.path} and run the same command again (it is "
                              "trained anew).")
    report("stage-1 model.pt and checkpoint.pt missing", str(exc.value))


def test_a_deleted_stage1_run_is_trained_again(copy):
    store, results = copy
    shutil.rmtree(store.run_dir(crt().parent_spec()).path)
    again = execute(crt(), store, OPTS)  # the stage-2 record is done; its parent is content-addressed
    assert numbers(again) == numbers(results["crt"])
    assert numbers(store.run_dir(crt().parent_spec()).result()) == numbers(results["stage1"])
    report("stage-1 run directory deleted", "retrained, identical numbers")


def test_garbage_in_metrics_is_trimmed_back_to_the_checkpoint(copy):
    store, results = copy
    rd = store.run_dir(ce())
    rd.done_file.unlink()
    rd.result_file.unlink()
    with open(rd.metrics_file, "a") as f:
        f.write('{"epoch": 4, "sta\x00\x01garbage\n{"epoch": 9}\n')
    redone = execute(ce(), store, OPTS)
    assert [m["epoch"] for m in rd.metrics()] == list(range(1, EPOCHS + 1)) and numbers(redone) == numbers(results["ce"])
    report("garbage lines in metrics.jsonl", "trimmed back to the checkpoint")


@pytest.mark.parametrize("target", ["checkpoint.pt", "metrics.jsonl", "result.json", "model.pt"])
def test_a_full_disk_is_one_line_and_the_same_command_gives_the_same_result(tmp_path, monkeypatch, intact, target):
    import ltbench.files

    store = Store(tmp_path)
    full = OSError(errno.ENOSPC, "No space left on device")
    writes = {"n": 0}
    real_write, real_append = ltbench.files.write_atomically, RunDir.append_metrics
    fail_at = 2 if target == "checkpoint.pt" else 1  # the second epoch's checkpoint; the only result/model

    def write(path, fill):
        if path.name == target:
            writes["n"] += 1
            if writes["n"] == fail_at:
                full.filename = str(path)
                raise full
        return real_write(path, fill)

    def append(self, row):
        if target == "metrics.jsonl" and row["epoch"] == 2:
            with open(self.metrics_file, "a") as f:
                f.write('{"epoch": 2, "lo')  # half a line, then the disk was full
            full.filename = str(self.metrics_file)
            raise full
        return real_append(self, row)

    monkeypatch.setattr(ltbench.files, "write_atomically", write)
    monkeypatch.setattr(RunDir, "append_metrics", append)
    with pytest.raises(LtbenchError) as exc:
        execute(ce(), store, OPTS)
    message = str(exc.value)
    assert f"cannot write {full.filename} (No space left on device)" in message and "\n" not in message
    assert message.endswith("free space (or make it writable) and run the same command again: the run resumes "
                            "from its last checkpoint.")
    rd = store.run_dir(ce())
    assert not rd.is_done() and not rd.lock_file.exists()
    monkeypatch.undo()
    again = execute(ce(), store, OPTS)
    assert numbers(again) == numbers(intact[1]["ce"])
    assert [m["epoch"] for m in rd.metrics()] == list(range(1, EPOCHS + 1))
    assert not list(tmp_path.rglob(".*.tmp"))
    report(f"disk full writing {target}", f"{message}; rerun identical")
