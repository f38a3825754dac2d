"""Pretrained backbones through the libraries the field uses: open_clip (CLIP's image and text towers) and
timm (an ImageNet-21k ViT, an ImageNet-1k ResNet-50, and any timm model as ``timm:<name>``).

A pretrained backbone is an ``LTModel`` like the built-in ones: ``features`` is the library's image tower
(``ImageTower``: images of the benchmark's size and channels in, resized to the tower's input size, grey
repeated to three channels), ``classifier`` a new nn.Linear. A CLIP model also keeps its text tower, image
projection and logit scale, out of the module tree: not trained, not counted, not in model.pt
(``PretrainedModel.encode_text``, ``image_projection``). A CLIP ViT's features are its class token after
the final LayerNorm, before the projection (LIFT's).

Weights: the library's, from the Hugging Face hub cache where open_clip and timm keep them (downloaded into
it when the network allows); a file (``--set backbone.weights=FILE``: a state dict or the library's
checkpoint, .pt/.bin/.safetensors; its sha256 joins the run id); or ``none`` (random init, the library's
initialisation under the run's seed; ``clip_vit_tiny`` always). Every problem (no library, offline without
the weights, a file that does not fit, a tuning mode the backbone cannot take) is found by
``backbone_problems`` before anything is written. open_clip and timm are imported by the functions that use
them: `import ltbench` and `ltbench --help` stay light.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import LtbenchError
from ..files import file_sha256
from ..registry import backbones
from . import experts, peft  # noqa: F401  (experts: its backbones register with this module's)
from .backbones import LTModel

INSTALL = "pip install 'ltbench[foundation]'"
IMAGENET_1K_IN_LT = ("imagenet_lt", "ImageNet-1k's training images are ImageNet-LT's training and validation images "
                     "and every image its long tail left out (its test images are ImageNet's validation set): not a "
                     "long-tailed result")
# The test-size CLIP of clip_vit_tiny: a 2-block ViT (width 64, patch 8, 32 px) and a 2-block text tower.
TINY_CLIP = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8,
                                             "head_width": 32},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}


@dataclass(frozen=True)
class Pretrained:
    """A backbone of the registry built by open_clip or timm: the library's model ``arch`` (open_clip's
    config name, or timm's name with its weights' tag), the weights' tag (open_clip), what they were trained
    on, the image (and text) tower's parameter count (tests check them), and the benchmarks whose images the
    pretraining data holds (flagged in the record and under the table)."""

    name: str
    library: str  # "open_clip" or "timm"
    arch: str
    tag: str | None = None  # open_clip's pretrained tag; None: no published weights (random init)
    pretraining: str = ""
    params: int | None = None
    text_params: int | None = None
    overlaps: tuple[tuple[str, str], ...] = ()
    config: dict[str, Any] | None = field(default=None, compare=False)  # an open_clip config of its own
    kwargs: tuple[tuple[str, Any], ...] = ()  # timm.create_model's overrides (a test-size model)
    published: bool = True  # False: no published weights (random init unless backbone.weights=FILE)
    hub: str = ""  # the Hugging Face repository of its weights, as the library's config names it (tests check it)
    note: str = ""

    @property
    def summary(self) -> str:
        """What `ltbench list backbones` says it is."""
        return f"pretrained on {self.pretraining}" + (f" ({self.note})" if self.note else "")

    @property
    def source(self) -> str:
        return f"open_clip {self.arch}" + (f" '{self.tag}'" if self.tag else "") if self.library == "open_clip" \
            else f"timm {self.arch}"

    @property
    def has_weights(self) -> bool:
        return self.published

    def overlap(self, benchmark: str) -> str | None:
        return dict(self.overlaps).get(benchmark)

    def details(self) -> str:
        """Source, pretraining data, parameters, and whether the weights are here (`ltbench list backbones`)."""
        size = f"{self.params / 1e6:.1f}M params" if self.params else "params: build to count"
        if self.text_params:
            size += f" (+{self.text_params / 1e6:.1f}M text tower)"
        return f"{self.source}; {size}; weights: {weights_status(self)}"

    def __call__(self, num_classes: int, in_channels: int = 3, weights: Path | None = None) -> PretrainedModel:
        """The model, with the library's random initialisation, or with the checkpoint file ``weights``."""
        if in_channels not in (1, 3):
            raise LtbenchError(f"backbone {self.name} reads RGB images (grey ones are repeated to three channels); "
                               f"this benchmark has {in_channels} channels.")
        return (_open_clip_model if self.library == "open_clip" else _timm_model)(self, num_classes, in_channels,
                                                                                     weights)


