"""Tiny training runs (seconds): the loss improves, checkpoints resume exactly."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from vision._data import CifarArrays
from vision._train import (
    ClassifierTrainConfig,
    CodecTrainConfig,
    GeneratorTrainConfig,
    TrainError,
    augment,
    load_classifier_dir,
    load_codec_dir,
    load_generator_dir,
    train_classifier,
    train_codec,
    train_generator,
)

CPU = torch.device("cpu")
torch.set_num_threads(1)  # tiny networks: one thread is fastest and spares shared cores


def _toy(n: int, seed: int) -> CifarArrays:
    """Learnable toy data: each class has its own mean colour, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.int64)
    base = np.stack([np.full((32, 32, 3), c * 25, np.float64) for c in range(10)])
    base[..., 1] = 255 - base[..., 1]
    noise = rng.normal(0, 20, size=(n, 32, 32, 3))
    images = np.clip(base[labels] + noise, 0, 255).astype(np.uint8)
    return CifarArrays(images, labels)


TRAIN, VAL = _toy(192, 0), _toy(32, 1)
TINY_CLF = ClassifierTrainConfig(
    arch="airbench",
    arch_config={"widths": [8, 16, 16]},
    epochs=3,
    batch_size=48,
    lr=0.05,
    warmup_epochs=0.5,
    bf16=False,
    channels_last=False,
)


def _train_clf(out: Path, cfg: ClassifierTrainConfig = TINY_CLF, **kw: Any) -> list[dict[str, Any]]:
    return train_classifier(cfg, TRAIN, VAL, out, device=CPU, progress=False, **kw)


