"""Trainers: classifier, perturbation generator, neural codec.

Common to all three:

* fixed seeds: the network is initialised from ``seed``; epoch ``e`` shuffles and
  augments with a generator seeded from ``(seed, e)``, so a resumed run sees exactly the
  batches an uninterrupted run would have seen;
* a checkpoint after every epoch in ``<out>/checkpoint/``: weights and optimizer state
  as safetensors, everything else (epoch, step, configuration, metrics) as JSON, written
  atomically; ``resume=True`` continues from it (no pickle, no ``torch.load``);
* metrics per epoch in ``<out>/metrics.json``; the finished network in
  ``<out>/model.safetensors`` with ``<out>/model.json`` (arch, config, metrics, command);
* CPU by default, CUDA when available; bfloat16 autocast where the hardware has it.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vision._data import CifarArrays
from vision._errors import VisionError
from vision._models import (
    Classifier,
    UNetGenerator,
    build_classifier,
    build_generator,
    count_parameters,
)

__all__ = [
    "ClassifierTrainConfig",
    "CodecTrainConfig",
    "GeneratorTrainConfig",
    "TrainError",
    "evaluate_classifier",
    "load_classifier_dir",
    "load_codec_dir",
    "load_generator_dir",
    "pick_device",
    "train_classifier",
    "train_codec",
    "train_generator",
]

MODEL_FILE = "model.safetensors"
MODEL_META = "model.json"
METRICS_FILE = "metrics.json"
CKPT_DIR = "checkpoint"
FORMAT = "pmc2-trained-network/1"


class TrainError(VisionError):
    """A training run cannot start or resume (bad directory, mismatched checkpoint)."""


# --- devices, precision, small helpers --------------------------------------------------


def pick_device(name: str | None = None) -> torch.device:
    """``name`` if given, else CUDA when available, else CPU."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _use_bf16(device: torch.device, setting: bool | None) -> bool:
    if setting is not None:
        return setting
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return _cpu_has_bf16()


def _autocast(device: torch.device, enabled: bool) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def _to_float(images: npt.NDArray[np.uint8] | Tensor) -> Tensor:
    """uint8 NHWC -> float NCHW in [0, 1]."""
    t = torch.from_numpy(images) if isinstance(images, np.ndarray) else images
    return t.permute(0, 3, 1, 2).float().div_(255.0)


def quantize(x: Tensor) -> Tensor:
    """Round ``[0, 1]`` pixels to the 8-bit grid (what a lossless PNG would carry)."""
    return torch.round(x.clamp(0.0, 1.0) * 255.0) / 255.0