def _register(entry: Pretrained) -> None:
    backbones.register(entry.name)(entry)


OPENAI_CLIP = "OpenAI's CLIP data (400M image-text pairs)"
_register(Pretrained("clip_vit_b16", "open_clip", "ViT-B-16", "openai", OPENAI_CLIP, 85_799_424, 63_428_097,
                     hub="timm/vit_base_patch16_clip_224.openai"))
_register(Pretrained("clip_vit_l14", "open_clip", "ViT-L-14", "openai", OPENAI_CLIP, 303_179_776, 123_650_305,
                     hub="timm/vit_large_patch14_clip_224.openai"))
_register(Pretrained("clip_rn50", "open_clip", "RN50", "openai", OPENAI_CLIP, 38_316_896, 63_690_241,
                     hub="timm/resnet50_clip.openai"))
_register(Pretrained("clip_vit_tiny", "open_clip", "clip_vit_tiny", None, "nothing (random init; a test-size CLIP)",
                     113_664, 1_610_017, config=TINY_CLIP, published=False,
                     note="2-block ViT, width 64, patch 8 at 32 px, 2-block text tower: the code path of the others"))
_register(Pretrained("vit_b16_in21k", "timm", "vit_base_patch16_224.augreg_in21k", pretraining="ImageNet-21k",
                     params=85_798_656, overlaps=(IMAGENET_1K_IN_LT,), note="ImageNet-21k holds ImageNet-1k",
                     hub="timm/vit_base_patch16_224.augreg_in21k"))
_register(Pretrained("vit_b16_in21k_ft_in1k", "timm", "vit_base_patch16_224.augreg_in21k_ft_in1k",
                     pretraining="ImageNet-21k, fine-tuned on ImageNet-1k", params=85_798_656,
                     overlaps=(IMAGENET_1K_IN_LT,),
                     note="the weights LIFT's IN21K-ViT-B/16 loads (timm 0.6.12's vit_base_patch16_224)",
                     hub="timm/vit_base_patch16_224.augreg_in21k_ft_in1k"))
_register(Pretrained("timm_vit_tiny", "timm", "test_vit", pretraining="nothing (random init; a test-size timm ViT)",
                     params=97_088, kwargs=(("img_size", 32), ("patch_size", 8), ("depth", 2)), published=False,
                     note="timm's test_vit at 32 px, patch 8, 2 blocks: the code path of timm:<name>"))
_register(Pretrained("resnet50_in1k", "timm", "resnet50.tv_in1k", pretraining="ImageNet-1k (torchvision's weights)",
                     params=23_508_032, overlaps=(IMAGENET_1K_IN_LT,), hub="timm/resnet50.tv_in1k"))


def timm_entry(name: str) -> Pretrained:
    """``timm:<name>``: any timm model, with its default (or tagged) pretrained weights."""
    timm = _library("timm", f"timm:{name}")
    if not name or not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join('timm:' + c for c in close)}?" if close else ""
        raise LtbenchError(f"unknown backbone 'timm:{name}': timm has no model {name!r}.{hint} `python -c \"import "
                           f"timm; print(timm.list_models('vit_*', pretrained=True))\"` lists them.")
    pcfg = timm.models.get_pretrained_cfg(name)
    tag = getattr(pcfg, "tag", None) if pcfg is not None else None
    return Pretrained(f"timm:{name}", "timm", name, pretraining=f"timm's weights{f' ({tag})' if tag else ''}")


backbones.prefixes["timm"] = timm_entry


# ------------------------------------------------------------------------------ the model