def test_augment_keeps_shape_and_content() -> None:
    x = torch.rand(5, 3, 32, 32)
    y = augment(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    assert not torch.equal(x, y)
    flipped = augment(x, torch.Generator().manual_seed(0), pad=0)
    for a, b in zip(x, flipped, strict=True):
        assert torch.equal(a, b) or torch.equal(a.flip(2), b)


def test_classifier_improves_and_writes_model(tmp_path: Path) -> None:
    metrics = _train_clf(tmp_path / "c", evaluation=VAL, command="pmc2 train classifier")
    assert len(metrics) == 3
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    assert json.loads((tmp_path / "c" / "metrics.json").read_text()) == metrics
    model, meta = load_classifier_dir(tmp_path / "c")
    assert meta["arch"] == "airbench" and meta["config"]["widths"] == [8, 16, 16]
    assert meta["command"] == "pmc2 train classifier"
    assert "eval_accuracy" in meta["metrics"]
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    cfg = replace(TINY_CLF, epochs=2)
    _train_clf(tmp_path / "full", cfg)
    _train_clf(tmp_path / "part", cfg, stop_after=1)  # "interrupted" after one epoch
    resumed = _train_clf(tmp_path / "part", cfg, resume=True)
    assert [m["epoch"] for m in resumed] == [1, 2]
    a, _ = load_classifier_dir(tmp_path / "full")
    b, _ = load_classifier_dir(tmp_path / "part")
    for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(ta, tb, msg=name)


def test_checkpoint_guards(tmp_path: Path) -> None:
    cfg = replace(TINY_CLF, epochs=1)
    _train_clf(tmp_path / "r", cfg)
    with pytest.raises(TrainError, match="already holds a checkpoint"):
        _train_clf(tmp_path / "r", cfg)
    with pytest.raises(TrainError, match="different configuration"):
        _train_clf(tmp_path / "r", replace(cfg, lr=0.3), resume=True)
    # no pickle anywhere: the checkpoint is safetensors + JSON only
    names = sorted(p.name for p in (tmp_path / "r" / "checkpoint").iterdir())
    assert names == ["model.safetensors", "opt-model.safetensors", "state.json"]


def _tiny_classifiers(tmp_path: Path) -> tuple[Path, Path]:
    target, aux = tmp_path / "target", tmp_path / "aux"
    _train_clf(target, replace(TINY_CLF, epochs=1))
    _train_clf(aux, replace(TINY_CLF, epochs=1, seed=1, arch="resnet18", arch_config={"width": 4}))
    return target, aux


def test_generator_improves_and_resumes(tmp_path: Path) -> None:
    target_dir, aux_dir = _tiny_classifiers(tmp_path)
    target, _ = load_classifier_dir(target_dir)
    aux, _ = load_classifier_dir(aux_dir)
    cfg = GeneratorTrainConfig(base=4, epochs=3, batch_size=64, lr=5e-3, bf16=False, aux_ce_cap=3.0)
    out = tmp_path / "gen"
    run = train_generator(
        cfg, TRAIN, VAL, out, target=target, aux=aux, device=CPU, progress=False, stop_after=2
    )
    metrics = train_generator(
        cfg,
        TRAIN,
        VAL,
        out,
        target=target,
        aux=aux,
        device=CPU,
        progress=False,
        resume=True,
        provenance={"target": {"dir": "t"}},
    )
    assert metrics[:2] == run
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    assert {"val_protected_accuracy", "val_ssim", "val_aux_protected_accuracy"} <= set(metrics[-1])
    g, meta = load_generator_dir(out)
    assert meta["config"] == {"base": 4, "channels": 3} and meta["target"] == {"dir": "t"}
    # frozen classifiers stay untouched
    t2, _ = load_classifier_dir(target_dir)
    for a, b in zip(target.state_dict().values(), t2.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert g(x).shape == x.shape


def test_generator_abs_ssim_term(tmp_path: Path) -> None:
    """With ssim_abs the SSIM term is the mean per-image |SSIM|; validation reports both."""
    from vision._train import _ssim_per_image, _to_float, quantize

    target_dir, aux_dir = _tiny_classifiers(tmp_path)
    target, _ = load_classifier_dir(target_dir)
    aux, _ = load_classifier_dir(aux_dir)
    cfg = GeneratorTrainConfig(
        base=4, epochs=1, batch_size=64, bf16=False, ssim_weight=2.0, ssim_abs=True
    )
    metrics = train_generator(
        cfg, TRAIN, VAL, tmp_path / "g", target=target, aux=aux, device=CPU, progress=False
    )
    record = metrics[-1]
    assert record["val_abs_ssim"] >= abs(record["val_ssim"])
    assert record["train_ssim"] >= 0  # the trained term is an absolute value
    g, _ = load_generator_dir(tmp_path / "g")
    x = _to_float(VAL.images)
    with torch.no_grad():
        per_image = _ssim_per_image(x, quantize(g.eval()(x)))
    assert record["val_abs_ssim"] == pytest.approx(float(per_image.abs().mean()), abs=1e-4)


def test_generator_with_codec_in_the_loop(tmp_path: Path) -> None:
    """codec_weight / codec_rate_weight train through a frozen codec and validate with
    the real entropy coder; the codec's weights do not move."""
    from vision._codec import make_codec

    target_dir, aux_dir = _tiny_classifiers(tmp_path)
    target, _ = load_classifier_dir(target_dir)
    aux, _ = load_classifier_dir(aux_dir)
    torch.manual_seed(0)
    codec = make_codec(N=8, M=8)
    before = {k: v.clone() for k, v in codec.state_dict().items()}
    cfg = GeneratorTrainConfig(
        base=4,
        epochs=2,
        batch_size=64,
        lr=5e-3,
        bf16=False,
        aux_ce_cap=3.0,
        codec_weight=1.0,
        codec_rate_weight=0.01,
    )
    with pytest.raises(TrainError, match="codec"):
        train_generator(cfg, TRAIN, VAL, tmp_path / "x", target=target, aux=aux, device=CPU)
    metrics = train_generator(
        cfg,
        TRAIN,
        VAL,
        tmp_path / "g",
        target=target,
        aux=aux,
        device=CPU,
        progress=False,
        codec=codec,
    )
    last = metrics[-1]
    assert last["train_ce_codec"] > 0 and last["train_bpp"] > 0
    assert 0 <= last["val_codec_decoded_accuracy"] <= 1
    assert last["val_codec_bytes_per_image"] > 0
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    for name, value in codec.state_dict().items():
        if not name.endswith(("_quantized_cdf", "_offset", "_cdf_length")):
            torch.testing.assert_close(value, before[name], msg=name)


def test_codec_state_loads_over_other_table_sizes() -> None:
    """Loading codec weights whose CDF tables differ in length from those already loaded
    (a warm start, then a checkpoint) resizes the buffers instead of failing."""
    from vision._codec import make_codec
    from vision._train import _load_codec_state

    torch.manual_seed(0)
    source = make_codec(N=8, M=8)
    source.update(force=True)
    state = {k: v.clone() for k, v in source.state_dict().items()}
    wider = dict(state)
    cdf = state["entropy_bottleneck._quantized_cdf"]
    wider["entropy_bottleneck._quantized_cdf"] = torch.cat([cdf, torch.zeros_like(cdf)], dim=1)
    codec = make_codec(N=8, M=8)
    _load_codec_state(codec, wider)
    assert codec.entropy_bottleneck._quantized_cdf.shape[1] == 2 * cdf.shape[1]
    _load_codec_state(codec, state)
    for name, value in codec.state_dict().items():
        torch.testing.assert_close(value, state[name], msg=name)


def test_codec_improves_and_loads(tmp_path: Path) -> None:
    from vision._models import build_generator

    generator = build_generator("unet", {"base": 4})
    cfg = CodecTrainConfig(N=8, M=8, epochs=3, batch_size=32, lr=1e-3, lmbda=0.001, eval_images=16)
    out = tmp_path / "codec"
    train_codec(
        cfg,
        TRAIN,
        VAL,
        out,
        generator=generator,
        target=None,
        device=CPU,
        progress=False,
        stop_after=1,
    )
    metrics = train_codec(
        cfg,
        TRAIN,
        VAL,
        out,
        generator=generator,
        target=None,
        device=CPU,
        progress=False,
        resume=True,
    )
    assert len(metrics) == 3
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    assert metrics[-1]["val_bytes_per_image"] > 0
    codec, meta = load_codec_dir(out)
    assert meta["config"] == {"N": 8, "M": 8}
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        enc = codec.compress(x)
        assert codec.decompress(enc["strings"], enc["shape"])["x_hat"].shape == x.shape


def test_codec_ce_weight_needs_target(tmp_path: Path) -> None:
    from vision._models import build_generator

    with pytest.raises(TrainError, match="target"):
        train_codec(
            CodecTrainConfig(N=8, M=8, ce_weight=1.0),
            TRAIN,
            VAL,
            tmp_path / "x",
            generator=build_generator("unet", {"base": 4}),
            target=None,
            device=CPU,
            progress=False,
        )


def test_codec_distillation_and_warm_start(tmp_path: Path) -> None:
    """kd_weight adds the distillation term; init_from starts from given codec weights."""
    from vision._models import build_classifier, build_generator

    torch.manual_seed(0)
    generator = build_generator("unet", {"base": 4})
    target = build_classifier("airbench", {"widths": [8, 16, 16]})
    cfg = CodecTrainConfig(
        N=8, M=8, epochs=1, batch_size=32, lmbda=0.01, kd_weight=1.0, eval_images=16
    )
    first = train_codec(
        cfg,
        TRAIN,
        VAL,
        tmp_path / "a",
        generator=generator,
        target=target,
        device=CPU,
        progress=False,
    )
    assert first[-1]["train_kd"] > 0
    assert first[-1]["train_ce"] == 0
    with pytest.raises(TrainError, match="target"):
        train_codec(
            replace(cfg, ce_weight=0.0),
            TRAIN,
            VAL,
            tmp_path / "x",
            generator=generator,
            target=None,
            device=CPU,
            progress=False,
        )
    # warm start: with zero learning rates the codec stays exactly as initialised
    warm = replace(cfg, init_from=str(tmp_path / "a" / "model.safetensors"), lr=0.0, aux_lr=0.0)
    train_codec(
        warm,
        TRAIN,
        VAL,
        tmp_path / "b",
        generator=generator,
        target=target,
        device=CPU,
        progress=False,
    )
    a, _ = load_codec_dir(tmp_path / "a")
    b, _ = load_codec_dir(tmp_path / "b")
    for (name, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, msg=name)


def test_assemble_bundle_evaluates_and_loads(tmp_path: Path) -> None:
    from vision._assemble import assemble_bundle
    from vision._bundle import load_bundle

    target_dir, aux_dir = _tiny_classifiers(tmp_path)
    target, _ = load_classifier_dir(target_dir)
    aux, _ = load_classifier_dir(aux_dir)
    gen_cfg = GeneratorTrainConfig(base=4, epochs=1, batch_size=64, bf16=False)
    train_generator(
        gen_cfg,
        TRAIN,
        VAL,
        tmp_path / "g",
        target=target,
        aux=aux,
        device=CPU,
        progress=False,
        command="pmc2 train generator",
    )
    generator, _ = load_generator_dir(tmp_path / "g")
    codec_cfg = CodecTrainConfig(N=8, M=8, epochs=1, batch_size=32, eval_images=16)
    train_codec(
        codec_cfg,
        TRAIN,
        VAL,
        tmp_path / "c",
        generator=generator,
        target=target,
        device=CPU,
        progress=False,
        command="pmc2 train codec",
    )
    dirs = {
        "target": target_dir,
        "aux": aux_dir,
        "generator": tmp_path / "g",
        "codec": tmp_path / "c",
    }
    metrics = assemble_bundle(
        tmp_path / "bundle",
        dirs,
        VAL,
        commands=["pmc2 train bundle"],
        generator_warm_start=["pmc2 train generator  # stage 1"],
        codec_warm_start=["pmc2 train codec  # first run", "pmc2 train codec"],
        notes=["tiny"],
    )
    ev = metrics["evaluation"]
    assert ev["images"] == len(VAL)
    assert {"clean", "protected", "neural", "neural_batched"} <= set(ev)
    assert ev["neural"]["bytes"] > ev["neural_batched"]["bytes_per_image"] > 0
    bundle = load_bundle(tmp_path / "bundle")
    assert bundle.manifest.commands[-5:] == (
        "pmc2 train generator  # stage 1",
        "pmc2 train generator",
        "pmc2 train codec  # first run",
        "pmc2 train codec",
        "pmc2 train bundle",
    )
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(bundle.target(x), target(x))


def _write_split(root: Path, split: str, data: CifarArrays) -> None:
    import io
    import tarfile

    from PIL import Image

    from vision._data import CIFAR10_CLASSES

    with tarfile.open(root / f"{split}.tar.gz", "w:gz") as tar:
        for i, (image, label) in enumerate(zip(data.images, data.labels, strict=True)):
            buf = io.BytesIO()
            Image.fromarray(image).save(buf, format="PNG")
            info = tarfile.TarInfo(f"{split}/{CIFAR10_CLASSES[label]}/{i:04d}.png")
            info.size = buf.tell()
            buf.seek(0)
            tar.addfile(info, buf)


def test_cli_trains_each_stage(tmp_path: Path) -> None:
    from pmc2.cli import main

    _write_split(tmp_path, "train", _toy(96, 3))
    _write_split(tmp_path, "test", _toy(40, 4))
    common = [
        "--data",
        str(tmp_path),
        "--cache",
        str(tmp_path / "cache"),
        "--no-progress",
        "--no-bf16",
        "--epochs",
        "1",
        "--threads",
        "1",
    ]
    t, a, g, c = (tmp_path / n for n in ("t", "a", "g", "c"))
    assert (
        main(["train", "classifier", "--config", '{"widths": [4, 8, 8]}', "--out", str(t), *common])
        == 0
    )
    assert (
        main(
            [
                "train",
                "classifier",
                "--arch",
                "resnet18",
                "--width",
                "4",
                "--seed",
                "1",
                "--out",
                str(a),
                *common,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "generator",
                "--target",
                str(t),
                "--aux",
                str(a),
                "--width",
                "4",
                "--out",
                str(g),
                *common,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "generator",
                "--pair",
                "vgg13",
                "--target",
                str(t),
                "--aux",
                str(a),
                "--out",
                str(tmp_path / "g2"),
                *common,
            ]
        )
        == 2
    )  # not the paper's pair
    assert (
        main(
            [
                "train",
                "codec",
                "--generator",
                str(g),
                "--N",
                "8",
                "--M",
                "8",
                "--out",
                str(c),
                *common,
            ]
        )
        == 0
    )
    _, meta = load_codec_dir(c)
    assert meta["target"]["dir"] == str(t)  # the generator's target by default
    assert meta["command"].startswith("pmc2 ")
    assert (
        main(
            [
                "train",
                "bundle",
                "--target",
                str(t),
                "--aux",
                str(a),
                "--generator",
                str(g),
                "--codec",
                str(c),
                "--out",
                str(tmp_path / "b"),
                "--data",
                str(tmp_path),
                "--cache",
                str(tmp_path / "cache"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert (tmp_path / "b" / "manifest.json").is_file()
