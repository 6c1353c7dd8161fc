"""``pmc2 cloud serve``, ``pmc2 cloud credential`` and ``pmc2 bench cloud``.

Heavy imports (torch, uvicorn, the bundle) happen inside the handlers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["register"]


def _bundle_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--bundle", type=Path, default=None, help="model bundle directory (default: packaged)"
    )
    p.add_argument(
        "--bundle-digest", default=None, help="pin the bundle's manifest digest (hex SHA-384)"
    )
    p.add_argument(
        "--codec", default=None, help="accepted codec id (default: derived from the bundle)"
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=32,
        help="accepted decoded image side in pixels, a multiple of 16 (0: any; default 32)",
    )
    p.add_argument(
        "--labels",
        default="cifar10",
        help="class names: cifar10 (default), none, or a file with one name per line",
    )
    p.add_argument("--max-batch", type=int, default=256, help="images per request (256)")
    p.add_argument("--batch-images", type=int, default=256, help="images per forward pass (256)")
    p.add_argument(
        "--max-wait-ms", type=float, default=2.0, help="micro-batching wait when idle (2 ms)"
    )
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in s (30)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def register(sub: argparse._SubParsersAction[Any], bench: argparse._SubParsersAction[Any]) -> None:
    """Add ``pmc2 cloud ...`` and ``pmc2 bench cloud``."""
    cloud = sub.add_parser("cloud", help="cloud inference: neural decoder + classifier service")
    csub = cloud.add_subparsers(dest="cloud", metavar="ACTION")

    serve = csub.add_parser("serve", help="serve /v1/classify (docs/cloud_api.md)")
    serve.add_argument(
        "--credential-file",
        type=Path,
        required=True,
        help="accepted enclave credentials: one per line, or sha256:<hex> digests",
    )
    serve.add_argument("--host", default="127.0.0.1", help="listen address (127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="listen port (8402)")
    _bundle_args(serve)
    serve.set_defaults(handler=_serve)

    cred = csub.add_parser(
        "credential",
        help="generate an enclave credential (register it at the key broker as "
        "resource cloud-credential)",
    )
    cred.add_argument(
        "--out", type=Path, required=True, help="write the credential here (mode 0600)"
    )
    cred.set_defaults(handler=_credential)

    bc = bench.add_parser(
        "cloud", help="cloud inference over HTTP in-process: images/s per batch size and form"
    )
    bc.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 64, 256])
    bc.add_argument("--repeats", type=int, default=5, help="timed requests per measurement")
    bc.add_argument("--json", type=Path, default=None, help="write the result as JSON")
    _bundle_args(bc)
    bc.set_defaults(handler=_bench)


def _label_names(spec: str) -> tuple[str, ...] | None:
    if spec == "none":
        return None
    if spec == "cifar10":
        from vision._data import CIFAR10_CLASSES

        return tuple(CIFAR10_CLASSES)
    lines = Path(spec).read_text(encoding="ascii").splitlines()
    return tuple(line.strip() for line in lines if line.strip())


def _config(args: argparse.Namespace, credentials: Any) -> Any:
    import torch

    from cloud_infer._config import BatchingOptions, CloudConfig, CloudLimits
    from vision import DEFAULT_BUNDLE_DIR

    if args.threads:
        torch.set_num_threads(args.threads)
    side = args.image_size
    names = _label_names(args.labels)
    return CloudConfig(
        bundle_dir=args.bundle or DEFAULT_BUNDLE_DIR,
        credentials=credentials,
        codec_id=args.codec,
        expected_bundle_digest=args.bundle_digest,
        image_size=None if side == 0 else (side, side),
        label_names=names,
        limits=CloudLimits(max_batch=args.max_batch, request_timeout_s=args.timeout),
        batching=BatchingOptions(
            max_batch_images=args.batch_images, max_wait_s=args.max_wait_ms / 1000.0
        ),
        device=args.device,
    )


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from cloud_infer._app import create_app
    from cloud_infer._config import DEFAULT_PORT, ConfigError, CredentialSet

    try:
        credentials = CredentialSet.from_file(args.credential_file)
        app = create_app(_config(args, credentials))
    except (ConfigError, OSError, UnicodeDecodeError) as exc:
        print(f"pmc2 cloud serve: {exc}", file=sys.stderr)
        return 1
    engine = app.state.engine
    port = DEFAULT_PORT if args.port is None else args.port
    print(
        f"pmc2 cloud: http://{args.host}:{port}/v1/classify codec={engine.codec_id} "
        f"bundle={engine.bundle_digest[:16]}... classes={engine.num_classes}",
        file=sys.stderr,
    )
    uvicorn.run(app, host=args.host, port=port, log_level="info")
    return 0


def _credential(args: argparse.Namespace) -> int:
    from cloud_infer._config import credential_digest, generate_credential

    credential = generate_credential()
    path: Path = args.out
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        print(f"pmc2 cloud credential: cannot create {path}: {exc.strerror}", file=sys.stderr)
        return 1
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(credential + "\n")
    print(f"sha256:{credential_digest(credential).hex()}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    import asyncio

    from cloud_infer._config import CloudLimits, ConfigError, CredentialSet, generate_credential

    if any(b < 1 for b in args.batch_sizes):
        print("pmc2 bench cloud: batch sizes must be positive", file=sys.stderr)
        return 1
    secret = generate_credential()
    try:
        config = _config(args, CredentialSet.of([secret]))
        if config.image_size is None:
            raise ConfigError("the benchmark needs --image-size")
        config = dataclasses.replace(
            config,
            limits=CloudLimits(
                max_batch=max([args.max_batch, *args.batch_sizes]),
                max_body_bytes=1 << 26,
                max_stream_bytes=1 << 24,
                request_timeout_s=args.timeout,
            ),
        )
        result = asyncio.run(_bench_run(config, secret, args.batch_sizes, args.repeats))
    except (ConfigError, OSError, ValueError) as exc:
        print(f"pmc2 bench cloud: {exc}", file=sys.stderr)
        return 1
    for row in result["rows"]:
        print(
            f"{row['form']:>12} batch {row['batch']:>4}: {row['ms_per_request']:8.2f} ms/request "
            f"{row['images_per_s']:9.1f} images/s {row['bytes_per_image']:6.2f} B/image"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return 0


async def _bench_run(
    config: Any, secret: str, batch_sizes: list[int], repeats: int
) -> dict[str, Any]:
    import httpx
    import torch

    from cloud_infer._app import create_app
    from cloud_infer._wire import MEDIA_TYPE, ClassifyRequest
    from vision import encode_batch, encode_single

    app = create_app(config)
    engine = app.state.engine
    codec = engine.codec
    height, width = config.image_size
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": MEDIA_TYPE}
    rows = []
    generator = torch.Generator().manual_seed(0)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://cloud") as client,
    ):
        for batch in batch_sizes:
            x = torch.rand(batch, 3, height, width, generator=generator)
            bodies = {
                "single": ClassifyRequest.single(engine.codec_id, encode_single(codec, x)),
                "batch-stream": ClassifyRequest.batch(
                    engine.codec_id, encode_batch(codec, x), batch
                ),
            }
            for form, request in bodies.items():
                body = request.to_bytes()
                times = []
                for _ in range(repeats + 1):
                    started = time.perf_counter()
                    response = await client.post("/v1/classify", content=body, headers=headers)
                    times.append(time.perf_counter() - started)
                    if response.status_code != 200:
                        raise ValueError(f"classify answered {response.status_code}")
                median = statistics.median(times[1:])
                rows.append(
                    {
                        "form": form,
                        "batch": batch,
                        "ms_per_request": median * 1e3,
                        "images_per_s": batch / median,
                        "bytes_per_image": request.payload_bytes / batch,
                    }
                )
    return {
        "codec": engine.codec_id,
        "bundle_digest": engine.bundle_digest,
        "device": config.device,
        "threads": torch.get_num_threads(),
        "rows": rows,
    }
