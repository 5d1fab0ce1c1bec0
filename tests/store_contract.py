"""What every JobStore implementation must do: the behaviour the runner relies on.

A test module for one engine imports everything from here and defines one fixture,
`open_store`: a callable returning a NEW store object on the SAME (empty, per-test) database
each time it is called, so a second object stands in for a second process:

    from tests.store_contract import *  # noqa: F403

    @pytest.fixture
    def open_store(tmp_path): ...

Every test runs twice: on the synchronous `JobStore` (the CLI, render threads) and through its
asynchronous face (`AsyncJobStore`, what everything on the event loop uses), each call awaited on
a real event loop in another thread (`face` below).

Times here are small leases and store-clock comparisons, never sleeps longer than a lease.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from stillmotion.errors import BudgetExceeded
from stillmotion.jobs.async_store import AsyncJobStore
from stillmotion.jobs.spend import BudgetRule
from stillmotion.jobs.store import LOCAL_USER, DuplicateIdempotencyKey, JobHead, JobRow, JobStore, new_job_id

__all__ = [
    "OpenStore",
    "face",
    "store",
    "test_aged_finished_jobs_and_files_deleted",
    "test_budget_reservation_is_atomic_across_processes",
    "test_cancel_from_any_process_wins_over_owner",
    "test_changed_since_reports_visible_changes_not_renewals",
    "test_claim_is_exclusive_across_processes",
    "test_claim_rules",
    "test_committed_spend_counts_jobs_that_reached_the_provider",
    "test_create_and_read_back",
    "test_delete_finished_removes_only_finished_rows",
    "test_duplicate_idempotency_key",
    "test_heads_match_full_rows",
    "test_idempotency_keys_are_per_user",
    "test_meta_claim_interval_has_one_winner",
    "test_meta_table",
    "test_reads_are_scoped_to_a_user",
    "test_recent_and_unfinished",
    "test_release",
    "test_renew_reports_what_is_still_held",
    "test_set_progress_is_owned",
    "test_spend_per_user",
    "test_unknown_column_is_refused",
    "test_update_owned_is_conditional",
    "test_user_budget_is_atomic_across_processes_beside_the_server_budget",
]

OpenStore = Callable[[], JobStore]


class ThroughAsync:
    """A JobStore whose every call goes through `AsyncJobStore`, awaited on the portal's event loop."""

    def __init__(self, store: JobStore, portal: BlockingPortal) -> None:
        self.face = AsyncJobStore(store)
        self.portal = portal

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.face, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self.portal.call(functools.partial(method, *args, **kwargs))

        return call

    def close(self) -> None:
        self.portal.call(self.face.aclose)


@pytest.fixture(params=["sync", "async"])
def face(request: pytest.FixtureRequest, open_store: OpenStore) -> Iterator[OpenStore]:
    """The engine's `open_store`, used directly or through the asynchronous face."""
    if request.param == "sync":
        yield open_store
        return
    with start_blocking_portal() as portal:

        def through() -> JobStore:
            s = ThroughAsync(open_store(), portal)
            return s  # type: ignore[return-value]  # (duck-typed: every JobStore method, awaited)

        yield through


@pytest.fixture
def store(face: OpenStore) -> Iterator[JobStore]:
    s = face()
    yield s
    s.close()


def _new(store: JobStore, *, owner: str | None = None, lease_s: float | None = None, key: str | None = None,
         route: str = "direct") -> JobRow:
    return store.create(
        job_id=new_job_id(), tool="animate_image", model="m", route=route, request={"prompt": "p", "n": 1},
        args_hash="h", idempotency_key=key, warnings=["w"], owner=owner, lease_s=lease_s,
    )


def test_create_and_read_back(store: JobStore) -> None:
    row = _new(store, owner="a", lease_s=30, key="k1")
    got = store.get(row.id)
    assert got == row
    assert got.status == "queued" and got.stage == "new" and got.request == {"prompt": "p", "n": 1}
    assert got.warnings == ["w"] and got.owner == "a"
    assert got.lease_expires_at is not None and got.lease_expires_at == pytest.approx(store.now() + 30, abs=5)
    assert got.status_detail is None and got.submitted_at is None and got.video_url is None
    assert store.by_idempotency_key("k1") == row
    assert store.by_idempotency_key("nope") is None and store.get("job_missing00") is None
    unowned = _new(store)
    assert unowned.owner is None and unowned.lease_expires_at is None


