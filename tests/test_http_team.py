"""HTTP fit for a team: allowed host names, probes for load balancers, graceful SIGTERM."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from stillmotion.settings import Settings
from tests.replicas import base_env, start_replica

INIT = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def test_allowed_hosts_probes_and_token_on_a_lan_address(tmp_path: Path) -> None:
    env = base_env(
        STILLMOTION_HOME=str(tmp_path / "home"), STILLMOTION_HTTP_TOKEN="team-token-123",
        STILLMOTION_ALLOWED_HOSTS="mcp.team.example, 10.1.2.3",
    )
    r = start_replica("lan", env, tmp_path / "logs", host="0.0.0.0")
    try:
        r.wait_ready()
        auth = {"Authorization": "Bearer team-token-123"}
        # probes: no token, any Host (load balancers probe by IP)
        for path in ("/healthz", "/readyz"):
            got = httpx.get(r.base + path, headers={"Host": "10.9.9.9:1234"})
            assert got.status_code == 200 and got.json() == {"status": "ok"}
        assert httpx.post(r.base + "/healthz").status_code == 405
        # /mcp: the token first, then the Host names clients use
        assert httpx.post(r.url, json=INIT, headers=ACCEPT).status_code == 401
        for host in ("mcp.team.example", f"mcp.team.example:{r.port}", "10.1.2.3:443", "MCP.team.example"):
            ok = httpx.post(r.url, json=INIT, headers={**ACCEPT, **auth, "Host": host})
            assert ok.status_code == 200, (host, ok.status_code, ok.text)
            assert "serverInfo" in ok.text
        evil = httpx.post(r.url, json=INIT, headers={**ACCEPT, **auth, "Host": "evil.example"})
        assert evil.status_code == 421
        bad_origin = httpx.post(
            r.url, json=INIT, headers={**ACCEPT, **auth, "Host": "mcp.team.example", "Origin": "https://evil.example"}
        )
        assert bad_origin.status_code == 403
        good_origin = httpx.post(
            r.url, json=INIT, headers={**ACCEPT, **auth, "Host": "mcp.team.example", "Origin": "https://mcp.team.example"}
        )
        assert good_origin.status_code == 200
    finally:
        code = r.stop(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells how it ended
    assert code in (0, -signal.SIGTERM), r.log.read_text()[-2000:]
    assert "Traceback" not in r.log.read_text()


def test_allowed_hosts_setting_is_checked() -> None:
    s = Settings.from_env({"STILLMOTION_ALLOWED_HOSTS": " a.example ,B.example:8443,,"}, transport="http")
    assert s.allowed_hosts == ("a.example", "b.example:8443")
    with pytest.raises(ValueError, match="STILLMOTION_ALLOWED_HOSTS"):
        Settings.from_env({"STILLMOTION_ALLOWED_HOSTS": "https://a.example/"}, transport="http")
    with pytest.raises(ValueError, match="postgresql://"):
        Settings.from_env({"STILLMOTION_DATABASE_URL": "mysql://x"}, transport="http")
    with pytest.raises(ValueError, match="STILLMOTION_MAX_RUNNING_KLINGAI"):
        Settings.from_env({"STILLMOTION_MAX_RUNNING_KLINGAI": "0"})
    caps = Settings.from_env({"STILLMOTION_MAX_RUNNING_KLINGAI": "5", "STILLMOTION_MAX_RUNNING_GATEWAY": "2"})
    assert caps.max_running == {"klingai": 5, "gateway": 2}
    assert "pw-x9" not in repr(Settings.from_env({"STILLMOTION_DATABASE_URL": "postgresql://u:pw-x9@h/db"}))


def test_team_hosts_forms() -> None:
    from stillmotion.http.team import team_hosts

    s = Settings.from_env({"STILLMOTION_ALLOWED_HOSTS": "mcp.example.com,10.0.0.5:8443,[fd00::1],[fd00::2]:9000"},
                          transport="http")
    hosts, origins = team_hosts(s)
    assert hosts == ["mcp.example.com", "mcp.example.com:*", "10.0.0.5:8443", "[fd00::1]", "[fd00::1]:*", "[fd00::2]:9000"]
    assert "https://mcp.example.com" in origins and "https://10.0.0.5:8443" in origins
    assert "http://[fd00::1]:*" in origins and "http://[fd00::2]:9000" in origins
