"""Users on the HTTP transport (issue #23): STILLMOTION_HTTP_USERS on one server and on three
PostgreSQL replicas, admins, idempotency keys and budgets per user, revocation without a restart."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.conftest import write_image
from tests.replicas import EXE, Replica, base_env, replicas
from tests.test_replicas import KLING, Fakes, fakes, gen_args, team_env  # noqa: F401 (the fixture)
from tests.users_scenario import (
    LOCAL,
    Seen,
    as_user,
    digest,
    error_text,
    finished,
    held_task,
    legacy_subscribe_hears_only_own,
    listen_hears_only_own,
    owner_still_has,
    stranger_cannot_touch,
    structured,
)

INIT = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture
def img(tmp_path: Path) -> Path:
    return write_image(tmp_path / "in" / "photo.png", 640, 480, seed=7)


def write_users(path: Path, tokens: dict[str, str]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"users": {name: digest(tok) for name, tok in tokens.items()}}))
    os.replace(tmp, path)


def tokens() -> dict[str, str]:
    return {name: secrets.token_urlsafe(24) for name in ("alice", "bob", "root")}


def init(url: str, token: str | None) -> httpx.Response:
    headers = {**ACCEPT, **({"Authorization": f"Bearer {token}"} if token else {})}
    return httpx.post(url, json=INIT, headers=headers, timeout=10)


async def two_users(reps: list[Replica], tok: dict[str, str], image: str, hold: Path) -> dict[str, Any]:
    """alice works on the first replica; bob tries every way in to her jobs on every replica."""
    first = reps[0].url
    alice, bob, root = tok["alice"], tok["bob"], tok["root"]
    a_done = await finished(first, alice, image)
    b_done = await finished(first, bob, image)
    await anyio.Path(hold).touch()
    a_held, a_task = await held_task(first, alice, image)
    b_held, _ = await held_task(first, bob, image)  # queued behind alice's: one render at a time
    seen = Seen(a_done, a_held, a_task)
    for r in reps:
        await stranger_cannot_touch(r.url, bob, seen, b_done)
        await owner_still_has(r.url, alice, seen)
    await listen_hears_only_own(reps[-1].url, bob, a_held, b_held, first, alice, hold)

    # the same idempotency key: one job per user; a replay answers the user's own
    keyed: dict[str, str] = {}
    for i, (name, token) in enumerate((("alice", alice), ("bob", bob))):
        async with as_user(reps[i % len(reps)].url, token) as c:
            args = {"image": image, **LOCAL, "idempotency_key": "shared-key"}
            keyed[name] = structured(await c.call_tool("animate_image", args))["job_id"]
    assert keyed["alice"] != keyed["bob"]
    async with as_user(reps[-1].url, alice) as c:
        again = structured(await c.call_tool("animate_image", {"image": image, **LOCAL, "idempotency_key": "shared-key"}))
        assert again["job_id"] == keyed["alice"]

    # an admin sees and reads both users' jobs, on any replica
    for r in reps:
        async with as_user(r.url, root) as c:
            listed = {j["job_id"] for j in structured(await c.call_tool("list_jobs", {"limit": 200}))["jobs"]}
            assert {a_done, b_done, a_held, b_held, *keyed.values()} <= listed
            assert structured(await c.call_tool("check_job", {"job_id": a_done}))["status"] == "succeeded"
            assert (await c.read_resource(f"stillmotion://jobs/{b_done}/last-frame.png")).contents

    # the spend resource: bob's own jobs only; the admin's has everyone, per user
    async with as_user(reps[-1].url, bob) as c:
        mine = json.loads((await c.read_resource("stillmotion://spend")).contents[0].text)  # type: ignore[union-attr]
    async with as_user(first, root) as c:
        everyone = json.loads((await c.read_resource("stillmotion://spend")).contents[0].text)  # type: ignore[union-attr]
    assert mine["user"] == "bob" and "users" not in mine
    assert sum(r["jobs"] for r in mine["rows"]) == 3
    assert {u["user"]: u["jobs"] for u in everyone["users"]} == {"alice": 3, "bob": 3}
    return {"a_done": a_done, "b_done": b_done}


def test_users_file_two_users_one_server_and_revocation(tmp_path: Path, img: Path) -> None:
    tok = tokens()
    users = tmp_path / "users.json"
    write_users(users, tok)
    hold = tmp_path / "hold"
    env = base_env(
        STILLMOTION_HOME=str(tmp_path / "home"), STILLMOTION_HTTP_USERS=str(users), STILLMOTION_ADMINS="root",
        STILLMOTION_INPUT_ROOTS=str(img.parent), STILLMOTION_TEST_HOLD_FILE=str(hold),
    )
    with replicas(["one"], env, tmp_path / "logs") as reps:
        r = reps[0]
        # who may not ask: no token, a wrong one
        none, wrong = init(r.url, None), init(r.url, "not-a-user-token")
        assert (none.status_code, wrong.status_code) == (401, 401)
        assert none.headers["www-authenticate"] == 'Bearer realm="stillmotion"'
        assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
        assert init(r.url, tok["alice"]).status_code == 200

        anyio.run(two_users, reps, tok, str(img), hold)

        async def legacy() -> None:  # one server (no replicas): 2025-era resources/subscribe too
            hold.touch()
            a_held, _ = await held_task(r.url, tok["alice"], str(img))
            b_held, _ = await held_task(r.url, tok["bob"], str(img))
            await legacy_subscribe_hears_only_own(r.url, tok["bob"], a_held, b_held, tok["alice"], hold)

        anyio.run(legacy)

        # bob removed from the file: refused within seconds, no restart; alice still in
        bob = tok.pop("bob")
        removed = time.monotonic()
        write_users(users, tok)
        while init(r.url, bob).status_code != 401:
            assert time.monotonic() - removed < 5, "a removed user still signs in"
            time.sleep(0.05)
        assert init(r.url, tok["alice"]).status_code == 200
        log = r.log.read_text()
    for secret in (*tok.values(), bob):
        assert secret not in log
    assert "for user alice" in log and "for user bob" in log


def test_two_users_on_three_postgresql_replicas(pg_url: str, tmp_path: Path, img: Path) -> None:
    """Neither user can list, read, cancel, chain, follow the task of or download the other's job
    on any replica; one idempotency key makes two jobs; an admin sees both."""
    tok = tokens()
    users = tmp_path / "users.json"
    write_users(users, tok)
    hold = tmp_path / "hold"
    env = team_env(pg_url, tmp_path / "shared", img, STILLMOTION_HTTP_USERS=str(users), STILLMOTION_ADMINS="root",
                   STILLMOTION_TEST_HOLD_FILE=str(hold))
    with replicas(["r0", "r1", "r2"], env, tmp_path / "logs") as reps:
        anyio.run(two_users, reps, tok, str(img), hold)
        logs = "".join(r.log.read_text() for r in reps)
    assert not any(t in logs for t in tok.values())


def test_each_users_budget_on_replicas(pg_url: str, tmp_path: Path, img: Path, fakes: Fakes) -> None:  # noqa: F811
    """STILLMOTION_USER_BUDGET_USD holds per user across replicas beside the server's budget: alice
    over hers gets `budget` while bob still submits; `stillmotion spend` shows both."""
    tok = tokens()
    users = tmp_path / "users.json"
    write_users(users, tok)
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"prices": [{"model": KLING, "usd_per_clip": 1.0, "source": "test contract"}]}))
    env = team_env(pg_url, tmp_path / "shared", img, fakes, STILLMOTION_HTTP_USERS=str(users),
                   STILLMOTION_PRICES=str(prices), STILLMOTION_USER_BUDGET_USD="1.5", STILLMOTION_BUDGET_USD="10")
    with replicas(["r0", "r1", "r2"], env, tmp_path / "logs") as reps:

        async def go() -> tuple[str, str, str]:
            async with as_user(reps[0].url, tok["alice"]) as a:
                first = structured(await a.call_tool("animate_image", gen_args(KLING, img)))
            async with as_user(reps[1].url, tok["alice"]) as a:
                over = error_text(await a.call_tool("animate_image", gen_args(KLING, img, prompt="again")))
            async with as_user(reps[2].url, tok["bob"]) as b:
                bobs = structured(await b.call_tool("animate_image", gen_args(KLING, img)))
                mine = json.loads((await b.read_resource("stillmotion://spend")).contents[0].text)  # type: ignore[union-attr]
            assert mine["budget"]["budget_usd"] == 1.5 and mine["budget"]["reserved_usd"] + mine["budget"]["committed_usd"] == 1.0
            return first["job_id"], over, bobs["job_id"]

        first, over, bobs = anyio.run(go)
        assert over.startswith("[budget]") and "your own $1.50 budget" in over and "STILLMOTION_USER_BUDGET_USD" in over
        assert first != bobs
        out = subprocess.run([*EXE, "spend"], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        listed = subprocess.run([*EXE, "jobs"], env=env, capture_output=True, text=True, timeout=60)
        owners = {line.split()[0]: line.split()[3] for line in listed.stdout.splitlines() if line.startswith("job_")}
        assert (owners[first], owners[bobs]) == ("alice", "bob"), listed.stdout
    lines = {line.split()[0]: line.split() for line in out.stdout.splitlines() if line.startswith("  ")}
    for name in ("alice", "bob"):  # one $1 job each (committed or still in flight), $0.50 of $1.50 left
        assert lines[name][1] == "1" and lines[name][-1] == "$0.50", out.stdout
    assert "each may spend $1.50" in out.stdout
