"""Committed spend in the store (which jobs count, and for how much), periods, `stillmotion spend`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from stillmotion.errors import BudgetExceeded
from stillmotion.jobs.spend import BudgetRule, period_start
from stillmotion.jobs.store import JobStore, SqliteStore

EXE = [sys.executable, "-m", "stillmotion"]
OWNER = "test-owner"


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KLINGAI_", "ALIBABA_", "XAI_", "AI_GATEWAY"))}
    env.update({"STILLMOTION_HOME": str(home), **extra})
    return env


class ClockStore(SqliteStore):
    offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset


def add(store: JobStore, n: int, usd: float | None, model: str = "xai/grok-imagine-video", route: str = "direct",
        budget: BudgetRule | None = None) -> str:
    job_id = f"job_{n:016x}"
    store.create(
        job_id=job_id, tool="animate_image", model=model, route=route, request={}, args_hash="h",
        idempotency_key=None, warnings=[], cost={"estimated_usd": usd, "basis": "test", "estimate": True},
        budget=budget, owner=OWNER, lease_s=60,
    )
    return job_id


def end(store: JobStore, job_id: str, *stages: str, status: str) -> None:
    """Walk the job through the runner's stages, then end it as the runner would."""
    for stage in stages:
        assert store.update_owned(job_id, OWNER, {"stage": stage, "status": "running"}) is not None
    if status == "cancelled":
        assert store.cancel(job_id, {"kind": "cancelled"}) is not None
    else:
        assert store.update_owned(job_id, OWNER, {"status": status, "stage": "done"}) is not None


def test_which_jobs_count_and_for_how_much(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "jobs.sqlite3")
    try:
        rule = BudgetRule(10.0, "total")
        a = add(store, 1, 1.0)  # succeeds, the provider reports 0.8
        end(store, a, "submitting", "polling", "downloading", status="succeeded")
        store.set_actual_cost(a, OWNER, 0.8, {"usd": 0.8, "units": None, "source": "test"})
        b = add(store, 2, 1.0)  # failed after its create: counted at its estimate
        end(store, b, "submitting", "polling", status="failed")
        c = add(store, 3, 1.0)  # the provider refused the create (back to stage new): free
        end(store, c, "submitting", "new", status="failed")
        d = add(store, 4, 1.0)  # cancelled while the create was in flight: possibly billed
        end(store, d, "submitting", status="cancelled")
        e = add(store, 5, 1.0)  # cancelled before anything was sent: free
        end(store, e, status="cancelled")
        f = add(store, 6, 1.0)  # interrupted (the runner ends it from stage submitting)
        end(store, f, "submitting", status="failed")
        add(store, 7, 0.5)  # in flight: reserved
        add(store, 8, 0.0, model="local/preview", route="local")
        g = add(store, 9, 0.0, model="local/preview", route="local")
        end(store, g, "polling", status="succeeded")
        billed = {r.id: r.billed for r in store.recent(limit=50)}
        assert billed == {a: 1, b: 1, c: 0, d: 1, e: 0, f: 1, f"job_{7:016x}": 0,
                          f"job_{8:016x}": 0, g: 0}
        budget = store.spend(rule, "total")["budget"]
        assert budget["committed_usd"] == pytest.approx(0.8 + 1 + 1 + 1)
        assert budget["reserved_usd"] == pytest.approx(0.5)
        assert budget["left_usd"] == pytest.approx(10 - 4.3)
        # the reservation is all-or-nothing: 5.7 fits, 5.71 does not
        with pytest.raises(BudgetExceeded, match=r"\$5.70 of the \$10.00 budget is left in total"):
            add(store, 10, 5.71, budget=rule)
        add(store, 11, 5.7, budget=rule)
        with pytest.raises(BudgetExceeded, match="price of this job is unknown"):
            add(store, 12, None, budget=BudgetRule(100.0, "total"))
        assert store.get(f"job_{12:016x}") is None
    finally:
        store.close()


def test_periods_are_utc_and_old_jobs_do_not_count(tmp_path: Path) -> None:
    now = datetime(2026, 3, 31, 23, 30, tzinfo=UTC).timestamp()
    assert period_start("day", now) == datetime(2026, 3, 31, tzinfo=UTC).timestamp()
    assert period_start("month", now) == datetime(2026, 3, 1, tzinfo=UTC).timestamp()
    assert period_start("total", now) == 0.0
    store = ClockStore(tmp_path / "jobs.sqlite3")
    try:
        store.offset = -40 * 86400  # a job from 40 days ago
        old = add(store, 1, 3.0)
        end(store, old, "submitting", "polling", status="succeeded")
        store.offset = 0.0
        add(store, 2, 1.0)
        assert store.spend(BudgetRule(5, "month"), "month")["budget"]["reserved_usd"] == pytest.approx(1.0)
        assert store.spend(BudgetRule(5, "month"), "month")["budget"]["committed_usd"] == 0
        assert store.spend(BudgetRule(5, "total"), "total")["budget"]["committed_usd"] == pytest.approx(3.0)
    finally:
        store.close()


def test_spend_command_and_a_bad_price_file_stops_start_up(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = SqliteStore(home / "jobs.sqlite3")
    try:
        a = add(store, 1, 0.25)
        end(store, a, "submitting", "polling", status="succeeded")
        store.set_actual_cost(a, OWNER, 0.2, {"usd": 0.2, "units": None, "source": "test"})
        add(store, 2, None, model="klingai/kling-v2.6-i2v")
    finally:
        store.close()
    env = _env(home, STILLMOTION_BUDGET_USD="5", STILLMOTION_BUDGET_PERIOD="day")
    out = subprocess.run([*EXE, "spend"], env=env, capture_output=True, text=True, check=True).stdout
    assert "Budget $5.00 per day" in out and "$0.20 committed" in out and "$4.80 left" in out
    line = next(x for x in out.splitlines() if "xai/grok-imagine-video" in x)
    assert line.split()[2:] == ["direct", "1", "$0.20", "$0.20", "$0.25", "$0.00"]
    kling = next(x for x in out.splitlines() if "kling" in x)
    assert kling.split()[-1] == "1"  # one job of unknown price
    report: dict[str, Any] = json.loads(
        subprocess.run([*EXE, "spend", "--json"], env=env, capture_output=True, text=True, check=True).stdout
    )
    assert report["budget"]["left_usd"] == pytest.approx(4.8)
    bad = tmp_path / "prices.json"
    bad.write_text('{"prices": [{"model": "xai/grok-imagine-video", "usd_per_second": "cheap"}]}')
    res = subprocess.run([*EXE], env=_env(home, STILLMOTION_PRICES=str(bad)), capture_output=True, text=True,
                         input="", timeout=60)
    assert res.returncode == 2 and res.stdout == ""
    assert "STILLMOTION_PRICES=" in res.stderr and "usd_per_second must be a number >= 0" in res.stderr
    assert "Traceback" not in res.stderr
