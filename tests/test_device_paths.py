"""The GPU path's device handling, checked on a machine without one.

The ``meta`` device stands in for CUDA: like CUDA, it refuses an operation that meets a (non-scalar)
CPU tensor ("Tensor on device cpu is not on the expected device meta"), and it computes shapes without
values, so no step may read a value on the host either. Where a CUDA call itself is the subject (the
stream sync before nvJPEG, the GPU a rank takes, autocast during evaluation), torch.cuda's functions
are replaced by fakes that record what is asked of them.

- resume: a checkpoint loads on the CPU; the method's state must land on the training device;
- class-balanced sampling on cached features that live on the device (cRT, LWS);
- nvJPEG decoding waits for the work queued on the current stream;
- evaluation and feature extraction run in float32, with deterministic convolutions;
- the features key names what changes the features (GPU decoding, the GPU, TF32 settings);
- several ranks: one GPU each, and an explicit cuda:N refused;
- the local launcher hands GPU UUIDs and MIG ids through to the jobs' CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

import dataclasses
import subprocess
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from ltbench.data import images
from ltbench.data.splits import Augment, FeatureSplits, ImageSet, Splits, TensorSet, per_epoch_generator
from ltbench.engine.distributed import SINGLE, Dist, device_for
from ltbench.engine.evaluation import extract_features, feature_key, predict
from ltbench.engine.training import ClassifierHead, RunOptions, train_stage
from ltbench.errors import LtbenchError
from ltbench.launch import dispatch as launch
from ltbench.launch import local
from ltbench.method import StageContext
from ltbench.models.backbones import small_cnn
from ltbench.registry import methods
from ltbench.results.store import Store
from ltbench.spec.run_spec import resolve
from ltbench.spec.schema import engine_defaults

META = torch.device("meta")
CPU = torch.device("cpu")
OPTS = RunOptions(device="cpu", live_progress=False, eval_batch_size=16)


def _splits(n: int = 70) -> Splits:
    g = torch.Generator().manual_seed(0)

    def images_(k: int) -> ImageSet:
        return ImageSet(torch.randint(0, 256, (k, 3, 8, 8), generator=g, dtype=torch.uint8), torch.arange(k) % 5)

    return Splits(images_(n), images_(20), images_(20), 5, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), Augment(2, True))


def _features(splits: Splits, device: torch.device, dim: int = 128) -> FeatureSplits:
    """Random 'features' of every split, with the splits' labels, on ``device``."""
    g = torch.Generator().manual_seed(1)
    views = [TensorSet(torch.randn(len(getattr(splits, s)), dim, generator=g).to(device),
                       getattr(splits, s).y.to(device)) for s in ("train", "val", "test")]
    return FeatureSplits(*views, splits)


# ----------------------------------------------------------------------- resume with method state

@pytest.mark.parametrize("name", ["cb", "ldam_drw", "logit_adj", "balanced_softmax", "wb"])
def test_resume_puts_the_method_state_on_the_training_device(name: str, tmp_path: Path) -> None:
    """One epoch on the CPU leaves a checkpoint; the same stage resumed on the (meta) device restores the
    method's state there, and the loss then runs on device tensors alone."""
    method = methods.get(name)()
    stage = method.stages[-1]
    hp = {**engine_defaults(), **method.hparams(stage, "paper", "digits"), "epochs": 1, "batch_size": 32,
          "select": "last", "augment": False}
    splits = _splits()
    torch.manual_seed(0)
    model = small_cnn(5, 3)
    ctx = StageContext(stage=stage, hp=hp, splits=splits, device=CPU, num_classes=5, class_counts=splits.class_counts)
    method.prepare(model, ctx)
    cached = method.frozen_features(stage)
    if cached:
        ctx.splits = _features(splits, CPU)
    net = ClassifierHead(model.classifier) if cached else model
    rd = Store(tmp_path).create(resolve("ce", "digits_lt", epochs=1))
    train_stage(net, method, ctx, rd, 0, OPTS, name)
    assert any(isinstance(v, torch.Tensor) for v in rd.load_checkpoint()["method_state"].values())

    net.to(META)  # the same stage again, on the device, from its checkpoint (nothing left to train)
    on_device = StageContext(stage=stage, hp=hp, splits=_features(splits, META) if cached else splits, device=META,
                             num_classes=5, class_counts=splits.class_counts)
    on_device.options = dataclasses.replace(ctx.options, ctx=on_device)  # made once as the stage started (no .item() on meta)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter")
        train_stage(net, method, on_device, rd, 0, OPTS, name)
    tensors = {k: v for k, v in on_device.state.items() if isinstance(v, torch.Tensor)}
    assert tensors and all(v.device == META for v in tensors.values()), {k: v.device for k, v in tensors.items()}
    assert on_device.state.keys() == ctx.state.keys()
    check = dataclasses.replace(on_device, hp={**hp, "drw_start": 0.0})  # ldam_drw: its DRW weights too
    loss = method.loss(torch.zeros(4, 5, device=META), torch.tensor([0, 1, 2, 4], device=META), check)
    assert loss.device == META


