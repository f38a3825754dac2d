"""Data-parallel training (ltbench.engine.distributed) on the CPU: 2 processes with the gloo backend, with
torchrun's environment variables, against 1 process with the same global batch.

Equality needs a model whose forward pass does not depend on how the global batch is split.
BatchNorm normalises each rank's shard with that shard's statistics (per-rank BN, DDP's default), so a
BN model trains differently on 2 ranks than on 1, and SyncBatchNorm, which would fix that, has no CPU
kernel. The test therefore registers a small convolutional backbone without BatchNorm. With it, each
rank's loss is scaled by its share of the global batch and DDP averages the gradients, so the 2-process
update is the 1-process update up to float summation order (and the 1-process run uses 2 threads, the
ranks 1 each): the logged losses agree to a relative 1e-4, the classifier norms to 1e-4, and the test
predictions are the same.

The backbone and the interruption (CE's after-epoch hook) exist for this test only.
The 2-process run is interrupted after its second epoch (both ranks stop, as a preempted job would)
and resumed: every rank loads rank 0's checkpoint, and metrics.jsonl has each epoch exactly once.
"""

import json
import os
import socket

import pytest
import torch
import torch.nn as nn

from ltbench.engine.training import RunOptions, execute
from ltbench.method import Method
from ltbench.models.backbones import LTModel
from ltbench.registry import Entry, backbones
from ltbench.results.store import Store
from ltbench.spec.run_spec import RunSpec, resolve

EPOCHS = 3


def cnn_without_batchnorm(num_classes: int, in_channels: int = 1) -> LTModel:
    """Two convolutions without BatchNorm (its output for an image never depends on the batch)."""
    features = nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return LTModel(features, 32, num_classes)


def stop_after_epoch(self, model, ctx):
    """Method.after_epoch (plain CE's) that stops the process after epoch LTBENCH_TEST_STOP_AFTER, before
    that epoch's checkpoint, as a kill would."""
    if ctx.epoch + 1 == int(os.environ.get("LTBENCH_TEST_STOP_AFTER", "0")):
        raise KeyboardInterrupt


@pytest.fixture
def nobn_backbone_and_stoppable_ce(monkeypatch):
    """For this test only (the ranks are forked, so they see it too): the backbone, and CE's hook."""
    backbones.names()  # the built-ins first
    entry = Entry("test_cnn_nobn", cnn_without_batchnorm, "test")
    monkeypatch.setitem(backbones._entries, entry.name, entry)
    monkeypatch.setattr(Method, "after_epoch", stop_after_epoch)


def _spec() -> RunSpec:
    return resolve("ce", "digits_lt", backbone="test_cnn_nobn", epochs=EPOCHS,
                   sets=["train.lr=0.05", "train.batch_size=64"])


def _rank(rank: int, world: int, port: int, results: str, spec: dict, stop_after: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), LTBENCH_TEST_STOP_AFTER=str(stop_after))
    torch.set_num_threads(1)
    execute(RunSpec.from_json(spec), Store(results), RunOptions(device="cpu", live_progress=False))


def _two_ranks(results, spec: RunSpec, stop_after: int = 0) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # fork: the ranks reuse this process's imports (spawn works as well, at seconds per process)
    torch.multiprocessing.start_processes(_rank, args=(2, port, str(results), spec.canonical(), stop_after),
                                          nprocs=2, start_method="fork")


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process_and_resume(tmp_path, nobn_backbone_and_stoppable_ce):
    spec = _spec()
    one = execute(spec, Store(tmp_path / "one"), RunOptions(device="cpu", live_progress=False))
    one_metrics = Store(tmp_path / "one").run_dir(spec).metrics()

    store = Store(tmp_path / "two")
    rd = store.run_dir(spec)
    _two_ranks(store.root, spec, stop_after=2)  # both ranks stop after epoch 2, before its checkpoint
    assert not rd.is_done() and not rd.lock_file.exists()
    assert [m["epoch"] for m in rd.metrics()] == [1]
    _two_ranks(store.root, spec)  # resumes after epoch 1
    two = rd.result()

    assert [m["epoch"] for m in rd.metrics()] == list(range(1, EPOCHS + 1))  # each epoch once, by rank 0 only
    assert len(store.runs()) == 1
    for a, b in zip(one_metrics, rd.metrics(), strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["train_acc"] == pytest.approx(a["train_acc"], abs=0.31)  # at most one image of 335
    assert two["classifier_norms"] == pytest.approx(one["classifier_norms"], rel=1e-4)
    assert two["test"]["per_class"] == one["test"]["per_class"]
    dist = two["env"]["distributed"]
    assert dist["world_size"] == 2 and dist["backend"] == "gloo"
    assert dist["global_batch"] == {"train": 64} and dist["per_rank_batch"] == {"train": 32}
    assert "per-rank" in dist["batchnorm"] and dist["lr_scaling"].startswith("none")
    assert one["env"]["distributed"] == {"world_size": 1}
    assert json.loads(rd.spec_file.read_text())["run_id"] == spec.run_id
