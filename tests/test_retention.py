"""delete_job, retention, the disk cap and `stillmotion gc` (issue #26).

Real local renders, real `stillmotion serve --http` processes for the replica case (two
processes on one home: a signed link must 404 on the one that did not delete), the real CLI for
`gc`. Jobs are aged by rewriting `created_at` in the store, never by waiting.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client

from stillmotion.jobs.store import JobStore, SqliteStore, new_job_id
from tests.conftest import SettingsFactory, connect, error_text, structured
from tests.replicas import EXE, base_env, replicas
from tests.store_contract import age_row

LOCAL = {"duration": 1, "local": {"resolution": "480p"}}
DAY = 86400.0


def _folders(home: Path, job_id: str) -> list[Path]:
    return [home / "outputs" / job_id, home / "inputs" / job_id]


def test_delete_job_on_one_replica_404s_its_links_on_another(tmp_path: Path, image_480: Path) -> None:
    home = tmp_path / "home"
    hold = tmp_path / "hold"
    env = base_env(STILLMOTION_HOME=str(home), STILLMOTION_INPUT_ROOTS=str(image_480.parent),
                   STILLMOTION_TEST_HOLD_FILE=str(hold))
    with replicas(["a", "b"], env, tmp_path / "logs") as (a, b):

        async def go() -> tuple[dict[str, Any], dict[str, Any], str, str]:
            async with Client(a.url) as ca:  # type: ignore[arg-type]
                done = structured(await ca.call_tool("animate_image", {"image": str(image_480), **LOCAL,
                                                                       "wait_seconds": 40}))
                assert done["status"] == "succeeded", done
                link_b = done["video"]["http_url"].replace(a.base, b.base)
                async with httpx.AsyncClient(timeout=30) as web:
                    assert (await web.get(link_b)).status_code == 200  # another replica serves it
                hold.touch()  # the next render pauses after its first frames: it stays running
                running = structured(await ca.call_tool("animate_image", {"image": str(image_480), **LOCAL}))
                for _ in range(40):
                    seen = structured(await ca.call_tool("check_job", {"job_id": running["job_id"], "wait_seconds": 1}))
                    if seen["status"] == "running":
                        break
                refused = error_text(await ca.call_tool("delete_job", {"job_id": running["job_id"]}))
                gone = structured(await ca.call_tool("delete_job", {"job_id": done["job_id"]}))
                again = error_text(await ca.call_tool("delete_job", {"job_id": done["job_id"]}))
                async with httpx.AsyncClient(timeout=30) as web:
                    after_b = (await web.get(link_b)).status_code
                    after_a = (await web.get(done["video"]["http_url"])).status_code
                assert (after_a, after_b) == (404, 404)
                assert gone["deleted"] is True and gone["status"] == "succeeded" and gone["freed_bytes"] > 10_000
                hold.unlink()
                await ca.call_tool("cancel_job", {"job_id": running["job_id"]})
                return done, running, refused, again

        done, running, refused, again = anyio.run(go)
    assert "[invalid_input]" in refused and "is running" in refused and "cancel" in refused.lower(), refused
    assert "[invalid_input]" in again and "no job" in again, again
    store = SqliteStore(home / "jobs.sqlite3")
    try:
        assert store.get(done["job_id"]) is None
        assert store.get(running["job_id"]) is not None  # refused: nothing deleted
    finally:
        store.close()
    assert not any(p.exists() for p in _folders(home, done["job_id"]))
    assert (home / "inputs" / running["job_id"]).is_dir()


def _job_bytes(home: Path, job_id: str) -> int:
    return sum(f.stat().st_size for f in (home / "outputs" / job_id).rglob("*") if f.is_file())


def _gc(home: Path, *args: str, **env: str) -> str:
    out = subprocess.run([*EXE, "gc", *args], env=base_env(STILLMOTION_HOME=str(home), **env),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _running_job(store: JobStore, home: Path) -> str:
    """An unfinished job (owned by a process that is still alive, as far as the store knows) with files."""
    job_id = new_job_id()
    store.create(job_id=job_id, tool="animate_image", model="local/preview", route="local", request={},
                 args_hash="h", idempotency_key=None, warnings=[], owner="elsewhere:1:1:x", lease_s=3600)
    store.update(job_id, status="running", stage="polling")
    for folder in _folders(home, job_id):
        folder.mkdir(parents=True)
        (folder / "data.bin").write_bytes(b"x" * 50_000)
    return job_id


def test_gc_dry_run_then_retention_and_cap(make_settings: SettingsFactory, home: Path, image_480: Path) -> None:
    async def make_jobs() -> list[str]:
        async with connect(make_settings()) as client:
            ids = []
            for _ in range(3):
                job = structured(await client.call_tool("animate_image", {"image": str(image_480), **LOCAL,
                                                                          "wait_seconds": 40}))
                assert job["status"] == "succeeded", job
                ids.append(job["job_id"])
            return ids

    old, aged, fresh = anyio.run(make_jobs)
    store = SqliteStore(home / "jobs.sqlite3")
    try:
        now = store.now()
        age_row(store, old, now - 40 * DAY)  # past a 30-day retention
        age_row(store, aged, now - 2 * 3600)  # kept by retention, older than an hour: the cap may take its files
        running = _running_job(store, home)
        age_row(store, running, now - 60 * DAY)  # old, but unfinished: never touched
        sizes = {j: _job_bytes(home, j) for j in (aged, fresh)}
        cap_gb = (sizes[aged] + sizes[fresh]) * 0.75 / 1e9  # over it until the aged job's files go
        env = {"STILLMOTION_RETENTION_DAYS": "30", "STILLMOTION_MAX_OUTPUT_GB": f"{cap_gb:.9f}"}

        dry = _gc(home, "--dry-run", **env)
        lines = {ln.split()[2]: ln for ln in dry.splitlines() if ln.startswith("would delete")}
        assert set(lines) == {old, aged}, dry
        assert "job and files" in lines[old] and "older than 30 days" in lines[old]
        assert "files only (row kept)" in lines[aged] and "STILLMOTION_MAX_OUTPUT_GB" in lines[aged]
        assert "dry run: 2 job(s) would be cleaned" in dry and "nothing was deleted" in dry
        for j in (old, aged, fresh, running):  # nothing deleted
            assert store.get(j) is not None and all(p.is_dir() for p in _folders(home, j)), j

        done = _gc(home, **env)
        assert f"deleted {old}" in done and f"deleted {aged}" in done and "2 job(s) cleaned" in done, done
        assert store.get(old) is None and not any(p.exists() for p in _folders(home, old))
        kept = store.get(aged)
        assert kept is not None and kept.files_deleted == 1 and not any(p.exists() for p in _folders(home, aged))
        for j in (fresh, running):  # within its first hour / running: files survive
            row = store.get(j)
            assert row is not None and row.files_deleted == 0 and all(p.is_dir() for p in _folders(home, j)), j
        assert "0 job(s) cleaned" in _gc(home, **env)  # under the cap now
    finally:
        store.close()

    async def look() -> tuple[dict[str, Any], dict[str, Any], str]:
        async with connect(make_settings()) as client:
            checked = structured(await client.call_tool("check_job", {"job_id": aged}))
            listed = structured(await client.call_tool("list_jobs", {}))
            gone = error_text(await client.call_tool("check_job", {"job_id": old}))
            return checked, listed, gone

    checked, listed, gone = anyio.run(look)
    assert checked["files_deleted"] is True and checked["video"] is None, checked
    assert "STILLMOTION_MAX_OUTPUT_GB" in checked["next_step"]
    by_id = {j["job_id"]: j for j in listed["jobs"]}
    assert by_id[aged]["files_deleted"] is True and "video" not in by_id[aged]
    assert "files_deleted" not in by_id[fresh] and by_id[fresh]["video"]["path"].endswith("video.mp4")
    assert "no job" in gone


def test_servers_apply_retention_at_start_up(make_settings: SettingsFactory, home: Path, image_480: Path) -> None:
    async def go() -> tuple[str, str]:
        async with connect(make_settings()) as client:
            a = structured(await client.call_tool("animate_image", {"image": str(image_480), **LOCAL, "wait_seconds": 40}))
            b = structured(await client.call_tool("animate_image", {"image": str(image_480), **LOCAL, "wait_seconds": 40}))
        return a["job_id"], b["job_id"]

    old, young = anyio.run(go)
    store = SqliteStore(home / "jobs.sqlite3")
    try:
        age_row(store, old, store.now() - 10 * DAY)

        async def restart() -> None:
            async with connect(make_settings(STILLMOTION_RETENTION_DAYS="7")) as client:
                with anyio.fail_after(30):
                    while store.get(old) is not None:  # the start-up round runs as its own task
                        await anyio.sleep(0.05)
                listed = structured(await client.call_tool("list_jobs", {}))
                assert [j["job_id"] for j in listed["jobs"]] == [young]

        anyio.run(restart)
        assert store.meta_get("gc_last_run") is not None
        assert not any(p.exists() for p in _folders(home, old)) and store.get(young) is not None
    finally:
        store.close()


def test_list_jobs_of_20_jobs_is_compact(make_settings: SettingsFactory, home: Path, image_480: Path) -> None:
    async def go() -> tuple[str, int]:
        async with connect(make_settings()) as client:
            first = structured(await client.call_tool("animate_image", {"image": str(image_480), **LOCAL,
                                                                        "wait_seconds": 40}))
            assert first["status"] == "succeeded"
            store = SqliteStore(home / "jobs.sqlite3")
            try:  # 19 more finished jobs with real results (copies of the first one's)
                row = store.get(first["job_id"])
                assert row is not None
                for _ in range(19):
                    job_id = new_job_id()
                    store.create(job_id=job_id, tool=row.tool, model=row.model, route=row.route, request=row.request,
                                 args_hash="h", idempotency_key=None, warnings=list(row.warnings),
                                 cost={"estimated_usd": 0.0, "basis": "free", "estimate": False})
                    result = json.loads(json.dumps(row.result).replace(row.id, job_id))
                    store.update(job_id, status="succeeded", stage="done", result=result, progress=1.0)
            finally:
                store.close()
            res = await client.call_tool("list_jobs", {})
            text = res.content[0].text  # type: ignore[union-attr]
            assert len(structured(res)["jobs"]) == 20
            return text, len(json.dumps(res.structured_content))

    text, structured_size = anyio.run(go)
    print(f"list_jobs of 20 jobs: text {len(text)} characters, structured {structured_size}")
    assert len(text.splitlines()) == 21 and len(text) < 4000, (len(text), text)
    assert structured_size < 8000, structured_size


@pytest.mark.parametrize("bad", ["nope", "job_../../etc"])
def test_delete_job_checks_its_argument(make_settings: SettingsFactory, bad: str) -> None:
    async def go() -> str:
        async with connect(make_settings()) as client:
            return error_text(await client.call_tool("delete_job", {"job_id": bad}))

    assert "[invalid_input]" in anyio.run(go) and "job_id" in anyio.run(go)


def test_queued_local_job_says_what_it_waits_for_and_join_is_free(
    make_settings: SettingsFactory, image_480: Path, tmp_path: Path
) -> None:
    hold = tmp_path / "hold"
    hold.touch()  # the first render pauses after its first frames, holding the only render slot

    async def go() -> tuple[dict[str, Any], dict[str, Any], str]:
        async with connect(make_settings(STILLMOTION_TEST_HOLD_FILE=str(hold))) as client:
            first = structured(await client.call_tool("animate_image", {"image": str(image_480), **LOCAL}))
            second = structured(await client.call_tool("animate_image", {"image": str(image_480), **LOCAL}))
            waiting = structured(await client.call_tool("check_job", {"job_id": second["job_id"]}))
            for _ in range(50):
                if waiting["status_detail"]:
                    break
                waiting = structured(await client.call_tool("check_job", {"job_id": second["job_id"], "wait_seconds": 0.2}))
            hold.unlink()
            ids = []
            for job in (first, second):
                done = structured(await client.call_tool("check_job", {"job_id": job["job_id"], "wait_seconds": 40}))
                assert done["status"] == "succeeded", done
                ids.append(done["job_id"])
            joined = await client.call_tool("join_clips", {"clips": ids, "wait_seconds": 40})
            return waiting, structured(joined), joined.content[0].text  # type: ignore[union-attr]

    waiting, joined, text = anyio.run(go)
    assert waiting["status"] == "queued", waiting
    assert "waiting for a local render slot" in waiting["status_detail"] and "STILLMOTION_LOCAL_CONCURRENCY=1" in \
        waiting["status_detail"], waiting
    assert joined["cost"]["estimated_usd"] == 0.0 and joined["cost"]["estimate"] is False, joined["cost"]
    assert "Cost: free" in text, text
