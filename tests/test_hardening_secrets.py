"""No credential in any stored, logged or returned text (issue #11): for each provider and the
Gateway, a fake echoes every request header in its error body; the key, the signed JWT and the
secret key must appear in no job row, result, resource, log line or error."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stillmotion.scrub import Scrubber, install_log_scrubber, register_derived, scrub
from tests.conftest import SettingsFactory, connect, structured, wait_done, write_image
from tests.fakes import GatewayFake, KlingFake, WanFake, XaiFake
from tests.fakes.base import FakeServer, Recorded, Reply

pytestmark = pytest.mark.anyio


def _echo(shape: Callable[[str], Any]) -> Callable[[Recorded], Reply]:
    def reply(req: Recorded) -> Reply:
        echoed = "; ".join(f"{k}: {v}" for k, v in req.headers.items())
        return Reply.of_json(400, shape(f"bad request, you sent {echoed}"))

    return reply


CASES: dict[str, dict[str, Any]] = {
    "kling-api-key": {
        "fake": lambda: KlingFake(api_key="kling-SECRET-apikey-0001"),
        "env": lambda f: {"KLINGAI_API_KEY": "kling-SECRET-apikey-0001", "KLINGAI_BASE_URL": f.base_url},
        "secrets": ["kling-SECRET-apikey-0001"],
        "model": "klingai/kling-v2.6-i2v",
        "shape": lambda text: {"code": 1200, "message": text, "request_id": "req-1"},
    },
    "kling-jwt": {
        "fake": lambda: KlingFake(access_key="kling-SECRET-access-0002", secret_key="kling-SECRET-sk-0003-long-enough-for-hs256"),
        "env": lambda f: {
            "KLINGAI_ACCESS_KEY": "kling-SECRET-access-0002",
            "KLINGAI_SECRET_KEY": "kling-SECRET-sk-0003-long-enough-for-hs256",
            "KLINGAI_BASE_URL": f.base_url,
        },
        "secrets": ["kling-SECRET-access-0002", "kling-SECRET-sk-0003-long-enough-for-hs256"],
        "model": "klingai/kling-v2.6-i2v",
        "shape": lambda text: {"code": 1200, "message": text, "request_id": "req-1"},
    },
    "wan": {
        "fake": lambda: WanFake(api_key="sk-SECRET-wan-0004"),
        "env": lambda f: {"ALIBABA_API_KEY": "sk-SECRET-wan-0004", "ALIBABA_BASE_URL": f.base_url},
        "secrets": ["sk-SECRET-wan-0004"],
        "model": "alibaba/wan-v2.6-i2v",
        "shape": lambda text: {"code": "InvalidParameter", "message": text, "request_id": "req-1"},
    },
    "xai": {
        "fake": lambda: XaiFake(api_key="xai-SECRET-0005"),
        "env": lambda f: {"XAI_API_KEY": "xai-SECRET-0005", "XAI_BASE_URL": f.api_base},
        "secrets": ["xai-SECRET-0005"],
        "model": "xai/grok-imagine-video",
        "shape": lambda text: {"error": {"message": text, "type": "invalid_request_error"}},
    },
    "gateway": {
        "fake": lambda: GatewayFake(api_key="vck-SECRET-gateway-0006"),
        "env": lambda f: {"AI_GATEWAY_API_KEY": "vck-SECRET-gateway-0006", "AI_GATEWAY_BASE_URL": f.api_base},
        "secrets": ["vck-SECRET-gateway-0006"],
        "model": "klingai/kling-v2.6-i2v",
        "shape": lambda text: {"error": {"message": text, "type": "invalid_request_error"}},
    },
}


def _all_text(home: Path) -> bytes:
    """Every byte the server stored under its home (job database, WAL, inputs, outputs)."""
    out = b""
    for p in sorted(home.rglob("*")):
        if p.is_file():
            out += p.read_bytes()
    return out


@pytest.mark.parametrize("case", sorted(CASES))
async def test_echoed_credentials_are_scrubbed_everywhere(
    case: str, make_settings: SettingsFactory, home: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    spec = CASES[case]
    img = write_image(tmp_path / "in" / "photo.png", 640, 480, seed=5)
    caplog.set_level(logging.DEBUG)
    fake: FakeServer
    with spec["fake"]() as fake:
        fake.inject_fn("POST", _echo(spec["shape"]), times=10)
        async with connect(make_settings(**spec["env"](fake))) as client:
            submitted = await client.call_tool(
                "animate_image", {"model": spec["model"], "image": str(img), "prompt": "waves roll in"})
            job = structured(submitted)
            done = await wait_done(client, job["job_id"])
            checked = await client.call_tool("check_job", {"job_id": job["job_id"]})
            listed = await client.call_tool("list_jobs", {})
            resource = await client.read_resource(f"stillmotion://jobs/{job['job_id']}")
        sent_auth = [r.header("authorization") or "" for r in fake.calls("POST")]
    assert done["status"] == "failed", done
    message = done["error"]["message"]
    assert "authorization: Bearer ***" in message, message  # the echo arrived, and was scrubbed
    tokens = [a.removeprefix("Bearer ").strip() for a in sent_auth if a]
    assert tokens, "the fake saw no Authorization header"
    secrets = [*spec["secrets"], *tokens]  # the keys, and the JWT as it was signed
    returned = json.dumps([
        submitted.model_dump(mode="json"), checked.model_dump(mode="json"), listed.model_dump(mode="json"),
        resource.model_dump(mode="json"),
    ])
    stored = _all_text(home)
    logged = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    out, err = capfd.readouterr()
    for secret in secrets:
        assert secret not in returned, f"{case}: a credential in a tool result or resource"
        assert secret.encode() not in stored, f"{case}: a credential stored under STILLMOTION_HOME"
        assert secret not in logged, f"{case}: a credential in a log line"
        assert secret not in out + err, f"{case}: a credential on stdout/stderr"
        assert secret not in message


def test_scrubber_forms_and_derived_tokens() -> None:
    s = Scrubber()
    s.register("abc")  # too short to scrub safely
    s.register("p@ss/word+1")
    s.register_derived("eyJhbGciOi.jwt-token-1")
    text = "x p@ss/word+1 y p%40ss%2Fword%2B1 z eyJhbGciOi.jwt-token-1 abc"
    assert s.scrub(text) == "x *** y *** z *** abc"
    assert s.scrub_obj({"a": ["p@ss/word+1", 3], "p@ss/word+1": None}) == {"a": ["***", 3], "***": None}


def test_log_records_are_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    install_log_scrubber()
    register_derived("tok-SECRET-in-logs-77")
    caplog.set_level(logging.INFO)
    log = logging.getLogger("some.library")
    log.info("sending %s", "Bearer tok-SECRET-in-logs-77")
    try:
        raise ValueError("echo tok-SECRET-in-logs-77")
    except ValueError:
        log.exception("failed")
    assert "tok-SECRET-in-logs-77" not in caplog.text
    assert "Bearer ***" in caplog.text and "echo ***" in caplog.text
    assert scrub("tok-SECRET-in-logs-77") == "***"


def test_every_configured_credential_is_scrubbed(make_settings: SettingsFactory) -> None:
    make_settings(
        "http",
        STILLMOTION_HTTP_TOKEN="http-SECRET-token-0007",
        AI_GATEWAY_API_KEY="vck-SECRET-0008",
        KLINGAI_SECRET_KEY="kling-SECRET-sk-0009",
    )
    from stillmotion.errors import ProviderError
    from stillmotion.settings import Secret

    Secret("db-SECRET-password-0010")  # a database password or storage token, wrapped like any credential
    text = "http-SECRET-token-0007 vck-SECRET-0008 kling-SECRET-sk-0009 db-SECRET-password-0010"
    assert scrub(text) == "*** *** *** ***"
    assert ProviderError(f"echo: {text}").message == "echo: *** *** *** ***"


def test_new_settings_parse_and_refuse_nonsense(make_settings: SettingsFactory) -> None:
    s = make_settings(
        STILLMOTION_MAX_RESULT_BYTES="5000", STILLMOTION_MAX_RESOURCE_BYTES="6000",
        STILLMOTION_PUBLIC_URL="https://video.example.com/", STILLMOTION_HTTP_HEADER_TIMEOUT_S="2.5",
    )
    assert (s.max_download_bytes, s.max_resource_bytes, s.public_url) == (5000, 6000, "https://video.example.com")
    assert s.http_header_timeout_s == 2.5 and s.http_body_timeout_s == 30.0
    d = make_settings()
    assert d.max_download_bytes == 1024**3 and d.max_resource_bytes == 32 * 1024**2
    for var, value in (("STILLMOTION_MAX_RESULT_BYTES", "0"), ("STILLMOTION_HTTP_BODY_TIMEOUT_S", "soon")):
        with pytest.raises(ValueError, match=var):
            make_settings(**{var: value})
