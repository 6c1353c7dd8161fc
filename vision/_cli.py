"""``pmc2 train classifier|generator|codec``; the vision benchmarks come from ``_bench_cli``.

Heavy imports (torch, the trainers) happen inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from vision import _bench_cli

__all__ = ["register"]

_DEFAULT_DATA = "../shared/datasets/cifar10"


def _common(p: argparse.ArgumentParser, default_out: str) -> None:
    p.add_argument(
        "--data",
        type=Path,
        default=Path(_DEFAULT_DATA),
        help="CIFAR-10 root: train/test tar.gz, class folders or cifar-10-batches-py",
    )
    p.add_argument(
        "--cache",
        type=Path,
        default=Path(".cache/cifar10"),
        help="where decoded arrays are cached (.npy)",
    )
    p.add_argument("--out", type=Path, default=Path(default_out), help="output directory")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if present)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument(
        "--bf16",
        dest="bf16",
        action="store_true",
        default=None,
        help="bfloat16 autocast (default: when the hardware has it)",
    )
    p.add_argument("--no-bf16", dest="bf16", action="store_false")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--max-train", type=int, default=None, help=argparse.SUPPRESS)


def register(sub: argparse._SubParsersAction[Any], bench: argparse._SubParsersAction[Any]) -> None:
    """Add the vision subcommands to the ``pmc2`` parser."""
    train = sub.add_parser("train", help="train classifiers, the generator, the codec")
    tsub = train.add_subparsers(dest="train", metavar="WHAT")

    clf = tsub.add_parser("classifier", help="train a target or auxiliary classifier")
    clf.add_argument(
        "--arch", default="airbench", help="airbench, vgg13_bn, resnet18, densenet121, googlenet"
    )
    clf.add_argument(
        "--config",
        default=None,
        help="architecture config as JSON, e.g. '{\"widths\": [64, 256, 256]}'",
    )
    clf.add_argument(
        "--width",
        type=float,
        default=None,
        help="shortcut: width (resnet18: first-stage channels; vgg13_bn: multiplier)",
    )
    clf.add_argument("--label-smoothing", type=float, default=None)
    clf.add_argument("--weight-decay", type=float, default=None)
    _common(clf, "runs/classifier")
    clf.set_defaults(handler=_train_classifier)

    gen = tsub.add_parser("generator", help="train the U-Net perturbation generator")
    gen.add_argument("--target", type=Path, default=None, help="trained target classifier dir")
    gen.add_argument("--aux", type=Path, default=None, help="trained auxiliary classifier dir")
    gen.add_argument(
        "--pair",
        choices=["vgg13", "resnet18", "densenet121", "googlenet"],
        default=None,
        help="the paper's (target, aux) pair at full size (GPU-sized): target and aux "
        "default to runs/<arch>, trained first by `pmc2 train classifier --arch <arch>`",
    )
    gen.add_argument("--width", type=int, default=None, help="U-Net base width (paper: 32)")
    gen.add_argument("--ssim-weight", type=float, default=None)
    gen.add_argument("--aux-weight", type=float, default=None)
    gen.add_argument(
        "--aux-cap",
        type=float,
        default=None,
        help="cap the auxiliary term: - min(CE(aux(x')), CAP) (default: uncapped)",
    )
    gen.add_argument(
        "--ssim-abs",
        action="store_true",
        default=None,
        help="penalise |SSIM| per image (a negative SSIM is a photographic negative)",
    )
    gen.add_argument(
        "--codec",
        type=Path,
        default=None,
        help="trained codec dir, frozen, for the codec-in-the-loop terms",
    )
    gen.add_argument(
        "--codec-weight",
        type=float,
        default=None,
        help="+ weight * CE(target(codec(x')), y) (needs --codec)",
    )
    gen.add_argument(
        "--codec-rate-weight",
        type=float,
        default=None,
        help="+ weight * bits per pixel of x' under the codec (needs --codec)",
    )
    gen.add_argument(
        "--init", default=None, help="warm start from generator weights (a .safetensors file)"
    )
    gen.add_argument("--eval-images", type=int, default=None)
    _common(gen, "runs/generator")
    gen.set_defaults(handler=_train_generator)

    cod = tsub.add_parser("codec", help="train the FactorizedPrior codec on protected images")
    cod.add_argument("--generator", type=Path, required=True, help="trained generator dir")
    cod.add_argument(
        "--target",
        type=Path,
        default=None,
        help="target classifier dir (default: the generator's target)",
    )
    cod.add_argument(
        "--lambda",
        dest="lmbda",
        type=float,
        default=None,
        help="rate weight: loss = MSE + lambda * bpp",
    )
    cod.add_argument(
        "--ce-weight", type=float, default=None, help="optional: + weight * CE(target(decoded), y)"
    )
    cod.add_argument(
        "--kd-weight",
        type=float,
        default=None,
        help="optional: + weight * T^2 * KL(target(protected) || target(decoded)) (distillation)",
    )
    cod.add_argument(
        "--kd-temperature", type=float, default=None, help="distillation temperature T"
    )
    cod.add_argument(
        "--init", default=None, help="warm start from codec weights (a .safetensors file)"
    )
    cod.add_argument("--N", type=int, default=None)
    cod.add_argument("--M", type=int, default=None)
    cod.add_argument("--eval-images", type=int, default=None)
    _common(cod, "runs/codec")
    cod.set_defaults(handler=_train_codec)

    bun = tsub.add_parser("bundle", help="evaluate trained networks and write a model bundle")
    for role in ("target", "aux", "generator", "codec"):
        bun.add_argument(f"--{role}", type=Path, default=None, help=f"trained {role} dir")
    bun.add_argument("--out", type=Path, default=Path("vision/bundle"), help="bundle directory")
    bun.add_argument("--data", type=Path, default=Path(_DEFAULT_DATA))
    bun.add_argument("--cache", type=Path, default=Path(".cache/cifar10"))
    bun.add_argument(
        "--eval-images",
        type=int,
        default=None,
        help="evaluate on the first N of the evaluation half (default: all 5000)",
    )
    bun.add_argument("--note", action="append", default=[], help="a note for the manifest")
    bun.add_argument(
        "--generator-warm-start",
        action="append",
        default=[],
        metavar="CMD",
        help="command that produced the generator's --init weights (recorded)",
    )
    bun.add_argument(
        "--codec-warm-start",
        action="append",
        default=[],
        metavar="CMD",
        help="command that produced the codec's --init weights (recorded)",
    )
    bun.add_argument("--device", default=None)
    bun.add_argument("--threads", type=int, default=None)
    bun.add_argument("--no-progress", action="store_true")
    bun.set_defaults(handler=_train_bundle)

    _bench_cli.register(bench)


def _command() -> str:
    """The command line as typed (``pmc2 ...``), recorded in checkpoints and manifests."""
    program = Path(sys.argv[0]).name if sys.argv else ""
    if program != "pmc2":
        return "pmc2 (called in-process)"
    return shlex.join(["pmc2", *sys.argv[1:]])


def _setup(args: argparse.Namespace) -> Any:
    import torch

    from vision._train import pick_device

    if args.threads:
        torch.set_num_threads(args.threads)
    return pick_device(args.device)


def _load(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    from vision._data import load_cifar10, split_test

    train = load_cifar10(args.data, "train", args.cache)
    val, evaluation = split_test(load_cifar10(args.data, "test", args.cache))
    return train, val, evaluation


def _overrides(args: argparse.Namespace, names: dict[str, str]) -> dict[str, Any]:
    return {
        field: getattr(args, attr)
        for attr, field in names.items()
        if getattr(args, attr, None) is not None
    }


def _train_classifier(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from vision._train import ClassifierTrainConfig, train_classifier

    device = _setup(args)
    arch_config: dict[str, Any] = json.loads(args.config) if args.config else {}
    if args.width is not None:
        arch_config["width"] = int(args.width) if args.arch == "resnet18" else args.width
    cfg = replace(
        ClassifierTrainConfig(
            arch=args.arch, arch_config=arch_config, seed=args.seed, bf16=args.bf16
        ),
        **_overrides(
            args,
            {
                "epochs": "epochs",
                "batch_size": "batch_size",
                "lr": "lr",
                "label_smoothing": "label_smoothing",
                "weight_decay": "weight_decay",
                "max_train": "max_train",
            },
        ),
    )
    train, val, evaluation = _load(args)
    metrics = train_classifier(
        cfg,
        train,
        val,
        args.out,
        resume=args.resume,
        device=device,
        progress=not args.no_progress,
        command=_command(),
        evaluation=evaluation,
    )
    print(json.dumps(metrics[-1] if metrics else {}))
    return 0


def _train_generator(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from vision._models import PAPER_PAIRS
    from vision._train import GeneratorTrainConfig, load_classifier_dir, train_generator

    device = _setup(args)
    if args.pair is not None:
        # the paper's pairs at full size: default directories runs/<arch>
        t_arch, a_arch = PAPER_PAIRS[args.pair]
        args.target = args.target or Path("runs") / t_arch
        args.aux = args.aux or Path("runs") / a_arch
        missing = [
            (a, d)
            for a, d in ((t_arch, args.target), (a_arch, args.aux))
            if not (d / "model.json").is_file()
        ]
        if missing:
            for arch, directory in missing:
                print(
                    f"train first: pmc2 train classifier --arch {arch} --out {directory}",
                    file=sys.stderr,
                )
            return 2
    if args.target is None or args.aux is None:
        print("give --target and --aux, or --pair", file=sys.stderr)
        return 2
    target, t_meta = load_classifier_dir(args.target)
    aux, a_meta = load_classifier_dir(args.aux)
    if args.pair is not None and (t_meta["arch"], a_meta["arch"]) != PAPER_PAIRS[args.pair]:
        print(
            f"--pair {args.pair} needs (target, aux) = {PAPER_PAIRS[args.pair]}, got "
            f"({t_meta['arch']}, {a_meta['arch']})",
            file=sys.stderr,
        )
        return 2
    cfg = replace(
        GeneratorTrainConfig(seed=args.seed, bf16=args.bf16),
        **_overrides(
            args,
            {
                "epochs": "epochs",
                "batch_size": "batch_size",
                "lr": "lr",
                "width": "base",
                "ssim_weight": "ssim_weight",
                "aux_weight": "aux_weight",
                "aux_cap": "aux_ce_cap",
                "ssim_abs": "ssim_abs",
                "codec_weight": "codec_weight",
                "codec_rate_weight": "codec_rate_weight",
                "init": "init_from",
                "max_train": "max_train",
                "eval_images": "eval_images",
            },
        ),
    )
    codec = None
    if args.codec is not None:
        from vision._train import load_codec_dir

        codec = load_codec_dir(args.codec)[0]
    elif cfg.codec_weight > 0 or cfg.codec_rate_weight > 0:
        print("--codec-weight and --codec-rate-weight need --codec DIR", file=sys.stderr)
        return 2
    train, val, _ = _load(args)
    provenance: dict[str, Any] = {
        "target": {"dir": str(args.target), "arch": t_meta["arch"], "config": t_meta["config"]},
        "aux": {"dir": str(args.aux), "arch": a_meta["arch"], "config": a_meta["config"]},
    }
    if args.codec is not None:
        provenance["codec"] = {"dir": str(args.codec)}
    metrics = train_generator(
        cfg,
        train,
        val,
        args.out,
        target=target,
        aux=aux,
        resume=args.resume,
        device=device,
        progress=not args.no_progress,
        command=_command(),
        provenance=provenance,
        codec=codec,
    )
    print(json.dumps(metrics[-1] if metrics else {}))
    return 0


def _train_codec(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from vision._train import (
        CodecTrainConfig,
        load_classifier_dir,
        load_generator_dir,
        train_codec,
    )

    device = _setup(args)
    generator, g_meta = load_generator_dir(args.generator)
    target_dir = args.target or (Path(g_meta["target"]["dir"]) if "target" in g_meta else None)
    target = load_classifier_dir(target_dir)[0] if target_dir is not None else None
    cfg = replace(
        CodecTrainConfig(seed=args.seed, bf16=bool(args.bf16)),
        **_overrides(
            args,
            {
                "epochs": "epochs",
                "batch_size": "batch_size",
                "lr": "lr",
                "lmbda": "lmbda",
                "ce_weight": "ce_weight",
                "kd_weight": "kd_weight",
                "kd_temperature": "kd_temperature",
                "init": "init_from",
                "N": "N",
                "M": "M",
                "max_train": "max_train",
                "eval_images": "eval_images",
            },
        ),
    )
    train, val, _ = _load(args)
    provenance = {
        "generator": {"dir": str(args.generator)},
        "target": {"dir": str(target_dir) if target_dir else None},
    }
    metrics = train_codec(
        cfg,
        train,
        val,
        args.out,
        generator=generator,
        target=target,
        resume=args.resume,
        device=device,
        progress=not args.no_progress,
        command=_command(),
        provenance=provenance,
    )
    print(json.dumps(metrics[-1] if metrics else {}))
    return 0


def _train_bundle(args: argparse.Namespace) -> int:
    import numpy as np

    from vision._assemble import assemble_bundle
    from vision._data import load_cifar10, split_test

    device = _setup(args)
    dirs = {r: getattr(args, r) for r in ("target", "aux", "generator", "codec")}
    dirs = {r: d for r, d in dirs.items() if d is not None}
    if "target" not in dirs:
        print("--target is required", file=sys.stderr)
        return 2
    _, evaluation = split_test(load_cifar10(args.data, "test", args.cache))
    if args.eval_images is not None:
        evaluation = evaluation.subset(np.arange(min(len(evaluation), args.eval_images)))
    metrics = assemble_bundle(
        args.out,
        dirs,
        evaluation,
        commands=[_command()],
        generator_warm_start=args.generator_warm_start,
        codec_warm_start=args.codec_warm_start,
        notes=args.note,
        device=device,
        progress=not args.no_progress,
    )
    print(json.dumps(metrics["evaluation"], indent=2))
    return 0
