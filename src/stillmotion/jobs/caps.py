"""Concurrency caps shared by every process on one job store (SQLite or PostgreSQL).

`STILLMOTION_MAX_RUNNING_KLINGAI|ALIBABA|XAI` cap the direct route to that provider (an
account's own parallel-task limit); `STILLMOTION_MAX_RUNNING_GATEWAY` caps the Gateway route.
"Running" means created at the provider and not yet finished there: a job at stage
`submitting` (its create request may be out) or `polling`, with no `provider_done_at`.
Jobs downloading, queued or ended do not count.

The check and the move to `submitting` are one store transaction, serialised across processes
(SQLite: the write lock; PostgreSQL: a transaction-scoped advisory lock per cap), so replicas
can never together exceed a cap. A job over the cap stays `queued`, stage `new`, with a
status_detail saying why, and tries again every CAP_RETRY_S.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConcurrencyLimited
from ..providers.families import ENDPOINTS
from ..settings import Settings

CAP_RETRY_S = 1.0

@dataclass(frozen=True)
class RunningCap:
    name: str
    """A direct family or the Gateway (`providers/families.ENDPOINTS`)."""
    limit: int
    route: str
    """The route the counted jobs use: direct or gateway."""
    models: tuple[str, ...] | None
    """The counted models (direct: that provider's catalog models); None = every model on the route."""

    def reached(self, running: int) -> CapReached:
        endpoint = ENDPOINTS[self.name]
        var = endpoint.max_running_var
        return CapReached(
            f"{running} of {self.limit} {endpoint.label} tasks are running across every server on this "
            f"job store ({var}={self.limit}); this job is sent when one finishes",
            retry_after=CAP_RETRY_S,
        )


class CapReached(ConcurrencyLimited):
    """Our own cap (not the provider's answer): the job waits in `queued`, without an attempt limit."""


class LeaseShort(ConcurrencyLimited):
    """Marking the job `submitting` took over half its lease (a slow store, a paused process): the
    create is not sent on a lease that may be gone; the job waits in `queued`, without an attempt limit."""


RUNNING_SQL = "stage IN ('submitting','polling') AND provider_done_at IS NULL AND status NOT IN ('succeeded','failed','cancelled')"
"""The rows a cap counts (besides route and model)."""


def cap_for(settings: Settings, model: str, route: str) -> RunningCap | None:
    """The cap that applies to a job on this model and route, if one is set."""
    if route == "gateway":
        limit = settings.max_running.get("gateway")
        return RunningCap("gateway", limit, "gateway", None) if limit else None
    if route != "direct":
        return None
    from ..catalog import MODELS

    spec = MODELS.get(model)
    if spec is None:
        return None
    limit = settings.max_running.get(spec.provider)
    if not limit:
        return None
    models = tuple(sorted(m.id for m in MODELS.values() if m.provider == spec.provider))
    return RunningCap(spec.provider, limit, "direct", models)
