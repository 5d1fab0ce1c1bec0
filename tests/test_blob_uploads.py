"""Local inputs on routes that need URLs go through Vercel Blob (a fake Blob store on loopback):
one upload under an unguessable name, the provider receives the blob URL, the blob is deleted when
the job ends (success, failure, cancel, or by the next process); without the token a clear error
and no request at all."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from stillmotion.jobs.store import SqliteStore
from tests.conftest import SettingsFactory, connect, error_text, structured, until, wait_done, write_image
from tests.fakes import BlobFake, GatewayFake, WanFake, sample_wav

pytestmark = pytest.mark.anyio
START = "/v4/ai/video-model/start"
WAN = "alibaba/wan-v2.6-i2v"
NAME = re.compile(r"/files/blob/stillmotion/[0-9a-f]{32}/(image|wan_audio_url)\.(png|wav)$")


@pytest.fixture
def blob() -> Iterator[BlobFake]:
    with BlobFake() as b:
        yield b
        b.assert_clean()


@pytest.fixture
def gateway() -> Iterator[GatewayFake]:
    with GatewayFake(api_key="gw") as g:
        yield g
        g.assert_clean()


@pytest.fixture
def img(tmp_path: Path) -> Path:
    return write_image(tmp_path / "in" / "photo.png", 640, 480, seed=4)


def gw_env(g: GatewayFake, b: BlobFake | None) -> dict[str, str]:
    env = {"AI_GATEWAY_API_KEY": "gw", "AI_GATEWAY_BASE_URL": g.base_url + "/v4/ai"}
    if b is not None:
        env |= {"BLOB_READ_WRITE_TOKEN": b.token, "VERCEL_BLOB_API_URL": b.base_url}
    return env


async def run(
    env: dict[str, str], make_settings: SettingsFactory, args: dict[str, Any], blob: BlobFake | None = None
) -> dict[str, Any]:
    """One job to its end; with `blob`, also until the janitor (which runs beside the job's
    end, not before it) has deleted every upload."""
    async with connect(make_settings(**env)) as client:
        job = structured(await client.call_tool("animate_image", args))
        done = await wait_done(client, job["job_id"])
        if blob is not None:
            await until(lambda: not blob.stored)
        return done


async def test_wan_through_gateway_uploads_once_sends_url_and_deletes(
    gateway: GatewayFake, blob: BlobFake, make_settings: SettingsFactory, img: Path, home: Path
) -> None:
    done = await run(gw_env(gateway, blob), make_settings, {"model": WAN, "image": str(img), "prompt": "waves"}, blob)
    assert done["status"] == "succeeded", done
    (put,) = blob.calls("PUT")
    assert put.body == await anyio.Path(img).read_bytes() and put.header("x-content-type") == "image/png"
    assert put.header("authorization") == f"Bearer {blob.token}"
    (start,) = gateway.calls("POST", START)
    url = start.obj["image"]["url"]
    assert start.obj["image"] == {"type": "url", "url": url} and NAME.search(url), url
    assert blob.deleted == [url] and blob.stored == {}
    store = SqliteStore(home / "jobs.sqlite3")
    row = store.get(done["job_id"])
    store.close()
    assert row is not None and row.request["blobs"] == [url]  # the job row holds its blob URLs


async def test_without_token_refused_before_any_request(
    gateway: GatewayFake, make_settings: SettingsFactory, img: Path
) -> None:
    async with connect(make_settings(**gw_env(gateway, None))) as client:
        text = error_text(await client.call_tool("animate_image", {"model": WAN, "image": str(img), "prompt": "x"}))
        jobs = structured(await client.call_tool("list_jobs", {}))["jobs"]
    assert "BLOB_READ_WRITE_TOKEN" in text and "STILLMOTION_ROUTE=direct" in text and "ALIBABA_API_KEY" in text, text
    assert gateway.requests == [] and jobs == []


async def test_large_gateway_body_goes_through_blob(
    gateway: GatewayFake, blob: BlobFake, make_settings: SettingsFactory, img: Path
) -> None:
    env = gw_env(gateway, blob) | {"STILLMOTION_GATEWAY_MAX_BODY_BYTES": "20000"}
    done = await run(env, make_settings, {"model": "klingai/kling-v2.6-i2v", "image": str(img), "prompt": "x"}, blob)
    assert done["status"] == "succeeded", done
    (start,) = gateway.calls("POST", START)
    assert start.obj["image"]["type"] == "url" and len(start.body) < 20000
    assert blob.stored == {} and len(blob.deleted) == 1
    # under the limit: inline as before, no upload
    blob.clear()
    gateway.clear()
    env["STILLMOTION_GATEWAY_MAX_BODY_BYTES"] = str(4 * 1024 * 1024)
    done = await run(env, make_settings, {"model": "klingai/kling-v2.6-i2v", "image": str(img), "prompt": "y"})
    assert done["status"] == "succeeded"
    assert gateway.calls("POST", START)[0].obj["image"]["type"] == "file" and blob.calls("PUT") == []


async def test_body_over_the_gateway_limit_without_token_is_refused(
    gateway: GatewayFake, make_settings: SettingsFactory, img: Path
) -> None:
    env = gw_env(gateway, None) | {"STILLMOTION_GATEWAY_MAX_BODY_BYTES": "20000"}
    async with connect(make_settings(**env)) as client:
        text = error_text(
            await client.call_tool("animate_image", {"model": "klingai/kling-v2.6-i2v", "image": str(img), "prompt": "x"})
        )
    assert "BLOB_READ_WRITE_TOKEN" in text and "STILLMOTION_GATEWAY_MAX_BODY_BYTES" in text, text
    assert gateway.requests == []


async def test_wan_direct_local_audio_uploaded_and_deleted_on_failure(
    blob: BlobFake, make_settings: SettingsFactory, img: Path, tmp_path: Path
) -> None:
    audio = tmp_path / "in" / "voice.wav"
    audio.write_bytes(sample_wav(4.0))
    with WanFake(api_key="sk-wan-0123456789") as wan:
        wan.script_outcome("failed", "the model failed")
        env = {"ALIBABA_API_KEY": "sk-wan-0123456789", "ALIBABA_BASE_URL": wan.base_url}
        args = {"model": WAN, "image": str(img), "prompt": "sing", "wan": {"audio_url": str(audio)}}
        async with connect(make_settings(**env)) as client:  # no token: refused, nothing sent
            text = error_text(await client.call_tool("animate_image", args))
        assert "BLOB_READ_WRITE_TOKEN" in text and "wan.audio_url" in text and wan.requests == []
        done = await run(env | {"BLOB_READ_WRITE_TOKEN": blob.token, "VERCEL_BLOB_API_URL": blob.base_url}, make_settings, args, blob)
        assert done["status"] == "failed"
        (create,) = wan.calls("POST", "/api/v1/services/aigc/video-generation/video-synthesis")
        url = create.json["input"]["audio_url"]
        assert NAME.search(url) and create.json["input"]["img_url"].startswith("data:image/png;base64,")
        assert blob.calls("PUT")[0].body == audio.read_bytes() and blob.deleted == [url]


async def test_cancelled_job_and_next_process_delete_blobs(
    gateway: GatewayFake, blob: BlobFake, make_settings: SettingsFactory, img: Path, home: Path
) -> None:
    gateway.polls_until_done = None  # never finishes on its own
    env = gw_env(gateway, blob)
    async with connect(make_settings(**env)) as client:
        job = structured(await client.call_tool("animate_image", {"model": WAN, "image": str(img), "prompt": "x"}))
        await gateway_started(gateway)
        structured(await client.call_tool("cancel_job", {"job_id": job["job_id"]}))
        await until(lambda: len(blob.deleted) == 1)  # the janitor deletes beside the answer, not before it
    assert len(blob.deleted) == 1 and blob.stored == {}

    # a job that ended while no server could delete (here: its row is ended by hand, as another
    # process would): the next server start sweeps it
    blob.clear()
    async with connect(make_settings(**env)) as client:
        job = structured(await client.call_tool("animate_image", {"model": WAN, "image": str(img), "prompt": "y"}))
    store = SqliteStore(home / "jobs.sqlite3")
    assert store.cancel(job["job_id"], {"kind": "cancelled", "message": "ended elsewhere", "retryable": False})
    store.close()
    assert blob.deleted == []
    async with connect(make_settings(**env)) as client:
        await wait_done(client, job["job_id"])
        # the start-up sweep runs beside the session: wait for its delete, not for the session's end
        # (a server that stops first leaves the record for the start after)
        await until(lambda: len(blob.deleted) == 1)
    assert len(blob.deleted) == 1 and blob.stored == {}


async def gateway_started(gateway: GatewayFake) -> None:
    import anyio

    with anyio.fail_after(20):
        while not gateway.calls("POST", START):
            await anyio.sleep(0.02)


# -- #21: blobs are recorded before they exist ------------------------------------------------


def _records(home: Path) -> dict[str, str]:
    """The upload records in the store's meta table (slot -> value; '-' once done)."""
    store = SqliteStore(home / "jobs.sqlite3")
    try:
        out: dict[str, str] = {}
        n = 0
        while (value := store.meta_get(f"blob_upload:{n}")) is not None:
            out[f"blob_upload:{n}"] = value
            n += 1
        return out
    finally:
        store.close()