def test_duplicate_idempotency_key(store: JobStore, face: OpenStore) -> None:
    _new(store, key="same")
    other = face()
    try:
        with pytest.raises(DuplicateIdempotencyKey):
            _new(other, key="same")
    finally:
        other.close()


def test_claim_rules(store: JobStore) -> None:
    free = _new(store)
    claimed = store.claim(free.id, "a", 30)
    assert claimed is not None and claimed.owner == "a" and claimed.updated_at == free.updated_at
    assert store.claim(free.id, "b", 30) is None, "a live lease is not claimable"
    assert store.claim(free.id, "a", 30) is not None, "re-claiming your own job renews it"
    assert store.claim(free.id, "b", 30, stale_owners=["a"]) is not None, "an owner known to be gone is stale"
    assert (store.get(free.id) or free).owner == "b"

    lapsed = _new(store, owner="c", lease_s=-1)  # a lease already past its expiry
    assert [r.id for r in store.claimable()] == [lapsed.id]
    assert {r.id for r in store.claimable(stale_owners=["b"])} == {free.id, lapsed.id}
    assert store.claim(lapsed.id, "d", 30) is not None

    store.update(free.id, status="succeeded", stage="done")
    assert store.claim(free.id, "b", 30) is None, "a finished job is never claimed"
    assert store.claimable(stale_owners=["b", "d"]) == [store.get(lapsed.id)]


