"""Benchmarks: bandwidth and accuracy (the paper's Tables 1 and 3) and speed.

``run_bandwidth`` measures, on a set of images with labels (the evaluation half of the
CIFAR-10 test set in ``pmc2 bench bandwidth``):

* **clean** (original) images: target accuracy; PNG size; JPEG 4:4:4 and 4:2:0 at the
  lowest quality whose accuracy stays within ``tolerance`` (one point) of PNG's;
  the neural codec (single strings);
* **protected** images ``x' = G(x)``: mean SSIM(x, x'); PNG (of ``x'`` rounded to 8
  bits), JPEG 4:4:4 and 4:2:0 as above against the protected PNG accuracy; the neural
  codec as single strings and as batch streams of ``batch`` images;
* **S1**: the client's JPEG 4:4:4 of the original, at the lowest quality for which
  protecting the decoded JPEG keeps protected PNG accuracy within ``tolerance`` (or a
  given quality); the accuracy of ``G(decode(S1))`` as PNG and through the neural codec.

Sizes are mean bytes per image (with the standard deviation, as in the paper's ±).
Accuracies are fractions in ``[0, 1]``. JPEG is Pillow's encoder (libjpeg) with default
Huffman tables; ``subsampling=0`` is 4:4:4 and ``2`` is 4:2:0. The quality search is a
bisection over 1..100 (accuracy is taken as non-decreasing in quality), each tried
quality evaluated once.

``run_speed`` times generator, neural encoder and decoder (single strings and batch
streams) and classifier at the given batch sizes.
"""

from __future__ import annotations

import io
import os
import platform
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import torch
    from torch import nn

    from vision._bundle import Bundle

__all__ = [
    "PAPER",
    "TARGETS",
    "BandwidthConfig",
    "bandwidth_markdown",
    "bandwidth_plot",
    "check_targets",
    "evaluation_sample",
    "run_bandwidth",
    "run_speed",
    "sample_grid",
    "speed_markdown",
]

#: The paper's figures (CIFAR-10, VGG13_bn target; Tables 1-3 and section 4).
PAPER: Mapping[str, Any] = {
    "clean": {
        "accuracy": 0.9424,
        "png": {"bytes": 2662.60, "accuracy": 0.9424},
        "jpeg444": {"bytes": 724.44, "accuracy": 0.9028},
    },
    "protected": {
        "png": {"bytes": 2691.38, "accuracy": 0.9030},
        "jpeg444": {"bytes": 1848.42, "accuracy": 0.9022},
        "jpeg420": {"quality": 89, "bytes": 1212.33, "accuracy": 0.1150},
        "neural": {"bytes": 8.16, "accuracy": 0.9040},
        "ssim": 0.02,
    },
    "s1": {"bytes": 1642.45},
    "speed_ms": {"generator": 2.616, "encoder": 0.550, "decoder": 1.305},
}

#: The issue's acceptance figures for the default bundle (evaluation half).
TARGETS: Mapping[str, float] = {
    "clean_accuracy": 0.88,
    "protected_png_accuracy": 0.85,
    "ssim": 0.05,
    "neural_accuracy_drop": 0.015,
    "neural_bytes": 12.0,
    "neural_batched_bytes": 4.0,
}

_SOURCES = {
    "clean.png": "Table 1, regular",
    "clean.jpeg444": "Table 1, regular, no subsampling",
    "protected.png": "Table 3, VGG13_bn",
    "protected.jpeg444": "Table 3, VGG13_bn",
    "protected.jpeg420": "Section 3.3.1, quality 89",
    "protected.neural": "Table 3, VGG13_bn",
    "s1": "Table 3, VGG13_bn (PNG and neural columns)",
}


@dataclass(frozen=True)
class BandwidthConfig:
    """Parameters of :func:`run_bandwidth`."""

    batch: int = 256
    """Images per batch stream of the neural codec."""
    eval_batch: int = 500
    """Images per forward pass of the networks."""
    tolerance: float = 0.01
    """Accuracy a JPEG (or S1) quality may lose against PNG: one point."""
    s1_quality: int | None = None
    """The client's JPEG quality; ``None`` searches for it."""
    device: str = "cpu"
    progress: bool = True
    quick: bool = False
    """Leave out the JPEG quality searches and S1 (PNG, neural and SSIM only)."""

    def __post_init__(self) -> None:
        if self.batch < 1 or self.eval_batch < 1:
            raise ValueError("batch sizes must be positive")
        if not 0 <= self.tolerance < 1:
            raise ValueError("tolerance must be in [0, 1)")
        if self.s1_quality is not None and not 1 <= self.s1_quality <= 100:
            raise ValueError("JPEG quality must be in 1..100")


