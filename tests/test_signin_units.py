"""The users file and the sign-in settings on their own (issue #23); the whole flows are in
test_users.py and test_signin_oauth.py."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from stillmotion.http.signin import JwtVerifier, UsersFile, wrap_signin
from stillmotion.settings import Settings
from tests.users_scenario import digest

pytestmark = pytest.mark.anyio


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def test_users_file_fails_closed_while_broken_and_recovers(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    _write(path, json.dumps({"users": {"alice": digest("tok-a"), "bob": digest("tok-b").upper()}}))
    users = UsersFile(path, recheck_s=0)
    a, b = await users.verify_token("tok-a"), await users.verify_token("tok-b")
    assert a is not None and a.subject == "alice" and a.token == ""  # no copy of the token is kept
    assert b is not None and b.subject == "bob"
    assert await users.verify_token("tok-c") is None and await users.verify_token("") is None
    _write(path, '{"users": {"alice": ')  # half-written by hand: nobody until it is fixed
    assert await users.verify_token("tok-a") is None
    _write(path, json.dumps({"users": {"alice": digest("tok-a")}}))
    assert (await users.verify_token("tok-a")) is not None and await users.verify_token("tok-b") is None
    path.unlink()
    assert await users.verify_token("tok-a") is None


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("[]", 'must be {"users"'),
        (json.dumps({"users": {"alice": "abc"}}), "64 hex digits"),
        (json.dumps({"users": {"a\x1fb": digest("x")}}), "no control characters"),
        (json.dumps({"users": {"alice": digest("x"), "bob": digest("x")}}), "the same token"),
        (json.dumps({"users": {}}), "has no users"),
    ],
)
def test_a_bad_users_file_stops_the_start(tmp_path: Path, content: str, words: str) -> None:
    path = tmp_path / "users.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=words.replace("{", r"\{").replace('"', '"')):
        UsersFile(path)


def test_sign_in_settings(tmp_path: Path) -> None:
    s = Settings.from_env({
        "STILLMOTION_HOME": str(tmp_path), "STILLMOTION_OAUTH_ISSUER": "https://idp.example.com/",
        "STILLMOTION_OAUTH_SCOPES": "stillmotion, video:write", "STILLMOTION_ADMINS": "ops@example.com, root",
        "STILLMOTION_USER_BUDGET_USD": "20", "STILLMOTION_HTTP_USERS": str(tmp_path / "u.json"),
    }, transport="http")
    assert s.oauth_issuer == "https://idp.example.com/"  # exactly as tokens carry it: never re-spelled
    assert s.oauth_scopes == ("stillmotion", "video:write") and s.admins == frozenset({"ops@example.com", "root"})
    assert s.user_budget_usd == 20 and s.http_users == tmp_path / "u.json"
    for bad in ("http://idp.example.com", "ftp://127.0.0.1", "idp.example.com"):
        with pytest.raises(ValueError, match="STILLMOTION_OAUTH_ISSUER must be an https"):
            Settings.from_env({"STILLMOTION_HOME": str(tmp_path), "STILLMOTION_OAUTH_ISSUER": bad})
    assert Settings.from_env({"STILLMOTION_HOME": str(tmp_path), "STILLMOTION_OAUTH_ISSUER": "http://127.0.0.1:9"}).oauth_issuer


def _rsa(kid: str) -> tuple[dict[str, Any], Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid=kid, use="sig")
    return jwk, key


async def test_jwt_keys_discovered_cached_and_refetched_sparingly() -> None:
    """RFC 8414 metadata first, then OpenID; metadata naming another issuer is not used; keys
    are fetched once, again for an unknown key id at most every refresh_s."""
    issuer, aud = "https://idp.example.com/tenant", "https://mcp.example.com/mcp"
    a, a_key = _rsa("a")
    seen: list[str] = []
    metadata = {
        "/.well-known/oauth-authorization-server/tenant": (404, {}),
        "/.well-known/openid-configuration/tenant": (200, {"issuer": "https://evil.example", "jwks_uri": "https://evil.example/k"}),
        "/tenant/.well-known/openid-configuration": (200, {"issuer": issuer, "jwks_uri": "https://idp.example.com/keys"}),
        "/keys": (200, {"keys": [a, {"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldC0xMjM0", "kid": "hmac"}]}),
    }

    def idp(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        status, body = metadata[request.url.path]
        return httpx.Response(status, json=body)

    verifier = JwtVerifier(issuer, aud, ["stillmotion"], refresh_s=3600,
                           client=httpx.AsyncClient(transport=httpx.MockTransport(idp)))
    now = int(time.time())
    claims = {"iss": issuer, "aud": aud, "sub": "alice", "scope": "stillmotion other", "exp": now + 60}
    good = await verifier.verify_token(jwt.encode(claims, a_key, algorithm="RS256", headers={"kid": "a"}))
    assert good is not None and good.subject == "alice" and good.scopes == ["stillmotion", "other"]
    assert seen == [*list(metadata)]  # both metadata URLs tried in order, the wrong issuer skipped
    _, b_key = _rsa("b")
    for _ in range(5):  # unknown key ids: refused, and no refetch within refresh_s
        assert await verifier.verify_token(jwt.encode(claims, b_key, algorithm="RS256", headers={"kid": "b"})) is None
    hmac_token = jwt.encode(claims, "secret-secret-secret-secret-secret-1234", algorithm="HS256", headers={"kid": "hmac"})
    assert await verifier.verify_token(hmac_token) is None  # a symmetric algorithm is never accepted
    assert seen.count("/keys") == 1


async def test_metadata_and_401_behind_a_public_url_with_a_path(tmp_path: Path) -> None:
    """STILLMOTION_PUBLIC_URL with a path: the metadata names that resource and is served at the
    RFC 9728 path for it and at the bare well-known path; /mcp without a token gets the 401 that
    points a host at it."""

    async def app(scope: Any, receive: Any, send: Any) -> None:  # the MCP app behind sign-in
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"mcp"})

    settings = Settings.from_env({"STILLMOTION_HOME": str(tmp_path), "STILLMOTION_OAUTH_ISSUER": "http://127.0.0.1:9"},
                                 transport="http")
    wrapped = wrap_signin(app, settings, "https://mcp.example.com/team")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=wrapped), base_url="http://t") as c:
        for path in ("/.well-known/oauth-protected-resource/team/mcp", "/.well-known/oauth-protected-resource"):
            doc = (await c.get(path)).json()
            assert doc["resource"] == "https://mcp.example.com/team/mcp", path
            assert doc["authorization_servers"] == ["http://127.0.0.1:9"] and doc["scopes_supported"] == ["stillmotion"]
        r = await c.post("/mcp")
        assert r.status_code == 401 and r.headers["www-authenticate"] == (
            'Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/team/mcp"')
        assert (await c.post("/mcp", headers={"Authorization": "Bearer x.y.z"})).status_code == 401
