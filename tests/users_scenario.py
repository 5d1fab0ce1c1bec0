"""Two users on real `stillmotion serve --http` processes (issue #23): what one can see and do with
the other's jobs, on every replica given. Shared by the users-file and the OAuth tests."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPDeprecationWarning

from tests.tasks_client import CreateTaskResult, TasksClient, cancel_task, get_task

LOCAL = {"model": "local/preview", "local": {"resolution": "480p"}, "duration": 1}
UNKNOWN_JOB = "job_" + "0" * 16


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content[0].text if result.content else result
    assert result.structured_content is not None
    return dict(result.structured_content)


def error_text(result: Any) -> str:
    assert result.is_error, result.structured_content
    return str(result.content[0].text)


@contextlib.asynccontextmanager
async def as_user(url: str, token: str | None, *, tasks: bool = False, auth: Any = None, **options: Any) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with httpx2.AsyncClient(headers=headers, auth=auth, timeout=httpx2.Timeout(60.0, read=120.0)) as http:
        transport = streamable_http_client(url, http_client=http)
        client = Client(transport, extensions=[TasksClient()] if tasks else [], **options)
        async with client:
            yield client


@dataclass
class Seen:
    """What the owner made: a finished job, a job held mid-render with its task."""

    done: str
    held: str
    task: str


async def finished(url: str, token: str, image: str) -> str:
    async with as_user(url, token) as c:
        done = structured(await c.call_tool("animate_image", {"image": image, **LOCAL, "wait_seconds": 50}))
        assert done["status"] == "succeeded", done
        return str(done["job_id"])


async def held_task(url: str, token: str, image: str) -> tuple[str, str]:
    """(job id, task id) of a job that starts while the hold file exists."""
    async with as_user(url, token, tasks=True) as c:
        task = await c.session.call_tool("animate_image", {"image": image, **LOCAL}, allow_claimed=True)
        assert isinstance(task, CreateTaskResult), task
        assert task.meta is not None
        return str(task.meta["stillmotion/job_id"]), task.task_id


async def same_as_unknown(call: Callable[[str], Any], their_id: str) -> str:
    """Calls `call` with the other user's id and with an unknown id: the answers must be the same
    but for the id. Returns the answer."""
    theirs = await call(their_id)
    unknown = await call(UNKNOWN_JOB)
    assert theirs.replace(their_id, UNKNOWN_JOB) == unknown, (theirs, unknown)
    assert their_id not in theirs or UNKNOWN_JOB in unknown
    return theirs


async def stranger_cannot_touch(url: str, token: str, theirs: Seen, mine_done: str) -> None:
    """Every way in to another user's job, on one replica, answers as for an unknown job."""
    mine = {"job_id": mine_done}
    async with as_user(url, token) as c:
        listed = {j["job_id"] for j in structured(await c.call_tool("list_jobs", {"limit": 200}))["jobs"]}
        assert mine_done in listed and not listed & {theirs.done, theirs.held}

        async def tool(name: str, args: Callable[[str], dict[str, Any]]) -> Callable[[str], Any]:
            async def go(job_id: str) -> str:
                return error_text(await c.call_tool(name, args(job_id)))

            return go

        text = await same_as_unknown(await tool("check_job", lambda j: {"job_id": j}), theirs.done)
        assert "no job" in text
        await same_as_unknown(await tool("check_job", lambda j: {"job_id": j, "wait_seconds": 1}), theirs.held)
        await same_as_unknown(await tool("cancel_job", lambda j: {"job_id": j}), theirs.held)
        await same_as_unknown(await tool("delete_job", lambda j: {"job_id": j}), theirs.done)  # (#26's tool)
        for video in (lambda j: j, lambda j: f"stillmotion://jobs/{j}/video.mp4"):  # (#24's tool)
            text = await same_as_unknown(await tool("extend_video", lambda j, v=video: {**LOCAL, "video": v(j)}), theirs.done)
            assert theirs.done in text and "video" in text, text  # refused for the video itself, as an unknown one
        await same_as_unknown(await tool("join_clips", lambda j: {"clips": [mine["job_id"], j]}), theirs.done)
        await same_as_unknown(
            await tool("join_clips", lambda j: {"clips": [mine["job_id"], f"stillmotion://jobs/{j}/video.mp4"]}),
            theirs.done,
        )
        await same_as_unknown(
            await tool("animate_image", lambda j: {**LOCAL, "image": f"stillmotion://jobs/{j}/last-frame.png"}),
            theirs.done,
        )

        for suffix in ("", "/video.mp4", "/poster.png", "/last-frame.png"):

            async def read(job_id: str, suffix: str = suffix) -> str:
                try:
                    await c.read_resource(f"stillmotion://jobs/{job_id}{suffix}")
                except MCPError as exc:
                    return str(exc)
                raise AssertionError(f"read stillmotion://jobs/{job_id}{suffix}")

            await same_as_unknown(read, theirs.done)
    async with as_user(url, token, tasks=True) as c:
        for ask in (get_task, cancel_task):

            async def task_error(task_id: str, ask: Any = ask) -> str:
                try:
                    await ask(c.session, task_id)
                except MCPError as exc:
                    return str(exc)
                raise AssertionError("another user's task answered")

            theirs_text = await task_error(theirs.task)
            assert theirs_text == await task_error("task_" + secrets.token_urlsafe(32))
            assert "Task not found" in theirs_text


