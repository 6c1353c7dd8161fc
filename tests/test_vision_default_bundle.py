"""The committed default bundle meets the issue's figures on a 500-image evaluation sample."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from vision import DEFAULT_BUNDLE_DIR, load_bundle, read_manifest
from vision._bench import BandwidthConfig, evaluation_sample, run_bandwidth
from vision._bundle import MANIFEST_NAME, MAX_BUNDLE_BYTES
from vision._data import default_cache_dir, load_cifar10, split_test


@pytest.fixture(autouse=True, scope="module")
def _bundle_present() -> None:
    """The default bundle is required: missing, it fails under CI=true (skips elsewhere)."""
    if not (DEFAULT_BUNDLE_DIR / MANIFEST_NAME).exists():
        message = "the default model bundle (vision/bundle/) is not there yet"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(autouse=True, scope="module")
def _threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 4))
    yield
    torch.set_num_threads(threads)


def test_default_bundle_is_complete() -> None:
    manifest = read_manifest(DEFAULT_BUNDLE_DIR)
    assert set(manifest.networks) >= {"target", "generator", "codec"}
    assert manifest.total_bytes <= MAX_BUNDLE_BYTES
    assert manifest.commands, "the manifest records the training commands"
    assert manifest.networks["codec"].arch == "factorized_prior"
    for entry in manifest.networks.values():
        assert (DEFAULT_BUNDLE_DIR / entry.file).stat().st_size == entry.bytes


@pytest.mark.slow
def test_default_bundle_meets_the_figures(cifar10_dir: Path) -> None:
    bundle = load_bundle(DEFAULT_BUNDLE_DIR, roles=("target", "generator", "codec"))
    _, evaluation = split_test(load_cifar10(cifar10_dir, "test", default_cache_dir()))
    sample = evaluation_sample(evaluation, 500)
    config = BandwidthConfig(quick=True, progress=False, batch=256)
    result = run_bandwidth(bundle, sample.images, sample.labels, config)
    failed = {name: check for name, check in result["targets"].items() if not check["ok"]}
    assert not failed, failed
