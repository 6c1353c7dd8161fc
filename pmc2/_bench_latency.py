"""``pmc2 bench latency``: the paper's Figure 4 latency breakdown, end to end on loopback.

::

    pmc2 bench latency [--json FILE] [--images N] [--single N] [--clients 1 8 64]
                       [--bundle DIR | --tiny-bundle] [--state DIR] [--port-base 8410]
                       [--cifar10 DIR] [--no-baseline] [stack options of pmc2 up]

Starts a stack exactly as ``pmc2 up`` does (``pmc2._stack``: every service its own
process; the gateway's rate limit lifted), plus the baseline's cloud
(``pmc2._baseline_cloud``), and drives both with CIFAR-10 evaluation images (vision's
data loader, ``../shared/datasets/cifar10``; synthetic images when absent, with a note).

**PMC2** (client → gateway → enclave → cloud): the client attests the enclave once
(``client.Client``: pinned JWKS, expected measurement and launch configuration), then
per image JPEG-encodes it (quality 90, 4:4:4), seals it (HPKE), posts it through the
gateway and opens the sealed answer. Stages per image, in milliseconds:

============== ==========================================================================
client_jpeg    JPEG encoding on the client
client_seal    HPKE sealing on the client
client_edge    client ↔ edge: the round trip minus the enclave's own ``total`` (loopback
               network and the gateway, both ways)
open           the enclave opens the envelope (HPKE)
jpeg_decode    the enclave decodes the JPEG under its limits and resizes it
queue          waiting for a dynamic batch
perturb        the U-Net generator (the batch's time)
encode         the neural encoder and rANS coding (the batch's time)
edge_cloud     edge → cloud → edge: the enclave's cloud round trip minus the cloud's own
               stages (egress-guard checks, HTTP, loopback)
cloud_queue    waiting for the cloud's micro-batch
decode         entropy decoding and the decoder's synthesis transform
classify       the target classifier (the merged batch's time)
enclave_other  the rest of the enclave's ``total`` (scheduling)
answer         the client opens the sealed answer
total          client_jpeg + client_seal + the round trip + answer
============== ==========================================================================

**Baseline** (the paper's "without edge"): the client runs the generator itself (batch
of one, as each phone would), PNG-encodes the perturbed image and posts it to the
baseline cloud, which decodes the PNG and classifies it (micro-batched). Stages:
``client_perturb``, ``client_png``, ``client_cloud`` (the round trip minus the server's
stages), ``png_decode``, ``cloud_queue``, ``classify``, ``answer`` (reading the JSON),
``total``.

Both are measured for ``--single`` sequential requests (the per-image breakdown), and
under load with 1, 8 and 64 concurrent clients (each client sends its share of
``--images`` images one after the other; throughput = images / wall time). Batch stages
under load are the batch's time, as a request experiences them; the mean batch sizes
(enclave, cloud) are reported beside them. The paper's figures (24-core EPYC, batch 256)
are printed alongside; this machine's figures depend on its cores and load.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pmc2._baseline_cloud import PNG_PATH

__all__ = ["PAPER", "LatencyConfig", "format_report", "load_images", "register", "run_latency"]

PAPER: dict[str, Any] = {
    "setting": "CIFAR-10, VGG13_bn target, 24-core AMD EPYC, batch 256",
    "generator_ms_per_image": 2.616,
    "compress_ms_per_image": 0.550,
    "decompress_ms_per_image": 1.305,
    "end_to_end_ms_per_image": [6.8, 7.1],
    "baseline_ms_per_image": [11.7, 12.2],
    "bytes_per_image": {"png": 2691, "jpeg_444": 1848, "bitstring": 8.16},
}

PMC2_STAGES = (
    "client_jpeg",
    "client_seal",
    "client_edge",
    "open",
    "jpeg_decode",
    "queue",
    "perturb",
    "encode",
    "edge_cloud",
    "cloud_queue",
    "decode",
    "classify",
    "enclave_other",
    "answer",
    "total",
)
PMC2_AMORTIZED = ("perturb_per_image", "encode_per_image", "enclave_batch")
"""Not stages: the batch's perturb and encode times divided by its images, and the
enclave batch size (from the sealed answer's ``sizes``)."""
BASELINE_STAGES = (
    "client_perturb",
    "client_png",
    "client_cloud",
    "png_decode",
    "cloud_queue",
    "classify",
    "answer",
    "total",
)
DEFAULT_CIFAR10 = Path("..") / "shared" / "datasets" / "cifar10"
_US = 1e-3  # microseconds → milliseconds


@dataclass(frozen=True)
class LatencyConfig:
    """What :func:`run_latency` measures."""

    images: int = 256
    single: int = 64
    clients: tuple[int, ...] = (1, 8, 64)
    warmup: int = 4
    baseline: bool = True
    jpeg_quality: int = 90


@dataclass
class _Samples:
    stages: dict[str, list[float]] = field(default_factory=dict)
    correct: int = 0
    labelled: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, list[float]] = field(default_factory=dict)

    def add(self, stages: dict[str, float], sizes: dict[str, float]) -> None:
        for name, value in stages.items():
            self.stages.setdefault(name, []).append(value)
        for name, size in sizes.items():
            self.bytes.setdefault(name, []).append(size)

    def score(self, expected: int | None, got: int) -> None:
        if expected is not None:
            self.labelled += 1
            self.correct += int(got == expected)

    def accuracy(self) -> float | None:
        return round(self.correct / self.labelled, 4) if self.labelled else None

    def fail(self, code: str) -> None:
        self.failures[code] = self.failures.get(code, 0) + 1

    def summary(self, order: Sequence[str]) -> dict[str, dict[str, float]]:
        out = {}
        for name in order:
            values = self.stages.get(name)
            if not values:
                continue
            ordered = sorted(values)
            out[name] = {
                "mean": round(statistics.fmean(values), 4),
                "p50": round(statistics.median(values), 4),
                "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 4),
            }
        return out

    def mean_bytes(self) -> dict[str, float]:
        return {k: round(statistics.fmean(v), 2) for k, v in self.bytes.items() if v}


