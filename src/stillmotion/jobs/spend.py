"""Spend and the budget, on the job rows themselves (the queries are in jobs/sql.py, both engines).

Each job row carries `estimated_usd` (set at submission), `actual_usd` (what the provider's answer
said, when it says) and `billed`. A job's spend:

* not ended yet (queued, running, downloading): its estimate, *reserved*;
* ended after reaching the provider (`billed` = 1: succeeded, failed after its create, interrupted,
  cancelled after its create): *committed*, the actual cost when known, else the estimate;
* ended before reaching the provider (refused, failed before its create): 0, so its reservation
  is given back.

`billed` is set by a trigger when a job ends from a stage at or after its create request
(`submitting`, `polling`, `downloading`): a job that fails before its create goes back to stage
`new` first, so it stays 0. A job cancelled or interrupted while its create was in flight counts
as possibly billed. Periods are UTC: the current day, the current month, or all time.

Two budgets may hold at once (issue #23): the whole server's (STILLMOTION_BUDGET_USD, every job)
and each user's (STILLMOTION_USER_BUDGET_USD, that user's jobs: `BudgetRule.user`). Both are
checked in the same write transaction as the insert.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from ..errors import BudgetExceeded

Period = Literal["day", "month", "total"]
COST_COLUMNS = frozenset({"cost", "actual_cost"})
"""JSON columns added to the jobs table."""
EPSILON = 1e-9

COMMITTED_SQL = (
    "CASE WHEN status IN ('succeeded','failed','cancelled') AND billed = 1 "
    "THEN COALESCE(actual_usd, estimated_usd, 0) ELSE 0 END"
)
RESERVED_SQL = "CASE WHEN status NOT IN ('succeeded','failed','cancelled') THEN COALESCE(estimated_usd, 0) ELSE 0 END"


def period_start(period: Period, now: float | None = None) -> float:
    """The UTC start of the period that contains `now` (0 for total)."""
    if period == "total":
        return 0.0
    t = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    start = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        start = start.replace(day=1)
    return start.timestamp()


def period_label(period: Period, now: float | None = None) -> str:
    t = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    if period == "day":
        return f"today ({t:%Y-%m-%d} UTC)"
    if period == "month":
        return f"this month ({t:%Y-%m} UTC)"
    return "in total"


@dataclass(frozen=True)
class BudgetRule:
    usd: float
    period: Period
    user: str | None = None
    """None: the whole server's budget (every job); else one user's budget (that user's jobs)."""

    @property
    def variable(self) -> str:
        return "STILLMOTION_USER_BUDGET_USD" if self.user is not None else "STILLMOTION_BUDGET_USD"

    def for_user(self, user: str) -> BudgetRule:
        return BudgetRule(self.usd, self.period, user)


@dataclass(frozen=True)
class PeriodSpend:
    committed_usd: float
    reserved_usd: float

    @property
    def total_usd(self) -> float:
        return self.committed_usd + self.reserved_usd


def _usd(x: float) -> str:
    return f"${x:,.2f}" if x >= 0.1 or x == 0 else f"${x:.4f}"


def refuse_unless_fits(
    spent: PeriodSpend, budget: BudgetRule, estimated_usd: float | None, basis: str, now: float
) -> None:
    """Raise BudgetExceeded unless `estimated_usd` fits on top of the period's `spent` (any engine)."""
    left = max(0.0, budget.usd - spent.total_usd)
    when = period_label(budget.period, now)
    whose = "the" if budget.user is None else "your own"
    how = (
        f"Raise {budget.variable} (or set STILLMOTION_BUDGET_PERIOD) and restart the server"
        + ("" if budget.period == "total" else ", or wait for the next period")
        + "; `stillmotion spend` shows where the money went."
    )
    if estimated_usd is None:
        raise BudgetExceeded(
            f"Refused before any request: the price of this job is unknown ({basis}), and with a budget "
            f"({budget.variable}={budget.usd:g} per {budget.period}) a job of unknown price could break it. "
            f"{_usd(left)} is left {when}. Add this model's price to the STILLMOTION_PRICES file to use it under a budget."
        )
    if spent.total_usd + estimated_usd > budget.usd + EPSILON:
        raise BudgetExceeded(
            f"Refused before any request: this job is estimated at {_usd(estimated_usd)}, and only {_usd(left)} of "
            f"{whose} {_usd(budget.usd)} budget is left {when} ({_usd(spent.committed_usd)} committed, "
            f"{_usd(spent.reserved_usd)} reserved by jobs in flight). {how}"
        )


def status_of(spent: PeriodSpend, budget: BudgetRule | None, period: Period, now: float | None = None) -> dict[str, Any]:
    return {
        "budget_usd": budget.usd if budget else None,
        "period": budget.period if budget else period,
        "period_start": datetime.fromtimestamp(period_start(budget.period if budget else period, now), UTC)
        .isoformat()
        .replace("+00:00", "Z"),
        "committed_usd": round(spent.committed_usd, 6),
        "reserved_usd": round(spent.reserved_usd, 6),
        "left_usd": round(max(0.0, budget.usd - spent.total_usd), 6) if budget else None,
    }


def user_row(r: tuple[Any, ...], budget: BudgetRule | None) -> dict[str, Any]:
    """One user's (user, jobs, committed, reserved) in the period, with what is left of their own budget."""
    spent = PeriodSpend(float(r[2]), float(r[3]))
    return {
        "user": str(r[0]),
        "jobs": int(r[1]),
        "committed_usd": round(spent.committed_usd, 6),
        "reserved_usd": round(spent.reserved_usd, 6),
        "left_usd": round(max(0.0, budget.usd - spent.total_usd), 6) if budget else None,
    }


def breakdown_row(r: tuple[Any, ...]) -> dict[str, Any]:
    """One row of (day, model, route, jobs, billed, committed, actual, estimated, reserved, unknown)."""
    return {
        "day": str(r[0]),
        "model": r[1],
        "route": r[2],
        "jobs": int(r[3]),
        "billed_jobs": int(r[4]),
        "committed_usd": round(float(r[5]), 6),
        "actual_usd": round(float(r[6]), 6) if r[6] is not None else None,
        "estimated_usd": round(float(r[7]), 6),
        "in_flight_usd": round(float(r[8]), 6),
        "unknown_price_jobs": int(r[9]),
    }