def evaluation_sample(images: Any, count: int, seed: int = 0) -> Any:
    """``count`` images of a :class:`~vision._data.CifarArrays` (the evaluation half),
    drawn with a fixed seed and kept in their original order; all of them when
    ``count`` is the whole set. The halves are ordered by class, so a prefix would not do.
    """
    import numpy as np

    n = len(images)
    if not 1 <= count <= n:
        raise ValueError(f"the sample size must be in 1..{n}")
    if count == n:
        return images
    index = np.sort(np.random.default_rng(seed).permutation(n)[:count]).astype(np.int64)
    return images.subset(index)


# --- image helpers ------------------------------------------------------------------


def _png(image: npt.NDArray[np.uint8]) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(image: npt.NDArray[np.uint8], quality: int, subsampling: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, format="JPEG", quality=quality, subsampling=subsampling)
    return buf.getvalue()


def _decode(data: bytes) -> npt.NDArray[np.uint8]:
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _to_tensor(images: npt.NDArray[np.uint8]) -> torch.Tensor:
    import torch

    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)


def _to_uint8(x: torch.Tensor) -> npt.NDArray[np.uint8]:
    """Round ``[0, 1]`` pixels to 8 bits (what a lossless PNG of them holds)."""
    import numpy as np
    import torch

    quantised = x.detach().float().clamp(0, 1).mul(255.0).round().to(torch.uint8)
    out: npt.NDArray[np.uint8] = np.ascontiguousarray(quantised.permute(0, 2, 3, 1).cpu().numpy())
    return out


def _stats(sizes: Sequence[int]) -> dict[str, float]:
    import numpy as np

    arr = np.asarray(sizes, dtype=np.float64)
    return {"bytes": float(arr.mean()), "bytes_std": float(arr.std())}


class _Runner:
    """Forward passes in chunks, with progress bars."""

    def __init__(self, config: BandwidthConfig) -> None:
        self.config = config

    def chunks(self, n: int, size: int, desc: str) -> Iterator[slice]:
        from tqdm import tqdm

        starts = range(0, n, size)
        bar = tqdm(
            starts, desc=desc, unit="batch", leave=False, disable=not self.config.progress or None
        )
        for start in bar:
            yield slice(start, min(start + size, n))

    def apply(self, net: nn.Module, x: torch.Tensor, desc: str) -> torch.Tensor:
        import torch

        outs = []
        with torch.inference_mode():
            for part in self.chunks(len(x), self.config.eval_batch, desc):
                outs.append(net(x[part].to(self.config.device)).float().cpu())
        return torch.cat(outs)

    def accuracy(
        self, target: nn.Module, x: torch.Tensor, labels: torch.Tensor, desc: str
    ) -> float:
        preds = self.apply(target, x, desc).argmax(1)
        return float((preds == labels).float().mean())


def _search_quality(
    evaluate: Callable[[int], float], goal: float
) -> tuple[int, bool, dict[int, float]]:
    """Lowest quality in 1..100 with ``evaluate(q) >= goal`` (bisection); ``(q, met, tried)``."""
    tried: dict[int, float] = {}

    def ok(q: int) -> bool:
        if q not in tried:
            tried[q] = evaluate(q)
        return tried[q] >= goal - 1e-12

    if not ok(100):
        return 100, False, tried
    lo, hi = 1, 100
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi, True, tried