# --------------------------------------------------------------------------- images


def load_images(cifar10: Path | None, count: int) -> tuple[Any, Any, str]:
    """``count`` CIFAR-10 evaluation images (uint8 N x 32 x 32 x 3) and labels, drawn
    with a fixed seed from the evaluation half, in random order; synthetic smooth images (labels
    ``None``) when the dataset is missing. Returns (images, labels, note)."""
    import numpy as np

    if cifar10 is not None and cifar10.is_dir():
        from vision import load_cifar10, split_test

        cache = Path(os.environ.get("PMC2_CACHE") or Path(".cache") / "cifar10")
        _, evaluation = split_test(load_cifar10(cifar10, "test", cache))
        # a fixed random draw in random order (the halves are ordered by class, so the
        # single requests, a prefix, would otherwise see one or two classes only)
        index = np.random.default_rng(0).permutation(len(evaluation))[:count]
        subset = evaluation.subset(index.astype(np.int64))
        return subset.images, subset.labels, f"CIFAR-10 evaluation half ({cifar10})"
    from PIL import Image

    rng = np.random.default_rng(0)
    images = []
    for _ in range(count):
        small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        images.append(np.asarray(Image.fromarray(small).resize((32, 32), Image.Resampling.BICUBIC)))
    where = cifar10 if cifar10 is not None else DEFAULT_CIFAR10
    note = f"synthetic smooth images: CIFAR-10 not found at {where} (accuracy not measured)"
    return np.stack(images), None, note


def _jpeg(image: Any, quality: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image).save(out, "JPEG", quality=quality, subsampling=0)
    return out.getvalue()


def _png(image: Any) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image).save(out, "PNG")
    return out.getvalue()


# --------------------------------------------------------------------------- servers' counters


def _metric_sum_count(text: str, name: str) -> tuple[float, float]:
    def value(suffix: str) -> float:
        match = re.search(rf"^{name}_{suffix}(?:{{[^}}]*}})? ([0-9.eE+-]+)$", text, re.M)
        return float(match[1]) if match else 0.0

    return value("sum"), value("count")