# ----------------------------------------------------------------------- sampling on cached features

@pytest.mark.parametrize("sampler", ["instance", "class_balanced"])
def test_an_epoch_of_cached_features_on_the_device(sampler: str) -> None:
    """cRT and LWS train on cached features with class-balanced sampling: the features and labels
    are on the device, the epoch's draws on the CPU; no operation may mix the two."""
    splits = _splits()
    on_device = _features(splits, META)
    batches = list(on_device.train_batches(16, sampler, per_epoch_generator(0, 0), META))
    assert [len(y) for _, y in batches] == [16, 16, 16, 16, 6]
    assert all(x.device == META and y.device == META for x, y in batches)
    # the same epoch on the CPU draws the same images as before (the golden numbers depend on it)
    on_cpu = _features(splits, CPU)
    ys = torch.cat([y for _, y in on_cpu.train_batches(16, sampler, per_epoch_generator(0, 0), CPU)])
    from ltbench.data.splits import sample_indices

    assert torch.equal(ys, splits.train.y[sample_indices(splits.train.y, sampler, per_epoch_generator(0, 0))])


# ----------------------------------------------------------------------- nvJPEG and the current stream

class _Log:
    """Fakes of torch.cuda.current_stream() and torchvision.io.decode_jpeg that log their calls."""

    def __init__(self, fail_batch: bool = False):
        self.calls: list[str] = []
        self.fail_batch = fail_batch

    def current_stream(self, device: Any = None) -> Any:
        log = self

        class Stream:
            def synchronize(self) -> None:
                log.calls.append("sync")

        return Stream()

    def decode_jpeg(self, data: Any, mode: Any = None, device: Any = None) -> Any:
        if isinstance(data, list):
            self.calls.append(f"decode {len(data)}")
            if self.fail_batch:
                raise RuntimeError("not a JPEG")
            return [torch.zeros(3, 2, 2, dtype=torch.uint8) for _ in data]
        self.calls.append("decode 1")
        return torch.zeros(3, 2, 2, dtype=torch.uint8)