async def test_a_process_killed_during_uploads_leaves_no_blob(
    gateway: GatewayFake, blob: BlobFake, make_settings: SettingsFactory, img: Path, home: Path
) -> None:
    """kill -9 of real stdio servers while their uploads are in flight (the blob exists, its answer
    never arrives): the next server's sweep finds the records and deletes every blob."""
    from tests.stdio_client import StdioServer

    env = {"STILLMOTION_HOME": str(home), "STILLMOTION_BACKGROUND": "0", **gw_env(gateway, blob)}
    blob.inject_hang("PUT /", seconds=60, times=3)  # stored at once, answered never (for the test's life)
    for i in range(3):
        srv = StdioServer(env)
        try:
            srv.initialize()
            srv.send_request("tools/call", {"name": "animate_image",
                                            "arguments": {"model": WAN, "image": str(img), "prompt": f"kill {i}"}})  # fmt: skip
            await until(lambda i=i: len(blob.calls("PUT", "/")) == i + 1)  # the upload is in flight
            await until(lambda: len(blob.stored) >= 1)  # and its blob exists
        finally:
            srv.kill()
    # each server's start-up sweep deleted what the one killed before it left behind; the last
    # one's upload is still there, with its record written before the upload began
    assert len(blob.stored) == 1
    records = _records(home)
    assert len(records) == 3 and list(records.values())[-1] != "-"
    assert gateway.calls("POST", START) == []  # no job was ever stored, so nothing was sent

    async with connect(make_settings(**gw_env(gateway, blob))):
        await until(lambda: not blob.stored)
        await until(lambda: set(_records(home).values()) == {"-"})
    uploaded = {f"{blob.base_url}/files/blob/{c.query['pathname']}" for c in blob.calls("PUT", "/")}
    assert len(uploaded) == 3 and set(blob.deleted) == uploaded and blob.stored == {}