async def _counters(http: Any, stack: Any) -> dict[str, float]:
    enclave = (await http.get(stack.url("enclave") + "/healthz")).json()
    metrics = (await http.get(stack.url("cloud") + "/metrics")).text
    batch_sum, batch_count = _metric_sum_count(metrics, "pmc2_cloud_batch_images")
    return {
        "enclave_batches": float(enclave["batches"]),
        "enclave_images": float(enclave["images"]),
        "egress_bytes": float(enclave["egress"]["bytes_sent"]),
        "egress_images": float(enclave["egress"]["images_sent"]),
        "cloud_batch_images": batch_sum,
        "cloud_batches": batch_count,
    }


def _ratio(after: dict[str, float], before: dict[str, float], num: str, den: str) -> float | None:
    d = after[den] - before[den]
    return round((after[num] - before[num]) / d, 2) if d else None


# --------------------------------------------------------------------------- one request


@dataclass(frozen=True)
class _Pmc2Client:
    """One image the PMC2 way: JPEG, seal, post through the gateway, open the answer."""

    url: str
    key: Any  # the attested sealed.EnclavePublicKey
    quality: int

    async def request(self, http: Any, image: Any, label: int | None, out: _Samples) -> None:
        from sealed import InferenceResult, RequestOptions, seal_request

        t0 = time.perf_counter()
        jpeg = _jpeg(image, self.quality)
        t1 = time.perf_counter()
        sealed = seal_request(self.key, jpeg, RequestOptions(top_k=1, sizes=True))
        t2 = time.perf_counter()
        response = await http.post(
            self.url,
            content=sealed.envelope,
            headers={"Content-Type": "application/octet-stream"},
        )
        t3 = time.perf_counter()
        if response.status_code != 200:
            out.fail(f"http-{response.status_code}")
            return
        answer = sealed.open_response(response.content)
        t4 = time.perf_counter()
        if not isinstance(answer, InferenceResult):
            out.fail(answer.code)
            return
        s = {k: v * _US for k, v in answer.timings_us}
        cloud_own = sum(
            s.get(f"cloud_{n}", 0.0) for n in ("queue", "entropy_decode", "synthesis", "classify")
        )
        enclave_own = sum(s.get(n, 0.0) for n in ("open", "decode", "queue", "perturb", "encode"))
        stages = {
            "client_jpeg": (t1 - t0) * 1e3,
            "client_seal": (t2 - t1) * 1e3,
            "client_edge": (t3 - t2) * 1e3 - s["total"],
            "open": s["open"],
            "jpeg_decode": s["decode"],
            "queue": s["queue"],
            "perturb": s["perturb"],
            "encode": s["encode"],
            "edge_cloud": s["cloud"] - cloud_own,
            "cloud_queue": s.get("cloud_queue", 0.0),
            "decode": s.get("cloud_entropy_decode", 0.0) + s.get("cloud_synthesis", 0.0),
            "classify": s.get("cloud_classify", 0.0),
            "enclave_other": s["total"] - enclave_own - s["cloud"],
            "answer": (t4 - t3) * 1e3,
            "total": (t4 - t0) * 1e3,
        }
        sizes: dict[str, float] = {"jpeg": len(jpeg), "envelope": len(sealed.envelope)}
        if answer.sizes is not None:
            batch = answer.sizes.batch_images
            # the batch's model time shared by its images (the paper's per-image figures)
            stages["perturb_per_image"] = s["perturb"] / batch
            stages["encode_per_image"] = s["encode"] / batch
            stages["enclave_batch"] = float(batch)
            sizes["bitstring"] = answer.sizes.share_bytes
        out.add(stages, sizes)
        out.score(label, answer.label)


@dataclass(frozen=True)
class _BaselineClient:
    """One image the baseline's way: perturb on the client, PNG, post to the cloud."""

    url: str
    perturb: Callable[[Any], Any]
    pool: ThreadPoolExecutor  # the client's own compute: one image at a time

    async def request(self, http: Any, image: Any, label: int | None, out: _Samples) -> None:
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        perturbed = await loop.run_in_executor(self.pool, self.perturb, image)
        t1 = time.perf_counter()
        png = _png(perturbed)
        t2 = time.perf_counter()
        response = await http.post(self.url, content=png, headers={"Content-Type": "image/png"})
        t3 = time.perf_counter()
        if response.status_code != 200:
            out.fail(f"http-{response.status_code}")
            return
        doc = json.loads(response.content)
        t4 = time.perf_counter()
        s = {k: v * _US for k, v in doc["timings_us"].items()}
        stages = {
            "client_perturb": (t1 - t0) * 1e3,
            "client_png": (t2 - t1) * 1e3,
            "client_cloud": (t3 - t2) * 1e3 - s["decode"] - s["queue"] - s["classify"],
            "png_decode": s["decode"],
            "cloud_queue": s["queue"],
            "classify": s["classify"],
            "answer": (t4 - t3) * 1e3,
            "total": (t4 - t0) * 1e3,
        }
        out.add(stages, {"png": len(png)})
        out.score(label, int(doc["label"]))


