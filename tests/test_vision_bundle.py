"""Model bundles: round trip, digests, strictness."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from vision import BundleError, make_codec
from vision._bundle import (
    MAX_BUNDLE_BYTES,
    BundleManifest,
    NetworkSpec,
    load_bundle,
    manifest_digest,
    read_manifest,
    write_bundle,
)
from vision._codec import decode_batch, encode_batch, encode_single


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny convolutions run fastest on one thread (and do not fight other processes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinyNet(nn.Module):
    arch = "tiny"

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.width = width
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.bn(self.conv(x)).mean((2, 3)))
        return out

    def config(self) -> dict[str, Any]:
        return {"width": self.width}


def tiny_builder(role: str, arch: str, config: Mapping[str, Any]) -> nn.Module:
    if role == "codec":
        assert arch == "factorized_prior"
        codec: nn.Module = make_codec(**config)
        return codec
    if arch != "tiny":
        raise ValueError(f"unknown architecture {arch!r}")
    return TinyNet(**config)


def _codec() -> Any:
    torch.manual_seed(0)
    c = make_codec(N=8, M=8)
    c.update()
    return c


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    target, gen = TinyNet(4), TinyNet(6)
    target.bn.running_mean.add_(0.5)  # type: ignore[union-attr]
    write_bundle(
        tmp_path / "b",
        {"target": target, "generator": gen, "codec": _codec()},
        commands=["pmc2 train classifier --arch tiny", "pmc2 train codec"],
        metrics={"clean": {"accuracy": 0.9125}, "notes": "tiny"},
    )
    return tmp_path / "b"


def test_round_trip(bundle_dir: Path) -> None:
    manifest = read_manifest(bundle_dir)
    assert set(manifest.networks) == {"target", "generator", "codec"}
    assert manifest.commands[0] == "pmc2 train classifier --arch tiny"
    assert manifest.metrics["clean"]["accuracy"] == 0.9125
    assert manifest.networks["codec"].config == {"N": 8, "M": 8}
    assert manifest.networks["generator"].config == {"width": 6}
    bundle = load_bundle(bundle_dir, builder=tiny_builder)
    torch.manual_seed(0)
    reference = TinyNet(4)
    reference.bn.running_mean.add_(0.5)  # type: ignore[union-attr]
    for name, tensor in reference.state_dict().items():
        assert torch.equal(bundle.target.state_dict()[name], tensor)
    assert not bundle.target.training
    # coding tables come from the file: strings are identical to the original codec's
    original = _codec()
    x = torch.rand(3, 3, 32, 32)
    assert encode_single(bundle.codec, x) == encode_single(original, x)
    assert torch.equal(
        decode_batch(bundle.codec, encode_batch(original, x)),
        decode_batch(original, encode_batch(original, x)),
    )
    assert bundle.digest == manifest_digest(bundle_dir) == manifest.digest()
    assert len(bundle.digest) == 96


def test_roles_subset(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir, roles=("generator", "codec"), builder=tiny_builder)
    assert set(bundle.networks) == {"generator", "codec"}
    with pytest.raises(BundleError, match="not loaded"):
        _ = bundle.target
    with pytest.raises(BundleError, match="no aux"):
        load_bundle(bundle_dir, roles=("aux",), builder=tiny_builder)
    with pytest.raises(BundleError, match="unknown"):
        load_bundle(bundle_dir, roles=("oracle",), builder=tiny_builder)


def test_deterministic_files(tmp_path: Path, bundle_dir: Path) -> None:
    torch.manual_seed(0)
    target, gen = TinyNet(4), TinyNet(6)
    target.bn.running_mean.add_(0.5)  # type: ignore[union-attr]
    again = write_bundle(
        tmp_path / "again",
        {"target": target, "generator": gen, "codec": _codec()},
        commands=["pmc2 train classifier --arch tiny", "pmc2 train codec"],
        metrics={"notes": "tiny", "clean": {"accuracy": 0.9125}},
    )
    assert again.digest() == manifest_digest(bundle_dir)


def test_digest_mismatch_rejected(bundle_dir: Path) -> None:
    path = bundle_dir / "generator.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256 mismatch"):
        load_bundle(bundle_dir, builder=tiny_builder)
    load_bundle(bundle_dir, roles=("codec",), builder=tiny_builder)  # others still load


def test_missing_file_rejected(bundle_dir: Path) -> None:
    (bundle_dir / "codec.safetensors").unlink()
    with pytest.raises(BundleError, match="missing"):
        load_bundle(bundle_dir, builder=tiny_builder)
    (bundle_dir / "manifest.json").unlink()
    with pytest.raises(BundleError, match="missing"):
        load_bundle(bundle_dir, builder=tiny_builder)


def test_swapped_files_rejected(bundle_dir: Path) -> None:
    target = (bundle_dir / "target.safetensors").read_bytes()
    (bundle_dir / "generator.safetensors").write_bytes(target)
    with pytest.raises(BundleError):
        load_bundle(bundle_dir, builder=tiny_builder)


def test_tampered_manifest_rejected(bundle_dir: Path) -> None:
    pinned = manifest_digest(bundle_dir)
    load_bundle(bundle_dir, expected_digest=pinned, builder=tiny_builder)
    path = bundle_dir / "manifest.json"
    value = json.loads(path.read_text())
    value["metrics"]["clean"]["accuracy"] = 0.99
    path.write_text(json.dumps(value))
    with pytest.raises(BundleError, match="pinned"):
        load_bundle(bundle_dir, expected_digest=pinned, builder=tiny_builder)
    # consistent tampering (new weights and their digest) is caught only by the pin
    value["metrics"]["clean"]["accuracy"] = 0.9125
    value["networks"]["generator"]["config"] = {"width": 4}
    value["networks"]["generator"]["sha256"] = value["networks"]["target"]["sha256"]
    value["networks"]["generator"]["bytes"] = value["networks"]["target"]["bytes"]
    path.write_text(json.dumps(value))
    (bundle_dir / "generator.safetensors").write_bytes(
        (bundle_dir / "target.safetensors").read_bytes()
    )
    load_bundle(bundle_dir, builder=tiny_builder)
    with pytest.raises(BundleError, match="pinned"):
        load_bundle(bundle_dir, expected_digest=pinned, builder=tiny_builder)
    with pytest.raises(BundleError, match="SHA-384"):
        load_bundle(bundle_dir, expected_digest="00" * 32, builder=tiny_builder)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda v: v.update(format="pmc2-vision-bundle/v2"),
        lambda v: v.update(extra=1),
        lambda v: v.pop("commands"),
        lambda v: v["networks"]["target"].update(file="../target.safetensors"),
        lambda v: v["networks"]["target"].update(sha256="AB" * 32),
        lambda v: v["networks"]["target"].update(bytes=-1),
        lambda v: v["networks"]["target"].update(dtype="int8"),
        lambda v: v["networks"]["target"].pop("parameters"),
        lambda v: v["networks"].update(oracle=v["networks"]["target"]),
        lambda v: v["networks"]["target"].update(bytes=MAX_BUNDLE_BYTES),
        lambda v: v.update(networks={}),
        lambda v: v.update(commands=[1]),
    ],
)
def test_malformed_manifest_rejected(bundle_dir: Path, mutate: Any) -> None:
    path = bundle_dir / "manifest.json"
    value = json.loads(path.read_text())
    mutate(value)
    path.write_text(json.dumps(value))
    with pytest.raises(BundleError):
        load_bundle(bundle_dir, builder=tiny_builder)


@pytest.mark.parametrize(
    "text",
    [
        b'{"format": "pmc2-vision-bundle/v1", "format": "x"}',
        b'{"metrics": {"a": NaN}}',
        b"[1, 2]",
        b"\xff\xfe",
        b"{" * 100000,
    ],
)
def test_bad_manifest_json(text: bytes) -> None:
    with pytest.raises(BundleError):
        BundleManifest.from_bytes(text)


def test_size_mismatch_and_unknown_arch(bundle_dir: Path) -> None:
    path = bundle_dir / "manifest.json"
    value = json.loads(path.read_text())
    value["networks"]["target"]["arch"] = "resnet1000"
    path.write_text(json.dumps(value))
    with pytest.raises(BundleError, match="cannot build"):
        load_bundle(bundle_dir, roles=["target"], builder=tiny_builder)
    value["networks"]["target"]["arch"] = "tiny"
    value["networks"]["target"]["config"] = {"width": 5}
    path.write_text(json.dumps(value))
    with pytest.raises(BundleError, match="shape"):
        load_bundle(bundle_dir, roles=["target"], builder=tiny_builder)
    value["networks"]["target"]["config"] = {"depth": 5}
    path.write_text(json.dumps(value))
    with pytest.raises(BundleError, match="cannot build"):
        load_bundle(bundle_dir, roles=["target"], builder=tiny_builder)


def test_codec_tables_required(tmp_path: Path) -> None:
    c = make_codec(N=8, M=8)
    with pytest.raises(BundleError, match="update"):
        write_bundle(tmp_path, {"codec": c})
    c.update()
    with torch.no_grad():
        c.entropy_bottleneck.quantiles.add_(3.0)
    with pytest.raises(BundleError, match="stale"):
        write_bundle(tmp_path, {"codec": c})
    with pytest.raises(BundleError, match="codec role"):
        write_bundle(tmp_path, {"target": _codec()})


def test_half_precision_storage(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = TinyNet(4)
    manifest = write_bundle(
        tmp_path, {"target": NetworkSpec(net, "tiny", {"width": 4}, "float16"), "codec": _codec()}
    )
    assert manifest.networks["target"].dtype == "float16"
    loaded = load_bundle(tmp_path, builder=tiny_builder).target
    weight = loaded.state_dict()["conv.weight"]
    assert weight.dtype == torch.float32
    assert torch.equal(weight, net.conv.weight.detach().half().float())
    assert loaded.state_dict()["bn.num_batches_tracked"].dtype == torch.int64
    # a file whose floats are not in the declared dtype is refused
    value = json.loads((tmp_path / "manifest.json").read_text())
    value["networks"]["target"]["dtype"] = "float32"
    (tmp_path / "manifest.json").write_text(json.dumps(value))
    with pytest.raises(BundleError, match=r"expected torch\.float32"):
        load_bundle(tmp_path, roles=["target"], builder=tiny_builder)


def test_write_rejects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BundleError, match="roles"):
        write_bundle(tmp_path, {"oracle": TinyNet()})
    with pytest.raises(BundleError, match="describe"):
        write_bundle(tmp_path, {"target": nn.Linear(2, 2)})
    with pytest.raises(BundleError, match="non-finite"):
        write_bundle(tmp_path, {"target": TinyNet()}, metrics={"x": float("nan")})
    # the limit lowered to 40 MB so that the test need not allocate 256 MB of weights
    monkeypatch.setattr("vision._bundle.MAX_BUNDLE_BYTES", 40_000_000)
    with pytest.raises(BundleError, match="exceeds 40000000 bytes"):
        write_bundle(tmp_path, {"target": NetworkSpec(nn.Linear(3200, 3200), "tiny", {})})


def test_stale_role_files_removed(bundle_dir: Path) -> None:
    write_bundle(bundle_dir, {"codec": _codec()})
    assert sorted(p.name for p in bundle_dir.iterdir()) == ["codec.safetensors", "manifest.json"]


def test_project_registry_round_trip(tmp_path: Path) -> None:
    from vision import _models

    torch.manual_seed(0)
    target = _models.build_classifier("airbench", {"widths": [8, 8, 8]})
    generator = _models.build_generator("unet", {"base": 2})
    write_bundle(tmp_path, {"target": target, "generator": generator, "codec": _codec()})
    bundle = load_bundle(tmp_path)
    x = torch.rand(2, 3, 32, 32)
    target.eval()
    generator.eval()
    with torch.no_grad():
        assert torch.equal(bundle.target(x), target(x))
        assert torch.equal(bundle.generator(x), generator(x))