def _jpeg_section(
    runner: _Runner,
    target: nn.Module,
    images: npt.NDArray[np.uint8],
    labels: torch.Tensor,
    *,
    goal: float,
    subsampling: int,
    name: str,
) -> dict[str, Any]:
    import numpy as np

    cache: dict[int, tuple[list[int], float]] = {}

    def evaluate(q: int) -> float:
        blobs = [_jpeg(img, q, subsampling) for img in images]
        decoded = np.stack([_decode(b) for b in blobs])
        acc = runner.accuracy(target, _to_tensor(decoded), labels, f"{name} q={q}")
        cache[q] = ([len(b) for b in blobs], acc)
        return acc

    quality, met, tried = _search_quality(evaluate, goal)
    sizes, acc = cache[quality]
    return {
        "quality": quality,
        **_stats(sizes),
        "accuracy": acc,
        "meets_target": met,
        "target_accuracy": goal,
        "tried": {str(q): tried[q] for q in sorted(tried)},
    }


def _neural_single(
    runner: _Runner,
    bundle: Bundle,
    target: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    name: str,
) -> dict[str, Any]:
    import torch

    from vision._codec import decode_single, encode_single

    codec = bundle.codec
    sizes: list[int] = []
    decoded = []
    for part in runner.chunks(len(x), runner.config.eval_batch, f"{name} neural"):
        strings = encode_single(codec, x[part].to(runner.config.device))
        sizes += [len(s) for s in strings]
        decoded.append(decode_single(codec, strings).float().cpu())
    acc = runner.accuracy(target, torch.cat(decoded), labels, f"{name} neural classify")
    return {**_stats(sizes), "accuracy": acc}


def _neural_batched(
    runner: _Runner, bundle: Bundle, target: nn.Module, x: torch.Tensor, labels: torch.Tensor
) -> dict[str, Any]:
    import torch

    from vision._codec import decode_batch, encode_batch

    codec = bundle.codec
    total = 0
    streams = 0
    decoded = []
    for part in runner.chunks(len(x), runner.config.batch, "protected neural batched"):
        data = encode_batch(codec, x[part].to(runner.config.device))
        total += len(data)
        streams += 1
        decoded.append(decode_batch(codec, data).float().cpu())
    acc = runner.accuracy(target, torch.cat(decoded), labels, "protected batched classify")
    return {
        "batch": runner.config.batch,
        "streams": streams,
        "bytes_per_image": total / len(x),
        "accuracy": acc,
    }


