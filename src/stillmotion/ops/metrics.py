"""Prometheus metrics (`/metrics` on the HTTP transport), with the official `prometheus_client`.

Counters and the histogram are this process's (Prometheus sums them over replicas); the
`stillmotion_jobs` gauge is read from the job store at scrape time, so every replica reports the
same numbers for it. Labels are bounded: provider (each API with its own key in
`providers/families.ENDPOINTS`, local, other), status, request kind (create, poll) and outcome;
never a job id or a user.

The provider a request is for is known where the job is driven, not where the request is sent:
the runner sets `PROVIDER` (a context variable, one per job task) and `providers/_http.send`
reads it.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from ..providers.families import ENDPOINTS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The classic text format, which every Prometheus 2.x and 3.x scrapes (what generate_latest writes)."""
PROVIDER: contextvars.ContextVar[str] = contextvars.ContextVar("stillmotion_provider", default="other")
"""The provider label of the job the current task drives."""
KNOWN_PROVIDERS = frozenset({*ENDPOINTS, "local"})
STATUSES = ("queued", "running", "downloading", "succeeded", "failed", "cancelled")

disable_created_metrics()  # type: ignore[no-untyped-call]  # no `*_created` series next to every counter (noise for dashboards)
REGISTRY = CollectorRegistry(auto_describe=True)
"""Only stillmotion's metrics (not the client library's process-wide default registry)."""

JOBS_FINISHED = Counter(
    "stillmotion_jobs_finished", "Jobs that ended in this process, by provider and final status.",
    ["provider", "status"], registry=REGISTRY,
)
PROVIDER_REQUESTS = Counter(
    "stillmotion_provider_requests", "Provider API requests, by provider, kind (create, poll) and outcome "
    "(ok, rate_limited, client_error, server_error, network_error).",
    ["provider", "kind", "outcome"], registry=REGISTRY,
)
PROVIDER_SECONDS = Histogram(
    "stillmotion_provider_request_seconds", "Provider API request latency in seconds, by provider and kind.",
    ["provider", "kind"], registry=REGISTRY, buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
SPEND = Counter(
    "stillmotion_spend_usd", "US dollars committed by jobs that ended in this process after reaching the provider "
    "(the provider's reported cost, else the estimate).", ["provider"], registry=REGISTRY,
)
TAKEOVERS = Counter(
    "stillmotion_job_takeovers", "Unfinished jobs this process took over from another (a gone owner or a lapsed lease).",
    registry=REGISTRY,
)


def provider_label(model: str, route: str) -> str:
    """A bounded provider label: the gateway for gateway routes, else the catalog's provider."""
    if route in ("gateway", "local"):
        return route
    from ..catalog import MODELS

    spec = MODELS.get(model)
    name = spec.provider if spec is not None else "other"
    return name if name in KNOWN_PROVIDERS else "other"


def outcome_of(status_code: int | None) -> str:
    if status_code is None:
        return "network_error"
    if status_code == 429:
        return "rate_limited"
    if status_code >= 500:
        return "server_error"
    if status_code >= 400:
        return "client_error"
    return "ok"


def observe_request(kind: str, seconds: float, status_code: int | None) -> None:
    provider = PROVIDER.get()
    PROVIDER_REQUESTS.labels(provider, kind, outcome_of(status_code)).inc()
    PROVIDER_SECONDS.labels(provider, kind).observe(seconds)


def job_finished(model: str, route: str, status: str, committed_usd: float | None) -> None:
    provider = provider_label(model, route)
    JOBS_FINISHED.labels(provider, status).inc()
    if committed_usd:
        SPEND.labels(provider).inc(committed_usd)


class StoreJobs(Collector):
    """`stillmotion_jobs{status, provider}` counted in the store at scrape time."""

    def __init__(self, counts: Callable[[], list[tuple[str, str, str, int]]]) -> None:
        self.counts = counts
        """Returns (status, model, route, jobs) rows; None-safe: an unstarted server reports nothing."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("stillmotion_jobs", "Jobs in the job store, by status and provider.",
                                   labels=["status", "provider"])
        totals: dict[tuple[str, str], int] = {}
        for status, model, route, n in self.counts():
            key = (status, provider_label(model, route))
            totals[key] = totals.get(key, 0) + int(n)
        for (status, provider), n in sorted(totals.items()):
            family.add_metric([status, provider], n)
        yield family

    def describe(self) -> Iterator[Any]:
        return iter(())


def exposition(store_counts: Callable[[], list[tuple[str, str, str, int]]] | None) -> bytes:
    """The text format of every metric (blocking: the store is read; call it off the event loop)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Forward())
    if store_counts is not None:
        registry.register(StoreJobs(store_counts))
    return generate_latest(registry)


class _Forward(Collector):
    """The process-wide metrics, inside a per-scrape registry that adds the store's gauge."""

    def collect(self) -> Iterator[Any]:
        yield from REGISTRY.collect()


__all__ = ["CONTENT_TYPE", "PROVIDER", "exposition", "job_finished", "observe_request", "provider_label"]