class _System(Protocol):
    async def request(self, http: Any, image: Any, label: int | None, out: _Samples) -> None: ...


async def _drive(
    system: _System, images: Any, labels: Any, count: int, *, clients: int, out: _Samples
) -> tuple[float, list[BaseException]]:
    """``count`` requests by ``clients`` concurrent clients, each with its own HTTP
    connection, sending its share one image after the other; (seconds, errors)."""
    import httpx

    errors: list[BaseException] = []
    n = len(images)

    async def worker(first: int) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(timeout=120.0, limits=limits) as http:
            for i in range(first, count, clients):
                label = None if labels is None else int(labels[i % n])
                try:
                    await system.request(http, images[i % n], label, out)
                except Exception as exc:  # counted and reported; the run goes on
                    errors.append(exc)

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(min(clients, count))))
    return time.perf_counter() - started, errors


def _error_counts(errors: list[BaseException]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for exc in errors:
        name = type(exc).__name__
        counts[name] = counts.get(name, 0) + 1
    return counts


async def _measure(
    system: _System,
    images: Any,
    labels: Any,
    config: LatencyConfig,
    order: Sequence[str],
    *,
    name: str,
    counters: Callable[[], Any] | None,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Warm-up, ``config.single`` sequential requests, then a load run per client count."""
    await _drive(system, images, None, config.warmup, clients=1, out=_Samples())
    progress(f"{name}: {config.single} single requests")
    single = _Samples()
    _, errors = await _drive(system, images, labels, config.single, clients=1, out=single)
    part: dict[str, Any] = {
        "single": {
            "requests": config.single,
            "failures": single.failures | _error_counts(errors),
            "accuracy": single.accuracy(),
            "stages_ms": single.summary(order),
            "bytes_per_image": single.mean_bytes(),
        },
        "load": [],
    }
    for clients in config.clients:
        progress(f"{name}: {config.images} images, {clients} concurrent clients")
        before = await counters() if counters is not None else None
        samples = _Samples()
        seconds, errors = await _drive(
            system, images, labels, config.images, clients=clients, out=samples
        )
        done = len(samples.stages.get("total", []))
        row: dict[str, Any] = {
            "clients": clients,
            "images": config.images,
            "answered": done,
            "seconds": round(seconds, 4),
            "images_per_s": round(done / seconds, 2),
            "ms_per_image": round(seconds * 1e3 / max(done, 1), 4),
            "failures": samples.failures | _error_counts(errors),
            "accuracy": samples.accuracy(),
            "stages_ms": samples.summary(order),
            "bytes_per_image": samples.mean_bytes(),
        }
        if counters is not None and before is not None:
            after = await counters()
            row["enclave_mean_batch"] = _ratio(after, before, "enclave_images", "enclave_batches")
            row["cloud_mean_batch"] = _ratio(after, before, "cloud_batch_images", "cloud_batches")
            row["bitstring_bytes_per_image"] = _ratio(
                after, before, "egress_bytes", "egress_images"
            )
        part["load"].append(row)
    return part


# --------------------------------------------------------------------------- the run


async def run_latency(
    stack: Any,
    images: Any,
    labels: Any,
    config: LatencyConfig,
    *,
    key: Any,
    perturb: Callable[[Any], Any] | None = None,
    baseline_url: str | None = None,
    progress: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Measure PMC2 (and the baseline, given ``perturb`` and ``baseline_url``) against a
    started :class:`pmc2._stack.DevStack`; ``key`` is the attested enclave key."""
    import httpx

    result: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=30.0) as http:

        async def counters() -> dict[str, float]:
            return await _counters(http, stack)

        pmc2 = _Pmc2Client(stack.gateway_url + "/v1/infer", key, config.jpeg_quality)
        result["pmc2"] = await _measure(
            pmc2,
            images,
            labels,
            config,
            PMC2_STAGES + PMC2_AMORTIZED,
            name="PMC2",
            counters=counters,
            progress=progress,
        )
        if perturb is not None and baseline_url is not None and config.baseline:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="client-gen") as pool:
                base = _BaselineClient(baseline_url + PNG_PATH, perturb, pool)
                result["baseline"] = await _measure(
                    base,
                    images,
                    labels,
                    config,
                    BASELINE_STAGES,
                    name="baseline",
                    counters=None,
                    progress=progress,
                )
    return result


