"""The provider client's sharded connection pool: one pool's behaviour, each request paying for one shard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest

from stillmotion.providers._http import ShardedTransport

BODY = b'{"code":0,"data":{"task_status":"processing"}}'


@asynccontextmanager
async def _server(delay: float = 0.0) -> AsyncIterator[tuple[str, list[int]]]:
    """A keep-alive HTTP/1.1 server on loopback that counts the TCP connections it accepts."""
    opened: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        opened.append(1)
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                if delay:
                    await asyncio.sleep(delay)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(BODY), BODY))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1/videos/image2video/t", opened
    finally:
        srv.close()


@pytest.mark.anyio
async def test_concurrent_requests_spread_over_shards_within_the_connection_cap() -> None:
    transport = ShardedTransport(max_connections=16, per_shard=4)
    async with _server(delay=0.05) as (url, opened), httpx.AsyncClient(transport=transport) as client:
        answers: list[int] = []

        async def one() -> None:
            r = await client.get(url)
            answers.append(r.status_code)
            assert r.json()["code"] == 0

        async with anyio.create_task_group() as tg:
            for _ in range(40):
                tg.start_soon(one)
        assert answers == [200] * 40
        assert len(opened) <= 16  # never more connections than the whole pool allows
        assert len(opened) >= 8  # and the load went past one shard
        assert transport.in_flight == [0, 0, 0, 0]


@pytest.mark.anyio
async def test_light_load_reuses_one_connection_of_the_first_shard() -> None:
    transport = ShardedTransport(max_connections=16, per_shard=4)
    async with _server() as (url, opened), httpx.AsyncClient(transport=transport) as client:
        for _ in range(20):
            assert (await client.get(url)).status_code == 200
        assert len(opened) == 1
        assert transport.in_flight == [0, 0, 0, 0]


@pytest.mark.anyio
async def test_failed_and_abandoned_requests_give_their_slot_back() -> None:
    transport = ShardedTransport(max_connections=8, per_shard=4)
    async with httpx.AsyncClient(transport=transport) as client:
        with anyio.fail_after(10):
            for _ in range(3):
                with pytest.raises(httpx.ConnectError):
                    await client.get("http://127.0.0.1:9/nothing-listens-here")  # port 9: discard, closed
        assert transport.in_flight == [0, 0]
        async with _server() as (url, _opened):
            async with client.stream("GET", url) as resp:
                assert transport.in_flight == [1, 0]  # held while the body is open
                assert resp.status_code == 200  # closed without reading the body
            assert transport.in_flight == [0, 0]