def test_claim_is_exclusive_across_processes(store: JobStore, face: OpenStore) -> None:
    rows = [_new(store) for _ in range(10)]
    others = [face() for _ in range(4)]
    wins: dict[str, list[str]] = {}
    lock = threading.Lock()

    def contend(i: int, s: JobStore) -> None:
        for r in rows:
            if s.claim(r.id, f"p{i}", 30) is not None:
                with lock:
                    wins.setdefault(r.id, []).append(f"p{i}")

    threads = [threading.Thread(target=contend, args=(i, s)) for i, s in enumerate(others)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in others:
        s.close()
    assert sorted(wins) == sorted(r.id for r in rows)
    assert all(len(w) == 1 for w in wins.values()), wins
    for r in rows:
        assert (store.get(r.id) or r).owner == wins[r.id][0]


def test_renew_reports_what_is_still_held(store: JobStore) -> None:
    a1 = _new(store, owner="a", lease_s=1)
    a2 = _new(store, owner="a", lease_s=1)
    _new(store, owner="b", lease_s=1)
    store.update(a2.id, status="failed", stage="done")
    before = store.get(a1.id)
    assert before is not None
    assert store.renew("a", 60) == {a1.id}
    after = store.get(a1.id)
    assert after is not None and (after.lease_expires_at or 0) > (before.lease_expires_at or 0) + 30
    assert after.updated_at == before.updated_at, "a renewal is not a visible change"
    assert store.claim(a1.id, "b", 30, stale_owners=["a"]) is not None
    assert store.renew("a", 60) == set(), "a job taken over is reported lost"


def test_release(store: JobStore) -> None:
    a1 = _new(store, owner="a", lease_s=60)
    a2 = _new(store, owner="a", lease_s=60)
    a3 = _new(store, owner="a", lease_s=60)
    b1 = _new(store, owner="b", lease_s=60)
    store.update(a3.id, status="succeeded", stage="done")
    assert store.release("a", [a1.id]) == 1
    assert (store.get(a1.id) or a1).owner is None and (store.get(a2.id) or a2).owner == "a"
    assert store.release("a") == 1
    released = store.get(a2.id)
    assert released is not None and released.owner is None and released.lease_expires_at is None
    assert (store.get(b1.id) or b1).owner == "b"
    assert {r.id for r in store.claimable()} == {a1.id, a2.id}


def test_update_owned_is_conditional(store: JobStore, face: OpenStore) -> None:
    row = _new(store, owner="a", lease_s=1)
    got = store.update_owned(row.id, "a", {"stage": "submitting", "status_detail": "sending"}, lease_s=60)
    assert got is not None and got.stage == "submitting" and got.status_detail == "sending"
    assert got.updated_at >= row.updated_at and (got.lease_expires_at or 0) > store.now() + 30
    assert store.update_owned(row.id, "b", {"stage": "polling"}) is None
    other = face()
    try:
        assert other.claim(row.id, "b", 30, stale_owners=["a"]) is not None
        assert store.update_owned(row.id, "a", {"stage": "polling", "operation": {"x": 1}}) is None, "lost: no write"
        won = other.update_owned(row.id, "b", {"stage": "polling", "operation": {"task": "t"}, "submitted_at": 5.0})
        assert won is not None and won.operation == {"task": "t"} and won.submitted_at == 5.0
        done = other.update_owned(row.id, "b", {"status": "succeeded", "stage": "done", "result": {"ok": True}})
        assert done is not None and done.terminal
        assert other.update_owned(row.id, "b", {"status": "failed"}) is None, "a finished job never changes"
    finally:
        other.close()
    final = store.get(row.id)
    assert final is not None and final.status == "succeeded" and final.result == {"ok": True}


def test_set_progress_is_owned(store: JobStore) -> None:
    row = _new(store, owner="a", lease_s=30)
    store.update_owned(row.id, "a", {"status_detail": "retrying"})
    assert store.set_progress(row.id, "a", 0.5) is True
    got = store.get(row.id)
    assert got is not None and got.progress == 0.5 and got.status_detail is None
    assert store.set_progress(row.id, "b", 0.9) is False
    store.cancel(row.id, {"kind": "cancelled", "message": "x", "retryable": False})
    assert store.set_progress(row.id, "a", 0.9) is False
    assert (store.get(row.id) or row).progress == 0.5


def test_cancel_from_any_process_wins_over_owner(store: JobStore, face: OpenStore) -> None:
    row = _new(store, owner="a", lease_s=30)
    other = face()
    try:
        err: dict[str, Any] = {"kind": "cancelled", "message": "cancelled by request.", "retryable": False}
        ended = other.cancel(row.id, err)
        assert ended is not None and ended.status == "cancelled" and ended.stage == "done" and ended.error == err
        assert other.cancel(row.id, err) is None, "already ended"
    finally:
        other.close()
    assert store.update_owned(row.id, "a", {"status": "succeeded", "stage": "done"}) is None
    assert (store.get(row.id) or row).status == "cancelled"
    assert store.renew("a", 30) == set()


def test_changed_since_reports_visible_changes_not_renewals(store: JobStore) -> None:
    a = _new(store, owner="a", lease_s=30)
    b = _new(store, owner="a", lease_s=30)
    mark = max(a.updated_at, b.updated_at)
    assert store.changed_since(mark) == []
    time.sleep(0.01)
    store.renew("a", 30)
    store.claim(a.id, "a", 30)
    assert store.changed_since(mark) == []
    store.update_owned(b.id, "a", {"progress": 0.25})
    changed = store.changed_since(mark)
    assert [r.id for r in changed] == [b.id] and changed[0].progress == 0.25
    store.cancel(a.id, {"kind": "cancelled", "message": "x", "retryable": False})
    assert [r.id for r in store.changed_since(mark)] == [b.id, a.id]
    assert store.changed_since(store.changed_since(mark)[-1].updated_at) == []


def test_heads_match_full_rows(store: JobStore) -> None:
    """The narrow reads the runner polls with say exactly what the full reads say."""
    rows = []
    for owner in ("a", None, "b"):
        rows.append(_new(store, owner=owner, lease_s=30 if owner else None))
        time.sleep(0.002)
    mark = max(r.updated_at for r in rows)
    time.sleep(0.01)
    store.update_owned(rows[2].id, "b", {"status": "running", "progress": 0.5})
    store.cancel(rows[0].id, {"kind": "cancelled", "message": "x", "retryable": False})
    assert store.unfinished_heads() == [JobHead.of(r) for r in store.unfinished()]
    assert [h.id for h in store.unfinished_heads()] == [rows[1].id, rows[2].id]
    changed = store.heads_changed_since(mark)
    assert changed == [JobHead.of(r) for r in store.changed_since(mark)]
    assert [(h.id, h.status, h.owner, h.terminal) for h in changed] == [
        (rows[2].id, "running", "b", False),
        (rows[0].id, "cancelled", "a", True),
    ]
    assert store.heads_changed_since(mark, limit=1) == changed[:1]


def test_recent_and_unfinished(store: JobStore) -> None:
    rows = []
    for _ in range(4):
        rows.append(_new(store))
        time.sleep(0.002)
    store.update(rows[1].id, status="succeeded", stage="done")
    assert [r.id for r in store.recent(limit=3)] == [rows[3].id, rows[2].id, rows[1].id]
    assert [r.id for r in store.recent(status="succeeded")] == [rows[1].id]
    assert [r.id for r in store.unfinished()] == [rows[0].id, rows[2].id, rows[3].id]


def test_meta_table(store: JobStore, face: OpenStore) -> None:
    assert store.meta_get("secret") is None
    assert store.meta_setdefault("secret", "first") == "first"
    other = face()
    try:
        assert other.meta_setdefault("secret", "second") == "first", "the first writer wins everywhere"
        other.meta_set("worker", "host:1:2:abc")
    finally:
        other.close()
    assert store.meta_get("worker") == "host:1:2:abc"
    store.meta_set("worker", None)
    assert store.meta_get("worker") is None


def test_unknown_column_is_refused(store: JobStore) -> None:
    row = _new(store, owner="a", lease_s=30)
    with pytest.raises(ValueError):
        store.update_owned(row.id, "a", {"id": "job_other0000"})
    with pytest.raises(ValueError):
        store.update(row.id, bogus=1)


# -- cost (issue #15) ------------------------------------------------------------------------


def _priced(store: JobStore, usd: float | None, *, budget: BudgetRule | None = None, owner: str = "me",
            route: str = "direct", user: str = LOCAL_USER, user_budget: BudgetRule | None = None) -> JobRow:
    return store.create(
        job_id=new_job_id(), tool="animate_image", model="m", route=route, request={}, args_hash="h",
        idempotency_key=None, warnings=[], owner=owner, lease_s=60,
        cost={"estimated_usd": usd, "basis": "contract test", "estimate": True}, budget=budget,
        user=user, user_budget=user_budget,
    )


def test_committed_spend_counts_jobs_that_reached_the_provider(store: JobStore) -> None:
    def walk(row: JobRow, *stages: str, end: str) -> None:
        for stage in stages:
            assert store.update_owned(row.id, "me", {"stage": stage, "status": "running"}) is not None
        if end == "cancelled":
            assert store.cancel(row.id, {"kind": "cancelled"}) is not None
        else:
            assert store.update_owned(row.id, "me", {"status": end, "stage": "done"}) is not None

    done = _priced(store, 1.0)
    walk(done, "submitting", "polling", "downloading", end="succeeded")
    assert store.set_actual_cost(done.id, "me", 0.5, {"usd": 0.5, "units": None, "source": "test"})
    assert not store.set_actual_cost(done.id, "someone-else", 9.0, {})
    walk(_priced(store, 1.0), "submitting", "polling", end="failed")  # failed after its create: 1.0
    walk(_priced(store, 1.0), "submitting", "new", end="failed")  # the create was refused: 0
    walk(_priced(store, 1.0), "submitting", end="cancelled")  # create in flight: possibly billed, 1.0
    walk(_priced(store, 1.0), end="cancelled")  # nothing sent: 0
    _priced(store, 0.25)  # in flight: reserved
    walk(_priced(store, 0.0, route="local"), "polling", end="succeeded")
    got = store.spend(BudgetRule(10.0, "total"), "total")
    assert got["budget"]["committed_usd"] == pytest.approx(2.5)
    assert got["budget"]["reserved_usd"] == pytest.approx(0.25)
    assert got["budget"]["left_usd"] == pytest.approx(7.25)
    row = store.get(done.id)
    assert row is not None and (row.estimated_usd, row.actual_usd, row.billed) == (1.0, 0.5, 1)
    assert row.cost == {"basis": "contract test", "estimate": True}
    (bucket,) = [r for r in got["rows"] if r["route"] == "direct"]
    assert (bucket["jobs"], bucket["billed_jobs"], bucket["actual_usd"]) == (6, 3, 0.5)


def test_budget_reservation_is_atomic_across_processes(face: OpenStore) -> None:
    """Five store objects (five processes) and 40 threads submit $1 jobs against $7: exactly 7 fit."""
    stores = [face() for _ in range(5)]
    rule = BudgetRule(7.0, "day")
    made: list[str] = []
    refused: list[str] = []
    lock = threading.Lock()

    def submit(s: JobStore) -> None:
        for _ in range(2):
            try:
                row = _priced(s, 1.0, budget=rule)
            except BudgetExceeded as exc:
                with lock:
                    refused.append(exc.message)
            else:
                with lock:
                    made.append(row.id)

    threads = [threading.Thread(target=submit, args=(stores[i % 5],)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert (len(made), len(refused)) == (7, 73)
        assert len(stores[0].recent(limit=200)) == 7
        with pytest.raises(BudgetExceeded, match="unknown"):
            _priced(stores[1], None, budget=BudgetRule(100.0, "total"))
    finally:
        for s in stores:
            s.close()


# -- users (issue #23) -------------------------------------------------------------------------


def _for(store: JobStore, user: str, key: str | None = None, status: str | None = None) -> JobRow:
    row = store.create(
        job_id=new_job_id(), tool="animate_image", model="m", route="local", request={"who": user}, args_hash=user,
        idempotency_key=key, warnings=[], user=user,
    )
    return store.update(row.id, status=status) if status else row


def test_reads_are_scoped_to_a_user(store: JobStore, open_store: OpenStore) -> None:
    a1, b1 = _for(store, "alice"), _for(store, "bob")
    a2 = _for(store, "alice", status="succeeded")
    legacy = _new(store)
    other = open_store()  # another process sees the same
    try:
        for s in (store, other):
            assert s.get(a1.id, user="alice") == a1 and s.get(b1.id, user="alice") is None
            assert s.get(b1.id, user="bob") == b1 and s.get(b1.id) == b1
            assert [r.id for r in s.recent(user="alice")] == [a2.id, a1.id]
            assert [r.id for r in s.recent(user="alice", status="succeeded")] == [a2.id]
            assert [r.id for r in s.recent(user="bob", status="succeeded")] == []
            assert {r.id for r in s.recent()} == {a1.id, a2.id, b1.id, legacy.id}
        assert (a1.user_id, b1.user_id, legacy.user_id) == ("alice", "bob", LOCAL_USER)
        assert [r.id for r in store.recent(user=LOCAL_USER)] == [legacy.id]
    finally:
        other.close()


def test_idempotency_keys_are_per_user(store: JobStore, open_store: OpenStore) -> None:
    a = _for(store, "alice", key="same")
    b = _for(store, "bob", key="same")
    assert a.id != b.id
    assert store.by_idempotency_key("same", user="alice") == a
    assert store.by_idempotency_key("same", user="bob") == b
    assert store.by_idempotency_key("same") is None  # the local user never used it
    other = open_store()
    try:
        with pytest.raises(DuplicateIdempotencyKey):
            _for(other, "alice", key="same")
        # a key that spells another user's stored form is still only its own user's key
        c = _for(other, "alice", key="bob\x1fsame")
        assert other.by_idempotency_key("bob\x1fsame", user="alice") == c
        assert other.by_idempotency_key("same", user="bob") == b
    finally:
        other.close()


def test_spend_per_user(store: JobStore) -> None:
    _priced(store, 1.0, user="alice")
    _priced(store, 2.0, user="alice")
    _priced(store, 0.5, user="bob")
    everyone = store.spend(None, "total", user_budget=BudgetRule(10.0, "total"))
    assert [(u["user"], u["jobs"], u["reserved_usd"], u["left_usd"]) for u in everyone["users"]] == [
        ("alice", 2, 3.0, 7.0), ("bob", 1, 0.5, 9.5),
    ]
    assert everyone["budget"]["reserved_usd"] == pytest.approx(3.5)
    bob = store.spend(BudgetRule(100.0, "total"), "total", user="bob", user_budget=BudgetRule(1.0, "total", "bob"))
    assert (bob["budget"]["reserved_usd"], bob["budget"]["left_usd"]) == (0.5, 0.5)
    assert [r["jobs"] for r in bob["rows"]] == [1] and "users" not in bob
    assert bob["server_budget"]["left_usd"] == pytest.approx(96.5)


def test_user_budget_is_atomic_across_processes_beside_the_server_budget(open_store: OpenStore) -> None:
    """Three processes, alice and bob submitting $1 jobs at once: alice's own $3, bob's own $3, and
    the server's $5 all hold: alice 3 and bob 2, or alice 2 and bob 3, never more."""
    stores = [open_store() for _ in range(3)]
    server = BudgetRule(5.0, "month")
    made: dict[str, int] = {"alice": 0, "bob": 0}
    refusals: list[str] = []
    lock = threading.Lock()

    def submit(s: JobStore, user: str) -> None:
        for _ in range(3):
            try:
                _priced(s, 1.0, budget=server, user=user, user_budget=BudgetRule(3.0, "month", user))
            except BudgetExceeded as exc:
                with lock:
                    refusals.append(exc.message)
            else:
                with lock:
                    made[user] += 1

    threads = [threading.Thread(target=submit, args=(stores[i % 3], ("alice", "bob")[i % 2])) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert sum(made.values()) == 5 and max(made.values()) == 3, made
        assert len(refusals) == 12 * 3 - 5
        assert sum(u["jobs"] for u in stores[1].spend(server, "month")["users"]) == 5
        # a user under their own budget still submits while the other is over theirs
        solo = open_store()
        try:
            with pytest.raises(BudgetExceeded, match=r"your own \$0\.50 budget.*Raise STILLMOTION_USER_BUDGET_USD"):
                _priced(solo, 1.0, user="carol", user_budget=BudgetRule(0.5, "month", "carol"))
            _priced(solo, 1.0, user="dave", user_budget=BudgetRule(0.5 + 1.0, "month", "dave"))
        finally:
            solo.close()
    finally:
        for s in stores:
            s.close()


def _finish(store: JobStore, row: JobRow, status: str = "succeeded", *, created_at: float | None = None) -> JobRow:
    values: dict[str, Any] = {"status": status, "stage": "done"}
    if created_at is not None:
        values["created_at"] = created_at
    return store.update(row.id, **values) if created_at is None else _aged(store, row.id, values)


def _aged(store: JobStore, job_id: str, values: dict[str, Any]) -> JobRow:
    """`created_at` is not writable through update(); tests age rows with the engine's own SQL."""
    created = values.pop("created_at")
    store.update(job_id, **values)
    age_row(store, job_id, created)
    got = store.get(job_id)
    assert got is not None
    return got


def age_row(store: JobStore, job_id: str, created_at: float) -> None:
    """Set a row's created_at (tests only): jobs made days ago without waiting days."""
    if isinstance(store, ThroughAsync):
        store = store.face.sync
    db = getattr(store, "_db", None)
    if db is not None:  # SQLite
        with store._lock:  # type: ignore[attr-defined]
            db.execute("UPDATE jobs SET created_at=? WHERE id=?", (created_at, job_id))
        return
    with store._pool.connection() as conn:  # type: ignore[attr-defined]
        conn.execute("UPDATE jobs SET created_at=%s WHERE id=%s", (created_at, job_id))


def test_delete_finished_removes_only_finished_rows(store: JobStore, open_store: OpenStore) -> None:
    running = _new(store, owner="a", lease_s=30)
    done = _finish(store, _new(store))
    other = open_store()  # another process
    try:
        assert other.delete_finished(running.id) is None, "an unfinished job is never deleted"
        assert store.get(running.id) is not None
        gone = other.delete_finished(done.id)
        assert gone is not None and gone.id == done.id and gone.status == "succeeded"
        assert store.get(done.id) is None and other.delete_finished(done.id) is None
        assert store.delete_finished("job_missing00") is None
    finally:
        other.close()


def test_aged_finished_jobs_and_files_deleted(store: JobStore) -> None:
    now = store.now()
    old_ok = _finish(store, _new(store), created_at=now - 10 * 86400)
    old_failed = _finish(store, _new(store), "failed", created_at=now - 9 * 86400)
    old_running = _new(store, owner="a", lease_s=30)
    age_row(store, old_running.id, now - 20 * 86400)
    young = _finish(store, _new(store))
    assert [r.id for r in store.finished_created_before(now - 86400)] == [old_ok.id, old_failed.id]
    assert [r.id for r in store.finished_created_before(now - 86400, limit=1)] == [old_ok.id]
    assert [r.id for r in store.finished_with_files(now + 1)] == [old_ok.id, old_failed.id, young.id]
    before = store.get(old_ok.id)
    assert before is not None and before.files_deleted == 0
    assert store.mark_files_deleted(old_ok.id) is True
    after = store.get(old_ok.id)
    assert after is not None and after.files_deleted == 1 and after.updated_at >= before.updated_at
    assert store.mark_files_deleted(old_running.id) is False, "a running job keeps its files"
    assert [r.id for r in store.finished_with_files(now + 1)] == [old_failed.id, young.id]
    assert [r.id for r in store.finished_with_files(now - 3600)] == [old_failed.id]
    assert sorted(store.job_counts()) == [("failed", "m", "direct", 1), ("queued", "m", "direct", 1),
                                          ("succeeded", "m", "direct", 2)]


def test_meta_claim_interval_has_one_winner(open_store: OpenStore) -> None:
    stores = [open_store() for _ in range(4)]
    try:
        wins: list[bool] = []
        barrier = threading.Barrier(len(stores))

        def run(s: JobStore) -> None:
            barrier.wait()
            wins.append(s.meta_claim_interval("gc_last_run", 3600))

        threads = [threading.Thread(target=run, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(wins) == [False, False, False, True]
        assert stores[0].meta_claim_interval("gc_last_run", 3600) is False
        assert stores[1].meta_claim_interval("gc_last_run", 0) is True, "past the interval, the next caller wins"
    finally:
        for s in stores:
            s.close()
