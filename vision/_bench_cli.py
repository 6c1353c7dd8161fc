"""``pmc2 bench bandwidth`` and ``pmc2 bench speed``.

Heavy imports (torch, the benchmark) happen inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]

_DEFAULT_DATA = "../shared/datasets/cifar10"


def _bundle_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--bundle",
        type=Path,
        default=None,
        help="model bundle directory (default: the packaged one)",
    )
    p.add_argument(
        "--bundle-digest", default=None, help="pin the bundle's manifest digest (hex SHA-384)"
    )
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", type=Path, default=None, help="write the result as JSON")
    p.add_argument("--markdown", type=Path, default=None, help="write a Markdown report")
    p.add_argument("--no-progress", action="store_true")


def register(bench: argparse._SubParsersAction[Any]) -> None:
    """Add the vision benchmarks to ``pmc2 bench``."""
    bw = bench.add_parser(
        "bandwidth",
        help="sizes and accuracy of PNG, JPEG and neural bit-strings (paper Tables 1 and 3)",
    )
    bw.add_argument("--images", type=int, default=5000, help="evaluation images (default 5000)")
    bw.add_argument(
        "--data",
        type=Path,
        default=Path(_DEFAULT_DATA),
        help="CIFAR-10 root: test tar.gz, class folders or cifar-10-batches-py",
    )
    bw.add_argument("--cache", type=Path, default=Path(".cache/cifar10"))
    bw.add_argument("--batch", type=int, default=256, help="images per neural batch stream")
    bw.add_argument("--eval-batch", type=int, default=500, help="images per forward pass")
    bw.add_argument(
        "--s1-quality", type=int, default=None, help="client JPEG quality (default: searched)"
    )
    bw.add_argument("--plot", type=Path, default=None, help="write a PNG plot of size vs accuracy")
    bw.add_argument(
        "--samples",
        type=Path,
        default=None,
        help="write a PNG of the first 8 images: original, protected, decoded bit-string",
    )
    bw.add_argument(
        "--quick",
        action="store_true",
        help="PNG, neural and SSIM only (no JPEG quality searches, no S1)",
    )
    _bundle_args(bw)
    bw.set_defaults(handler=_bandwidth)

    sp = bench.add_parser(
        "speed", help="ms per image: generator, neural encoder/decoder, classifier"
    )
    sp.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 256], help="default: 1 256")
    sp.add_argument("--repeats", type=int, default=None, help="timed runs per measurement")
    _bundle_args(sp)
    sp.set_defaults(handler=_speed)


def _load(args: argparse.Namespace) -> Any:
    import torch

    from vision._bundle import DEFAULT_BUNDLE_DIR, load_bundle

    if args.threads:
        torch.set_num_threads(args.threads)
    return load_bundle(
        args.bundle or DEFAULT_BUNDLE_DIR,
        roles=("target", "generator", "codec"),
        expected_digest=args.bundle_digest,
        device=args.device,
    )


def _write(args: argparse.Namespace, result: dict[str, Any], markdown: str) -> None:
    print(markdown)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown)


def _evaluation_sample(args: argparse.Namespace) -> Any:
    from vision._bench import evaluation_sample
    from vision._data import load_cifar10, split_test

    _, evaluation = split_test(load_cifar10(args.data, "test", args.cache))
    if not 1 <= args.images <= len(evaluation):
        raise ValueError(f"--images must be in 1..{len(evaluation)}")
    return evaluation_sample(evaluation, args.images)


def _bandwidth(args: argparse.Namespace) -> int:
    from vision._bench import BandwidthConfig, bandwidth_markdown, bandwidth_plot, run_bandwidth
    from vision._errors import VisionError

    try:
        config = BandwidthConfig(
            batch=args.batch,
            eval_batch=args.eval_batch,
            s1_quality=args.s1_quality,
            device=args.device,
            progress=not args.no_progress,
            quick=args.quick,
        )
        bundle = _load(args)
        sample = _evaluation_sample(args)
        result = run_bandwidth(bundle, sample.images, sample.labels, config)
    except (VisionError, ValueError, OSError) as exc:
        print(f"pmc2 bench bandwidth: {exc}", file=sys.stderr)
        return 1
    _write(args, result, bandwidth_markdown(result))
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        bandwidth_plot(result, args.plot)
    if args.samples:
        from vision._bench import sample_grid

        args.samples.parent.mkdir(parents=True, exist_ok=True)
        sample_grid(bundle, sample.images, sample.labels, args.samples)
    return 0


def _speed(args: argparse.Namespace) -> int:
    from vision._bench import run_speed, speed_markdown
    from vision._errors import VisionError

    try:
        if any(b < 1 for b in args.batch_sizes):
            raise ValueError("batch sizes must be positive")
        bundle = _load(args)
        result = run_speed(
            bundle,
            args.batch_sizes,
            device=args.device,
            repeats=args.repeats,
            progress=not args.no_progress,
        )
    except (VisionError, ValueError, OSError) as exc:
        print(f"pmc2 bench speed: {exc}", file=sys.stderr)
        return 1
    _write(args, result, speed_markdown(result))
    return 0