def make_perturb(bundle_dir: Path, digest: str | None) -> Callable[[Any], Any]:
    """The baseline client's perturbation: the bundle's generator on one image, the
    output quantised to 8 bits for PNG."""
    import numpy as np
    import torch

    from vision import load_bundle

    generator = load_bundle(bundle_dir, roles=("generator",), expected_digest=digest).generator

    def perturb(image: Any) -> Any:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255
            y = generator(x).clamp(0, 1).mul(255).round().to(torch.uint8)
        return y[0].permute(1, 2, 0).contiguous().numpy()

    return perturb


# --------------------------------------------------------------------------- report


def _fmt(value: float | None, width: int = 9) -> str:
    return f"{value:{width}.3f}" if value is not None else " " * (width - 1) + "-"


def _side_by_side(doc: dict[str, Any]) -> list[str]:
    """This run's per-image figures at the largest client count beside the paper's."""
    paper = doc["paper"]
    pmc2 = doc.get("pmc2")
    base = doc.get("baseline")
    if pmc2 is None or not pmc2["load"]:
        return []
    top = pmc2["load"][-1]
    stages = top["stages_ms"]

    def mean(name: str) -> float | None:
        value = stages.get(name, {}).get("mean")
        return float(value) if value is not None else None

    decode = mean("decode")
    batch = top.get("cloud_mean_batch")
    size = top.get("bytes_per_image") or pmc2["single"]["bytes_per_image"]
    base_size = base["single"]["bytes_per_image"] if base else {}
    e2e = paper["end_to_end_ms_per_image"]
    b2e = paper["baseline_ms_per_image"]
    rows = [
        ("generator ms/image", mean("perturb_per_image"), f"{paper['generator_ms_per_image']}"),
        ("encode ms/image", mean("encode_per_image"), f"{paper['compress_ms_per_image']}"),
        (
            "decode ms/image",
            decode / batch if decode is not None and batch else None,
            f"{paper['decompress_ms_per_image']}",
        ),
        ("end to end ms/image", top["ms_per_image"], f"{e2e[0]}-{e2e[1]}"),
        (
            "baseline ms/image",
            base["load"][-1]["ms_per_image"] if base and base["load"] else None,
            f"{b2e[0]}-{b2e[1]}",
        ),
        ("JPEG bytes/image", size.get("jpeg"), f"{paper['bytes_per_image']['jpeg_444']}"),
        ("bit-string B/image", size.get("bitstring"), f"{paper['bytes_per_image']['bitstring']}"),
        ("PNG bytes/image", base_size.get("png"), f"{paper['bytes_per_image']['png']}"),
    ]
    out = [
        f"side by side: this run at {top['clients']} clients (batch stages shared by the "
        f"batch's images) | paper ({paper['setting']})"
    ]
    out += [f"  {name:<22}{_fmt(value, 10)}  | {theirs}" for name, value, theirs in rows]
    return out


