"""Prometheus metrics of the gateway (one registry per app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE", "GatewayMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SIZE_BUCKETS = (256, 1024, 2048, 4096, 8192, 16384, 65536, 262144, 1048576, 4194304)


class GatewayMetrics:
    """Counters, gauges and histograms exposed at ``GET /metrics``."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "pmc2_gateway_requests",
            "HTTP requests by route and status",
            ("route", "status"),
            registry=r,
        )
        self.duration = Histogram(
            "pmc2_gateway_request_duration_seconds",
            "Request latency by route (whole request, as the client sees it)",
            ("route",),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rejections = Counter(
            "pmc2_gateway_rejections",
            "Requests refused by the gateway itself, by reason",
            ("reason",),
            registry=r,
        )
        self.upstream = Histogram(
            "pmc2_gateway_upstream_duration_seconds",
            "Replica call latency by replica and call",
            ("replica", "call"),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "pmc2_gateway_upstream_errors",
            "Failed replica calls by replica and kind",
            ("replica", "kind"),
            registry=r,
        )
        self.envelope_bytes = Histogram(
            "pmc2_gateway_envelope_bytes",
            "Sizes of accepted request envelopes",
            buckets=_SIZE_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "pmc2_gateway_in_flight", "Requests in flight per replica", ("replica",), registry=r
        )
        self.attested = Gauge(
            "pmc2_gateway_replica_attested",
            "1 when the replica's last attestation refresh succeeded",
            ("replica",),
            registry=r,
        )
        self.refreshes = Counter(
            "pmc2_gateway_attestation_refreshes",
            "Attestation refreshes by replica and outcome",
            ("replica", "outcome"),
            registry=r,
        )

    def exposition(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