async def test_deletes_that_fail_are_retried_while_the_server_runs(
    gateway: GatewayFake, blob: BlobFake, make_settings: SettingsFactory, img: Path, home: Path
) -> None:
    """The delete answers 503 many times in a row (the issue's 10 s, scaled down by the retry base):
    the server keeps trying with backoff and every blob is gone, with no restart."""
    gateway.polls_until_done = 2
    failures = 6
    blob.inject("POST /delete", status=503, json={"error": {"code": "unavailable", "message": "try later"}},
                times=failures)  # fmt: skip
    async with connect(make_settings(**gw_env(gateway, blob))) as client:
        jobs = [structured(await client.call_tool("animate_image", {"model": WAN, "image": str(img), "prompt": p}))
                for p in ("one", "two")]  # fmt: skip
        done = [await wait_done(client, j["job_id"]) for j in jobs]
        assert [d["status"] for d in done] == ["succeeded"] * 2
        await until(lambda: not blob.stored)
        await until(lambda: set(_records(home).values()) == {"-"})
    assert blob.pending_injections() == 0  # every failing answer was used: the deletes were retried
    assert len(blob.calls("POST", "/delete")) >= failures + 2
    assert len(set(blob.deleted)) == 2 and blob.stored == {}


async def test_the_sweep_covers_every_recorded_upload_not_the_newest_jobs(
    gateway: GatewayFake, blob: BlobFake, make_settings: SettingsFactory, img: Path, home: Path
) -> None:
    """A job with blobs that ended behind 600 newer jobs is still swept at the next start."""
    gateway.polls_until_done = None
    env = gw_env(gateway, blob)
    async with connect(make_settings(**env)) as client:
        job = structured(await client.call_tool("animate_image", {"model": WAN, "image": str(img), "prompt": "old"}))
    store = SqliteStore(home / "jobs.sqlite3")
    try:
        assert store.cancel(job["job_id"], {"kind": "cancelled", "message": "ended elsewhere", "retryable": False})
        for i in range(600):  # newer jobs (ended, no blobs) push it out of any window of recent jobs
            store.create(job_id=f"job_filler{i:04d}", tool="animate_image", model="local/preview", route="local",
                         request={}, args_hash="x", idempotency_key=None, warnings=[], owner=None, lease_s=1.0,
                         cost=None, budget=None)  # fmt: skip
            store.cancel(f"job_filler{i:04d}", {"kind": "cancelled", "message": "filler", "retryable": False})
    finally:
        store.close()
    assert len(blob.stored) == 1
    async with connect(make_settings(**env)):
        await until(lambda: not blob.stored)
    assert len(blob.deleted) == 1


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
async def test_upload_records_from_many_writers_are_all_seen(engine: str, tmp_path: Path, request: Any) -> None:
    """Records opened at once through two store objects (two processes' connections) take distinct
    slots with no gap; the reader sees every open one, and done ones drop out."""
    import anyio

    from stillmotion.jobs.async_store import AsyncJobStore
    from stillmotion.jobs.store import JobStore
    from stillmotion.providers.blob import UploadLedger

    if engine == "sqlite":
        opened: list[JobStore] = [SqliteStore(tmp_path / "jobs.sqlite3") for _ in range(2)]
    else:
        from stillmotion.jobs.pg_store import PgStore

        url = request.getfixturevalue("pg_url")
        opened = [PgStore(url, pool_size=4) for _ in range(2)]
    stores = [AsyncJobStore(s) for s in opened]
    try:
        ledgers = [UploadLedger(s) for s in stores]
        keys: list[str] = []

        async def open_one(i: int) -> None:
            keys.append(await ledgers[i % 2].open({"job": f"job_{i}", "owner": "x", "prefix": f"stillmotion/{i}/"}))

        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(open_one, i)
        assert sorted(keys, key=lambda k: int(k.split(":")[1])) == [f"blob_upload:{n}" for n in range(40)]
        pending = await ledgers[1].pending()
        assert sorted(e["job"] for _, e in pending) == sorted(f"job_{i}" for i in range(40))
        for key, _ in pending[:25]:
            await ledgers[0].done(key)
        left = await ledgers[1].pending()
        assert [k for k, _ in left] == [k for k, _ in pending[25:]]
        assert await stores[0].meta_get("blob_upload_head") == "25"  # the done prefix is skipped from now on
        assert (await ledgers[0].open({"job": "late"})) == "blob_upload:40"
    finally:
        for s in stores:
            await s.aclose()