class ImageTower(nn.Module):
    """A library's image network as ltbench's feature extractor: images of another size than the network's
    input ``size`` are resized to it (bilinear), grey ones repeated to three channels. Runs and `ltbench eval`
    bring the images to that size with the library's mean/std first (ltbench.data.resolution); the resize here
    is the fallback for a data.resolution other than a fixed-size network's own (a ViT's)."""

    def __init__(self, net: nn.Module, size: tuple[int, int], dim: int):
        super().__init__()
        self.net, self.size, self.dim = net, tuple(size), dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return self.net(x)


class PretrainedModel(LTModel):
    """An ``LTModel`` on a library's image tower; a CLIP model keeps its text tower and logit scale (``clip``:
    the open_clip model without its image tower) and its image projection out of the module tree."""

    def __init__(self, tower: ImageTower, num_classes: int, clip: nn.Module | None = None,
                 projection: torch.Tensor | None = None, preprocess: dict[str, Any] | None = None):
        super().__init__(tower, tower.dim, num_classes)
        self._clip = (clip, projection)  # a tuple: not submodules, not parameters, not in the state dict
        self.preprocess = preprocess or {}  # the library's input size, mean, std (for data at its resolution)

    @property
    def clip(self) -> nn.Module | None:
        return self._clip[0]

    @property
    def image_projection(self) -> torch.Tensor | None:
        """A CLIP ViT's projection of ``features`` into the joint image-text space (None: the features are in it)."""
        return self._clip[1]

    @torch.no_grad()
    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """CLIP's text embeddings of tokenized prompts (frozen, on the tokens' device)."""
        if self.clip is None:
            raise LtbenchError("this backbone has no text tower (only CLIP backbones have one).")
        return self.clip.to(tokens.device).encode_text(tokens)

    def text_params(self) -> int:
        return sum(p.numel() for p in self.clip.parameters()) if self.clip is not None else 0


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The libraries' log lines and warnings of a build (e.g. "no pretrained weights loaded") kept off the output."""
    level = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(level)


def _library(name: str, backbone: str) -> Any:
    try:
        return __import__(name)
    except ImportError:
        pip = {"open_clip": "open_clip_torch"}.get(name, name)
        raise LtbenchError(f"backbone {backbone} needs {name}, which is not installed: {INSTALL} (or pip install "
                           f"{pip}).") from None


def _open_clip_model(entry: Pretrained, num_classes: int, in_channels: int, weights: Path | None) -> PretrainedModel:
    open_clip = _library("open_clip", entry.name)
    cfg = copy.deepcopy(entry.config or open_clip.get_model_config(entry.arch))
    cfg.pop("custom_text", None)
    pcfg = open_clip.get_pretrained_cfg(entry.arch, entry.tag) if entry.tag else {}
    if pcfg.get("quick_gelu"):
        cfg["quick_gelu"] = True  # OpenAI's weights were trained with QuickGELU
    with _quiet():
        clip = open_clip.CLIP(**cfg)
    if weights is not None:
        _read_checkpoint(weights, entry)
        _fit(entry, weights, lambda: open_clip.load_checkpoint(clip, str(weights), strict=True))
    visual, clip.visual = clip.visual, nn.Identity()  # the image tower is the features; clip keeps the text tower
    vit = isinstance(visual, open_clip.transformer.VisionTransformer)
    projection = None
    if vit:  # LIFT's features: the class token after ln_post, before the projection
        projection, visual.proj = visual.proj, None
    size = visual.image_size if isinstance(visual.image_size, tuple) else (visual.image_size,) * 2
    dim = visual.transformer.width if vit else visual.output_dim
    pre = {"size": tuple(size), "mean": pcfg.get("mean", open_clip.OPENAI_DATASET_MEAN),
           "std": pcfg.get("std", open_clip.OPENAI_DATASET_STD)}
    return PretrainedModel(ImageTower(visual, size, dim), num_classes, clip, projection, pre)


