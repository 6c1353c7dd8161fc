"""Evaluate trained networks on the evaluation half and assemble them into a model bundle.

The figures are those the default bundle must reach (issue: clean target accuracy,
protected-image accuracy on lossless 8-bit images, mean SSIM between original and
protected image, neural bit-string accuracy and size, single strings and batch streams).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vision._data import CifarArrays
from vision._train import (
    _batches,
    _progress,
    _ssim_per_image,
    _to_float,
    quantize,
)

__all__ = ["assemble_bundle", "evaluate_pipeline"]


@torch.no_grad()
def evaluate_pipeline(
    data: CifarArrays,
    *,
    target: nn.Module,
    generator: nn.Module | None = None,
    codec: Any = None,
    batch: int = 256,
    device: torch.device | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Accuracy (no test-time augmentation) and sizes on ``data``, as the service runs it.

    ``clean``: target on the original images. ``protected``: target on the generator's
    output rounded to 8 bits (what a lossless PNG carries) and mean SSIM to the original.
    ``neural`` / ``neural_batched``: the protected image through the real entropy coder,
    one string per image and one stream per ``batch`` images (mean bytes per image).
    """
    from vision._codec import decode_batch, decode_single, encode_batch, encode_single

    device = device or torch.device("cpu")
    target = target.to(device).eval()
    n = len(data)
    counts = {"clean": 0, "protected": 0, "neural": 0, "neural_batched": 0}
    ssim_sum, abs_ssim_sum, single_bytes, batch_bytes = 0.0, 0.0, 0, 0
    t0 = time.monotonic()
    for idx in _progress(_batches(n, batch, None, drop_last=False), "evaluate", progress):
        x = _to_float(data.images[idx.numpy()]).to(device)
        y = torch.from_numpy(data.labels[idx.numpy()]).to(device)

        def hits(images: torch.Tensor, y: torch.Tensor = y) -> int:
            return int((target(images.to(device)).argmax(1) == y).sum())

        counts["clean"] += hits(x)
        if generator is None:
            continue
        xp = quantize(generator.to(device).eval()(x))
        counts["protected"] += hits(xp)
        per_image = _ssim_per_image(x, xp)
        ssim_sum += float(per_image.sum())
        abs_ssim_sum += float(per_image.abs().sum())
        if codec is None:
            continue
        strings = encode_single(codec, xp)
        single_bytes += sum(len(s) for s in strings)
        counts["neural"] += hits(quantize(decode_single(codec, strings)))
        stream = encode_batch(codec, xp)
        batch_bytes += len(stream)
        counts["neural_batched"] += hits(quantize(decode_batch(codec, stream)))
    result: dict[str, Any] = {"images": n, "clean": {"accuracy": counts["clean"] / n}}
    if generator is not None:
        result["protected"] = {
            "accuracy": counts["protected"] / n,
            "ssim": ssim_sum / n,
            "abs_ssim": abs_ssim_sum / n,
        }
    if codec is not None:
        result["neural"] = {"bytes": single_bytes / n, "accuracy": counts["neural"] / n}
        result["neural_batched"] = {
            "batch": batch,
            "bytes_per_image": batch_bytes / n,
            "accuracy": counts["neural_batched"] / n,
        }
    result["seconds"] = time.monotonic() - t0
    return result


def _training_summary(meta: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "arch": meta.get("arch"),
        "config": meta.get("config"),
        "epochs_run": meta.get("epochs_run"),
        "train_config": meta.get("train_config"),
        "metrics": meta.get("metrics"),
        "command": meta.get("command"),
    }


def assemble_bundle(
    out: Path,
    dirs: Mapping[str, Path],
    evaluation: CifarArrays,
    *,
    commands: Sequence[str] = (),
    generator_warm_start: Sequence[str] = (),
    codec_warm_start: Sequence[str] = (),
    notes: Sequence[str] = (),
    device: torch.device | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Load the trained networks of ``dirs`` (role → training output directory), evaluate
    them on ``evaluation`` and write them as a bundle (manifest with configs, digests,
    the training commands and the metrics). ``generator_warm_start``: the commands that
    produced the weights the generator run started from (``--init``), recorded before it;
    ``codec_warm_start`` likewise for the codec.
    Returns the metrics written."""
    from vision._bundle import write_bundle
    from vision._train import (
        _read_json,
        load_classifier_dir,
        load_codec_dir,
        load_generator_dir,
    )

    networks: dict[str, nn.Module] = {}
    training: dict[str, Any] = {}
    train_seconds: dict[str, float] = {}
    for role, directory in dirs.items():
        if role in ("target", "aux"):
            networks[role], meta = load_classifier_dir(directory)
        elif role == "generator":
            networks[role], meta = load_generator_dir(directory)
        elif role == "codec":
            networks[role], meta = load_codec_dir(directory)
        else:
            raise ValueError(f"unknown role {role!r}")
        training[role] = _training_summary(meta)
        history = _read_json(directory / "metrics.json")
        train_seconds[role] = round(sum(float(m.get("seconds", 0.0)) for m in history), 1)
    figures = evaluate_pipeline(
        evaluation,
        target=networks["target"],
        generator=networks.get("generator"),
        codec=networks.get("codec"),
        device=device,
        progress=progress,
    )
    train_commands: list[str] = []
    for role in ("target", "aux", "generator", "codec"):
        if role == "generator":
            train_commands += generator_warm_start  # what produced the generator's --init
        if role == "codec":
            train_commands += codec_warm_start  # what produced the codec's --init
        command = training[role]["command"] if role in training else ""
        # a command already listed (e.g. a codec the generator trained against, listed
        # among the generator's warm-start commands) is not repeated
        if command and command not in train_commands:
            train_commands.append(command)
    metrics = {
        "evaluation": figures,
        "evaluation_split": "CIFAR-10 test set, evaluation half (vision._data.split_test)",
        "training": training,
        "training_seconds": train_seconds,
        "notes": list(notes),
    }
    for module in networks.values():
        module.to("cpu")
    write_bundle(out, networks, commands=[*train_commands, *commands], metrics=metrics)
    return metrics
