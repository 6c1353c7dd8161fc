"""The baseline's cloud side for ``pmc2 bench latency``: PNG in, label out.

The paper compares PMC2 with a baseline without an edge: the phone runs the perturbation
generator itself, PNG-encodes the perturbed image and sends it to the cloud, which
decodes the PNG and classifies it with the target model. This is that cloud, minimal
but real: one HTTP endpoint, strict PNG decoding, micro-batched classification on one
worker thread (as cloud inference batches), served by uvicorn in its own process::

    POST /v1/classify-png   Content-Type: image/png   (an RGB PNG of the model's input size)
      200 {"label", "label_name", "top_k": [{"label", "score_ppm"}...], "batch_images",
           "timings_us": {"decode", "queue", "classify"}}
      400 / 413 / 415 / 422 problem documents (urn:pmc2:baseline:<code>)
    GET /healthz            {"status": "ok", "bundle_digest", "image_size"}

It is a measuring instrument, not part of the system: it has no authentication, and it
sees the perturbed images in full (which is the point of the comparison: PMC2's cloud
sees a few bytes of neural bit-string instead).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PNG_PATH", "BaselineBatcher", "add_serve_parser", "create_baseline_app"]

PNG_PATH = "/v1/classify-png"
MAX_PNG_BYTES = 1 << 20
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class _Job:
    image: Any  # numpy uint8 H x W x 3
    future: asyncio.Future[tuple[list[tuple[int, int]], int, float]]
    queued: float = field(default_factory=time.perf_counter)


class BaselineBatcher:
    """Concurrent requests merged into one classifier call on one worker thread: a
    batch starts when ``max_batch`` images wait, or ``max_wait_s`` after the first one
    while the worker is idle, or as soon as the worker finishes the previous batch."""

    def __init__(
        self,
        classify: Callable[[Sequence[Any]], list[list[tuple[int, int]]]],
        *,
        max_batch: int = 256,
        max_wait_s: float = 0.002,
    ) -> None:
        self._classify = classify
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._queue: list[_Job] = []
        self._busy = False
        self._timer: asyncio.TimerHandle | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="baseline")

    async def submit(self, image: Any) -> tuple[list[tuple[int, int]], int, float]:
        """``(top scores, batch size, seconds queued)`` for one image."""
        loop = asyncio.get_running_loop()
        job = _Job(image, loop.create_future())
        self._queue.append(job)
        self._schedule(loop)
        return await job.future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._busy or not self._queue:
            return
        if len(self._queue) >= self._max_batch or self._max_wait_s == 0:
            self._dispatch(loop)
        elif self._timer is None:
            self._timer = loop.call_later(self._max_wait_s, self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        if not self._busy and self._queue:
            self._dispatch(loop)

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
        self._busy = True
        started = time.perf_counter()
        work = loop.run_in_executor(self._executor, self._classify, [j.image for j in batch])

        def done(outcome: asyncio.Future[list[list[tuple[int, int]]]]) -> None:
            self._busy = False
            error = outcome.exception() if not outcome.cancelled() else RuntimeError("cancelled")
            for index, job in enumerate(batch):
                if job.future.done():
                    continue
                if error is not None:
                    job.future.set_exception(error)
                else:
                    job.future.set_result(
                        (outcome.result()[index], len(batch), started - job.queued)
                    )
            self._schedule(loop)

        work.add_done_callback(done)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _decode_png(data: bytes, side: int) -> Any:
    """A strict RGB PNG of ``side`` x ``side`` pixels → uint8 array (``ValueError``)."""
    import numpy as np
    from PIL import Image

    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG (signature)")
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            if image.size != (side, side):
                raise ValueError(f"the image must be {side}x{side}, not {image.size}")
            image.load()
            rgb = image.convert("RGB")
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"the PNG could not be decoded: {exc}") from None
    return np.asarray(rgb, dtype=np.uint8)


def create_baseline_app(
    bundle_dir: Path,
    *,
    expected_digest: str | None = None,
    device: str = "cpu",
    image_size: int = 32,
    max_batch: int = 256,
    max_wait_s: float = 0.002,
) -> Any:
    """The baseline cloud (module docstring) classifying with the bundle's ``target``."""
    import numpy as np
    import torch
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from vision import CIFAR10_CLASSES, load_bundle

    bundle = load_bundle(bundle_dir, roles=("target",), expected_digest=expected_digest)
    target = bundle.target.to(device).eval()
    names = tuple(CIFAR10_CLASSES)

    def classify(images: Sequence[Any]) -> list[list[tuple[int, int]]]:
        x = torch.from_numpy(np.stack(images)).to(device).permute(0, 3, 1, 2).float() / 255.0
        with torch.inference_mode():
            probabilities = torch.softmax(target(x).float(), dim=1).cpu()
        top = torch.topk(probabilities, k=min(3, probabilities.shape[1]), dim=1)
        return [
            [
                (int(label), round(float(score) * 1_000_000))
                for label, score in zip(ls, ss, strict=True)
            ]
            for ls, ss in zip(top.indices.tolist(), top.values.tolist(), strict=True)
        ]

    batcher = BaselineBatcher(classify, max_batch=max_batch, max_wait_s=max_wait_s)

    def problem(status: int, code: str, detail: str) -> Response:
        return JSONResponse(
            {
                "type": f"urn:pmc2:baseline:{code}",
                "title": code,
                "status": status,
                "detail": detail,
            },
            status_code=status,
            media_type="application/problem+json",
        )

    async def classify_png(request: Request) -> Response:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "image/png":
            return problem(415, "unsupported-media-type", "send Content-Type: image/png")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_PNG_BYTES:
                return problem(413, "body-too-large", f"at most {MAX_PNG_BYTES} bytes")
        started = time.perf_counter()
        try:
            image = await asyncio.to_thread(_decode_png, bytes(body), image_size)
        except ValueError as exc:
            return problem(422, "invalid-image", str(exc)[:200])
        decoded = time.perf_counter()
        scores, batch_images, queued = await batcher.submit(image)
        classified = time.perf_counter() - decoded - queued
        label = scores[0][0]
        return JSONResponse(
            {
                "label": label,
                "label_name": names[label] if label < len(names) else None,
                "top_k": [{"label": lab, "score_ppm": ppm} for lab, ppm in scores],
                "batch_images": batch_images,
                "timings_us": {
                    "decode": round((decoded - started) * 1e6),
                    "queue": round(queued * 1e6),
                    "classify": round(classified * 1e6),
                },
            }
        )

    async def healthz(request: Request) -> Response:
        return JSONResponse(
            {"status": "ok", "bundle_digest": bundle.digest, "image_size": image_size}
        )

    app = Starlette(
        routes=[
            Route(PNG_PATH, classify_png, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )
    app.state.batcher = batcher
    return app


def add_serve_parser(bench: argparse._SubParsersAction[Any]) -> None:
    """``pmc2 bench baseline-cloud``: serve the baseline's cloud (used by bench latency)."""
    p = bench.add_parser(
        "baseline-cloud",
        help="serve the paper's baseline cloud (PNG in, label out) for bench latency",
    )
    p.add_argument("--bundle", type=Path, required=True, help="vision bundle (its target)")
    p.add_argument("--bundle-digest", default=None, help="pin the manifest digest (hex)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (127.0.0.1)")
    p.add_argument("--port", type=int, default=8404, help="port (8404)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from vision import VisionError

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        app = create_baseline_app(
            args.bundle, expected_digest=args.bundle_digest, device=args.device
        )
    except (VisionError, OSError) as exc:
        print(f"pmc2 bench baseline-cloud: {exc}", file=sys.stderr)
        return 1
    print(f"pmc2 baseline cloud: http://{args.host}:{args.port}{PNG_PATH}", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
