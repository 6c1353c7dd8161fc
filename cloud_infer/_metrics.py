"""Prometheus metrics of the cloud inference service (one registry per app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE", "CloudMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_BYTES_BUCKETS = (4, 8, 12, 16, 24, 32, 48, 64, 128, 256, 1024)


class CloudMetrics:
    """Counters, gauges and histograms exposed at ``GET /metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "pmc2_cloud_requests",
            "HTTP requests by route and status code",
            ("route", "status"),
            registry=self.registry,
        )
        self.images = Counter("pmc2_cloud_images", "Images classified", registry=self.registry)
        self.errors = Counter(
            "pmc2_cloud_errors",
            "Refused or failed classify requests by problem code",
            ("code",),
            registry=self.registry,
        )
        self.latency = Histogram(
            "pmc2_cloud_request_duration_seconds",
            "Classify request latency (admission to answer)",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_images = Histogram(
            "pmc2_cloud_batch_images",
            "Images per forward pass (after micro-batching)",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.bytes_per_image = Histogram(
            "pmc2_cloud_bitstring_bytes_per_image",
            "Bit-string bytes per image of a request",
            buckets=_BYTES_BUCKETS,
            registry=self.registry,
        )
        self.pending = Gauge(
            "pmc2_cloud_pending_images",
            "Images admitted and not yet answered",
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