def _timm_model(entry: Pretrained, num_classes: int, in_channels: int, weights: Path | None) -> PretrainedModel:
    timm = _library("timm", entry.name)
    with _quiet():
        net = timm.create_model(entry.arch, pretrained=False, num_classes=0, **dict(entry.kwargs))
    if weights is not None:
        state = _read_checkpoint(weights, entry)
        heads = net.pretrained_cfg.get("classifier") or ()
        for head in (heads,) if isinstance(heads, str) else heads:  # the source's classifier is dropped
            state.pop(f"{head}.weight", None)
            state.pop(f"{head}.bias", None)
        _fit(entry, weights, lambda: net.load_state_dict(state, strict=True))
    pcfg = net.pretrained_cfg
    fixed = getattr(getattr(net, "patch_embed", None), "img_size", None)  # a ViT's own (kwargs may change it)
    size = tuple(fixed) if fixed else tuple(pcfg.get("input_size", (3, 224, 224))[1:])
    pre = {"size": size, "mean": tuple(pcfg.get("mean", ())), "std": tuple(pcfg.get("std", ()))}
    return PretrainedModel(ImageTower(net, size, net.num_features), num_classes, None, None, pre)


def _read_checkpoint(path: Path, entry: Pretrained) -> dict[str, torch.Tensor]:
    """A checkpoint file's tensors (a state dict, possibly under "state_dict" or "model", "module." prefixes
    dropped; .safetensors), never running code from it; one line when it is not one."""
    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise LtbenchError(f"backbone.weights {path}: not a readable checkpoint ({type(exc).__name__}); pass a state "
                           f"dict of {entry.name} ({entry.source}) saved with torch.save, or a .safetensors file.") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LtbenchError(f"backbone.weights {path}: holds no state dict of tensors; pass a checkpoint of "
                           f"{entry.name} ({entry.source}).")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _fit(entry: Pretrained, path: Path, load: Callable[[], Any]) -> None:
    """Run ``load`` (a strict load of ``path`` into the model); a mismatch is one line."""
    try:
        with _quiet():
            load()
    except LtbenchError:
        raise
    except Exception as exc:
        raise LtbenchError(f"backbone.weights {path}: does not fit {entry.name} ({entry.source}): {_mismatch(exc)}; "
                           "pass a checkpoint of that model.") from None


def _mismatch(exc: Exception) -> str:
    """torch's load_state_dict error in a few words: how many tensors have another shape, are missing or
    are unexpected, each with its first one."""
    text = str(exc)
    shapes = re.findall(r"size mismatch for ([\w.]+): copying a param with shape torch.Size\((\[[^\]]*\])\) from "
                        r"checkpoint, the shape in current model is torch.Size\((\[[^\]]*\])\)", text)
    parts = [f"{len(shapes)} tensors of another shape (first {shapes[0][0]}: {shapes[0][1]} in the file, "
             f"{shapes[0][2]} in the model)"] if shapes else []
    for kind in ("Missing", "Unexpected"):
        found = re.search(rf"{kind} key\(s\) in state_dict: (.*?)\.\s*$", text, re.M)
        if found:
            keys = [k.strip(' "') for k in found.group(1).split(",")]
            parts.append(f"{len(keys)} {kind.lower()} (first {keys[0]})")
    return ", ".join(parts) or (text.strip().splitlines() or [type(exc).__name__])[0][:200]


# ------------------------------------------------------------------------------ where the weights are


@dataclass(frozen=True)
class HubFiles:
    """Where a library keeps a backbone's weights on the Hugging Face hub: the repository and the file
    names it tries, in order."""

    repo: str
    names: tuple[str, ...]

    @property
    def cache(self) -> Path:
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE) / f"models--{self.repo.replace('/', '--')}"


OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
TIMM_FILES = ("model.safetensors", "pytorch_model.bin")


def hub_files(entry: Pretrained) -> HubFiles | None:
    """The weights' repository and file names: the entry's own (``hub``, no library imported) or the library's."""
    if entry.hub:
        return HubFiles(entry.hub, OPEN_CLIP_FILES if entry.library == "open_clip" else TIMM_FILES)
    if entry.library == "open_clip":
        hub = _library("open_clip", entry.name).get_pretrained_cfg(entry.arch, entry.tag).get("hf_hub", "")
        repo, name = os.path.split(hub)
        names = (name,) if name.endswith(".safetensors") else \
            (name.rsplit(".", 1)[0] + ".safetensors", name) if name else \
            OPEN_CLIP_FILES
        return HubFiles(repo, names) if repo else None
    pcfg = _library("timm", entry.name).models.get_pretrained_cfg(entry.arch)
    repo = getattr(pcfg, "hf_hub_id", None) if pcfg is not None else None
    if not repo:
        return None
    name = getattr(pcfg, "hf_hub_filename", None)
    return HubFiles(repo, (name,) if name else TIMM_FILES)


