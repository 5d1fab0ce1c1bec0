"""Cost at the tool layer: dry runs against strict fakes, the budget under concurrency (one process
and two), confirmation by elicitation in both protocol eras or by confirm_cost_usd, cost on jobs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.types import ElicitRequestParams, ElicitResult, InputRequiredResult

from stillmotion.plan.dryrun import elide
from stillmotion.server import build_server
from tests.conftest import SettingsFactory, connect, error_text, running, structured, wait_done, write_image
from tests.fakes import GatewayFake, KlingFake, WanFake, XaiFake
from tests.stdio_client import StdioServer

pytestmark = pytest.mark.anyio
KEY = "test-key-123"
XAI = "xai/grok-imagine-video"


@pytest.fixture
def img(tmp_path: Path) -> Path:
    return write_image(tmp_path / "in" / "photo.png", 640, 480, seed=5)


@pytest.fixture
def xai() -> Iterator[XaiFake]:
    with running(XaiFake(api_key=KEY)) as f:
        yield f


def xai_env(f: XaiFake, **extra: str) -> dict[str, str]:
    return {"XAI_API_KEY": KEY, "XAI_BASE_URL": f.api_base, **extra}


async def jobs(client: Client) -> list[dict[str, Any]]:
    return list(structured(await client.call_tool("list_jobs", {"limit": 200}))["jobs"])


# -- dry run ----------------------------------------------------------------------------------


def kling_cases(img: Path, end: Path) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("animate_image", {"model": "klingai/kling-v2.6-i2v", "image": str(img), "prompt": "hi<<<voice_1>>>",
                           "negative_prompt": "blur",
                           "kling": {"mode": "pro", "sound": "on", "voices": ["v-1"], "watermark": False}}),
        ("interpolate_frames", {"model": "klingai/kling-v1.6-i2v", "start_image": str(img), "end_image": str(end),
                                "prompt": "day to night", "duration": 10, "kling": {"mode": "pro", "cfg_scale": 0.6}}),
        ("camera_move", {"model": "klingai/kling-v1.5-i2v", "image": str(img), "prompt": "slow pan",
                         "camera": {"type": "simple", "config": {"pan": -4}}, "kling": {"mode": "pro"}}),
        ("motion_brush", {"model": "klingai/kling-v1-i2v", "image": str(img), "prompt": "the ball rolls",
                          "dynamic_masks": [{"mask": {"box": [100, 100, 200, 200]},
                                             "trajectory": [{"x": 150, "y": 150}, {"x": 300, "y": 200}]}],
                          "static_mask": {"polygon": [[0, 0], [639, 0], [639, 60]]}}),
    ]


async def dry_then_real(
    client: Client, fake: Any, tool: str, args: dict[str, Any]
) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """dry_run (asserting it creates nothing and sends nothing), then the real call; returns
    (dry-run result, the create request the fake received, the finished job)."""
    dry = structured(await client.call_tool(tool, {**args, "dry_run": True}))
    assert dry["dry_run"] is True and "job_id" not in dry
    assert await jobs(client) == [] and fake.calls() == []
    job = structured(await client.call_tool(tool, args))
    done = await wait_done(client, job["job_id"])
    assert done["status"] == "succeeded", done
    post = [r for r in fake.calls("POST") if not r.path.endswith("/status")]
    assert len(post) == 1
    return dry, post[0], done


async def test_dry_run_kling_every_tool_body_equals_the_real_request(
    make_settings: SettingsFactory, img: Path, tmp_path: Path
) -> None:
    end = write_image(tmp_path / "in" / "end.jpg", 640, 480, seed=9, fmt="JPEG")
    for tool, args in kling_cases(img, end):
        with KlingFake(api_key=KEY) as fake:
            settings = make_settings(
                KLINGAI_API_KEY=KEY, KLINGAI_BASE_URL=fake.base_url, STILLMOTION_HOME=str(tmp_path / tool)
            )
            async with connect(settings) as client:
                dry, sent, done = await dry_then_real(client, fake, tool, args)
            assert dry["request"]["body"] == elide(sent.json, done["job_id"]), tool
            assert dry["request"]["body"]["external_task_id"] == "<job_id>"
            assert dry["request"]["url"] == fake.base_url + sent.path
            assert dry["request"]["method"] == "POST" and "Authorization" not in dry["request"]["headers"]
            assert dry["model"] == args["model"] and dry["route"] == "direct"
            assert dry["cost"]["estimated_usd"] is None and "no price known" in dry["cost"]["basis"]
            assert done["cost"]["estimated_usd"] is None
            fake.assert_clean()
    # base64 images really are elided the same way on both sides (not just absent)
    assert "<base64 image: " in json.dumps(dry["request"]["body"])


async def test_dry_run_wan_xai_gateway_and_local(make_settings: SettingsFactory, img: Path, tmp_path: Path) -> None:
    with WanFake(api_key=KEY) as fake:
        settings = make_settings(ALIBABA_API_KEY=KEY, ALIBABA_BASE_URL=fake.base_url, STILLMOTION_HOME=str(tmp_path / "w"))
        args = {"model": "alibaba/wan-v2.6-i2v", "image": str(img), "prompt": "waves", "duration": 4,
                "wan": {"resolution": "1080P", "seed": 7}}
        async with connect(settings) as client:
            dry, sent, done = await dry_then_real(client, fake, "animate_image", args)
        assert dry["request"]["body"] == elide(sent.json, done["job_id"])
        assert dry["request"]["body"]["input"]["img_url"].startswith("data:image/png;base64,<base64 image: ")
        assert dry["request"]["headers"]["X-DashScope-Async"] == "enable"
        assert dry["cost"]["estimated_usd"] == pytest.approx(0.60) and done["cost"]["estimated_usd"] == pytest.approx(0.60)
    with XaiFake(api_key=KEY) as fake:
        args = {"image": str(img), "prompt": "clouds", "duration": 6, "xai": {"resolution": "720p"}}
        env = xai_env(fake, STILLMOTION_DEFAULT_MODEL=XAI, STILLMOTION_HOME=str(tmp_path / "x"))
        async with connect(make_settings(**env)) as client:
            dry, sent, done = await dry_then_real(client, fake, "animate_image", args)
        assert dry["request"]["body"] == elide(sent.json, done["job_id"])
        assert dry["cost"]["estimated_usd"] == pytest.approx(0.42)
        # the provider's own figure: 500_000_000 ticks per second in the fake = $0.05/s
        assert done["cost"]["actual_usd"] == pytest.approx(0.30)
    with GatewayFake(api_key=KEY) as fake:
        env = {"AI_GATEWAY_API_KEY": KEY, "AI_GATEWAY_BASE_URL": fake.base_url + "/v4/ai",
               "STILLMOTION_HOME": str(tmp_path / "g")}
        args = {"model": "klingai/kling-v3.0-i2v", "image": str(img), "prompt": "go", "duration": 3,
                "kling": {"mode": "std"}}
        async with connect(make_settings(**env)) as client:
            dry, sent, done = await dry_then_real(client, fake, "animate_image", args)
        assert dry["request"]["body"] == elide(sent.json, done["job_id"])
        sent_headers = elide(sent.headers, done["job_id"])
        for name, value in dry["request"]["headers"].items():
            assert sent_headers[name.lower()] == value, name
        assert dry["request"]["headers"]["idempotency-key"] == "stillmotion_<job_id>"
        assert dry["route"] == "gateway" and dry["cost"]["estimated_usd"] == pytest.approx(0.51)
    async with connect(make_settings(STILLMOTION_HOME=str(tmp_path / "l"))) as client:
        dry = structured(await client.call_tool("animate_image", {"image": str(img), "dry_run": True, "duration": 2}))
        assert dry["route"] == "local" and dry["request"]["url"] is None
        assert dry["cost"] == {"estimated_usd": 0.0, "basis": dry["cost"]["basis"], "estimate": False, "actual_usd": None}
        assert await jobs(client) == []


async def test_dry_run_checks_everything_and_still_writes_nothing(
    make_settings: SettingsFactory, img: Path, home: Path
) -> None:
    with KlingFake(api_key=KEY) as fake:
        settings = make_settings(KLINGAI_API_KEY=KEY, KLINGAI_BASE_URL=fake.base_url)
        async with connect(settings) as client:
            bad = await client.call_tool(
                "camera_move",
                {"model": "klingai/kling-v1.5-i2v", "image": str(img), "prompt": "x", "dry_run": True,
                 "camera": {"type": "simple", "config": {"pan": 1, "zoom": 2}}, "kling": {"mode": "pro"}},
            )
            assert "exactly one non-zero axis" in error_text(bad)
        assert fake.calls() == []
    assert not (home / "inputs").exists() or list((home / "inputs").iterdir()) == []


# -- budget -----------------------------------------------------------------------------------

BUDGET_ENV = {"STILLMOTION_BUDGET_USD": "1.75", "STILLMOTION_BUDGET_PERIOD": "day",
              "STILLMOTION_DEFAULT_MODEL": XAI}
ONE = {"prompt": "rain", "duration": 5}  # 480p x 5 s = $0.25: 7 fit in $1.75


def creates(f: XaiFake) -> list[Any]:
    return [r for r in f.calls("POST") if r.path.endswith("/videos/generations")]


async def test_budget_50_concurrent_submissions_fit_exactly_7(
    xai: XaiFake, make_settings: SettingsFactory, img: Path
) -> None:
    xai.polls_until_done = None  # hold every task: all 7 stay in flight, reserved
    results: list[Any] = []
    async with connect(make_settings(**xai_env(xai, **BUDGET_ENV))) as client:

        async def one() -> None:
            results.append(await client.call_tool("animate_image", {"image": str(img), **ONE}))

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(one)
        ok = [r for r in results if not r.is_error]
        refused = [error_text(r) for r in results if r.is_error]
        assert (len(ok), len(refused)) == (7, 43)
        assert all(t.startswith("[budget] Refused before any request") for t in refused)
        assert "$0.00 of the $1.75 budget is left today" in refused[-1] and "STILLMOTION_BUDGET_USD" in refused[-1]
        listed = await jobs(client)
        assert len(listed) == 7 and all(j["cost"]["estimated_usd"] == pytest.approx(0.25) for j in listed)
        await anyio.to_thread.run_sync(lambda: xai.wait_for_calls(7, "POST", "/v1/videos/generations", timeout=60))
        assert len(creates(xai)) == 7  # no extra provider request
        while len(xai.tasks) < 7:  # a create is recorded a moment before its task exists
            await anyio.sleep(0.01)
        xai.release()
        for j in listed:
            assert (await wait_done(client, j["job_id"]))["status"] == "succeeded"
        # committed now (the provider's figure equals the estimate): still nothing left
        again = await client.call_tool("animate_image", {"image": str(img), **ONE})
        assert "[budget]" in error_text(again) and "$1.75 committed" in error_text(again)
    assert len(creates(xai)) == 7


async def test_refused_or_failed_before_create_frees_the_reservation(
    xai: XaiFake, make_settings: SettingsFactory, img: Path
) -> None:
    env = xai_env(xai, STILLMOTION_BUDGET_USD="0.30", STILLMOTION_BUDGET_PERIOD="total", STILLMOTION_DEFAULT_MODEL=XAI)
    xai.inject("POST /v1/videos/generations", status=400, json={"code": "bad", "error": "Image is unreadable"})
    async with connect(make_settings(**env)) as client:
        first = structured(await client.call_tool("animate_image", {"image": str(img), **ONE}))
        done = await wait_done(client, first["job_id"])
        assert done["status"] == "failed" and done["error"]["kind"] == "invalid_input"
        # the provider refused the create: nothing was billed, so the budget is whole again
        second = structured(await client.call_tool("animate_image", {"image": str(img), **ONE}))
        done = await wait_done(client, second["job_id"])
        assert done["status"] == "succeeded" and done["cost"]["actual_usd"] == pytest.approx(0.25)
        third = await client.call_tool("animate_image", {"image": str(img), **ONE})
        assert "[budget]" in error_text(third) and "$0.0500" in error_text(third)
        # an unknown price cannot be reserved: refused under a budget
        unknown = await client.call_tool(
            "animate_image", {"model": "klingai/kling-v2.6-i2v", "image": str(img), "prompt": "x"}
        )
        assert "[budget]" in error_text(unknown) or "KLINGAI_API_KEY" in error_text(unknown)


def test_budget_holds_across_two_server_processes_on_one_home(
    xai: XaiFake, home: Path, img: Path
) -> None:
    xai.polls_until_done = None
    env = {"STILLMOTION_HOME": str(home), **xai_env(xai, **BUDGET_ENV), "STILLMOTION_POLL_INTERVAL_MS": "50"}
    servers = [StdioServer(env), StdioServer(env)]
    try:
        for s in servers:
            s.initialize()
        answers: list[dict[str, Any]] = []
        ids = [[s.send_request("tools/call", {"name": "animate_image",
                                              "arguments": {"image": str(img), **ONE}}) for _ in range(25)]
               for s in servers]
        for s, wanted in zip(servers, ids, strict=True):
            answers += s.collect(wanted, timeout=120)
        results = [a["result"] for a in answers]
        ok = [r for r in results if not r["isError"]]
        refused = [r["content"][0]["text"] for r in results if r["isError"]]
        assert (len(ok), len(refused)) == (7, 43)
        assert all("[budget]" in t for t in refused)
        xai.wait_for_calls(7, "POST", "/v1/videos/generations", timeout=60)
        listed = servers[0].call_tool("list_jobs", {"limit": 200})["result"]["structuredContent"]["jobs"]
        assert len(listed) == 7 and len(creates(xai)) == 7
    finally:
        xai.release()
        for s in servers:
            s.close()


# -- confirmation -----------------------------------------------------------------------------

CONFIRM_ENV = {"STILLMOTION_CONFIRM_ABOVE_USD": "0.10", "STILLMOTION_DEFAULT_MODEL": XAI}


def answering(action: str, start: bool = True) -> tuple[list[str], Any]:
    asked: list[str] = []

    async def cb(context: Any, params: ElicitRequestParams) -> ElicitResult:
        asked.append(params.message)
        if action == "accept":
            return ElicitResult(action="accept", content={"start": start})
        return ElicitResult(action=action)  # type: ignore[arg-type]

    return asked, cb


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_elicitation_accept_makes_a_job_decline_makes_nothing(
    mode: str, xai: XaiFake, make_settings: SettingsFactory, img: Path
) -> None:
    settings = make_settings(**xai_env(xai, **CONFIRM_ENV))
    asked, yes = answering("accept")
    async with Client(build_server(settings), mode=mode, elicitation_callback=yes) as client:  # type: ignore[arg-type]
        job = structured(await client.call_tool("animate_image", {"image": str(img), **ONE}))
        assert asked == ["xAI Grok Imagine Video, 5 s, about $0.25. Start?"]
        assert (await wait_done(client, job["job_id"]))["status"] == "succeeded"
        # cheap enough: nobody is asked
        cheap = structured(await client.call_tool("animate_image", {"image": str(img), "prompt": "x", "duration": 2}))
        assert len(asked) == 1 and cheap["cost"]["estimated_usd"] == pytest.approx(0.10)
        assert (await wait_done(client, cheap["job_id"]))["status"] == "succeeded"
    assert len(creates(xai)) == 2
    for action, start in (("decline", True), ("cancel", True), ("accept", False)):
        asked, no = answering(action, start)
        async with Client(build_server(settings), mode=mode, elicitation_callback=no) as client:  # type: ignore[arg-type]
            before = len(await jobs(client))
            res = await client.call_tool("animate_image", {"image": str(img), **ONE, "confirm_cost_usd": 5})
            assert "[cancelled]" in error_text(res) and "no job was created" in error_text(res), action
            assert len(asked) == 1 and len(await jobs(client)) == before
    assert len(creates(xai)) == 2  # no request for the declined ones


async def test_2026_connection_asks_through_an_input_required_result(
    xai: XaiFake, make_settings: SettingsFactory, img: Path
) -> None:
    settings = make_settings(**xai_env(xai, **CONFIRM_ENV))
    _, yes = answering("accept")
    async with Client(build_server(settings), mode="auto", elicitation_callback=yes) as client:  # type: ignore[arg-type]
        first = await client.session.call_tool(
            "animate_image", {"image": str(img), **ONE}, allow_input_required=True
        )
        assert isinstance(first, InputRequiredResult)
        (request,) = first.input_requests.values()
        assert request.params.message == "xAI Grok Imagine Video, 5 s, about $0.25. Start?"  # type: ignore[union-attr]
        assert await jobs(client) == [] and creates(xai) == []  # nothing happens before the answer
        key = next(iter(first.input_requests))
        done = await client.session.call_tool(
            "animate_image", {"image": str(img), **ONE},
            input_responses={key: ElicitResult(action="accept", content={"start": True})},
            request_state=first.request_state,
        )
        assert not done.is_error and done.structured_content and done.structured_content["job_id"]


async def test_client_without_elicitation_needs_confirm_cost_usd(
    xai: XaiFake, make_settings: SettingsFactory, img: Path
) -> None:
    settings = make_settings(**xai_env(xai, **CONFIRM_ENV))
    for mode in ("auto", "legacy"):
        async with connect(settings, mode=mode) as client:
            res = await client.call_tool("animate_image", {"image": str(img), **ONE})
            text = error_text(res)
            assert "[confirmation_required]" in text and "confirm_cost_usd >= 0.25" in text
            low = await client.call_tool("animate_image", {"image": str(img), **ONE, "confirm_cost_usd": 0.2})
            assert "[confirmation_required]" in error_text(low) and "below it" in error_text(low)
            assert await jobs(client) == [] and creates(xai) == []
    async with connect(settings) as client:
        job = structured(await client.call_tool("animate_image", {"image": str(img), **ONE, "confirm_cost_usd": 0.25}))
        assert (await wait_done(client, job["job_id"]))["status"] == "succeeded"
        # a dry run needs no confirmation and says whether the real call will
        dry = structured(await client.call_tool("animate_image", {"image": str(img), **ONE, "dry_run": True}))
        assert dry["needs_confirmation"] is True
    assert len(creates(xai)) == 1


# -- spend ------------------------------------------------------------------------------------


async def test_spend_resource_and_cost_on_every_job(
    xai: XaiFake, make_settings: SettingsFactory, img: Path
) -> None:
    env = xai_env(xai, STILLMOTION_BUDGET_USD="10", STILLMOTION_BUDGET_PERIOD="month", STILLMOTION_DEFAULT_MODEL=XAI)
    async with connect(make_settings(**env)) as client:
        for duration in (2, 4):
            job = structured(await client.call_tool("animate_image", {"image": str(img), "prompt": "x", "duration": duration}))
            await wait_done(client, job["job_id"])
        local = structured(await client.call_tool("animate_image", {"image": str(img), "model": "local/preview", "duration": 1,
                                                                    "local": {"resolution": "480p"}}))
        await wait_done(client, local["job_id"])
        listed = await jobs(client)
        assert sorted(j["cost"]["actual_usd"] or 0 for j in listed) == pytest.approx([0, 0.10, 0.20])
        text = (await client.read_resource("stillmotion://spend")).contents[0].text  # type: ignore[union-attr]
    spend = json.loads(text)
    assert spend["budget"]["budget_usd"] == 10 and spend["budget"]["period"] == "month"
    assert spend["budget"]["committed_usd"] == pytest.approx(0.30) and spend["budget"]["left_usd"] == pytest.approx(9.70)
    rows = {r["model"]: r for r in spend["rows"]}
    assert rows[XAI]["jobs"] == 2 and rows[XAI]["committed_usd"] == pytest.approx(0.30)
    assert rows[XAI]["estimated_usd"] == pytest.approx(0.30) and rows[XAI]["actual_usd"] == pytest.approx(0.30)
    assert rows["local/preview"]["committed_usd"] == 0
    # the price table in use, every figure with its source
    assert spend["prices"] and all("source" in p and "estimate" in p for p in spend["prices"])
    wanted = {"model": XAI, "resolution": "480p", "usd_per_second": 0.05, "estimate": True}
    assert any(wanted.items() <= p.items() for p in spend["prices"])


async def test_kling_units_become_dollars_with_a_unit_price(
    make_settings: SettingsFactory, img: Path, tmp_path: Path
) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({
        "prices": [{"model": "klingai/kling-v2.6-i2v", "route": "direct", "mode": "pro", "sound": "off",
                    "usd_per_second": 0.14, "source": "test contract", "estimate": False}],
        "kling_usd_per_unit": 0.125,
    }))
    with KlingFake(api_key=KEY) as fake:
        env = {"KLINGAI_API_KEY": KEY, "KLINGAI_BASE_URL": fake.base_url, "STILLMOTION_PRICES": str(prices)}
        async with connect(make_settings(**env)) as client:
            job = structured(await client.call_tool("animate_image", {
                "model": "klingai/kling-v2.6-i2v", "image": str(img), "prompt": "go", "kling": {"mode": "pro"}}))
            assert job["cost"]["estimated_usd"] == pytest.approx(0.70) and job["cost"]["estimate"] is False
            done = await wait_done(client, job["job_id"])
    # the fake deducts 5 units for a pro task: 5 x $0.125
    assert done["cost"] == {"estimated_usd": pytest.approx(0.70), "basis": done["cost"]["basis"], "estimate": False,
                            "actual_usd": pytest.approx(0.625)}
    assert "test contract" in done["cost"]["basis"]
