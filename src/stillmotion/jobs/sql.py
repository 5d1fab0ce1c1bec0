"""The job store's SQL, written once for both engines; what differs between them is a `Dialect`.

Every statement is written with named parameters (`:name`) against the `Conn` interface below;
the PostgreSQL engine turns them into its own placeholders. The differences between the engines
are data, not code:

- `clock`: the store's clock in SQL. SQLite binds it from the process (`:now`, the store's
  `now()`); PostgreSQL reads the database's own clock in the statement, so replicas with skewed
  clocks agree on whose lease has lapsed.
- JSON columns: SQLite stores text (`json.dumps` in, `json.loads` out); PostgreSQL JSONB.
- `row_lock`: claims lock the row they take (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite's
  write transaction already holds the whole file).
- `budget_lock`, `cap_lock`: what serialises a budget's or a cap's count-then-write across
  processes inside a transaction (PostgreSQL advisory locks; SQLite: `BEGIN IMMEDIATE` alone).
- `returning_sees_triggers`: PostgreSQL's `RETURNING` shows what the `billed` trigger set;
  SQLite's shows the row before its AFTER trigger ran, so the row is read again in the same
  transaction.
- `day`: a row's UTC day, for the spend report.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, Protocol

from .spend import COMMITTED_SQL, RESERVED_SQL, PeriodSpend

NOT_TERMINAL = "status NOT IN ('succeeded','failed','cancelled')"
FINISHED = f"NOT ({NOT_TERMINAL})"
Mode = Literal["read", "write", "atomic"]
"""How a store call uses its connection (an engine's `_session`): `read` (no transaction), `write`
(one durable write: one statement, or a few that must land together) and `atomic` (statements that
read, compare and write in one transaction, serialised with other processes by the dialect's locks)."""


class StoreClosed(Exception):
    """Raised by an engine's session opened with `if_open` on a closed store (render threads
    abandoned at shutdown); the operation answers its 'nothing happened' value instead."""


class Conn(Protocol):
    """One connection (or transaction) of an engine, running `:name`-style statements."""

    def run(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Execute; the rows it returns (none for a write without RETURNING), as column dicts."""

    def count(self, sql: str, params: Mapping[str, Any]) -> int:
        """Execute a write; how many rows it changed."""


@dataclass(frozen=True)
class Dialect:
    name: str
    """SQLite | PostgreSQL"""
    clock: str
    """SQL for the store's clock: `:now` (bound from `now()`) or an expression read by the server."""
    clock_text: str
    """The clock as text, for the meta table (`:now_text`: `repr(now())`)."""
    json_param: Callable[[Any], Any]
    """A JSON column's value as a statement parameter."""
    json_value: Callable[[Any], Any]
    """A JSON column as read back, as Python."""
    row_lock: str
    """Appended to the claim's row selection."""
    budget_lock: str
    """Run first in a budget's transaction ('' = none needed)."""
    cap_lock: str
    """Run first in a cap's transaction, with `:cap` the cap's name ('' = none needed)."""
    returning_sees_triggers: bool
    day: str
    """A row's UTC day (YYYY-MM-DD) from `created_at`."""

    @property
    def process_clock(self) -> bool:
        return self.clock == ":now"


SQLITE = Dialect(
    name="SQLite",
    clock=":now",
    clock_text=":now_text",
    json_param=json.dumps,
    json_value=json.loads,
    row_lock="",
    budget_lock="",
    cap_lock="",
    returning_sees_triggers=False,
    day="strftime('%Y-%m-%d', created_at, 'unixepoch')",
)


@lru_cache(maxsize=512)
def pyformat(sql: str) -> str:
    """`:name` placeholders as psycopg's `%(name)s` (a literal `%` doubled; `::` casts kept)."""
    return re.sub(r"(?<![:\w]):([A-Za-z_]\w*)", r"%(\1)s", sql.replace("%", "%%"))


def in_list(name: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """`:name0, :name1, ...` for an IN list, with its parameters."""
    names = [f"{name}{i}" for i in range(len(values))]
    return ", ".join(f":{n}" for n in names), dict(zip(names, values, strict=True))


def set_clause(dialect: Dialect, values: Mapping[str, Any], json_cols: Collection[str]) -> tuple[list[str], dict[str, Any]]:
    """`col=:c_col` for each value (JSON columns encoded), with its parameters."""
    cols = [f"{k}=:c_{k}" for k in values]
    params = {f"c_{k}": dialect.json_param(v) if k in json_cols and v is not None else v for k, v in values.items()}
    return cols, params


def changed_row(conn: Conn, dialect: Dialect, sql: str, params: Mapping[str, Any], job_id: str) -> dict[str, Any] | None:
    """Run a write of one job (`sql`, without RETURNING) and return the row as it is after the
    write, read inside the same session; None when the write changed nothing."""
    if dialect.returning_sees_triggers:
        rows = conn.run(f"{sql} RETURNING *", params)
        return rows[0] if rows else None
    if not conn.count(sql, params):
        return None
    rows = conn.run("SELECT * FROM jobs WHERE id=:row_id", {"row_id": job_id})
    return rows[0] if rows else None


# -- spend (what counts is in jobs/spend.py) ------------------------------------------------------


def period_spend(conn: Conn, period_from: float, user: str | None = None) -> PeriodSpend:
    """Committed and reserved spend of the jobs created since `period_from`: every job's, or `user`'s."""
    mine = " AND user_id = :user" if user is not None else ""
    r = conn.run(
        f"SELECT COALESCE(SUM({COMMITTED_SQL}), 0) AS c, COALESCE(SUM({RESERVED_SQL}), 0) AS r"
        f" FROM jobs WHERE created_at >= :start{mine}",
        {"start": period_from, "user": user},
    )[0]
    return PeriodSpend(float(r["c"]), float(r["r"]))


def breakdown(conn: Conn, dialect: Dialect, since: float, user: str | None) -> list[tuple[Any, ...]]:
    """(day, model, route, jobs, billed, committed, actual, estimated, reserved, unknown) rows."""
    mine = " AND user_id = :user" if user is not None else ""
    rows = conn.run(
        f"""
        SELECT {dialect.day} AS day, model, route,
               COUNT(*) AS jobs,
               SUM(CASE WHEN billed = 1 THEN 1 ELSE 0 END) AS billed_jobs,
               COALESCE(SUM({COMMITTED_SQL}), 0) AS committed,
               SUM(CASE WHEN billed = 1 THEN actual_usd END) AS actual,
               COALESCE(SUM(CASE WHEN billed = 1 OR {NOT_TERMINAL} THEN estimated_usd ELSE 0 END), 0) AS estimated,
               COALESCE(SUM({RESERVED_SQL}), 0) AS reserved,
               SUM(CASE WHEN estimated_usd IS NULL AND route <> 'local' THEN 1 ELSE 0 END) AS unknown
        FROM jobs WHERE created_at >= :since{mine}
        GROUP BY 1, model, route ORDER BY 1 DESC, model, route
        """,
        {"since": since, "user": user},
    )
    return [tuple(r.values()) for r in rows]


def users_spend(conn: Conn, since: float) -> list[tuple[Any, ...]]:
    """(user, jobs, committed, reserved) of each user since `since`, biggest spender first."""
    rows = conn.run(
        f"SELECT user_id, COUNT(*) AS jobs, COALESCE(SUM({COMMITTED_SQL}), 0) AS committed,"
        f" COALESCE(SUM({RESERVED_SQL}), 0) AS reserved"
        " FROM jobs WHERE created_at >= :since GROUP BY user_id ORDER BY 3 DESC, user_id",
        {"since": since},
    )
    return [tuple(r.values()) for r in rows]