def format_report(doc: dict[str, Any]) -> str:
    lines = [
        "",
        f"pmc2 bench latency: {doc['images']['count']} images ({doc['images']['source']}); "
        f"bundle {doc['bundle']['digest'][:23]}... codec {doc['bundle']['codec']}"
        + (" (untrained tiny bundle)" if doc["bundle"]["tiny"] else ""),
        f"machine: {doc['machine']['cpus']} CPUs, cloud on {doc['machine']['cloud_device']}; "
        "all services, clients and the baseline share it",
    ]
    for system, order in (
        ("pmc2", PMC2_STAGES + PMC2_AMORTIZED),
        ("baseline", BASELINE_STAGES),
    ):
        part = doc.get(system)
        if part is None:
            continue
        title = (
            "PMC2 (client -> gateway -> enclave -> cloud)"
            if system == "pmc2"
            else ("baseline (client perturbs, PNG to the cloud)")
        )
        loads = part["load"]
        header = f"  {'stage (mean ms)':<16}{'single':>9}" + "".join(
            f"{str(r['clients']) + ' clients':>13}" for r in loads
        )
        lines += ["", title, header]
        for stage in order:
            row = f"  {stage:<16}{_fmt(part['single']['stages_ms'].get(stage, {}).get('mean'))}"
            for r in loads:
                row += "    " + _fmt(r["stages_ms"].get(stage, {}).get("mean"))
            lines.append(row)
        lines.append(
            f"  {'p50 total':<16}{_fmt(part['single']['stages_ms']['total']['p50'])}"
            + "".join("    " + _fmt(r["stages_ms"]["total"]["p50"]) for r in loads)
        )
        lines.append(
            f"  {'images/s':<16}{'':>9}" + "".join(f"{r['images_per_s']:13.1f}" for r in loads)
        )
        lines.append(
            f"  {'ms/image':<16}{'':>9}" + "".join(f"{r['ms_per_image']:13.3f}" for r in loads)
        )
        if system == "pmc2":
            lines.append(
                f"  {'enclave batch':<16}{'':>9}"
                + "".join(f"{r['enclave_mean_batch'] or 0:13.1f}" for r in loads)
            )
            lines.append(
                f"  {'cloud batch':<16}{'':>9}"
                + "".join(f"{r['cloud_mean_batch'] or 0:13.1f}" for r in loads)
            )
        accuracy = part["single"]["accuracy"]
        failures = {k: v for r in loads for k, v in r["failures"].items()}
        failures.update(part["single"]["failures"])
        sizes = ", ".join(f"{k} {v:.1f}" for k, v in part["single"]["bytes_per_image"].items())
        lines.append(
            f"  bytes/image (single): {sizes}"
            + (f"; accuracy {accuracy:.2%}" if accuracy is not None else "")
            + (f"; FAILURES {failures}" if failures else "")
        )
    lines += ["", *_side_by_side(doc)]
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI


def register(bench: argparse._SubParsersAction[Any]) -> None:
    """Add ``pmc2 bench latency`` and ``pmc2 bench baseline-cloud``."""
    from pmc2._baseline_cloud import add_serve_parser
    from pmc2._up import add_stack_args

    p = bench.add_parser(
        "latency",
        help="Figure 4 latency breakdown and throughput at 1/8/64 clients, beside the baseline",
    )
    p.add_argument("--json", type=Path, default=None, help="write the results as JSON")
    p.add_argument("--images", type=int, default=256, help="images per load run (256)")
    p.add_argument("--single", type=int, default=64, help="sequential single requests (64)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64], help="(1 8 64)")
    p.add_argument(
        "--state",
        type=Path,
        default=None,
        help="state directory (default: a temporary one, removed afterwards)",
    )
    p.add_argument(
        "--cifar10", type=Path, default=DEFAULT_CIFAR10, help=f"dataset ({DEFAULT_CIFAR10})"
    )
    p.add_argument("--no-baseline", action="store_true", help="measure PMC2 only")
    p.add_argument(
        "--client-threads",
        type=int,
        default=1,
        help="torch threads of the baseline client's generator (1: one phone's worth)",
    )
    add_stack_args(p, port_base=8410)
    p.set_defaults(handler=_run)
    add_serve_parser(bench)


def _attest(stack: Any) -> Any:
    import warnings

    from client import Client, ClientConfig, Expectations, InsecureClientWarning, JwksPin

    info = stack.client_info()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureClientWarning)
        expect = Expectations(
            measurements=[info["measurement"]],
            launch_config_digests=[info["launch_config_digest"]],
            allow_insecure_simulated_platform=True,
        )
    config = ClientConfig(
        gateway_url=info["gateway_url"],
        attestation_url=info["attestation_url"],
        jwks_pin=JwksPin(thumbprints=info["jwks_thumbprints"]),
        expect=expect,
    )
    with Client(config) as client:
        return client.attest()