def _ssims(runner: _Runner, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Mean SSIM and mean per-image absolute SSIM (a negative SSIM is a photo negative)."""
    import torch
    from pytorch_msssim import ssim

    values = []
    with torch.inference_mode():
        for part in runner.chunks(len(x), runner.config.eval_batch, "ssim"):
            values.append(ssim(x[part], y[part], data_range=1.0, size_average=False))
    every = torch.cat(values)
    return {"ssim": float(every.mean()), "abs_ssim": float(every.abs().mean())}


def _jpeg_pair(
    runner: _Runner,
    target: nn.Module,
    images: npt.NDArray[np.uint8],
    labels: torch.Tensor,
    *,
    goal: float,
    name: str,
) -> dict[str, Any]:
    return {
        f"jpeg{tag}": _jpeg_section(
            runner,
            target,
            images,
            labels,
            goal=goal,
            subsampling=subsampling,
            name=f"{name} {label}",
        )
        for tag, subsampling, label in (("444", 0, "4:4:4"), ("420", 2, "4:2:0"))
    }


def _s1_section(
    runner: _Runner,
    bundle: Bundle,
    images: npt.NDArray[np.uint8],
    labels: torch.Tensor,
    *,
    goal: float,
    png_bytes: float,
) -> dict[str, Any]:
    """The client's JPEG 4:4:4 of the original (S1), decoded and protected in the enclave."""
    import numpy as np

    config = runner.config
    target, generator = bundle.target, bundle.generator
    cache: dict[int, tuple[list[int], torch.Tensor, float]] = {}

    def evaluate(q: int) -> float:
        blobs = [_jpeg(img, q, 0) for img in images]
        decoded = _to_tensor(np.stack([_decode(b) for b in blobs]))
        protected = runner.apply(generator, decoded, f"S1 q={q} generator")
        acc = runner.accuracy(
            target, _to_tensor(_to_uint8(protected)), labels, f"S1 q={q} classify"
        )
        cache[q] = ([len(b) for b in blobs], protected, acc)
        return acc

    if config.s1_quality is None:
        quality, met, tried = _search_quality(evaluate, goal)
    else:
        quality, tried = config.s1_quality, {config.s1_quality: evaluate(config.s1_quality)}
        met = tried[quality] >= goal - 1e-12
    sizes, protected, acc = cache[quality]
    neural = _neural_single(runner, bundle, target, protected, labels, name="S1")
    return {
        "quality": quality,
        "searched": config.s1_quality is None,
        **_stats(sizes),
        "saving_vs_png": 1.0 - float(np.mean(sizes)) / png_bytes,
        "protected_accuracy": acc,
        "meets_target": met,
        "target_accuracy": goal,
        "neural": {k: neural[k] for k in ("bytes", "bytes_std", "accuracy")},
        "tried": {str(q): tried[q] for q in sorted(tried)},
    }


def run_bandwidth(
    bundle: Bundle,
    images: npt.NDArray[np.uint8],
    labels: npt.NDArray[np.int64],
    config: BandwidthConfig | None = None,
) -> dict[str, Any]:
    """Run the bandwidth benchmark; returns the JSON-ready result (see the module doc).

    ``images`` are ``uint8`` ``N x H x W x 3``; ``bundle`` must hold target, generator
    and codec. With ``config.quick`` the JPEG and S1 sections are left out.
    """
    import numpy as np
    import torch

    config = config or BandwidthConfig()
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError("images must be uint8 N x H x W x 3")
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError("need one label per image and at least one image")
    started = time.perf_counter()
    runner = _Runner(config)
    target = bundle.target.to(config.device).eval()
    generator = bundle.generator.to(config.device).eval()
    bundle.codec.to(config.device)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    x = _to_tensor(images)

    clean_acc = runner.accuracy(target, x, y, "clean classify")
    clean: dict[str, Any] = {
        "accuracy": clean_acc,
        "png": {**_stats([len(_png(img)) for img in images]), "accuracy": clean_acc},
    }
    if not config.quick:
        goal = clean_acc - config.tolerance
        clean |= _jpeg_pair(runner, target, images, y, goal=goal, name="clean")
    clean["neural"] = _neural_single(runner, bundle, target, x, y, name="clean")

    xp = runner.apply(generator, x, "generator")
    xp_u8 = _to_uint8(xp)
    png_acc = runner.accuracy(target, _to_tensor(xp_u8), y, "protected classify")
    protected: dict[str, Any] = {
        **_ssims(runner, x, xp),
        "accuracy_float": runner.accuracy(target, xp, y, "protected float classify"),
        "png": {**_stats([len(_png(img)) for img in xp_u8]), "accuracy": png_acc},
    }
    goal = png_acc - config.tolerance
    if not config.quick:
        protected |= _jpeg_pair(runner, target, xp_u8, y, goal=goal, name="protected")
    protected["neural"] = _neural_single(runner, bundle, target, xp, y, name="protected")
    protected["neural_batched"] = _neural_batched(runner, bundle, target, xp, y)

    result: dict[str, Any] = {
        "images": len(images),
        "quick": config.quick,
        "bundle_digest": bundle.digest,
        "device": config.device,
        "tolerance": config.tolerance,
        "clean": clean,
        "protected": protected,
    }
    if not config.quick:
        result["s1"] = _s1_section(
            runner, bundle, images, y, goal=goal, png_bytes=clean["png"]["bytes"]
        )
    result["targets"] = check_targets(result)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["paper"] = PAPER
    return result


# --- reports ------------------------------------------------------------------------


def _fmt_bytes(value: Any) -> str:
    return "—" if value is None else f"{value:,.2f}"


def _fmt_acc(value: Any) -> str:
    return "—" if value is None else f"{100 * value:.2f} %"


def _get(tree: Mapping[str, Any], path: str) -> Any:
    node: Any = tree
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def _rows(result: Mapping[str, Any]) -> list[tuple[str, str, Any, Any, Any, Any, str]]:
    """(image, encoding, bytes, accuracy, paper bytes, paper accuracy, paper source);
    sections a quick run left out are skipped."""
    paper = result.get("paper", PAPER)
    rows: list[tuple[str, str, Any, Any, Any, Any, str]] = []
    for kind in ("clean", "protected"):
        label = "original" if kind == "clean" else "protected"
        sec = result[kind]
        for enc, name in (("png", "PNG"), ("jpeg444", "JPEG 4:4:4"), ("jpeg420", "JPEG 4:2:0")):
            if enc not in sec:
                continue
            q = _get(sec, f"{enc}.quality")
            mark = "" if _get(sec, f"{enc}.meets_target") in (None, True) else ", target missed"
            rows.append(
                (
                    label,
                    name + (f" (q={q}{mark})" if q is not None else ""),
                    _get(sec, f"{enc}.bytes"),
                    _get(sec, f"{enc}.accuracy"),
                    _get(paper, f"{kind}.{enc}.bytes"),
                    _get(paper, f"{kind}.{enc}.accuracy"),
                    _SOURCES.get(f"{kind}.{enc}", ""),
                )
            )
        rows.append(
            (
                label,
                "neural, one string per image",
                _get(sec, "neural.bytes"),
                _get(sec, "neural.accuracy"),
                _get(paper, f"{kind}.neural.bytes"),
                _get(paper, f"{kind}.neural.accuracy"),
                _SOURCES.get(f"{kind}.neural", ""),
            )
        )
    batched = result["protected"]["neural_batched"]
    rows.append(
        (
            "protected",
            f"neural, one stream per {batched['batch']} images",
            batched["bytes_per_image"],
            batched["accuracy"],
            None,
            None,
            "",
        )
    )
    s1 = result.get("s1")
    if s1 is not None:
        rows.append(
            (
                "S1 (client JPEG 4:4:4 of the original)",
                f"q={s1['quality']}; accuracy of G(S1) as PNG",
                s1["bytes"],
                s1["protected_accuracy"],
                _get(paper, "s1.bytes"),
                None,
                _SOURCES["s1"],
            )
        )
        rows.append(
            (
                "S1 then protected",
                "neural, one string per image",
                s1["neural"]["bytes"],
                s1["neural"]["accuracy"],
                _get(paper, "protected.neural.bytes"),
                _get(paper, "protected.neural.accuracy"),
                _SOURCES["protected.neural"],
            )
        )
    return rows


def check_targets(result: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The issue's acceptance figures for the default bundle, checked on ``result``.

    Each entry: ``value``, ``limit``, ``ok``. Neural sizes are per image; the batched
    limit applies to streams of 256 images.
    """
    prot = result["protected"]
    png_acc = prot["png"]["accuracy"]
    batched = prot["neural_batched"]
    checks = {
        "clean accuracy >= 88 %": (result["clean"]["accuracy"], TARGETS["clean_accuracy"], True),
        "protected PNG accuracy >= 85 %": (png_acc, TARGETS["protected_png_accuracy"], True),
        "mean SSIM <= 0.05": (prot["ssim"], TARGETS["ssim"], False),
        "neural accuracy >= PNG - 1.5 points": (
            prot["neural"]["accuracy"],
            png_acc - TARGETS["neural_accuracy_drop"],
            True,
        ),
        "neural single <= 12 B/image": (prot["neural"]["bytes"], TARGETS["neural_bytes"], False),
        f"neural batched ({batched['batch']}) <= 4 B/image": (
            batched["bytes_per_image"],
            TARGETS["neural_batched_bytes"],
            False,
        ),
    }
    return {
        name: {"value": value, "limit": limit, "ok": value >= limit if at_least else value <= limit}
        for name, (value, limit, at_least) in checks.items()
    }


def bandwidth_markdown(result: Mapping[str, Any]) -> str:
    """A Markdown report of :func:`run_bandwidth`'s result beside the paper's figures."""
    lines = [
        f"# Bandwidth and accuracy ({result['images']} evaluation images)",
        "",
        f"Bundle manifest digest `{result['bundle_digest']}`; device {result['device']}; "
        f"{result['seconds']} s. Sizes are mean bytes per image; JPEG quality is the lowest "
        f"keeping accuracy within {100 * result['tolerance']:.0f} point of PNG.",
        "",
        "| image | encoding | bytes | accuracy | paper bytes | paper accuracy | paper source |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for image, enc, b, a, pb, pa, src in _rows(result):
        lines.append(
            f"| {image} | {enc} | {_fmt_bytes(b)} | {_fmt_acc(a)} | "
            f"{_fmt_bytes(pb)} | {_fmt_acc(pa)} | {src} |"
        )
    prot, clean, s1 = result["protected"], result["clean"], result.get("s1")
    lines += [
        "",
        f"- clean target accuracy: {_fmt_acc(clean['accuracy'])} (paper, Table 1: 94.24 %)",
        f"- mean SSIM(original, protected): {prot['ssim']:.4f} (paper: most below 0.02); "
        f"mean |SSIM| per image: {prot['abs_ssim']:.4f}",
        f"- protected accuracy before 8-bit rounding: {_fmt_acc(prot['accuracy_float'])}",
    ]
    if s1 is not None:
        lines.append(
            f"- S1 is {100 * s1['saving_vs_png']:.1f} % smaller than the original's PNG "
            "(paper: about 40 %)"
        )
    lines += ["", "Acceptance figures for the default bundle (issue 3):", ""]
    for name, check in check_targets(result).items():
        value, limit = check["value"], check["limit"]
        shown = f"{value:.4f} (limit {limit:.4f})"
        lines.append(f"- {'met' if check['ok'] else 'NOT met'}: {name}: {shown}")
    lines.append("")
    return "\n".join(lines)


def bandwidth_plot(result: Mapping[str, Any], path: os.PathLike[str] | str) -> None:
    """Write a PNG scatter plot of bytes per image (log scale) against accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=120)
    colours = {"original": "tab:blue", "protected": "tab:red"}
    for image, enc, b, a, pb, pa, _ in _rows(result):
        colour = colours.get(image, "tab:green")
        short = enc.split(";")[0].replace("one string per image", "single").replace("neural, ", "")
        if b is not None and a is not None and b > 0:
            ax.scatter([b], [100 * a], color=colour, marker="o", zorder=3)
            ax.annotate(short, (b, 100 * a), fontsize=6, xytext=(4, 3), textcoords="offset points")
        if pb is not None and pa is not None:
            ax.scatter([pb], [100 * pa], facecolors="none", edgecolors=colour, marker="s")
    handles = [
        Line2D([], [], color="tab:blue", marker="o", linestyle="", label="original"),
        Line2D([], [], color="tab:red", marker="o", linestyle="", label="protected"),
        Line2D([], [], color="tab:green", marker="o", linestyle="", label="S1 (client JPEG)"),
        Line2D(
            [], [], color="grey", marker="s", markerfacecolor="none", linestyle="", label="paper"
        ),
    ]
    ax.legend(handles=handles, loc="best", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("bytes per image (log scale)")
    ax.set_ylabel("target accuracy (%)")
    ax.set_title(f"Size against accuracy ({result['images']} evaluation images)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.fspath(path))
    plt.close(fig)


def sample_grid(
    bundle: Bundle,
    images: npt.NDArray[np.uint8],
    labels: npt.NDArray[np.int64],
    path: os.PathLike[str] | str,
    *,
    count: int = 8,
) -> None:
    """Write a PNG of ``count`` images: original, protected (what PNG would carry) and
    what the cloud decodes from each one's single bit-string, with the target's labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from vision._codec import decode_single, encode_single
    from vision._data import CIFAR10_CLASSES

    count = min(count, len(images))
    if count < 1:
        raise ValueError("no images to show")
    device = next(bundle.generator.parameters()).device
    x = _to_tensor(images[:count]).to(device)
    bundle.codec.to(device)
    bundle.target.to(device)
    with torch.inference_mode():
        xp = torch.round(bundle.generator.eval()(x).clamp(0, 1) * 255.0) / 255.0
        strings = encode_single(bundle.codec, xp)
        xd = torch.round(decode_single(bundle.codec, strings).clamp(0, 1) * 255.0) / 255.0
        rows = [("original", x), ("protected", xp), ("bit-string", xd)]
        predictions = [bundle.target.eval()(r).argmax(1).tolist() for _, r in rows]
    fig, axes = plt.subplots(3, count, figsize=(1.3 * count, 4.6), dpi=120, squeeze=False)
    for r, (name, batch) in enumerate(rows):
        for c in range(count):
            ax = axes[r][c]
            ax.imshow(batch[c].permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            caption = CIFAR10_CLASSES[predictions[r][c]]
            if name == "bit-string":
                caption += f"\n{len(strings[c])} B"
            ax.set_xlabel(caption, fontsize=7)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    truth = ", ".join(CIFAR10_CLASSES[int(v)] for v in labels[:count])
    fig.suptitle(f"target's labels under each image; true: {truth}", fontsize=7)
    fig.tight_layout()
    fig.savefig(os.fspath(path))
    plt.close(fig)


# --- speed --------------------------------------------------------------------------


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _time(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``fn`` over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def run_speed(
    bundle: Bundle,
    batch_sizes: Sequence[int] = (1, 256),
    *,
    device: str = "cpu",
    repeats: int | None = None,
    image_side: int = 32,
    progress: bool = True,
) -> dict[str, Any]:
    """Milliseconds per image for generator, neural encoder/decoder and classifier.

    Inputs are uniform random images; the codec codes the generator's output. For each
    batch size ``b``: ``generator``, ``classifier`` (forward passes of ``b`` images),
    ``encoder`` / ``decoder`` (``b`` single strings: analysis transform, rANS, and back),
    and for ``b > 1`` ``encoder_stream`` / ``decoder_stream`` (one batch stream).
    """
    import torch
    from tqdm import tqdm

    from vision._codec import decode_batch, decode_single, encode_batch, encode_single

    target = bundle.target.to(device).eval()
    generator = bundle.generator.to(device).eval()
    codec = bundle.codec.to(device)
    results: dict[str, Any] = {}
    gen = torch.Generator().manual_seed(0)
    sizes = list(batch_sizes)
    for b in tqdm(sizes, desc="speed", unit="batch size", disable=not progress or None):
        reps = repeats if repeats is not None else (20 if b == 1 else 3)
        x = torch.rand(b, 3, image_side, image_side, generator=gen).to(device)
        with torch.inference_mode():
            xp = generator(x)
        strings = encode_single(codec, xp)
        stream = encode_batch(codec, xp)

        def run_gen(x: torch.Tensor = x) -> object:
            with torch.inference_mode():
                return generator(x)

        def run_clf(xp: torch.Tensor = xp) -> object:
            with torch.inference_mode():
                return target(xp)

        timings = {
            "generator": _time(run_gen, reps),
            "encoder": _time(partial(encode_single, codec, xp), reps),
            "decoder": _time(partial(decode_single, codec, strings), reps),
            "classifier": _time(run_clf, reps),
        }
        if b > 1:
            timings["encoder_stream"] = _time(partial(encode_batch, codec, xp), reps)
            timings["decoder_stream"] = _time(partial(decode_batch, codec, stream), reps)
        results[str(b)] = {name: 1000.0 * t / b for name, t in timings.items()}
    return {
        "device": device,
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "bundle_digest": bundle.digest,
        "image_side": image_side,
        "ms_per_image": results,
        "paper_ms_per_image": dict(PAPER["speed_ms"]),
        "paper_setup": "AMD EPYC 7443P, 24 cores, inside an SEV-SNP container; generator at "
        "batch 256",
    }


def speed_markdown(result: Mapping[str, Any]) -> str:
    """A Markdown table of :func:`run_speed`'s result beside the paper's figures."""
    sizes = list(result["ms_per_image"])
    paper = result["paper_ms_per_image"]
    head = " | ".join(f"batch {b} (ms/img)" for b in sizes)
    lines = [
        f"# Speed ({result['cpu']}, {result['torch_threads']} torch threads, {result['device']})",
        "",
        f"| stage | {head} | paper (ms/img) |",
        "|---|" + "---:|" * len(sizes) + "---:|",
    ]
    names = ("generator", "encoder", "encoder_stream", "decoder", "decoder_stream", "classifier")
    for name in names:
        cells = []
        for b in sizes:
            v = result["ms_per_image"][b].get(name)
            cells.append("—" if v is None else f"{v:.3f}")
        ref = paper.get(name)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {'—' if ref is None else ref} |")
    lines += ["", f"Paper: {result['paper_setup']}.", ""]
    return "\n".join(lines)
