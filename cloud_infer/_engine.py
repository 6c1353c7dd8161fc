"""The inference engine: neural decoder + target classifier, batched.

Per request (in the event loop, cheap, before anything is queued): :meth:`precheck`
parses each bit-string's header and refuses wrong codecs, forms, counts and shapes.
Per batch (in the worker thread): :meth:`run_batch` entropy-decodes every request's
strings to latents (a failure refuses that request only), concatenates the latents of
all requests with the same latent shape, runs the decoder's synthesis transform and the
classifier once per chunk, and splits the top-k answers back per request.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cloud_infer._config import CloudConfig, ConfigError
from cloud_infer._wire import PPM, ClassifyRequest, Form, ImageResult, ScoredLabel

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["InferenceEngine", "Outcome", "RefusalError", "codec_id_for"]

_DOWNSAMPLING = 16


def codec_id_for(n: int, m: int) -> str:
    """The codec identifier of a ``FactorizedPrior(N=n, M=m)`` producing bit-strings
    of format :data:`vision.FORMAT_VERSION`: ``pmc2-fp-<N>-<M>/v2`` (the egress policy's
    ``codec``)."""
    from vision import FORMAT_VERSION

    return f"pmc2-fp-{n}-{m}/v{FORMAT_VERSION}"


class RefusalError(Exception):
    """A request the service refuses (mapped to an RFC 7807 problem)."""

    def __init__(
        self, status: int, code: str, title: str, detail: str, index: int | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.index = index


@dataclass(frozen=True)
class Outcome:
    """The result of one request inside a batch: results, or the refusal."""

    results: tuple[ImageResult, ...] = ()
    refusal: RefusalError | None = None
    timings_us: Mapping[str, int] = field(default_factory=dict)
    batch_images: int = 0


def _us(seconds: float) -> int:
    return max(0, round(seconds * 1e6))


class InferenceEngine:
    """Decoder and classifier loaded from a bundle (roles ``codec`` and ``target``)."""

    def __init__(
        self,
        codec: Any,
        classifier: nn.Module,
        *,
        codec_id: str,
        bundle_digest: str,
        config: CloudConfig,
    ) -> None:
        from vision import CodecLimits

        self._codec = codec
        self._classifier = classifier
        self.codec_id = codec_id
        self.bundle_digest = bundle_digest
        self._limits = config.limits
        self._chunk = config.batching.max_batch_images
        self.image_size = config.image_size
        self.latent_shape = (
            None
            if config.image_size is None
            else (config.image_size[0] // _DOWNSAMPLING, config.image_size[1] // _DOWNSAMPLING)
        )
        channels = int(codec.entropy_bottleneck.channels)
        side = config.limits.max_latent_side
        self._single_limits = CodecLimits(
            max_count=1,
            max_latent_side=side,
            max_symbols=channels * side * side,
            max_payload_bytes=config.limits.max_string_bytes,
        )
        self._batch_limits = CodecLimits(
            max_count=config.limits.max_batch,
            max_latent_side=side,
            max_symbols=config.limits.max_batch * channels * side * side,
            max_payload_bytes=config.limits.max_stream_bytes,
        )
        self.num_classes = self._probe_classes()
        names = config.label_names
        if names is not None and len(names) != self.num_classes:
            raise ConfigError(
                f"{len(names)} label names for a classifier with {self.num_classes} classes"
            )
        self.label_names = names

    @property
    def codec(self) -> Any:
        """The neural codec (its decoder and entropy tables are what the service uses)."""
        return self._codec

    @classmethod
    def load(cls, config: CloudConfig) -> InferenceEngine:
        """Load ``codec`` and ``target`` from the configured bundle (digests checked)."""
        from vision import BundleError, load_bundle

        try:
            bundle = load_bundle(
                config.bundle_dir,
                roles=("codec", "target"),
                expected_digest=config.expected_bundle_digest,
                device=config.device,
                builder=config.builder,
            )
        except BundleError as exc:
            raise ConfigError(f"cannot load the model bundle: {exc}") from None
        codec_cfg = bundle.manifest.networks["codec"].config
        derived = codec_id_for(int(codec_cfg["N"]), int(codec_cfg["M"]))
        if config.codec_id is not None and config.codec_id != derived:
            raise ConfigError(
                f"codec id {config.codec_id!r} does not name the bundle's codec ({derived!r})"
            )
        return cls(
            bundle.codec,
            bundle.target,
            codec_id=derived,
            bundle_digest=bundle.digest,
            config=config,
        )

    def _probe_classes(self) -> int:
        import torch

        height, width = self.image_size or (32, 32)
        param = next(self._classifier.parameters())
        with torch.inference_mode():
            logits = self._classifier(
                torch.zeros(1, 3, height, width, device=param.device, dtype=param.dtype)
            )
        if logits.dim() != 2 or logits.size(0) != 1 or logits.size(1) < 1:
            raise ConfigError("the target classifier does not return N x classes logits")
        return int(logits.size(1))

    # --- per request, in the event loop ---------------------------------------------

    def precheck(self, request: ClassifyRequest) -> None:
        """Refuse a request before queueing it (docs/cloud_api.md 3.3).

        1. the codec id is the accepted one (422 ``unsupported-codec``); 2. the image
        count is at most ``max_batch`` (413 ``too-many-images``); 3. every string is within
        ``max_string_bytes`` / ``max_stream_bytes`` (413 ``string-too-large``), its
        header parses within the limits and has the request's form (422
        ``invalid-bitstring``, with the string's index); 4. a batch stream's header
        claims exactly ``count`` images (422 ``count-mismatch``); 5. with a configured
        image size, every latent shape matches it (422 ``unexpected-image-size``).
        """
        from vision import CodecError, StreamHeader

        if request.codec != self.codec_id:
            raise RefusalError(
                422,
                "unsupported-codec",
                "unsupported codec",
                f"codec {request.codec!r} is not accepted; this service decodes {self.codec_id!r}",
            )
        if request.count > self._limits.max_batch:
            raise RefusalError(
                413,
                "too-many-images",
                "too many images",
                f"{request.count} images exceed the limit of {self._limits.max_batch}",
            )
        limits = self._single_limits if request.form is Form.SINGLE else self._batch_limits
        for index, string in enumerate(request.strings):
            if len(string) > limits.max_payload_bytes:
                what = "string" if request.form is Form.SINGLE else "stream"
                raise RefusalError(
                    413,
                    "string-too-large",
                    "bit-string too large",
                    f"a {what} of {len(string)} bytes exceeds {limits.max_payload_bytes}",
                    index,
                )
            try:
                header, _ = StreamHeader.parse(string, limits)
            except CodecError as exc:
                raise RefusalError(
                    422, "invalid-bitstring", "invalid bit-string", str(exc), index
                ) from None
            if header.batch != (request.form is Form.BATCH):
                raise RefusalError(
                    422,
                    "invalid-bitstring",
                    "invalid bit-string",
                    f"the string is in the {'batch' if header.batch else 'single'} form, "
                    f"the request declares {request.form.label}",
                    index,
                )
            if header.batch and header.count != request.count:
                raise RefusalError(
                    422,
                    "count-mismatch",
                    "image count mismatch",
                    f"the stream holds {header.count} images, the request declares {request.count}",
                )
            if self.latent_shape is not None and (header.height, header.width) != (
                self.latent_shape
            ):
                raise RefusalError(
                    422,
                    "unexpected-image-size",
                    "unexpected image size",
                    f"the string decodes to {16 * header.height}x{16 * header.width} pixels, "
                    f"this service classifies {self.image_size[0]}x{self.image_size[1]}"
                    if self.image_size is not None
                    else "unexpected image size",
                    index,
                )

    # --- per batch, in the worker thread -------------------------------------------

    def _decode_latents(self, request: ClassifyRequest) -> torch.Tensor:
        import torch

        from vision import CodecError, decode_batch_latents, decode_single_latents

        if request.form is Form.BATCH:
            try:
                return decode_batch_latents(
                    self._codec, request.strings[0], limits=self._batch_limits
                )
            except CodecError as exc:
                raise RefusalError(
                    422, "invalid-bitstring", "invalid bit-string", str(exc), 0
                ) from None
        parts = []
        for index, string in enumerate(request.strings):
            try:
                parts.append(
                    decode_single_latents(self._codec, [string], limits=self._single_limits)
                )
            except CodecError as exc:
                raise RefusalError(
                    422, "invalid-bitstring", "invalid bit-string", str(exc), index
                ) from None
        return torch.cat(parts)

    def _result(self, scores: list[float], labels: list[int]) -> ImageResult:
        top = tuple(
            ScoredLabel(int(label), min(PPM, max(0, round(score * PPM))))
            for score, label in zip(scores, labels, strict=True)
        )
        name = None if self.label_names is None else self.label_names[top[0].label]
        return ImageResult(top[0].label, top, name)

    def run_batch(self, requests: Sequence[ClassifyRequest]) -> list[Outcome]:
        """Decode and classify a batch of (prechecked) requests; one outcome each."""
        import torch

        refusals: dict[int, RefusalError] = {}
        latents: dict[int, torch.Tensor] = {}
        entropy_us: dict[int, int] = {}
        for i, request in enumerate(requests):
            started = time.perf_counter()
            try:
                latents[i] = self._decode_latents(request)
            except RefusalError as refusal:
                refusals[i] = refusal
            entropy_us[i] = _us(time.perf_counter() - started)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, y in latents.items():
            groups.setdefault(tuple(y.shape[1:]), []).append(i)
        results: dict[int, tuple[ImageResult, ...]] = {}
        shared: dict[int, dict[str, int]] = {}
        merged: dict[int, int] = {}
        param = next(self._classifier.parameters())
        with torch.inference_mode():
            for members in groups.values():
                y = torch.cat([latents[i] for i in members])
                synthesis = classify = 0.0
                probabilities = []
                for chunk in torch.split(y, self._chunk):
                    t0 = time.perf_counter()
                    x = self._codec.g_s(chunk.to(device=param.device, dtype=param.dtype))
                    x = torch.nan_to_num(x, nan=0.0).clamp_(0.0, 1.0)
                    t1 = time.perf_counter()
                    logits = torch.nan_to_num(
                        self._classifier(x).double(), nan=0.0, posinf=1e6, neginf=-1e6
                    )
                    probabilities.append(torch.softmax(logits, dim=1).cpu())
                    t2 = time.perf_counter()
                    synthesis += t1 - t0
                    classify += t2 - t1
                probs = torch.cat(probabilities)
                k = min(max(requests[i].top_k for i in members), self.num_classes)
                values, indices = probs.topk(k, dim=1)
                top_values, top_indices = values.tolist(), indices.tolist()
                offset = 0
                timing = {"synthesis": _us(synthesis), "classify": _us(classify)}
                group_images = int(y.size(0))
                for i in members:
                    n = int(latents[i].size(0))
                    kk = min(requests[i].top_k, self.num_classes)
                    results[i] = tuple(
                        self._result(top_values[row][:kk], top_indices[row][:kk])
                        for row in range(offset, offset + n)
                    )
                    shared[i] = timing
                    merged[i] = group_images
                    offset += n
        outcomes = []
        for i in range(len(requests)):
            timings = {"entropy_decode": entropy_us[i], **shared.get(i, {})}
            if i in refusals:
                outcomes.append(Outcome(refusal=refusals[i], timings_us=timings))
            else:
                outcomes.append(
                    Outcome(results=results[i], timings_us=timings, batch_images=merged[i])
                )
        return outcomes