@pytest.mark.parametrize("fail_batch", [False, True])
def test_gpu_decoding_waits_for_the_current_stream_first(fail_batch: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """nvJPEG writes its images on a private stream into memory allocated on the current one: every
    decode call comes after a sync of the current stream (also the per-image retries after a failed batch)."""
    import torchvision.io

    log = _Log(fail_batch)
    monkeypatch.setattr(torch.cuda, "current_stream", log.current_stream)
    monkeypatch.setattr(torchvision.io, "decode_jpeg", log.decode_jpeg)
    datas = [torch.zeros(4, dtype=torch.uint8)] * 3
    out = images.decode_on_device(datas, torch.device("cuda"))
    assert len(out) == 3
    expected = ["sync", "decode 3"] + (["sync", "decode 1"] * 3 if fail_batch else [])
    assert log.calls == expected
    log.calls.clear()
    images.decode_on_device(datas, CPU)  # the CPU has no stream to wait for
    assert "sync" not in log.calls


# ----------------------------------------------------------------------- evaluation arithmetic

class _Recorder(torch.nn.Module):
    """A linear model that records, at each forward, whether CUDA autocast is on and cuDNN's flags."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)
        self.seen: list[tuple[bool, bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cudnn = torch.backends.cudnn
        self.seen.append((torch.is_autocast_enabled("cuda"), cudnn.benchmark, cudnn.deterministic))
        return self.linear(x)


@dataclasses.dataclass
class _HostSplits:
    """Splits whose batches stay on the CPU whatever device is asked for (for a fake CUDA device)."""

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int = 3
    augment: Augment = Augment(0, False)

    def __post_init__(self) -> None:
        self.train = self.val = self.test = TensorSet(self.x, self.y)

    def eval_batches(self, split: str, batch_size: int, device: torch.device, flip: bool = False) -> Any:
        for a in range(0, len(self.y), batch_size):
            yield self.x[a:a + batch_size], self.y[a:a + batch_size]


def test_evaluation_and_features_run_in_float32_with_deterministic_convolutions(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On CUDA (faked: autocast's checks see a GPU with bf16), predict and extract_features never run
    the model under autocast, and they run with cudnn.benchmark off and deterministic algorithms on,
    whatever training set; the flags are back afterwards."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)  # as training on CUDA sets it
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    with torch.autocast("cuda", dtype=torch.bfloat16):  # (the fake works: autocast is on here)
        assert torch.is_autocast_enabled("cuda")
    model = _Recorder()
    splits = _HostSplits(torch.randn(10, 4), torch.arange(10) % 3)
    cuda = torch.device("cuda")
    logits, _ = predict(model, splits, "val", cuda, batch_size=4)
    extract_features(model, splits, cuda, bs=4)
    assert len(model.seen) == 3 + 3 * 3 and set(model.seen) == {(False, False, True)}
    assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
    assert logits.dtype == torch.float32
    assert torch.equal(logits, model.linear(splits.x).detach())  # plain float32, as the CPU always had


# ----------------------------------------------------------------------- the features key

def test_feature_key_names_gpu_decoding_the_gpu_and_tf32(monkeypatch: pytest.MonkeyPatch) -> None:
    model = small_cnn(5, 3).features
    data = {"imbalance": 10}
    gpu = ["NVIDIA H200"]
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: gpu[0])

    def key(device: str, decode: str) -> str:
        monkeypatch.setenv("LTBENCH_DECODE", decode)
        return feature_key(model, data, torch.device(device), 256)

    assert key("cpu", "workers") == key("cpu", "device")  # on the CPU both decode with libjpeg
    nvjpeg, cpu_decoded = key("cuda", "device"), key("cuda", "workers")
    assert len({nvjpeg, cpu_decoded, key("cpu", "auto")}) == 3
    assert key("cuda", "auto") == nvjpeg  # auto decodes on the GPU
    gpu[0] = "NVIDIA A100-SXM4-80GB"
    assert key("cuda", "device") != nvjpeg  # another GPU, other kernels
    gpu[0] = "NVIDIA H200"
    assert key("cuda", "device") == nvjpeg
    if hasattr(torch.backends, "fp32_precision"):  # torch >= 2.9: TF32 convolutions on or off
        before = torch.backends.cudnn.conv.fp32_precision
        other = "ieee" if before != "ieee" else "tf32"
        try:
            torch.backends.cudnn.conv.fp32_precision = other
            assert key("cuda", "device") != nvjpeg
        finally:
            torch.backends.cudnn.conv.fp32_precision = before
    assert key("cuda", "device") == nvjpeg
    assert feature_key(model, data, CPU, 256) != feature_key(model, data, CPU, 128)  # the batch, as before


# ----------------------------------------------------------------------- ranks and GPUs

def test_each_rank_takes_its_local_gpu_and_an_explicit_gpu_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    cuda = torch.device("cuda")
    assert device_for(cuda, Dist(rank=1, world_size=2, local_rank=1)) == torch.device("cuda", 1)
    assert device_for(cuda, Dist(rank=6, world_size=8, local_rank=2)) == torch.device("cuda", 2)  # node 2 of 2
    assert device_for(cuda, SINGLE) == cuda
    assert device_for(torch.device("cuda", 3), SINGLE) == torch.device("cuda", 3)  # alone: as given
    assert device_for(CPU, Dist(rank=1, world_size=2, local_rank=1)) == CPU
    for rank in (0, 1):  # every rank refuses alike (none is left waiting for the others)
        with pytest.raises(LtbenchError, match=r"--device cuda:1: this run has 2 processes.*--device cuda"):
            device_for(torch.device("cuda", 1), Dist(rank=rank, world_size=2, local_rank=rank))


# ----------------------------------------------------------------------- the local launcher's GPUs

class _FakePopen:
    """Stands in for the job controller's process: records how submitit starts it."""

    started: list[tuple[Any, bool, dict[str, str]]] = []

    def __init__(self, cmd: Any, shell: bool = False, env: dict[str, str] | None = None, **kw: Any) -> None:
        _FakePopen.started.append((cmd, shell, dict(env or {})))
        self.pid = 90000 + len(_FakePopen.started)

    def poll(self) -> None:
        return None


def _job_sees(cmd: Any, shell: bool, env: dict[str, str]) -> str:
    """CUDA_VISIBLE_DEVICES and LTBENCH_TEST_SETUP as the job's Python process would see them: the job's
    setup lines run (in its environment) in place of the controller."""
    show = 'printf "%s|%s" "$CUDA_VISIBLE_DEVICES" "${LTBENCH_TEST_SETUP:-}"'
    script = cmd.rsplit(" && ", 1)[0] + " && " + show if shell else show
    return subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize(("visible", "expected"), [
    ("GPU-8d2e6c6f-aaaa-bbbb-cccc-0123456789ab,GPU-1f0e9d8c-dddd-eeee-ffff-ba9876543210",
     ["GPU-8d2e6c6f-aaaa-bbbb-cccc-0123456789ab", "GPU-1f0e9d8c-dddd-eeee-ffff-ba9876543210"]),
    ("MIG-0e4a1c2b-1111-2222-3333-444455556666,MIG-7f6e5d4c-7777-8888-9999-aaaabbbbcccc",
     ["MIG-0e4a1c2b-1111-2222-3333-444455556666", "MIG-7f6e5d4c-7777-8888-9999-aaaabbbbcccc"]),
    ("3,5", [3, 5]),
])
def test_local_jobs_get_the_gpus_of_the_allocation(visible: str, expected: list[Any], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """CUDA_VISIBLE_DEVICES of this process lists UUIDs, MIG ids or indices: each local job's process
    sees one of them as given (never "0", "1": GPUs outside the allocation), and the user's setup lines
    still run."""
    import submitit.local.local

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert local._visible_gpus() == expected
    specs = [resolve("ce", "digits_lt", epochs=1, seed=s) for s in (0, 1)]
    lo = launch.LaunchOptions(launcher="local", setup=["export LTBENCH_TEST_SETUP=yes"])
    _FakePopen.started = []
    monkeypatch.setattr(submitit.local.local.subprocess, "Popen", _FakePopen)
    launched = list(local._launch_local(specs, Store(tmp_path), RunOptions(device="cuda"), lo, tmp_path / "jobs"))
    monkeypatch.undo()  # the real subprocess module again, for the shell below
    assert sorted(x.entry["gpus"] for x in launched) == sorted([g] for g in expected)
    seen = sorted(_job_sees(*start) for start in _FakePopen.started)
    assert seen == sorted(f"{g}|yes" for g in expected)