def _run(args: argparse.Namespace) -> int:
    import shutil
    import warnings

    from attestation import InsecureRootsWarning
    from pmc2._stack import DevStack, StackError
    from pmc2._up import options_from_args

    if args.images < 1 or args.single < 0 or any(c < 1 for c in args.clients):
        print("pmc2 bench latency: --images, --clients >= 1, --single >= 0", file=sys.stderr)
        return 2
    if args.client_threads < 1:
        print("pmc2 bench latency: --client-threads >= 1", file=sys.stderr)
        return 2
    # five compute processes share the machine (enclave, cloud, baseline cloud, the
    # clients, the baseline's generator): by default each gets a quarter of the CPUs, so
    # that torch's spinning worker threads do not oversubscribe a small machine
    share = max(1, (os.cpu_count() or 1) // 4)
    args.cloud_threads = args.cloud_threads or share
    args.enclave_threads = args.enclave_threads or share

    def progress(line: str) -> None:
        print(f"pmc2 bench latency: {line}", file=sys.stderr, flush=True)

    temporary = args.state is None
    state = Path(tempfile.mkdtemp(prefix="pmc2-bench-")) / "state" if temporary else args.state
    config = LatencyConfig(
        images=args.images,
        single=args.single,
        clients=tuple(args.clients),
        baseline=not args.no_baseline,
    )
    try:
        options = options_from_args(
            args, state, progress=progress, gateway_rate=1e6, gateway_burst=1_000_000
        )
        images, labels, note = load_images(args.cifar10, args.images)
        progress(f"images: {note}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureRootsWarning)
            progress("WARNING: simulated SEV-SNP platform (insecure roots): development only")
            stack = DevStack(options)
            stack.start()
        try:
            deployment = stack.deployment
            assert deployment is not None
            perturb = baseline_url = None
            if config.baseline:
                port = args.port_base + 4
                threads = ["--threads", str(options.cloud_threads)] * bool(options.cloud_threads)
                stack.start_extra(
                    "baseline-cloud",
                    port,
                    argv=[
                        "bench",
                        "baseline-cloud",
                        "--bundle",
                        str(options.bundle_dir),
                        "--bundle-digest",
                        deployment.bundle_digest.removeprefix("sha384:"),
                        "--device",
                        options.cloud_device,
                        "--host",
                        options.host,
                        "--port",
                        str(port),
                        *threads,
                    ],
                )
                baseline_url = stack.url("baseline-cloud")
                import torch

                torch.set_num_threads(args.client_threads)
                perturb = make_perturb(
                    options.bundle_dir, deployment.bundle_digest.removeprefix("sha384:")
                )
            attestation = _attest(stack)
            progress(f"attested enclave key {attestation.key_id} ({attestation.status})")
            measured = asyncio.run(
                run_latency(
                    stack,
                    images,
                    labels,
                    config,
                    key=attestation.public_key,
                    perturb=perturb,
                    baseline_url=baseline_url,
                    progress=progress,
                )
            )
        finally:
            stack.stop()
    except (StackError, ValueError, OSError) as exc:
        print(f"pmc2 bench latency: {exc}", file=sys.stderr)
        return 1
    finally:
        if temporary:
            shutil.rmtree(state.parent, ignore_errors=True)
    import torch

    doc = {
        "benchmark": "pmc2 bench latency",
        "bundle": {
            "dir": str(options.bundle_dir),
            "digest": deployment.bundle_digest,
            "codec": deployment.codec_id,
            "tiny": bool(args.tiny_bundle),
        },
        "images": {"count": args.images, "source": note, "synthetic": labels is None},
        "machine": {
            "cpus": os.cpu_count(),
            "client_torch_threads": torch.get_num_threads(),
            "cloud_device": options.cloud_device,
            "cloud_threads": options.cloud_threads,
            "enclave_threads": options.enclave_threads,
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        },
        "stack": {
            "enclave_max_batch": options.enclave_max_batch,
            "enclave_max_wait_ms": options.enclave_max_wait_ms,
            "processes": True,
        },
        "config": {"single": config.single, "clients": list(config.clients)},
        **measured,
        "paper": PAPER,
    }
    print(format_report(doc))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        print(f"\nwrote {args.json}")
    return 0