async def owner_still_has(url: str, token: str, seen: Seen) -> None:
    """Nothing the stranger did changed the owner's jobs."""
    async with as_user(url, token, tasks=True) as c:
        held = structured(await c.call_tool("check_job", {"job_id": seen.held}))
        assert held["status"] in ("queued", "running"), held
        view = await get_task(c.session, seen.task)
        assert view.status == "working"
        got = await c.read_resource(f"stillmotion://jobs/{seen.done}/last-frame.png")
        assert got.contents


async def listen_hears_only_own(url: str, token: str, theirs: str, mine: str, owner_url: str, owner_token: str,
                                hold: Path) -> list[str]:
    """The stranger listens to both held jobs; the owner's ends first (one render at a time on its
    replica); the stranger's stream carries its own job's updates and none of the owner's."""
    seen: list[str] = []
    async with as_user(url, token) as c:
        uris = [f"stillmotion://jobs/{theirs}", f"stillmotion://jobs/{mine}"]
        async with c.listen(resource_subscriptions=uris) as sub:
            await anyio.Path(hold).unlink()
            async with as_user(owner_url, owner_token) as o:
                done = structured(await o.call_tool("check_job", {"job_id": theirs, "wait_seconds": 50}))
                assert done["status"] == "succeeded"
            with anyio.fail_after(60):
                async for event in sub:
                    seen.append(str(getattr(event, "uri", "")))
                    if structured(await c.call_tool("check_job", {"job_id": mine}))["status"] == "succeeded":
                        break
    assert seen and set(seen) == {f"stillmotion://jobs/{mine}"}, seen
    return seen


async def legacy_subscribe_hears_only_own(url: str, token: str, theirs: str, mine: str, owner_token: str,
                                          hold: Path) -> list[str]:
    """The same with a 2025-era client's `resources/subscribe` (one server: replicas do not offer it)."""
    got: list[str] = []
    mine_done = anyio.Event()

    async def on_message(message: Any) -> None:
        root = getattr(message, "root", message)
        if getattr(root, "method", None) == "notifications/resources/updated":
            got.append(str(root.params.uri))

    async with as_user(url, token, mode="legacy", message_handler=on_message) as c:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)  # 2025-era hosts still use it
            for job in (theirs, mine):
                await c.subscribe_resource(f"stillmotion://jobs/{job}")
        await anyio.Path(hold).unlink()
        async with as_user(url, owner_token) as o:
            done = structured(await o.call_tool("check_job", {"job_id": theirs, "wait_seconds": 50}))
            assert done["status"] == "succeeded"
        with anyio.fail_after(60):
            while not mine_done.is_set():
                if structured(await c.call_tool("check_job", {"job_id": mine, "wait_seconds": 5}))["status"] == "succeeded":
                    mine_done.set()
        with anyio.fail_after(30):
            while f"stillmotion://jobs/{mine}" not in got:
                await anyio.sleep(0.05)
    assert set(got) == {f"stillmotion://jobs/{mine}"}, got
    return got