def augment(x: Tensor, gen: torch.Generator, pad: int = 4) -> Tensor:
    """Random crop with reflect padding ``pad`` and random horizontal flip (NCHW batch)."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    if pad <= 0:
        return x
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, :, None]
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, :]
    batch = torch.arange(n)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


def _progress(iterable: Sequence[Any] | range, desc: str, enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield from iterable
        return
    from tqdm import tqdm

    yield from tqdm(
        iterable, desc=desc, leave=False, file=sys.stderr, mininterval=5.0, dynamic_ncols=True
    )


def _lr_at(step: int, total: int, peak: float, warmup: int, schedule: str) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then linear or cosine decay to 0."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    rest = max(1, total - warmup)
    frac = min(1.0, (step - warmup) / rest)
    if schedule == "linear":
        return peak * (1.0 - frac)
    return peak * 0.5 * (1.0 + math.cos(math.pi * frac))


# --- atomic files, safetensors state, checkpoints ------------------------------------------


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _write_json(path: Path, obj: Any) -> None:
    _write_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TrainError(f"cannot read {path}: {exc}") from exc


def _save_tensors(path: Path, tensors: Mapping[str, Tensor]) -> None:
    from safetensors.torch import save

    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    _write_atomic(path, save(flat))


def _load_tensors(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load

    try:
        out: dict[str, Tensor] = load(path.read_bytes())
    except Exception as exc:  # safetensors raises its own error types
        raise TrainError(f"cannot read tensors from {path}: {exc}") from exc
    return out


def _optimizer_split(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Optimizer state as (tensors for safetensors, JSON-able rest)."""
    sd = opt.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, Tensor):
                tensors[f"{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_join(
    opt: torch.optim.Optimizer, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


@dataclass
class _Checkpoint:
    """What a run keeps between epochs."""

    epoch: int = 0  # epochs completed
    step: int = 0
    metrics: list[dict[str, Any]] = field(default_factory=list)


def _save_checkpoint(
    out: Path,
    modules: Mapping[str, nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    ckpt: _Checkpoint,
    config: Mapping[str, Any],
) -> None:
    cdir = out / CKPT_DIR
    opt_meta: dict[str, Any] = {}
    for name, module in modules.items():
        _save_tensors(cdir / f"{name}.safetensors", module.state_dict())
    for name, opt in optimizers.items():
        tensors, meta = _optimizer_split(opt)
        _save_tensors(cdir / f"opt-{name}.safetensors", tensors)
        opt_meta[name] = meta
    # state.json last: it names the epoch the tensor files belong to
    _write_json(
        cdir / "state.json",
        {
            "epoch": ckpt.epoch,
            "step": ckpt.step,
            "metrics": ckpt.metrics,
            "config": dict(config),
            "optimizers": opt_meta,
        },
    )
    _write_json(out / METRICS_FILE, ckpt.metrics)


def _load_checkpoint(
    out: Path,
    modules: Mapping[str, nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    config: Mapping[str, Any],
    resume_keys: Sequence[str] = (),
) -> _Checkpoint:
    """Restore a checkpoint; the configuration must match except ``resume_keys``."""
    cdir = out / CKPT_DIR
    state = _read_json(cdir / "state.json")
    saved = dict(state["config"])
    mine = json.loads(json.dumps(dict(config)))
    for key in resume_keys:
        saved.pop(key, None)
        mine.pop(key, None)
    if saved != mine:
        diff = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k))
        raise TrainError(f"checkpoint in {out} was made with a different configuration: {diff}")
    for name, module in modules.items():
        module.load_state_dict(_load_tensors(cdir / f"{name}.safetensors"))
    for name, opt in optimizers.items():
        _optimizer_join(
            opt, _load_tensors(cdir / f"opt-{name}.safetensors"), state["optimizers"][name]
        )
    return _Checkpoint(epoch=int(state["epoch"]), step=int(state["step"]), metrics=state["metrics"])


def _has_checkpoint(out: Path) -> bool:
    return (out / CKPT_DIR / "state.json").is_file()


def _prepare_out(out: Path, resume: bool) -> None:
    if _has_checkpoint(out) and not resume:
        raise TrainError(f"{out} already holds a checkpoint; pass resume to continue it")
    out.mkdir(parents=True, exist_ok=True)


def _write_model(
    out: Path,
    kind: str,
    *,
    arch: str,
    config: Mapping[str, Any],
    module: nn.Module,
    meta: Mapping[str, Any],
) -> None:
    _save_tensors(out / MODEL_FILE, module.state_dict())
    _write_json(
        out / MODEL_META,
        {"format": FORMAT, "kind": kind, "arch": arch, "config": dict(config), **meta},
    )


def _read_model_meta(directory: Path, kind: str) -> dict[str, Any]:
    meta = _read_json(directory / MODEL_META)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("kind") != kind:
        raise TrainError(f"{directory} does not hold a trained {kind}")
    return meta


def load_classifier_dir(directory: Path) -> tuple[Classifier, dict[str, Any]]:
    """Rebuild a trained classifier from a training output directory (eval mode)."""
    meta = _read_model_meta(directory, "classifier")
    model = build_classifier(meta["arch"], meta["config"])
    model.load_state_dict(_load_tensors(directory / MODEL_FILE))
    return model.eval(), meta


def load_generator_dir(directory: Path) -> tuple[UNetGenerator, dict[str, Any]]:
    """Rebuild a trained generator from a training output directory (eval mode)."""
    meta = _read_model_meta(directory, "generator")
    model = build_generator(meta["arch"], meta["config"])
    model.load_state_dict(_load_tensors(directory / MODEL_FILE))
    return model.eval(), meta


def load_codec_dir(directory: Path) -> tuple[Any, dict[str, Any]]:
    """Rebuild a trained codec (entropy tables updated, eval mode)."""
    from vision._codec import make_codec

    meta = _read_model_meta(directory, "codec")
    codec = make_codec(**meta["config"])
    _load_codec_state(codec, _load_tensors(directory / MODEL_FILE))
    codec.update(force=True)
    return codec.eval(), meta


def _load_codec_state(codec: nn.Module, tensors: Mapping[str, Tensor]) -> None:
    """Load a FactorizedPrior state dict whose CDF tables may differ in length."""
    buffers = dict(codec.named_buffers())
    for name, value in tensors.items():
        if name in buffers and buffers[name].shape != value.shape:
            buffers[name].resize_(value.shape)  # CompressAI's _quantized_cdf etc. are dynamic
    codec.load_state_dict(dict(tensors))


def _freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _stop(epochs: int, done: int, stop_after: int | None) -> int:
    """Last epoch (exclusive) of this invocation: ``stop_after`` more, at most ``epochs``."""
    return epochs if stop_after is None else min(epochs, done + max(0, stop_after))


def _limit(data: CifarArrays, n: int | None) -> CifarArrays:
    """A fixed random subset of ``n`` images (all of them when ``n`` is None)."""
    if n is None or n >= len(data):
        return data
    index = np.sort(np.random.default_rng(12345).permutation(len(data))[:n]).astype(np.int64)
    return data.subset(index)


def _batches(n: int, batch: int, gen: torch.Generator | None, drop_last: bool) -> list[Tensor]:
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    stop = n - n % batch if drop_last and n >= batch else n
    return [order[i : i + batch] for i in range(0, stop, batch)]


# --- classifier -------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassifierTrainConfig:
    """Hyper-parameters of a classifier run (stored in checkpoints and manifests)."""

    arch: str = "airbench"
    arch_config: dict[str, Any] = field(default_factory=dict)
    epochs: int = 16
    batch_size: int = 512
    lr: float = 0.2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.2
    warmup_epochs: float = 2.0
    schedule: str = "linear"
    seed: int = 0
    channels_last: bool = True
    bf16: bool | None = None
    tta: bool = True
    max_train: int | None = None  # for quick tests: use only the first N training images


@torch.no_grad()
def evaluate_classifier(
    model: nn.Module,
    images: Tensor | npt.NDArray[np.uint8],
    labels: Tensor | npt.NDArray[np.int64],
    *,
    batch_size: int = 500,
    tta: bool = False,
    device: torch.device | None = None,
    bf16: bool = False,
    transform: Callable[[Tensor], Tensor] | None = None,
) -> tuple[float, float]:
    """Accuracy and mean cross-entropy; ``images`` uint8 NHWC or float NCHW in [0, 1].

    ``transform`` maps each float batch before classification (e.g. the generator).
    ``tta`` averages the logits of the image and its horizontal mirror.
    """
    device = device or torch.device("cpu")
    model.eval()
    y_all = torch.as_tensor(labels)
    correct, loss_sum, n = 0, 0.0, int(y_all.shape[0])
    for idx in _batches(n, batch_size, None, drop_last=False):
        if isinstance(images, np.ndarray):
            x = _to_float(images[idx.numpy()]).to(device)
        else:
            x = images[idx].to(device)
        y = y_all[idx].to(device)
        with _autocast(device, bf16):
            if transform is not None:
                x = transform(x)
            logits = model(x).float()
            if tta:
                logits = 0.5 * (logits + model(x.flip(3)).float())
        correct += int((logits.argmax(1) == y).sum())
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
    return correct / max(1, n), loss_sum / max(1, n)


def train_classifier(
    cfg: ClassifierTrainConfig,
    train: CifarArrays,
    val: CifarArrays,
    out: Path,
    *,
    resume: bool = False,
    device: torch.device | None = None,
    progress: bool = True,
    command: str = "",
    evaluation: CifarArrays | None = None,
    stop_after: int | None = None,
) -> list[dict[str, Any]]:
    """Train a classifier; returns the per-epoch metrics (also in ``out/metrics.json``)."""
    device = device or pick_device()
    bf16 = _use_bf16(device, cfg.bf16)
    _prepare_out(out, resume)
    torch.manual_seed(cfg.seed)
    model = build_classifier(cfg.arch, cfg.arch_config).to(device)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    opt = torch.optim.SGD(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=True,
    )
    config = asdict(cfg)
    ckpt = _Checkpoint()
    if resume and _has_checkpoint(out):
        ckpt = _load_checkpoint(out, {"model": model}, {"model": opt}, config, ("epochs",))
    train = _limit(train, cfg.max_train)
    n_train = len(train)
    x_train = torch.from_numpy(train.images)  # uint8 NHWC, converted per batch
    y_train = torch.from_numpy(train.labels)
    steps_per_epoch = len(_batches(n_train, cfg.batch_size, None, drop_last=True))
    total = steps_per_epoch * cfg.epochs
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    for epoch in range(ckpt.epoch, _stop(cfg.epochs, ckpt.epoch, stop_after)):
        model.train()
        gen = _epoch_generator(cfg.seed, epoch)
        t0, loss_sum, correct, seen = time.monotonic(), 0.0, 0, 0
        for idx in _progress(
            _batches(n_train, cfg.batch_size, gen, drop_last=True), f"epoch {epoch + 1}", progress
        ):
            lr = _lr_at(ckpt.step, total, cfg.lr, warmup, cfg.schedule)
            for group in opt.param_groups:
                group["lr"] = lr
            x = augment(_to_float(x_train[idx]), gen).to(device, memory_format=fmt)
            y = y_train[idx].to(device)
            with _autocast(device, bf16):
                logits = model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            ckpt.step += 1
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(idx)
        train_time = time.monotonic() - t0
        val_acc, val_loss = evaluate_classifier(
            model, val.images, val.labels, tta=cfg.tta, device=device, bf16=bf16
        )
        ckpt.epoch = epoch + 1
        record = {
            "epoch": ckpt.epoch,
            "train_loss": loss_sum / max(1, seen),
            "train_accuracy": correct / max(1, seen),
            "val_accuracy": val_acc,
            "val_loss": val_loss,
            "lr": opt.param_groups[0]["lr"],
            "seconds": train_time,
            "images_per_second": seen / max(train_time, 1e-9),
        }
        ckpt.metrics.append(record)
        _save_checkpoint(out, {"model": model}, {"model": opt}, ckpt, config)
        if progress:
            print(json.dumps(record), file=sys.stderr, flush=True)
    final: dict[str, Any] = {
        "val_accuracy": ckpt.metrics[-1]["val_accuracy"] if ckpt.metrics else None
    }
    if evaluation is not None:
        final["eval_accuracy"], _ = evaluate_classifier(
            model, evaluation.images, evaluation.labels, tta=cfg.tta, device=device, bf16=bf16
        )
        final["eval_accuracy_no_tta"], _ = evaluate_classifier(
            model, evaluation.images, evaluation.labels, tta=False, device=device, bf16=False
        )
    model = model.to(memory_format=torch.contiguous_format)
    _write_model(
        out,
        "classifier",
        arch=cfg.arch,
        config=model.config(),
        module=model,
        meta={
            "parameters": count_parameters(model),
            "train_config": config,
            "metrics": final,
            "epochs_run": ckpt.epoch,
            "command": command,
        },
    )
    return ckpt.metrics


# --- generator --------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratorTrainConfig:
    """Hyper-parameters of a generator run."""

    base: int = 16
    epochs: int = 10
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    ssim_weight: float = 0.5
    aux_weight: float = 1.0
    aux_ce_cap: float | None = None  # optional hinge: - min(CE(aux), cap); None = unbounded
    # penalise |SSIM| per image instead of SSIM: a strongly negative SSIM is a photographic
    # negative of the original, which shows its content as plainly as the original does
    ssim_abs: bool = False
    # codec in the loop (a trained, frozen codec passed to train_generator): + codec_weight
    # * CE(target(codec(x')), y) + codec_rate_weight * bpp(x'), so the perturbation learns
    # to survive the neural codec at few bits
    codec_weight: float = 0.0
    codec_rate_weight: float = 0.0
    init_from: str | None = None  # warm start: generator weights (.safetensors) to start from
    seed: int = 0
    bf16: bool | None = None
    flip: bool = True
    max_train: int | None = None
    eval_images: int | None = None  # validate on the first N of the validation half


def _ssim(x: Tensor, y: Tensor) -> Tensor:
    from pytorch_msssim import ssim

    out: Tensor = ssim(x, y, data_range=1.0, size_average=True)
    return out


def _ssim_per_image(x: Tensor, y: Tensor) -> Tensor:
    from pytorch_msssim import ssim

    out: Tensor = ssim(x, y, data_range=1.0, size_average=False)
    return out


@torch.no_grad()
def evaluate_generator(
    generator: nn.Module,
    target: nn.Module,
    aux: nn.Module | None,
    data: CifarArrays,
    *,
    device: torch.device,
    batch_size: int = 500,
) -> dict[str, float]:
    """Accuracy of target (and aux) on 8-bit protected images, and mean SSIM (and mean
    per-image absolute SSIM) to the originals."""
    generator.eval()
    correct_t = correct_a = 0
    ssim_sum = abs_sum = 0.0
    n = len(data)
    for idx in _batches(n, batch_size, None, drop_last=False):
        x = _to_float(data.images[idx.numpy()]).to(device)
        y = torch.from_numpy(data.labels[idx.numpy()]).to(device)
        xp = quantize(generator(x))
        correct_t += int((target(xp).argmax(1) == y).sum())
        if aux is not None:
            correct_a += int((aux(xp).argmax(1) == y).sum())
        per_image = _ssim_per_image(x, xp)
        ssim_sum += float(per_image.sum())
        abs_sum += float(per_image.abs().sum())
    result = {"protected_accuracy": correct_t / n, "ssim": ssim_sum / n, "abs_ssim": abs_sum / n}
    if aux is not None:
        result["aux_protected_accuracy"] = correct_a / n
    return result


def train_generator(
    cfg: GeneratorTrainConfig,
    train: CifarArrays,
    val: CifarArrays,
    out: Path,
    *,
    target: Classifier,
    aux: Classifier,
    resume: bool = False,
    device: torch.device | None = None,
    progress: bool = True,
    command: str = "",
    provenance: Mapping[str, Any] | None = None,
    stop_after: int | None = None,
    codec: nn.Module | None = None,
) -> list[dict[str, Any]]:
    """Train the U-Net: CE(target(x'), y) - CE(aux(x'), y) + 0.5 SSIM(x, x').

    Target and auxiliary classifiers are frozen; AdamW with linear warm-up and cosine
    decay. Validation reports the target's accuracy on 8-bit protected images and SSIM.
    With a frozen ``codec`` and ``codec_weight`` / ``codec_rate_weight``, the decoded
    image's cross-entropy and the rate join the loss (decoder on straight-through rounded
    latents, rate from the noisy-latent likelihoods, both in float32), and validation
    also codes the protected images with the real entropy coder.
    """
    device = device or pick_device()
    bf16 = _use_bf16(device, cfg.bf16)
    in_loop = cfg.codec_weight > 0 or cfg.codec_rate_weight > 0
    if in_loop and codec is None:
        raise TrainError("codec_weight or codec_rate_weight > 0 needs the trained codec")
    _prepare_out(out, resume)
    target = _freeze(target.to(device))  # type: ignore[assignment]
    aux = _freeze(aux.to(device))  # type: ignore[assignment]
    if codec is not None:
        codec = _freeze(codec.to(device))
    torch.manual_seed(cfg.seed)
    gen_net = build_generator("unet", {"base": cfg.base}).to(device)
    if cfg.init_from is not None:
        gen_net.load_state_dict(_load_tensors(Path(cfg.init_from)))
    opt = torch.optim.AdamW(gen_net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    config = asdict(cfg)
    ckpt = _Checkpoint()
    if resume and _has_checkpoint(out):
        ckpt = _load_checkpoint(
            out, {"generator": gen_net}, {"generator": opt}, config, ("epochs",)
        )
    train = _limit(train, cfg.max_train)
    n_train = len(train)
    x_train = torch.from_numpy(train.images)
    y_train = torch.from_numpy(train.labels)
    val_eval = _limit(val, cfg.eval_images)
    steps_per_epoch = len(_batches(n_train, cfg.batch_size, None, drop_last=True))
    total = steps_per_epoch * cfg.epochs
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    for epoch in range(ckpt.epoch, _stop(cfg.epochs, ckpt.epoch, stop_after)):
        gen_net.train()
        rng = _epoch_generator(cfg.seed, epoch)
        t0 = time.monotonic()
        sums = {"loss": 0.0, "ce_target": 0.0, "ce_aux": 0.0, "ssim": 0.0, "ce_codec": 0.0}
        sums["bpp"] = 0.0
        seen = 0
        for idx in _progress(
            _batches(n_train, cfg.batch_size, rng, drop_last=True), f"epoch {epoch + 1}", progress
        ):
            lr = _lr_at(ckpt.step, total, cfg.lr, warmup, "cosine")
            for group in opt.param_groups:
                group["lr"] = lr
            x = _to_float(x_train[idx])
            if cfg.flip:
                x = augment(x, rng, pad=0)
            x, y = x.to(device), y_train[idx].to(device)
            with _autocast(device, bf16):
                xp = gen_net(x)
                ce_t = F.cross_entropy(target(xp).float(), y)
                ce_a = F.cross_entropy(aux(xp).float(), y)
            sim = (
                _ssim_per_image(x, xp.float()).abs().mean()
                if cfg.ssim_abs
                else _ssim(x, xp.float())
            )
            ce_a_term = ce_a if cfg.aux_ce_cap is None else ce_a.clamp(max=cfg.aux_ce_cap)
            loss = ce_t - cfg.aux_weight * ce_a_term + cfg.ssim_weight * sim
            ce_c = bpp = torch.zeros((), device=device)
            if in_loop and codec is not None:
                ce_c, bpp = _through_codec(codec, target, xp.float(), y)
                loss = loss + cfg.codec_weight * ce_c + cfg.codec_rate_weight * bpp
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            ckpt.step += 1
            b = len(idx)
            seen += b
            for key, value in (
                ("loss", loss),
                ("ce_target", ce_t),
                ("ce_aux", ce_a),
                ("ssim", sim),
                ("ce_codec", ce_c),
                ("bpp", bpp),
            ):
                sums[key] += float(value.detach()) * b
        train_time = time.monotonic() - t0
        record: dict[str, Any] = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"]}
        record.update({f"train_{k}": v / max(1, seen) for k, v in sums.items()})
        record.update(
            {
                f"val_{k}": v
                for k, v in evaluate_generator(
                    gen_net, target, aux, val_eval, device=device
                ).items()
            }
        )
        if codec is not None:
            coded = evaluate_codec(
                codec,
                target,
                _protect_all(gen_net, val_eval.images, device, False),
                torch.from_numpy(val_eval.labels),
                device=device,
            )
            record.update({f"val_codec_{k}": v for k, v in coded.items()})
        record["seconds"] = train_time
        ckpt.epoch = epoch + 1
        ckpt.metrics.append(record)
        _save_checkpoint(out, {"generator": gen_net}, {"generator": opt}, ckpt, config)
        if progress:
            print(json.dumps(record), file=sys.stderr, flush=True)
    last = ckpt.metrics[-1] if ckpt.metrics else {}
    _write_model(
        out,
        "generator",
        arch="unet",
        config=gen_net.config(),
        module=gen_net,
        meta={
            "parameters": count_parameters(gen_net),
            "train_config": config,
            "metrics": {k: v for k, v in last.items() if k.startswith("val_")},
            "epochs_run": ckpt.epoch,
            "command": command,
            **dict(provenance or {}),
        },
    )
    return ckpt.metrics


def _through_codec(codec: Any, target: nn.Module, xp: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """CE of the target on the codec's reconstruction of ``xp``, and its rate in bits per
    pixel; gradients reach ``xp`` (the frozen codec is not updated)."""
    from compressai.ops import quantize_ste

    latents = codec.g_a(xp)
    _, likelihoods = codec.entropy_bottleneck(latents, training=True)
    medians = codec.entropy_bottleneck._get_medians().detach()
    x_hat = codec.g_s(quantize_ste(latents - medians) + medians).clamp(0.0, 1.0)
    ce = F.cross_entropy(target(x_hat).float(), y)
    pixels = xp.shape[0] * xp.shape[2] * xp.shape[3]
    bpp = torch.log(likelihoods.float()).sum() / (-math.log(2) * pixels)
    return ce, bpp


# --- codec ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodecTrainConfig:
    """Hyper-parameters of a codec run (FactorizedPrior on protected images)."""

    N: int = 128
    M: int = 192
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    aux_lr: float = 5e-2
    eb_lr_mult: float = 10.0  # learning-rate multiplier for the entropy model's density
    ste: bool = True  # decoder sees rounded latents (straight-through), as when coding
    lmbda: float = 0.5  # loss = MSE + lmbda * bpp
    ce_weight: float = 0.0  # optional: + ce_weight * CE(target(decoded), y)
    kd_weight: float = 0.0  # optional: + kd_weight * KL(target(protected) || target(decoded))
    kd_temperature: float = 2.0
    clip_grad: float = 1.0
    seed: int = 0
    bf16: bool | None = False
    max_train: int | None = None
    eval_images: int | None = 1000
    init_from: str | None = None  # warm start: codec weights (.safetensors) to start from


def _codec_forward(codec: Any, x: Tensor, ste: bool) -> dict[str, Any]:
    """FactorizedPrior forward; with ``ste`` the decoder gets the latents rounded around
    the entropy model's medians (what ``compress`` codes), gradients passing straight
    through, while the rate still comes from the noisy-latent likelihoods."""
    if not ste:
        out: dict[str, Any] = codec(x)
        return out
    from compressai.ops import quantize_ste

    y = codec.g_a(x)
    _, likelihoods = codec.entropy_bottleneck(y)
    medians = codec.entropy_bottleneck._get_medians().detach()
    y_hat = quantize_ste(y - medians) + medians
    return {"x_hat": codec.g_s(y_hat), "likelihoods": {"y": likelihoods}}


@torch.no_grad()
def _protect_all(
    generator: nn.Module, images: npt.NDArray[np.uint8], device: torch.device, progress: bool
) -> Tensor:
    """8-bit protected versions of ``images`` (uint8 NCHW tensor on the CPU)."""
    generator.eval()
    parts = []
    for idx in _progress(_batches(len(images), 500, None, False), "protect", progress):
        x = _to_float(images[idx.numpy()]).to(device)
        parts.append(torch.round(generator(x) * 255.0).to(torch.uint8).cpu())
    return torch.cat(parts)


@torch.no_grad()
def _logits_all(classifier: nn.Module, images: Tensor, device: torch.device) -> Tensor:
    """The classifier's logits for uint8 NCHW ``images`` (float32, on the CPU)."""
    parts = [
        classifier(images[idx].float().div(255.0).to(device)).float().cpu()
        for idx in _batches(int(images.shape[0]), 500, None, False)
    ]
    return torch.cat(parts)


@torch.no_grad()
def evaluate_codec(
    codec: Any,
    target: nn.Module | None,
    protected: Tensor,
    labels: Tensor,
    *,
    device: torch.device,
    batch_size: int = 250,
) -> dict[str, float]:
    """Real entropy coding: mean bytes per single-image string and decoded accuracy."""
    codec.update(force=True)
    codec.eval()
    nbytes, correct, mse_sum = 0, 0, 0.0
    n = int(protected.shape[0])
    for idx in _batches(n, batch_size, None, drop_last=False):
        x = protected[idx].float().div(255.0).to(device)
        enc = codec.compress(x)
        nbytes += sum(len(s) for s in enc["strings"][0])
        xh = codec.decompress(enc["strings"], enc["shape"])["x_hat"].clamp(0, 1)
        mse_sum += float(F.mse_loss(xh, x, reduction="sum")) / x[0].numel()
        if target is not None:
            correct += int((target(quantize(xh)).argmax(1) == labels[idx].to(device)).sum())
    result = {"bytes_per_image": nbytes / n, "mse": mse_sum / n}
    if target is not None:
        result["decoded_accuracy"] = correct / n
    return result


def train_codec(
    cfg: CodecTrainConfig,
    train: CifarArrays,
    val: CifarArrays,
    out: Path,
    *,
    generator: nn.Module,
    target: Classifier | None,
    resume: bool = False,
    device: torch.device | None = None,
    progress: bool = True,
    command: str = "",
    provenance: Mapping[str, Any] | None = None,
    stop_after: int | None = None,
) -> list[dict[str, Any]]:
    """Train a FactorizedPrior on the frozen generator's protected images.

    Loss ``MSE + lmbda * bpp`` (+ optionally ``ce_weight * CE(target(x_hat), y)`` and
    ``kd_weight * T^2 * KL(p_T(x') || p_T(x_hat))``, the decoded image classified as the
    target classifies the protected one, at temperature ``T``), Adam;
    the entropy bottleneck's quantiles get their own optimizer on ``aux_loss()``, as in
    CompressAI's examples. ``update()`` runs before every evaluation and at the end.
    """
    from vision._codec import make_codec

    device = device or pick_device()
    bf16 = _use_bf16(device, cfg.bf16)
    _prepare_out(out, resume)
    generator = _freeze(generator.to(device))
    if target is not None:
        target = _freeze(target.to(device))  # type: ignore[assignment]
    if (cfg.ce_weight > 0 or cfg.kd_weight > 0) and target is None:
        raise TrainError("ce_weight or kd_weight > 0 needs the target classifier")
    torch.manual_seed(cfg.seed)
    codec = make_codec(N=cfg.N, M=cfg.M).to(device)
    if cfg.init_from is not None:
        _load_codec_state(codec, _load_tensors(Path(cfg.init_from)))
    main_params = [p for n, p in codec.named_parameters() if not n.endswith(".quantiles")]
    aux_params = [p for n, p in codec.named_parameters() if n.endswith(".quantiles")]
    eb_ids = {id(p) for p in codec.entropy_bottleneck.parameters()}
    opt = torch.optim.Adam(
        [
            {"params": [p for p in main_params if id(p) not in eb_ids], "mult": 1.0},
            {"params": [p for p in main_params if id(p) in eb_ids], "mult": cfg.eb_lr_mult},
        ],
        lr=cfg.lr,
    )
    aux_opt = torch.optim.Adam(aux_params, lr=cfg.aux_lr)
    config = asdict(cfg)
    ckpt = _Checkpoint()
    optimizers = {"main": opt, "aux": aux_opt}
    if resume and _has_checkpoint(out):
        cdir = out / CKPT_DIR
        _load_codec_state(codec, _load_tensors(cdir / "codec.safetensors"))
        ckpt = _load_checkpoint(out, {}, optimizers, config, ("epochs",))
    train = _limit(train, cfg.max_train)
    n_train = len(train)
    protected = _protect_all(generator, train.images, device, progress)
    y_train = torch.from_numpy(train.labels)
    teacher_logits = torch.empty(0)
    if cfg.kd_weight > 0 and target is not None:
        teacher_logits = _logits_all(target, protected, device)
    val_eval = _limit(val, cfg.eval_images)
    val_protected = _protect_all(generator, val_eval.images, device, False)
    val_labels = torch.from_numpy(val_eval.labels)
    steps_per_epoch = len(_batches(n_train, cfg.batch_size, None, drop_last=True))
    total = steps_per_epoch * cfg.epochs
    for epoch in range(ckpt.epoch, _stop(cfg.epochs, ckpt.epoch, stop_after)):
        codec.train()
        rng = _epoch_generator(cfg.seed, epoch)
        t0 = time.monotonic()
        sums = {"loss": 0.0, "mse": 0.0, "bpp": 0.0, "aux": 0.0, "ce": 0.0, "kd": 0.0}
        seen = 0
        for idx in _progress(
            _batches(n_train, cfg.batch_size, rng, drop_last=True), f"epoch {epoch + 1}", progress
        ):
            lr = _lr_at(ckpt.step, total, cfg.lr, 0, "cosine") if cfg.epochs > 1 else cfg.lr
            for group in opt.param_groups:
                group["lr"] = max(lr, cfg.lr * 0.01) * group["mult"]
            x = protected[idx].float().div(255.0).to(device)
            with _autocast(device, bf16):
                res = _codec_forward(codec, x, cfg.ste)
            x_hat = res["x_hat"].float()
            num_pixels = x.shape[0] * x.shape[2] * x.shape[3]
            bpp = torch.zeros((), device=device)
            for lk in res["likelihoods"].values():
                bpp = bpp + torch.log(lk.float()).sum() / (-math.log(2) * num_pixels)
            mse = F.mse_loss(x_hat, x)
            loss = mse + cfg.lmbda * bpp
            ce = torch.zeros((), device=device)
            logits = torch.zeros((), device=device)
            if (cfg.ce_weight > 0 or cfg.kd_weight > 0) and target is not None:
                logits = target(x_hat.clamp(0, 1))  # one pass serves both terms
            if cfg.ce_weight > 0:
                ce = F.cross_entropy(logits, y_train[idx].to(device))
                loss = loss + cfg.ce_weight * ce
            kd = torch.zeros((), device=device)
            if cfg.kd_weight > 0:
                temp = cfg.kd_temperature
                teacher = teacher_logits[idx].to(device).div(temp).log_softmax(dim=1)
                student = F.log_softmax(logits / temp, dim=1)
                kd = F.kl_div(student, teacher, reduction="batchmean", log_target=True)
                loss = loss + cfg.kd_weight * temp * temp * kd
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            if cfg.clip_grad > 0:
                nn.utils.clip_grad_norm_(main_params, cfg.clip_grad)
            opt.step()
            aux_loss = codec.aux_loss()
            aux_opt.zero_grad(set_to_none=True)
            aux_loss.backward()
            aux_opt.step()
            ckpt.step += 1
            b = len(idx)
            seen += b
            for key, value in (
                ("loss", loss),
                ("mse", mse),
                ("bpp", bpp),
                ("aux", aux_loss),
                ("ce", ce),
                ("kd", kd),
            ):
                sums[key] += float(value.detach()) * b
        train_time = time.monotonic() - t0
        record: dict[str, Any] = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"]}
        record.update({f"train_{k}": v / max(1, seen) for k, v in sums.items()})
        record.update(
            {
                f"val_{k}": v
                for k, v in evaluate_codec(
                    codec, target, val_protected, val_labels, device=device
                ).items()
            }
        )
        record["seconds"] = train_time
        ckpt.epoch = epoch + 1
        ckpt.metrics.append(record)
        _save_checkpoint(out, {"codec": codec}, optimizers, ckpt, config)
        if progress:
            print(json.dumps(record), file=sys.stderr, flush=True)
    codec.update(force=True)
    last = ckpt.metrics[-1] if ckpt.metrics else {}
    _write_model(
        out,
        "codec",
        arch="compressai.FactorizedPrior",
        config={"N": cfg.N, "M": cfg.M},
        module=codec,
        meta={
            "parameters": count_parameters(codec),
            "train_config": config,
            "metrics": {k: v for k, v in last.items() if k.startswith("val_")},
            "epochs_run": ckpt.epoch,
            "command": command,
            **dict(provenance or {}),
        },
    )
    return ckpt.metrics


def with_epochs(cfg: Any, epochs: int | None) -> Any:
    """``cfg`` with ``epochs`` replaced when given (dataclasses.replace)."""
    return cfg if epochs is None else replace(cfg, epochs=epochs)
