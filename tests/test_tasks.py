"""The tasks extension (SEP-2663) through the SDK's client with a client extension declaring it,
on 2026-07-28 connections: tasks from generation tools, tasks/get working -> completed with
check_job's exact result, cancel, restart, clients without the extension, refused ids, and the
Mcp-Name header over HTTP."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client, MCPError
from mcp_types import (
    CallToolRequest,
    CallToolRequestParams,
    CallToolResult,
    SubscriptionFilter,
    SubscriptionsListenRequest,
    SubscriptionsListenRequestParams,
    SubscriptionsListenResult,
    TaskMetadata,
)
from mcp_types.jsonrpc import HEADER_MISMATCH

from stillmotion.server import build_server
from stillmotion.settings import Settings
from tests.conftest import SettingsFactory, structured
from tests.tasks_client import (
    EXTENSION_ID,
    CreateTaskResult,
    TasksClient,
    cancel_task,
    get_task,
    open_jobs,
    update_task,
)

pytestmark = pytest.mark.anyio

LOCAL = {"model": "local/preview", "local": {"resolution": "480p"}, "duration": 1}
JOB_META = "stillmotion/job_id"
DAY_MS = 24 * 3600 * 1000


def _task_client(settings: Settings) -> Client:
    return Client(build_server(settings), extensions=[TasksClient()])  # type: ignore[arg-type]


async def _start(client: Client, image: Path | str, **extra: Any) -> CreateTaskResult:
    res = await client.session.call_tool("animate_image", {"image": str(image), **LOCAL, **extra}, allow_claimed=True)
    assert isinstance(res, CreateTaskResult), res
    return res


def _wire(result: CallToolResult | dict[str, Any]) -> dict[str, Any]:
    """A tool result as JSON, without the per-response serverInfo stamp."""
    data = result if isinstance(result, dict) else result.model_dump(by_alias=True, mode="json", exclude_none=True)
    return {k: v for k, v in data.items() if k not in ("_meta", "resultType")}


def _job_id(task: Any) -> str:
    assert task.meta is not None
    return str(task.meta[JOB_META])


async def _check_job(client: Client, job_id: str) -> CallToolResult:
    return await client.call_tool("check_job", {"job_id": job_id})


async def _parked(client: Client, job_id: str) -> None:
    """Until the render sits at the hold point (running, with progress stored)."""
    for _ in range(400):
        sc = structured(await _check_job(client, job_id))
        if sc["status"] == "running" and sc["progress"]:
            return
        await anyio.sleep(0.05)
    raise AssertionError("the render never reached the hold point")


async def _until(client: Client, task_id: str, status: str, rounds: int = 400) -> Any:
    for _ in range(rounds):
        view = await get_task(client.session, task_id)
        if view.status == status:
            return view
        await anyio.sleep(0.05)
    raise AssertionError(f"task never reached {status}")


async def test_generation_tool_answers_with_a_task_that_completes_with_check_jobs_result(
    make_settings: SettingsFactory, image_480: Path, tmp_path: Path
) -> None:
    hold = tmp_path / "hold"
    hold.touch()
    async with _task_client(make_settings(STILLMOTION_TEST_HOLD_FILE=str(hold))) as client:
        assert client.protocol_version == "2026-07-28"
        assert EXTENSION_ID in (client.server_capabilities.extensions or {})
        task = await _start(client, image_480, wait_seconds=30)  # a task replaces waiting: answered at once
        assert task.result_type == "task" and task.status == "working"
        assert task.task_id.startswith("task_") and len(task.task_id) >= 40
        assert task.ttl_ms is not None and task.ttl_ms >= DAY_MS
        assert task.poll_interval_ms is not None and task.poll_interval_ms > 0
        assert task.status_message in ("queued", "running") or task.status_message.startswith("running")

        job_id = _job_id(task)
        await _parked(client, job_id)
        view = await get_task(client.session, task.task_id)
        now = structured(await _check_job(client, job_id))
        assert view.status == "working" and view.result is None and now["status"] == "running"  # both: not done
        assert view.status_message == f"running {now['progress']:.0%}"

        hold.unlink()
        done = await _until(client, task.task_id, "completed")
        check = await _check_job(client, job_id)
        assert done.result is not None
        assert _wire(done.result) == _wire(check)  # exactly check_job's answer, contact sheet and all
        assert done.result["structuredContent"]["status"] == "succeeded"
        assert done.result["structuredContent"]["video"]["width"] == 640
        assert (await update_task(client.session, task.task_id)).result_type == "complete"  # no input: ignored


async def test_a_failed_generation_is_a_completed_task_whose_result_says_so(
    make_settings: SettingsFactory, image_480: Path, tmp_path: Path
) -> None:
    hold = tmp_path / "hold"
    hold.touch()
    settings = make_settings(STILLMOTION_TEST_HOLD_FILE=str(hold))
    async with _task_client(settings) as client:
        task = await _start(client, image_480)
        job_id = _job_id(task)
        await _parked(client, job_id)
        store = open_jobs(settings.db_path)  # the provider's verdict, as the runner would store it
        store.update(job_id, status="failed", stage="done", error={
            "kind": "content_filtered", "message": "the provider's safety filter blocked the output", "retryable": False})
        store.close()
        view = await get_task(client.session, task.task_id)
        assert view.status == "completed"  # `failed` is for protocol errors only
        assert view.status_message == "failed: content_filtered: the provider's safety filter blocked the output"
        assert view.result is not None and _wire(view.result) == _wire(await _check_job(client, job_id))
        assert view.result["structuredContent"]["error"]["kind"] == "content_filtered"


async def test_tasks_cancel_cancels_the_job(make_settings: SettingsFactory, image_480: Path, tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    hold.touch()
    async with _task_client(make_settings(STILLMOTION_TEST_HOLD_FILE=str(hold))) as client:
        task = await _start(client, image_480)
        await _parked(client, _job_id(task))
        ack = await cancel_task(client.session, task.task_id)
        assert ack.result_type == "complete"
        view = await _until(client, task.task_id, "cancelled")
        assert view.result is None
        assert structured(await _check_job(client, _job_id(task)))["status"] == "cancelled"
        await cancel_task(client.session, task.task_id)  # again: still acknowledged, nothing changes
        assert (await get_task(client.session, task.task_id)).status == "cancelled"


async def test_a_task_survives_a_server_restart(make_settings: SettingsFactory, image_480: Path, tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    hold.touch()
    async with _task_client(make_settings(STILLMOTION_TEST_HOLD_FILE=str(hold))) as client:
        task = await _start(client, image_480)
        await _parked(client, _job_id(task))
    hold.unlink()  # the first server is gone; a new one on the same home resumes the job
    async with _task_client(make_settings()) as client:
        view = await get_task(client.session, task.task_id)
        assert view.task_id == task.task_id and view.status in ("working", "completed")
        done = await _until(client, task.task_id, "completed")
        assert done.result is not None and done.result["structuredContent"]["status"] == "succeeded"
        assert _wire(done.result) == _wire(await _check_job(client, _job_id(task)))


async def test_transparent_client_gets_the_final_result(make_settings: SettingsFactory, image_480: Path) -> None:
    async with _task_client(make_settings()) as client:
        final = await client.call_tool("animate_image", {"image": str(image_480), **LOCAL})  # the claim polls tasks/get
        sc = structured(final)
        assert sc["status"] == "succeeded"
        assert _wire(final) == _wire(await _check_job(client, sc["job_id"]))


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_clients_without_the_extension_get_the_ordinary_result(
    make_settings: SettingsFactory, image_480: Path, mode: str
) -> None:
    async with Client(build_server(make_settings()), mode=mode) as client:  # type: ignore[arg-type]
        # params.task (the 2025 opt-in) is ignored: the server alone decides, and never for these clients
        request = CallToolRequest(params=CallToolRequestParams(
            name="animate_image", arguments={"image": str(image_480), **LOCAL}, task=TaskMetadata(ttl=60000)))
        res = await client.session.send_request(request, CallToolResult)
        sc = structured(res)
        assert sc["job_id"].startswith("job_") and sc["status"] in ("queued", "running")
        assert "resultType" not in (res.model_extra or {})
        with pytest.raises(MCPError) as err:
            await get_task(client.session, "task_" + secrets.token_urlsafe(32))
        # 2026-07-28: the extension's error; the 2025 era has no such method on this server
        assert err.value.error.code == (-32021 if mode == "auto" else -32601)
        if mode == "auto":
            assert err.value.error.data == {"requiredCapabilities": {"extensions": {EXTENSION_ID: {}}}}


async def test_params_task_is_ignored_for_a_declaring_client(make_settings: SettingsFactory, image_480: Path) -> None:
    async with _task_client(make_settings()) as client:
        request = CallToolRequest(params=CallToolRequestParams(
            name="animate_image", arguments={"image": str(image_480), **LOCAL}, task=TaskMetadata(ttl=1000)))
        res = await client.session.send_request(request, CreateTaskResult)
        assert res.ttl_ms is not None and res.ttl_ms >= DAY_MS  # the 2025 ttl request plays no part


async def test_unknown_or_guessed_task_ids_are_refused(make_settings: SettingsFactory, image_480: Path) -> None:
    async with _task_client(make_settings()) as client:
        task = await _start(client, image_480)
        guesses = ["task_" + secrets.token_urlsafe(32), _job_id(task), task.task_id[:-1], task.task_id + "x"]
        for guess in guesses:
            for call in (get_task, cancel_task, update_task):
                with pytest.raises(MCPError) as err:
                    await call(client.session, guess)
                assert err.value.error.code == -32602
                assert "Task not found" in err.value.error.message
        assert (await get_task(client.session, task.task_id)).task_id == task.task_id


async def test_bad_input_stays_an_ordinary_tool_error(make_settings: SettingsFactory, image_480: Path) -> None:
    async with _task_client(make_settings()) as client:
        res = await client.session.call_tool(
            "animate_image", {"image": str(image_480.parent / "missing.png"), **LOCAL}, allow_claimed=True)
        assert isinstance(res, CallToolResult) and res.is_error  # nothing started, so no task
        listed = await client.call_tool("list_jobs", {})
        assert structured(listed)["jobs"] == []
        other = await client.session.call_tool("list_models", {}, allow_claimed=True)
        assert isinstance(other, CallToolResult) and not other.is_error  # only generation tools make tasks


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_over_http_the_mcp_name_header_must_name_the_task(home: Path, image_480: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STILLMOTION_")}
    env.update(STILLMOTION_HOME=str(home), STILLMOTION_BACKGROUND="0", PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "stillmotion", "serve", "--http", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        for _ in range(200):
            try:
                httpx.get(url, timeout=0.5)
                break
            except httpx.HTTPError:
                time.sleep(0.1)

        async def talk() -> tuple[str, str]:
            async with Client(url, extensions=[TasksClient()]) as client:
                data_uri = "data:image/png;base64," + base64.b64encode(await anyio.Path(image_480).read_bytes()).decode()
                task = await _start(client, data_uri)  # HTTP takes no local paths
                view = await get_task(client.session, task.task_id)  # the SDK sets Mcp-Name = taskId
                assert view.task_id == task.task_id
                return task.task_id, client.protocol_version

        task_id, version = anyio.run(talk)
        assert version == "2026-07-28"

        def raw(name: str | None, method: str = "tasks/get", declared: bool = True) -> dict[str, Any]:
            caps = {"extensions": {EXTENSION_ID: {}}} if declared else {}
            body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": {"taskId": task_id, "_meta": {
                "io.modelcontextprotocol/protocolVersion": version,
                "io.modelcontextprotocol/clientCapabilities": caps}}}
            headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                       "MCP-Protocol-Version": version, "Mcp-Method": method}
            if name is not None:
                headers["Mcp-Name"] = name
            r = httpx.post(url, content=json.dumps(body), headers=headers, timeout=10)
            text = r.text
            if text.startswith("event:") or text.startswith("data:"):
                text = next(line[5:] for line in text.splitlines() if line.startswith("data:"))
            return dict(json.loads(text))

        assert raw(task_id)["result"]["taskId"] == task_id  # the right header: served
        other = "task_" + secrets.token_urlsafe(32)
        for method in ("tasks/get", "tasks/cancel", "tasks/update"):
            wrong = raw(other, method)
            assert wrong["error"]["code"] == HEADER_MISMATCH, wrong
            assert "Mcp-Name" in wrong["error"]["message"] or "mcp-name" in wrong["error"]["message"]
        assert raw(None)["error"]["code"] == HEADER_MISMATCH
        assert raw(task_id, declared=False)["error"]["code"] == -32021
        assert raw(task_id)["result"]["status"] in ("working", "completed")  # the refusals changed nothing
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


async def test_an_expired_task_is_refused(make_settings: SettingsFactory, image_480: Path) -> None:
    settings = make_settings()
    async with _task_client(settings) as client:
        task = await _start(client, image_480)
        assert task.ttl_ms is not None
        store = open_jobs(settings.db_path)  # eight days later
        key = "task:" + task.task_id
        stored = json.loads(store.meta_get(key))
        assert stored["job_id"] == _job_id(task)  # the mapping lives in the job store (shared by replicas)
        store.meta_set(key, json.dumps({**stored, "created_at": stored["created_at"] - 8 * 86400}))
        store.close()
        with pytest.raises(MCPError) as err:
            await get_task(client.session, task.task_id)
        assert err.value.error.code == -32602 and "expired" in err.value.error.message
        assert structured(await _check_job(client, _job_id(task)))["job_id"] == _job_id(task)  # the job stays


async def test_an_expired_tasks_mapping_is_deleted(make_settings: SettingsFactory, image_480: Path) -> None:
    settings = make_settings()
    async with _task_client(settings) as client:
        task = await _start(client, image_480)
        other = await _start(client, image_480)
        store = open_jobs(settings.db_path)
        key = "task:" + task.task_id
        stored = json.loads(store.meta_get(key))
        store.meta_set(key, json.dumps({**stored, "created_at": stored["created_at"] - 8 * 86400}))
        store.close()
        with pytest.raises(MCPError) as err:
            await get_task(client.session, task.task_id)
        assert "expired" in err.value.error.message
        store = open_jobs(settings.db_path)
        try:
            assert store.meta_get(key) is None  # the expired mapping is gone from the job store
            assert store.meta_get("task:" + other.task_id) is not None  # a live task's stays
            assert store.get(_job_id(task)) is not None  # and the job with it
        finally:
            store.close()
        with pytest.raises(MCPError) as err:
            await get_task(client.session, task.task_id)
        assert err.value.error.code == -32602 and "Task not found" in err.value.error.message
        assert (await get_task(client.session, other.task_id)).task_id == other.task_id


async def test_task_notifications_need_the_declaration(make_settings: SettingsFactory) -> None:
    async with Client(build_server(make_settings())) as client:  # type: ignore[arg-type]
        request = SubscriptionsListenRequest(params=SubscriptionsListenRequestParams(
            notifications=SubscriptionFilter.model_validate({"taskIds": ["task_x"], "toolsListChanged": True})))
        with pytest.raises(MCPError) as err, anyio.fail_after(20):  # accepted, it would stream forever
            await client.session.send_request(request, SubscriptionsListenResult)
        assert err.value.error.code == -32021


async def test_status_message_is_the_jobs_status_detail(
    make_settings: SettingsFactory, image_480: Path, tmp_path: Path
) -> None:
    hold = tmp_path / "hold"
    hold.touch()
    settings = make_settings(STILLMOTION_TEST_HOLD_FILE=str(hold))
    async with _task_client(settings) as client:
        task = await _start(client, image_480)
        await _parked(client, _job_id(task))
        store = open_jobs(settings.db_path)  # what the runner writes while it retries a provider call
        store.update(_job_id(task), status_detail="provider busy (HTTP 503); retry 2 of 5 in 4 s")
        store.close()
        view = await get_task(client.session, task.task_id)
        assert view.status == "working"
        assert view.status_message == "provider busy (HTTP 503); retry 2 of 5 in 4 s"
        assert structured(await _check_job(client, _job_id(task)))["status_detail"] == view.status_message


async def test_join_clips_shows_the_player_and_answers_with_a_task(make_settings: SettingsFactory, image_480: Path) -> None:
    pytest.importorskip("stillmotion.tools.join", reason="join_clips is not in this build yet")
    async with _task_client(make_settings()) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert (tools["join_clips"].meta or {}).get("ui", {}).get("resourceUri") == "ui://stillmotion/player.html"
        clips = [structured(await client.call_tool("animate_image", {"image": str(image_480), **LOCAL}))["job_id"]
                 for _ in range(2)]  # the task client resolves these transparently
        res = await client.session.call_tool("join_clips", {"clips": clips}, allow_claimed=True)
        assert isinstance(res, CreateTaskResult), res
        done = await _until(client, res.task_id, "completed")
        assert done.result is not None and done.result["structuredContent"]["tool"] == "join_clips"
        assert done.result["structuredContent"]["status"] == "succeeded"
        assert _wire(done.result) == _wire(await _check_job(client, _job_id(res)))


async def test_extend_video_answers_with_a_task_like_every_tool_that_makes_a_job(
    make_settings: SettingsFactory, image_480: Path
) -> None:
    async with _task_client(make_settings()) as client:
        source = structured(await client.call_tool("animate_image", {"image": str(image_480), **LOCAL}))
        assert source["status"] == "succeeded", source  # the task client resolves this one transparently
        res = await client.session.call_tool(
            "extend_video", {"video": source["job_id"], "prompt": "pan left", "duration": 1}, allow_claimed=True
        )
        assert isinstance(res, CreateTaskResult), res
        done = await _until(client, res.task_id, "completed")
        assert done.result is not None and done.result["structuredContent"]["tool"] == "extend_video"
        assert done.result["structuredContent"]["status"] == "succeeded"
        assert _wire(done.result) == _wire(await _check_job(client, _job_id(res)))


async def test_on_postgresql_the_task_lives_in_the_shared_database(
    make_settings: SettingsFactory, image_480: Path, pg_url: str
) -> None:
    from stillmotion.jobs.pg_store import PgStore

    settings = make_settings(STILLMOTION_DATABASE_URL=pg_url)
    async with _task_client(settings) as client:
        task = await _start(client, image_480)
    shared = PgStore(pg_url, pool_size=1)  # what every replica reads
    try:
        assert json.loads(shared.meta_get("task:" + task.task_id) or "{}")["job_id"] == _job_id(task)
    finally:
        shared.close()
    async with _task_client(make_settings(STILLMOTION_DATABASE_URL=pg_url)) as client:
        done = await _until(client, task.task_id, "completed")
        assert done.result is not None and done.result["structuredContent"]["status"] == "succeeded"
