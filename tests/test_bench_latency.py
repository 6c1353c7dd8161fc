"""``pmc2 bench latency``'s measurement against an in-process stack (tiny bundle, a few
images): the breakdown adds up, both systems answer every image, the report renders;
and the baseline cloud's own refusals."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from pmc2._baseline_cloud import PNG_PATH, create_baseline_app
from pmc2._bench_latency import (
    BASELINE_STAGES,
    PAPER,
    PMC2_AMORTIZED,
    PMC2_STAGES,
    LatencyConfig,
    format_report,
    load_images,
    make_perturb,
    run_latency,
)
from pmc2._stack import DevStack, free_ports
from tests import _e2e_support as e2e

pytestmark = pytest.mark.filterwarnings("ignore::attestation.InsecureRootsWarning")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    s = e2e.in_process_stack(tmp_path_factory.mktemp("bench") / "state")
    try:
        (port,) = free_ports(1)
        s.start_extra("baseline-cloud", port, app=lambda: create_baseline_app(e2e.tiny_bundle()))
        yield s
    finally:
        s.stop()


def test_run_latency_measures_both_systems(stack: DevStack, tmp_path: Path) -> None:
    images, labels, note = load_images(tmp_path / "no-cifar", 6)
    assert labels is None and "synthetic" in note and images.shape == (6, 32, 32, 3)
    with httpx.Client() as http:
        offer = e2e.attest(stack, http)
    config = LatencyConfig(images=6, single=3, clients=(1, 3), warmup=1)
    result = asyncio.run(
        run_latency(
            stack,
            images,
            labels,
            config,
            key=offer.key,
            perturb=make_perturb(e2e.tiny_bundle(), None),
            baseline_url=stack.url("baseline-cloud"),
        )
    )
    for system, order in (
        ("pmc2", PMC2_STAGES + PMC2_AMORTIZED),
        ("baseline", BASELINE_STAGES),
    ):
        part = result[system]
        assert part["single"]["failures"] == {}
        assert set(part["single"]["stages_ms"]) == set(order)
        assert [r["clients"] for r in part["load"]] == [1, 3]
        for row in part["load"]:
            assert row["answered"] == 6 and row["failures"] == {} and row["images_per_s"] > 0
    single = result["pmc2"]["single"]["stages_ms"]
    # the stages add up to the client's total (means of per-request identities)
    parts = sum(single[s]["mean"] for s in PMC2_STAGES if s != "total")
    assert parts == pytest.approx(single["total"]["mean"], rel=0.02, abs=0.05)
    sizes = result["pmc2"]["single"]["bytes_per_image"]
    assert sizes["envelope"] >= 1024  # padded
    assert 0 < sizes["bitstring"] <= 128  # what the egress guard sent, per image
    assert single["enclave_batch"]["mean"] == 1.0  # sequential requests: batches of one
    load = result["pmc2"]["load"][-1]
    assert load["enclave_mean_batch"] >= 1 and 0 < load["bitstring_bytes_per_image"] <= 128
    doc: dict[str, Any] = {
        "images": {"count": 6, "source": note},
        "bundle": {"digest": "sha384:" + "ab" * 48, "codec": "pmc2-fp-8-8/v2", "tiny": True},
        "machine": {"cpus": 2, "cloud_device": "cpu"},
        **result,
        "paper": PAPER,
    }
    report = format_report(doc)
    assert "client_edge" in report and "png_decode" in report and "6.8-7.1" in report
    json.dumps(doc)


def _png(side: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.zeros((side, side, 3), np.uint8)).save(out, "PNG")
    return out.getvalue()


def test_baseline_cloud_refusals(stack: DevStack) -> None:
    url = stack.url("baseline-cloud") + PNG_PATH
    with httpx.Client() as http:
        ok = http.post(url, content=_png(32), headers={"Content-Type": "image/png"})
        assert ok.status_code == 200 and 0 <= ok.json()["label"] < 10
        for body, media, status, code in (
            (_png(32), "image/jpeg", 415, "unsupported-media-type"),
            (b"GIF89a...", "image/png", 422, "invalid-image"),
            (_png(64), "image/png", 422, "invalid-image"),
            (_png(32)[:40], "image/png", 422, "invalid-image"),
            (b"\x89PNG\r\n\x1a\n" + bytes(2 << 20), "image/png", 413, "body-too-large"),
        ):
            response = http.post(url, content=body, headers={"Content-Type": media})
            assert response.status_code == status, (code, response.text)
            assert response.json()["type"] == f"urn:pmc2:baseline:{code}"
