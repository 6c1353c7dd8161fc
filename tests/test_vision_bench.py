"""Benchmarks on a bundle of tiny untrained networks (fast; no trained weights needed)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from vision import make_codec
from vision._bench import (
    BandwidthConfig,
    _search_quality,
    bandwidth_markdown,
    bandwidth_plot,
    check_targets,
    run_bandwidth,
    run_speed,
    speed_markdown,
)
from vision._bundle import Bundle, load_bundle, write_bundle


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny convolutions run fastest on one thread (and do not fight other processes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinyClassifier(nn.Module):
    arch = "tiny_classifier"

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(torch.relu(self.conv(x)).mean((2, 3)))
        return out

    def config(self) -> dict[str, Any]:
        return {}


class TinyGenerator(nn.Module):
    arch = "tiny_generator"

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x + 0.3 * torch.tanh(self.conv(x)), 0.0, 1.0)

    def config(self) -> dict[str, Any]:
        return {}


def _builder(role: str, arch: str, config: Mapping[str, Any]) -> nn.Module:
    if role == "codec":
        codec: nn.Module = make_codec(**config)
        return codec
    return TinyGenerator() if role == "generator" else TinyClassifier()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    torch.manual_seed(0)
    codec = make_codec(N=8, M=8)
    codec.update()
    directory = tmp_path_factory.mktemp("bundle")
    write_bundle(
        directory,
        {"target": TinyClassifier(), "generator": TinyGenerator(), "codec": codec},
        commands=["(tiny test bundle)"],
    )
    return load_bundle(directory, builder=_builder)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(20, 32, 32, 3), dtype=np.uint8)
    images[:10] //= 2  # some structure for the compressors
    labels = rng.integers(0, 10, size=20).astype(np.int64)
    return images, labels


def test_search_quality() -> None:
    tried: list[int] = []

    def accuracy(q: int) -> float:
        tried.append(q)
        return 0.5 + 0.4 * (q >= 37)

    assert _search_quality(accuracy, 0.9)[:2] == (37, True)
    assert len(tried) == len(set(tried)) <= 9
    assert _search_quality(lambda q: 0.1, 0.9)[:2] == (100, False)
    assert _search_quality(lambda q: 1.0, 0.9)[:2] == (1, True)


def test_bandwidth(bundle: Bundle, data: Any, tmp_path: Path) -> None:
    images, labels = data
    config = BandwidthConfig(batch=8, eval_batch=7, progress=False)
    result = run_bandwidth(bundle, images, labels, config)
    assert result["images"] == 20
    for path in (
        "clean.accuracy",
        "protected.ssim",
        "protected.png.bytes",
        "protected.png.accuracy",
        "protected.jpeg444.quality",
        "protected.jpeg444.bytes",
        "protected.jpeg444.accuracy",
        "protected.jpeg420.quality",
        "protected.jpeg420.bytes",
        "protected.jpeg420.accuracy",
        "protected.neural.bytes",
        "protected.neural.accuracy",
        "protected.neural_batched.batch",
        "protected.neural_batched.bytes_per_image",
        "protected.neural_batched.accuracy",
        "s1.quality",
        "s1.bytes",
    ):
        node: Any = result
        for key in path.split("."):
            node = node[key]
        assert isinstance(node, int | float), path
    prot = result["protected"]
    assert prot["neural_batched"]["batch"] == 8
    assert prot["neural_batched"]["streams"] == 3
    assert prot["neural_batched"]["bytes_per_image"] < prot["neural"]["bytes"]
    # same latents either way, so the same decoded images and accuracy
    assert prot["neural_batched"]["accuracy"] == prot["neural"]["accuracy"]
    for section in (result["clean"], prot):
        for enc in ("jpeg444", "jpeg420"):
            jpeg = section[enc]
            assert 1 <= jpeg["quality"] <= 100
            if jpeg["meets_target"]:
                assert jpeg["accuracy"] >= jpeg["target_accuracy"] - 1e-9
    assert result["s1"]["bytes"] > 0
    assert -1 <= prot["ssim"] <= 1
    json.dumps(result, allow_nan=False)

    markdown = bandwidth_markdown(result)
    assert "| protected | PNG |" in markdown
    assert "8.16" in markdown  # the paper's neural figure beside ours
    plot = tmp_path / "plot.png"
    bandwidth_plot(result, plot)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bandwidth_fixed_s1_quality(bundle: Bundle, data: Any) -> None:
    images, labels = data
    config = BandwidthConfig(batch=20, eval_batch=20, s1_quality=75, progress=False)
    result = run_bandwidth(bundle, images[:4], labels[:4], config)
    assert result["s1"]["quality"] == 75
    assert result["s1"]["searched"] is False
    assert result["protected"]["neural_batched"]["streams"] == 1


def test_bandwidth_quick(bundle: Bundle, data: Any) -> None:
    images, labels = data
    config = BandwidthConfig(batch=8, eval_batch=20, progress=False, quick=True)
    result = run_bandwidth(bundle, images, labels, config)
    assert "s1" not in result
    assert "jpeg444" not in result["protected"]
    assert set(result["targets"]) == set(check_targets(result))
    assert not result["targets"]["clean accuracy >= 88 %"]["ok"]  # untrained
    markdown = bandwidth_markdown(result)
    assert "NOT met: clean accuracy" in markdown
    assert "JPEG 4:4:4" not in markdown


def test_bandwidth_rejects_bad_input(bundle: Bundle) -> None:
    with pytest.raises(ValueError):
        run_bandwidth(bundle, np.zeros((2, 32, 32, 3), np.float32), np.zeros(2, np.int64))
    with pytest.raises(ValueError):
        run_bandwidth(bundle, np.zeros((2, 32, 32, 3), np.uint8), np.zeros(3, np.int64))
    with pytest.raises(ValueError):
        BandwidthConfig(s1_quality=0)


def test_speed(bundle: Bundle) -> None:
    result = run_speed(bundle, (1, 4), repeats=1, progress=False)
    assert set(result["ms_per_image"]) == {"1", "4"}
    assert set(result["ms_per_image"]["4"]) == {
        "generator",
        "encoder",
        "decoder",
        "classifier",
        "encoder_stream",
        "decoder_stream",
    }
    assert all(v > 0 for v in result["ms_per_image"]["1"].values())
    markdown = speed_markdown(result)
    assert "| generator |" in markdown
    assert "2.616" in markdown


@pytest.fixture(scope="module")
def project_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle of tiny untrained networks from the project's own registry."""
    from vision import _models

    torch.manual_seed(0)
    codec = make_codec(N=8, M=8)
    codec.update()
    directory = tmp_path_factory.mktemp("project-bundle")
    write_bundle(
        directory,
        {
            "target": _models.build_classifier("airbench", {"widths": [8, 8, 8]}),
            "generator": _models.build_generator("unet", {"base": 2}),
            "codec": codec,
        },
        commands=["(tiny test bundle)"],
    )
    return directory


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CIFAR-10-shaped class-folder tree: test/<class>/<n>.png, 4 images per class."""
    from PIL import Image

    root = tmp_path_factory.mktemp("cifar")
    rng = np.random.default_rng(1)
    for cls in (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ):
        folder = root / "test" / cls
        folder.mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels, "RGB").save(folder / f"{i:04d}.png")
    return root


def test_cli_bandwidth(
    project_bundle: Path, tiny_cifar: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pmc2.cli import main

    out = tmp_path / "out"
    status = main(
        [
            "bench",
            "bandwidth",
            "--images",
            "12",
            "--bundle",
            str(project_bundle),
            "--data",
            str(tiny_cifar),
            "--cache",
            str(tmp_path / "cache"),
            "--batch",
            "5",
            "--json",
            str(out / "bw.json"),
            "--markdown",
            str(out / "bw.md"),
            "--plot",
            str(out / "bw.png"),
            "--samples",
            str(out / "samples.png"),
            "--no-progress",
        ]
    )
    assert status == 0
    assert (out / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((out / "bw.json").read_text())
    assert result["images"] == 12
    assert result["protected"]["neural_batched"]["streams"] == 3
    assert "| protected | PNG |" in (out / "bw.md").read_text()
    assert (out / "bw.png").stat().st_size > 1000
    assert "Bandwidth and accuracy (12 evaluation images)" in capsys.readouterr().out


def test_cli_errors(
    project_bundle: Path, tiny_cifar: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pmc2.cli import main

    common = ["--bundle", str(project_bundle), "--no-progress"]
    assert (
        main(
            [
                "bench",
                "bandwidth",
                "--images",
                "999",
                "--data",
                str(tiny_cifar),
                "--cache",
                str(tmp_path),
                *common,
            ]
        )
        == 1
    )
    assert "--images" in capsys.readouterr().err
    assert main(["bench", "speed", "--bundle-digest", "00" * 48, *common]) == 1
    assert "digest" in capsys.readouterr().err
    assert main(["bench", "speed", "--bundle", str(tmp_path / "nowhere")]) == 1
    assert "missing" in capsys.readouterr().err


def test_cli_speed(project_bundle: Path, tmp_path: Path) -> None:
    from pmc2.cli import main

    status = main(
        [
            "bench",
            "speed",
            "--bundle",
            str(project_bundle),
            "--batch-sizes",
            "1",
            "3",
            "--repeats",
            "1",
            "--json",
            str(tmp_path / "speed.json"),
            "--no-progress",
        ]
    )
    assert status == 0
    result = json.loads((tmp_path / "speed.json").read_text())
    assert set(result["ms_per_image"]) == {"1", "3"}
    assert result["paper_ms_per_image"]["generator"] == 2.616


def test_evaluation_sample() -> None:
    from vision._bench import evaluation_sample
    from vision._data import CifarArrays

    arrays = CifarArrays(
        np.zeros((30, 32, 32, 3), np.uint8), np.repeat(np.arange(10), 3).astype(np.int64)
    )
    sample = evaluation_sample(arrays, 10)
    assert len(sample) == 10
    assert len(set(sample.labels.tolist())) > 3  # not a class-ordered prefix
    assert np.array_equal(sample.labels, evaluation_sample(arrays, 10).labels)
    assert evaluation_sample(arrays, 30) is arrays
    with pytest.raises(ValueError):
        evaluation_sample(arrays, 31)