def cached_file(files: HubFiles) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    for name in files.names:
        found = try_to_load_from_cache(files.repo, name)
        if isinstance(found, str):
            return Path(found)
    return None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _download(files: HubFiles) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    for name in files.names[:-1]:
        with contextlib.suppress(EntryNotFoundError):
            return Path(hf_hub_download(files.repo, name))
    return Path(hf_hub_download(files.repo, files.names[-1]))


def library_weights(entry: Pretrained, download: bool) -> Path:
    """The library's weights of ``entry`` in the Hugging Face cache, downloaded into it when ``download``
    and the network allow; otherwise one line: the backbone, where it looked, both ways to provide them."""
    files = hub_files(entry)
    if files is None:
        raise LtbenchError(f"backbone {entry.name} ({entry.source}) has no weights on the Hugging Face hub; pass a "
                           "checkpoint with --set backbone.weights=FILE, or backbone.weights=none for a random init.")
    found = cached_file(files)
    if found is not None:
        return found
    why = "downloading is off (--no-download)" if not download else "HF_HUB_OFFLINE is set" if _offline() else ""
    if not why:
        try:
            with _quiet():  # huggingface_hub logs each failed request; the line below says it once
                return _download(files)
        except Exception as exc:  # no network, a proxy, a full disk: all say the same to the user
            why = f"the download failed ({type(exc).__name__}: no connection?)"
    raise LtbenchError(f"backbone {entry.name}: its weights ({entry.source}, Hugging Face {files.repo}) are not in the "
                       f"cache ({files.cache}) and {why}; connect once and run again (they download into that cache), "
                       f"or download {files.repo}/{files.names[0]} elsewhere and pass --set backbone.weights=FILE.")


def weights_status(entry: Pretrained) -> str:
    """"present (cache)", "not here (downloads on first use)", "random init", or what is missing."""
    if not entry.has_weights:
        return "random init"
    try:
        files = hub_files(entry)
        __import__("huggingface_hub")
    except (LtbenchError, ImportError):
        return f"needs {INSTALL}"
    if files is None:
        return "none published (backbone.weights=FILE)"
    return "present (cache)" if cached_file(files) is not None else "not here (downloads on first use)"


@lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime: int) -> str:
    return file_sha256(Path(path))


def file_id(path: Path) -> str:
    """"sha256:<hex>" of a weights file (cached by path, size and modification time)."""
    st = Path(path).stat()
    return "sha256:" + _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


# ------------------------------------------------------------------------------ a run's model


def run_weights(spec: Any) -> str | None:
    """The weights a run's backbone starts from (the spec's, or its stage-1 run's)."""
    parent = spec.parent_spec()
    return spec.weights if parent is None else parent.weights


def locate(entry: Pretrained, weights: str | None, file: Path | None, download: bool) -> tuple[Path | None, str]:
    """The file a run's weights come from (None: random init) and how the record names the source."""
    if weights == "none" or (weights is None and not entry.has_weights):
        return None, "random init"
    if weights is not None:
        if file is None or not Path(file).is_file() or file_id(Path(file)) != weights:
            given = "not given" if file is None else f"{file} is not that file"
            raise LtbenchError(f"this run's backbone starts from the weights file {weights[:19]}... (--set "
                               f"backbone.weights), but it is {given}; pass the same file again.")
        return Path(file), f"backbone.weights {file}"
    return library_weights(entry, download), f"{entry.source} from the Hugging Face cache"


def locate_run_weights(spec: Any, file: Path | None, download: bool) -> None:
    """Refuse a run whose pretrained backbone's weights are not here (or not the file its spec names)."""
    entry = backbones.get(spec.backbone)
    if isinstance(entry, Pretrained):
        locate(entry, run_weights(spec), file, download)


