"""xAI Grok Imagine direct against the strict fake: exact wire bodies, progress flowing into check_job
notifications, done/moderated/failed/expired, xAI's three error shapes (a bad key is a 400), credits
vs rate limits, a lost create answer (never resubmitted), and an end-to-end stdio run."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from stillmotion.media.video import probe_video
from tests.conftest import SettingsFactory, connect, structured, wait_done, write_image
from tests.fakes import XaiFake
from tests.fakes.base import Recorded, parse_data_uri
from tests.stdio_client import StdioServer

pytestmark = pytest.mark.anyio
CREATE = "/v1/videos/generations"
STATUS = "/v1/videos/"
KEY = "xai-test-key-0123456789abcdef"
MODEL = "xai/grok-imagine-video"


@pytest.fixture
def fake() -> Iterator[XaiFake]:
    with XaiFake(api_key=KEY) as f:
        yield f
        assert f.violations == []


@pytest.fixture
def env(fake: XaiFake) -> dict[str, str]:
    return {"XAI_API_KEY": KEY, "XAI_BASE_URL": fake.api_base}


@pytest.fixture
def img(tmp_path: Path) -> Path:
    return write_image(tmp_path / "in" / "photo.png", 640, 480, seed=11)


def creates(fake: XaiFake) -> list[Recorded]:
    return fake.calls("POST", CREATE)


def polls(fake: XaiFake) -> list[Recorded]:
    return fake.calls("GET", STATUS)


def decoded(body: Any) -> Any:
    """The body with its data: URI replaced by (mime, raw bytes), so images compare by content."""
    out = dict(body)
    url = out["image"]["url"]
    if url.startswith("data:"):
        parsed = parse_data_uri(url)
        assert parsed is not None, "image.url is not a valid base64 data: URI"
        out["image"] = {"url": parsed}
    return out


async def run_job(settings: Any, args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    async with connect(settings) as client:
        job = structured(await client.call_tool("animate_image", {"model": MODEL, **args}))
        done = await wait_done(client, job["job_id"])
    return job, done


# -- wire bodies -------------------------------------------------------------------------------


async def test_local_file_defaults_exact_body(
    fake: XaiFake, env: dict[str, str], make_settings: SettingsFactory, img: Path
) -> None:
    job, done = await run_job(make_settings(**env), {"image": str(img), "prompt": "clouds drift"})
    assert done["status"] == "succeeded", done
    assert done["route"] == "direct" and done["provider_task_id"] == fake.last_task().id
    assert not any("aspect_ratio" in w for w in job["warnings"])
    (create,) = creates(fake)
    assert decoded(create.json) == {
        "model": "grok-imagine-video",
        "prompt": "clouds drift",
        "duration": 5,
        "resolution": "480p",
        "image": {"url": ("image/png", await anyio.Path(img).read_bytes())},
    }
    assert create.header("authorization") == f"Bearer {KEY}"
    assert create.header("content-type") == "application/json"
    task_polls = polls(fake)
    assert len(task_polls) == 2
    for p in task_polls:
        assert p.path == STATUS + done["provider_task_id"]
        assert p.header("authorization") == f"Bearer {KEY}"
    video = done["video"]
    assert probe_video(Path(video["path"])).frame_count > 0
    assert video["provider_url"].startswith(fake.base_url + "/files/")
    assert KEY not in str(done)


async def test_url_input_with_aspect_ratio_when_asked(
    fake: XaiFake, env: dict[str, str], make_settings: SettingsFactory, img: Path
) -> None:
    url = fake.add_file("still.png", await anyio.Path(img).read_bytes(), "image/png")
    settings = make_settings(STILLMOTION_ALLOW_PRIVATE_NETWORK="1", **env)
    args = {
        "image": url,
        "prompt": "trees sway",
        "duration": 8,
        "xai": {"resolution": "720p", "aspect_ratio": "16:9"},
    }
    job, done = await run_job(settings, args)
    assert done["status"] == "succeeded", done
    assert any("16:9 stretches" in w for w in job["warnings"])
    (create,) = creates(fake)
    assert create.json == {
        "model": "grok-imagine-video",
        "prompt": "trees sway",
        "duration": 8,
        "aspect_ratio": "16:9",
        "resolution": "720p",
        "image": {"url": url},
    }
    assert len(fake.calls("GET", "/files/still.png")) >= 1  # our server fetched it to check it


@pytest.mark.parametrize("pending_status", [202, 200])
async def test_progress_flows_into_check_job_notifications(
    fake: XaiFake, env: dict[str, str], make_settings: SettingsFactory, img: Path, pending_status: int
) -> None:
    fake.pending_status = pending_status
    fake.polls_until_done = 5  # the fake reports progress 0, 35, 70, 95, then done
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        assert total == 1.0
        seen.append(progress)

    async with connect(make_settings(**env)) as client:
        job = structured(
            await client.call_tool(
                "animate_image",
                {"model": MODEL, "image": str(img), "prompt": "x", "xai": {"poll_interval_ms": 150}},
            )
        )
        res = await client.call_tool(
            "check_job", {"job_id": job["job_id"], "wait_seconds": 20}, progress_callback=on_progress
        )
    assert structured(res)["status"] == "succeeded"
    assert seen == sorted(set(seen)), seen
    assert {0.35, 0.7, 0.95} <= set(seen), seen
    assert seen[-1] == 1.0
    assert len(polls(fake)) == 5


# -- task endings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "message", "kind", "needle"),
    [
        ("moderated", None, "content_filtered", "moderation"),
        ("failed", "The model could not render this scene.", "provider_error", "could not render this scene"),
        ("expired", None, "expired", "expired"),
    ],
)
async def test_task_endings(
    fake: XaiFake,
    env: dict[str, str],
    make_settings: SettingsFactory,
    img: Path,
    outcome: str,
    message: str | None,
    kind: str,
    needle: str,
) -> None:
    fake.script_outcome(outcome, message)
    _, done = await run_job(make_settings(**env), {"image": str(img), "prompt": "x"})
    assert done["status"] == "failed", done
    assert done["error"]["kind"] == kind
    assert needle in done["error"]["message"]
    assert len(creates(fake)) == 1


async def test_poll_time_moderation_400_is_content_filtered(
    fake: XaiFake, env: dict[str, str], make_settings: SettingsFactory, img: Path
) -> None:
    fake.inject(
        f"GET {STATUS}",
        status=400,
        json=XaiFake.error_body("Generated video rejected by content moderation.", "nested"),
    )
    _, done = await run_job(make_settings(**env), {"image": str(img), "prompt": "x"})
    assert done["status"] == "failed" and done["error"]["kind"] == "content_filtered", done
    assert "rejected by content moderation" in done["error"]["message"]
    assert "change the prompt" in done["next_step"]
    assert len(creates(fake)) == 1 and len(polls(fake)) == 1


# -- errors -------------------------------------------------------------------------------------


async def test_bad_key_400_is_auth_and_never_echoed(make_settings: SettingsFactory, img: Path) -> None:
    with XaiFake(api_key="xai-the-right-key") as f:
        settings = make_settings(XAI_API_KEY="xai-a-wrong-key-4242", XAI_BASE_URL=f.api_base)
        _, done = await run_job(settings, {"image": str(img), "prompt": "x"})
        assert f.violations == [] and len(f.auth_failures) == 1
        assert len(f.calls("POST", CREATE)) == 1
    assert done["status"] == "failed" and done["error"]["kind"] == "auth", done
    assert "Incorrect API key" in done["error"]["message"]
    assert "xai-a-wrong-key-4242" not in str(done)


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (400, XaiFake.error_body("Incorrect API key provided: xa***42.", "string"), "auth"),
        (400, XaiFake.error_body("Invalid API key.", "nested", code="invalid_api_key"), "auth"),
        (401, XaiFake.error_body("Unauthorized", "nested"), "auth"),
        (403, XaiFake.error_body("The caller does not have permission", "flat", code="Forbidden"), "auth"),
        (429, {"code": 429, "error": "You ran out of credits."}, "quota"),
        (
            429,
            XaiFake.error_body(
                "Your team has reached its monthly spending limit.", "nested", type="rate_limit"
            ),
            "quota",
        ),
        (
            403,
            XaiFake.error_body(
                "Your newly created team doesn't have any credits yet.", "flat", code="Forbidden"
            ),
            "quota",
        ),
        (400, XaiFake.error_body("Argument 'duration' is out of range.", "flat"), "invalid_input"),
        (
            422,
            XaiFake.error_body("missing field `prompt`", "flat", code="Unprocessable Entity"),
            "invalid_input",
        ),
        (400, XaiFake.error_body("Prompt rejected by content moderation.", "nested"), "content_filtered"),
        (404, XaiFake.error_body("No such model", "string"), "provider_error"),
    ],
)
async def test_create_errors_end_the_job_at_once(
    fake: XaiFake,
    env: dict[str, str],
    make_settings: SettingsFactory,
    img: Path,
    status: int,
    body: Any,
    kind: str,
) -> None:
    fake.inject(f"POST {CREATE}", status=status, json=body)
    _, done = await run_job(make_settings(**env), {"image": str(img), "prompt": "x"})
    assert done["status"] == "failed" and done["error"]["kind"] == kind, done
    assert done["error"]["retryable"] is False
    assert len(creates(fake)) == 1 and fake.tasks == {}
    assert KEY not in str(done)


async def test_credits_429_is_quota_at_once(
    fake: XaiFake, env: dict[str, str], make_settings: SettingsFactory, img: Path
) -> None:
    fake.credits_exhausted(times=5)
    _, done = await run_job(make_settings(**env), {"image": str(img), "prompt": "x"})
    assert done["status"] == "failed" and done["error"]["kind"] == "quota", done
    assert "ran out of credits" in done["error"]["message"]
    assert done["error"]["provider_code"] == "429"
    assert len(creates(fake)) == 1


async def test_rate_limit_honours_retry_after_then_succeeds(
    fake: XaiFake, env: dict[str, str], make_settings: SettingsFactory, img: Path
) -> None:
    fake.rate_limited(retry_after=1)
    fake.rate_limited(retry_after=0, match=f"GET {STATUS}", times=2)
    _, done = await run_job(make_settings(**env), {"image": str(img), "prompt": "x"})
    assert done["status"] == "succeeded", done
    first, second = creates(fake)
    assert second.at - first.at >= 0.9
    assert len(fake.tasks) == 1 and len(polls(fake)) == 4


async def test_server_errors_retried_on_create_and_poll(
    fake: XaiFake, env: dict[str, str], make_settings: SettingsFactory, img: Path
) -> None:
    fake.inject(
        f"POST {CREATE}", status=500, json=XaiFake.error_body("Internal error", "flat", code="Internal")
    )
    fake.inject(f"GET {STATUS}", status=503, body=b"upstream unavailable", times=2)
    _, done = await run_job(make_settings(**env), {"image": str(img), "prompt": "x"})
    assert done["status"] == "succeeded", done
    assert len(creates(fake)) == 2 and len(fake.tasks) == 1
    assert len(polls(fake)) == 4


async def test_lost_create_answer_is_interrupted_never_resubmitted(
    fake: XaiFake, env: dict[str, str], make_settings: SettingsFactory, img: Path
) -> None:
    fake.inject_drop(f"POST {CREATE}", after_effect=True)
    async with connect(make_settings(**env)) as client:
        job = structured(
            await client.call_tool("animate_image", {"model": MODEL, "image": str(img), "prompt": "x"})
        )
        done = await wait_done(client, job["job_id"])
        await anyio.sleep(0.3)  # nothing else may happen afterwards
    assert done["status"] == "failed" and done["error"]["kind"] == "interrupted", done
    assert "may have started" in done["error"]["message"]
    assert len(creates(fake)) == 1 and len(fake.tasks) == 1  # xAI did create (and may bill) it
    assert polls(fake) == []


# -- end to end ---------------------------------------------------------------------------------


def test_end_to_end_stdio(fake: XaiFake, home: Path, img: Path) -> None:
    srv = StdioServer(
        {
            "STILLMOTION_HOME": str(home),
            "XAI_API_KEY": KEY,
            "XAI_BASE_URL": fake.api_base,
            "STILLMOTION_POLL_INTERVAL_MS": "50",
        }
    )
    try:
        srv.initialize()
        started = time.monotonic()
        res = srv.call_tool(
            "animate_image",
            {
                "model": MODEL,
                "image": str(img),
                "prompt": "the river flows",
                "duration": 6,
                "wait_seconds": 30,
            },
        )["result"]
        assert time.monotonic() - started < 30
    finally:
        srv.close()
    sc = res["structuredContent"]
    assert sc["status"] == "succeeded", sc
    assert probe_video(Path(sc["video"]["path"])).frame_count > 0
    (create,) = creates(fake)
    assert decoded(create.json) == {
        "model": "grok-imagine-video",
        "prompt": "the river flows",
        "duration": 6,
        "resolution": "480p",
        "image": {"url": ("image/png", img.read_bytes())},
    }
    assert KEY.encode() not in srv.stderr
