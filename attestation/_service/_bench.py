"""``pmc2 bench attest``: the attestation service end to end on loopback.

1. A simulated platform (``--platform DIR`` to reuse one; otherwise a new one, which
   generates three RSA-4096 keys first), a fresh state directory and operator key.
2. The service under uvicorn on 127.0.0.1 (an ephemeral port), trusting the simulated
   root; the guest's measurement and launch configuration registered through the admin
   API, as an operator would.
3. ``--iterations`` attestations, each one exactly what an enclave does: ``POST
   /v1/challenge``, a report bound to nonce and key from the (simulated) platform,
   ``POST /v1/attest``, and verification of the returned token against the JWKS.
   Latency per attestation: p50, p90, p99, mean, and the report-signing share.
4. Verification throughput per core: one thread running the service's appraisal core
   (``verify_report`` chain + signature, then ``appraise``) on one report for
   ``--verify-seconds``; reports/s.
"""

from __future__ import annotations

import argparse
import json
import platform as pyplatform
import shutil
import statistics
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

__all__ = ["run_benchmark"]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = q / 100.0 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def run_benchmark(args: argparse.Namespace) -> int:
    import datetime as dt

    import uvicorn
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from attestation._abi import GuestPolicy
    from attestation._appraise import appraise
    from attestation._certs import TrustedRoots
    from attestation._errors import MalformedError
    from attestation._service._app import create_app
    from attestation._service._binding import runtime_data_hash
    from attestation._service._client import AdminClient, AttestationClient
    from attestation._service._config import InsecureRootsWarning, ServiceConfig
    from attestation._sim import SimulatedPlatform
    from attestation._verify import verify_report
    from policies import load_default
    from sealed import EnclaveKeyPair

    if args.iterations < 1 or args.warmup < 0 or args.verify_seconds <= 0:
        raise MalformedError("--iterations >= 1, --warmup >= 0, --verify-seconds > 0")
    work = Path(tempfile.mkdtemp(prefix="pmc2-bench-attest-"))
    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None
    try:
        t0 = time.perf_counter()
        if args.platform:
            sim = SimulatedPlatform.open(Path(args.platform))
        else:
            sim = SimulatedPlatform.create(work / "platform")
        platform_seconds = time.perf_counter() - t0
        launch = load_default("launch_config").with_bundle_digest("sha256:" + "00" * 32)
        measurement = bytes.fromhex("b3" * 48)
        guest = sim.launch(
            measurement=measurement, host_data=launch.host_data(), policy=GuestPolicy(smt=True)
        )
        operator = ed25519.Ed25519PrivateKey.generate()
        config = ServiceConfig(
            state_dir=work / "state",
            operator_keys=(operator.public_key(),),
            insecure_roots=TrustedRoots.from_dir(sim.roots_dir),
            access_log=False,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureRootsWarning)
            app = create_app(config)
        uv_config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="on"
        )
        server = uvicorn.Server(uv_config)
        thread = threading.Thread(target=server.run, name="pmc2-bench-uvicorn", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30.0
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise MalformedError("the benchmark server did not start")
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"

        with AdminClient(url, operator) as admin:
            admin.register(measurement, "bench enclave", launch_config=launch.to_toml())
        key_pair = EnclaveKeyPair.generate()
        latencies: list[float] = []
        report_times: list[float] = []
        with AttestationClient(url) as client:
            jwks = client.jwks()
            pinned = AttestationClient(url, jwks=jwks, issuer=config.issuer)
            with pinned:
                for i in range(args.warmup + args.iterations):
                    start = time.perf_counter()
                    nonce = pinned.challenge()
                    r0 = time.perf_counter()
                    evidence = pinned.evidence(guest, nonce, key_pair.public_key)
                    r1 = time.perf_counter()
                    result = pinned.submit(nonce, key_pair.public_key, evidence)
                    elapsed = time.perf_counter() - start
                    if result.measurement != measurement:
                        raise MalformedError("benchmark token has the wrong measurement")
                    if i >= args.warmup:
                        latencies.append(elapsed * 1000.0)
                        report_times.append((r1 - r0) * 1000.0)

        # Verification throughput on one core: the appraisal core for one report.
        nonce = b"\x01" * 32
        raw = guest.report(runtime_data_hash(nonce, key_pair.public_key))
        roots = config.roots
        leaf = sim.vcek
        chain = [sim.ask, sim.ark]
        policy = load_default("appraisal")
        options = policy.appraisal_options(
            [],
            measurement=measurement,
            host_data=launch.host_data(),
            report_data=runtime_data_hash(nonce, key_pair.public_key),
        )
        at = dt.datetime.now(dt.UTC)
        count = 0
        v_start = time.perf_counter()
        while time.perf_counter() - v_start < args.verify_seconds:
            verified = verify_report(raw, leaf, chain, at=at, roots=roots)
            appraise(verified.report, options)
            count += 1
        v_elapsed = time.perf_counter() - v_start
    finally:
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout=10.0)
        shutil.rmtree(work, ignore_errors=True)

    results: dict[str, Any] = {
        "benchmark": "attest",
        "iterations": args.iterations,
        "warmup": args.warmup,
        "transport": "HTTP/1.1 over loopback (uvicorn, one worker)",
        "end_to_end_ms": {
            "p50": round(_percentile(latencies, 50), 3),
            "p90": round(_percentile(latencies, 90), 3),
            "p99": round(_percentile(latencies, 99), 3),
            "mean": round(statistics.fmean(latencies), 3),
            "min": round(min(latencies), 3),
            "max": round(max(latencies), 3),
        },
        "report_signing_ms_p50": round(_percentile(report_times, 50), 3),
        "attestations_per_second_sequential": round(1000.0 / statistics.fmean(latencies), 1),
        "verification": {
            "what": "verify_report (ARK/ASK/VCEK chain + report signature) + appraise",
            "reports": count,
            "seconds": round(v_elapsed, 3),
            "per_second_per_core": round(count / v_elapsed, 1),
        },
        "platform_setup_seconds": round(platform_seconds, 3),
        "python": pyplatform.python_version(),
        "machine": pyplatform.machine(),
    }
    e2e = results["end_to_end_ms"]
    print(
        f"attest end to end ({args.iterations} runs): p50 {e2e['p50']:.2f} ms, "
        f"p90 {e2e['p90']:.2f} ms, p99 {e2e['p99']:.2f} ms, mean {e2e['mean']:.2f} ms "
        f"(report signing p50 {results['report_signing_ms_p50']:.2f} ms)"
    )
    print(
        f"verification throughput: {results['verification']['per_second_per_core']:.1f} "
        "reports/s per core"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