def build_run_model(spec: Any, num_classes: int, in_channels: int, file: Path | None,
                    download: bool) -> tuple[nn.Module, dict[str, Any]]:
    """A run's model as its stage-1 run (if any) and its stages need it: the backbone with its weights, and
    the modules of a tuning mode that adds them (ltbench.models.peft); what the record says of both."""
    entry = backbones.get(spec.backbone)
    record: dict[str, Any] = {}
    if isinstance(entry, Pretrained):
        path, source = locate(entry, run_weights(spec), file, download)
        model: nn.Module = entry(num_classes, in_channels, weights=path)
        record["backbone"] = {"source": source, "library": entry.source, "pretraining": entry.pretraining,
                              "input": describe_input(model), **({"file": str(path), "sha256": file_id(path)[7:]}
                                                                 if path is not None else {})}
        if entry.overlap(spec.benchmark):
            record["backbone"]["overlap"] = entry.overlap(spec.benchmark)
    else:
        model = entry(num_classes=num_classes, in_channels=in_channels)
    inserted = peft.insert_run(model, spec, num_classes)
    if inserted:
        record["tuning_modules"] = inserted
    return model, record


def describe_input(model: nn.Module) -> str:
    """What the model itself does to its inputs; a run replaces it with what its data does
    (ltbench.data.resolution.at_backbone_input: the images at the backbone's size, with its mean/std)."""
    size = model.features.size
    return f"inputs of another size resized (bilinear) to {size[0]}x{size[1]} inside the model, grey repeated to 3 " \
           "channels"


def param_extra(model: nn.Module) -> dict[str, int]:
    """What result.json's ``params`` adds for a CLIP backbone: its text tower (frozen, not counted in total)."""
    n = model.text_params() if isinstance(model, PretrainedModel) else 0
    return {"text_tower": n} if n else {}


# ------------------------------------------------------------------------------ checks before a run


def backbone_problems(spec: Any, file: Path | None, download: bool, dry_run: bool = False) -> list[str]:
    """Why a run's backbone cannot be built as its spec says, before anything is written: the library, its
    weights (not here offline, a file that does not fit), and the tuning modes of its stages."""
    entry = backbones.get(spec.backbone)
    weights = run_weights(spec)
    if not isinstance(entry, Pretrained):
        if weights is not None:
            return [f"backbone.weights: {spec.backbone} is not a pretrained backbone (`ltbench list backbones` lists "
                    "them); to start from an ltbench run's model.pt use --init-weights FILE"]
        return _tuning_problems(spec, entry, None)
    _library(entry.library, entry.name)
    if weights == "none" and not entry.has_weights:
        return [f"backbone.weights=none: {entry.name} has no pretrained weights (it starts from a random init); drop it"]
    if weights is not None and weights != "none":
        _check_file(entry, weights, file)
    elif weights is None and entry.has_weights and not (dry_run and download and not _offline()):
        library_weights(entry, download)
    return _tuning_problems(spec, entry, weights)


@lru_cache(maxsize=16)
def _checked_file(name: str, weights: str, file: str) -> None:
    entry = backbones.get(name)
    with torch.device("meta"):
        entry(2, 3, weights=Path(file))


def _check_file(entry: Pretrained, weights: str, file: Path | None) -> None:
    locate(entry, weights, file, download=False)
    _checked_file(entry.name, weights, str(file))  # loaded into the model on the meta device: keys and shapes


def _tuning_problems(spec: Any, entry: Any, weights: str | None) -> list[str]:
    tuned = [(st, mode) for st, mode in peft.modes(spec) if mode != "full"]
    if not tuned:
        return []
    structural = {tuple(sorted(peft.sizes(hp).items())) for _, hp in peft.run_tunings(spec)}
    if len(structural) > 1:
        return [f"{spec.method}: stages with different tuning modules ({', '.join(st for st, _ in peft.run_tunings(spec))}); "
                "one run (with its stage-1 run) adds one set of them"]
    out = []
    for stage, mode in tuned:
        out += [f"{stage}.{p}" for p in _mode_problems(spec.backbone, mode)]
    return out


@lru_cache(maxsize=64)
def _mode_problems(name: str, mode: str) -> tuple[str, ...]:
    entry = backbones.get(name)
    with torch.device("meta"), _quiet():
        model = entry(num_classes=2, in_channels=3)
    return tuple(peft.problems(model, mode, name))
