"""OAuth 2.1 sign-in (issue #23) against a real authorization server: the `oidc-provider` package
from npm on loopback (tests/oidc/provider.mjs), its login and consent pages driven in Debian's
chromium by Playwright, the MCP SDK's client-side OAuth doing discovery (from our 401 and
Protected Resource Metadata), dynamic registration, authorization code + PKCE and the token
exchange; then tools as that user. Bad tokens of every kind get 401; a rotated signing key is
picked up without a restart.

Skips on a developer machine without node/npm, chromium or playwright; fails under CI=true."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp.client.auth import OAuthClientProvider
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)

from stillmotion.jobs.store import SqliteStore
from tests.conftest import write_image
from tests.replicas import Replica, base_env, free_port, replicas
from tests.test_player_browser import CHROMIUM, _need_browser
from tests.users_scenario import LOCAL, Seen, as_user, finished, held_task, stranger_cannot_touch, structured

PROVIDER_JS = Path(__file__).parent / "oidc" / "provider.mjs"
OIDC_PROVIDER = "oidc-provider@9"
NODE_DIR = Path(os.environ.get("STILLMOTION_TEST_NODE_DIR") or Path.home() / ".cache" / "stillmotion-tests" / "node")
INIT = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def _missing(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail("CI must run the OAuth sign-in tests: " + why)
    pytest.skip(why)


@pytest.fixture(scope="session")
def oidc_module() -> Path:
    """oidc-provider from npm, installed once under NODE_DIR (.ci/run installs it there first)."""
    module = NODE_DIR / "node_modules" / "oidc-provider" / "lib" / "index.js"
    if not module.exists():
        if not (shutil.which("node") and shutil.which("npm")):
            _missing("node and npm are not installed (apt-get install nodejs npm)")
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(NODE_DIR), OIDC_PROVIDER],
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0 or not module.exists():
            _missing(f"npm install {OIDC_PROVIDER} failed: {done.stderr[-500:]}")
    return module


def rsa_jwk(kid: str) -> tuple[dict[str, Any], Any]:
    """(private JWK for the provider, the key for forging tokens in tests)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
    jwk.update(kid=kid, alg="RS256", use="sig")
    return jwk, key


@dataclass
class AuthServer:
    issuer: str
    port: int
    proc: subprocess.Popen[bytes]


class Provider:
    """One oidc-provider process at a fixed port; restart() swaps its keys (a rotation)."""

    def __init__(self, module: Path, workdir: Path, clients: list[dict[str, Any]]) -> None:
        self.module, self.workdir, self.clients = module, workdir, clients
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    def start(self, keys: list[dict[str, Any]]) -> None:
        cfg = self.workdir / "provider.json"
        cfg.write_text(json.dumps({"issuer": self.issuer, "port": self.port, "resource": "urn:unused",
                                   "jwks": {"keys": keys}, "clients": self.clients}))
        log = open(self.workdir / "provider.log", "ab")
        self.proc = subprocess.Popen(["node", str(PROVIDER_JS), str(cfg)], stdout=subprocess.PIPE, stderr=log,
                                     env={**os.environ, "OIDC_PROVIDER_MODULE": str(self.module)})
        log.close()
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == b"ready", (self.workdir / "provider.log").read_text()[-2000:]

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def restart(self, keys: list[dict[str, Any]]) -> None:
        self.stop()
        self.start(keys)

    def client_token(self, resource: str, scope: str | None = "stillmotion") -> str:
        """An access token by client credentials (the `robot` client) for `resource`."""
        data = {"grant_type": "client_credentials", "resource": resource, **({"scope": scope} if scope else {})}
        r = httpx.post(f"{self.issuer}/token", data=data, auth=("robot", "robot-secret-0123456789"), timeout=10)
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])


ROBOT = {"client_id": "robot", "client_secret": "robot-secret-0123456789", "grant_types": ["client_credentials"],
         "redirect_uris": [], "response_types": [], "scope": "stillmotion"}


@pytest.fixture
def provider(oidc_module: Path, tmp_path: Path) -> Iterator[Provider]:
    p = Provider(oidc_module, tmp_path / "idp", [ROBOT])
    try:
        yield p
    finally:
        p.stop()


def server_env(tmp_path: Path, issuer: str, img: Path, **extra: str) -> dict[str, str]:
    return base_env(
        STILLMOTION_HOME=str(tmp_path / "home"), STILLMOTION_OAUTH_ISSUER=issuer, STILLMOTION_INPUT_ROOTS=str(img.parent),
        STILLMOTION_OAUTH_JWKS_REFRESH_S="0.05", **extra,
    )


def init(url: str, token: str | None) -> httpx.Response:
    headers = {**ACCEPT, **({"Authorization": f"Bearer {token}"} if token else {})}
    return httpx.post(url, json=INIT, headers=headers, timeout=10)


def forge(key: Any, kid: str, **claims: Any) -> str:
    now = int(time.time())
    body = {"iat": now, "exp": now + 300, "scope": "stillmotion", "sub": "mallory", **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm="RS256", headers={"kid": kid})


# -- bad tokens, rotation -----------------------------------------------------------------------


def test_bad_tokens_get_401_and_a_rotated_key_is_picked_up(provider: Provider, tmp_path: Path) -> None:
    a_jwk, a_key = rsa_jwk("key-a")
    b_jwk, b_key = rsa_jwk("key-b")
    provider.start([a_jwk])
    img = write_image(tmp_path / "in" / "photo.png", 320, 240, seed=3)
    with replicas(["rs"], server_env(tmp_path, provider.issuer, img), tmp_path / "logs") as reps:
        r = reps[0]
        meta_url = f"{r.base}/.well-known/oauth-protected-resource/mcp"
        for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
            meta = httpx.get(r.base + path, timeout=10)
            assert meta.status_code == 200
            doc = meta.json()
            assert doc["resource"] == r.url and doc["authorization_servers"] == [provider.issuer]
            assert doc["scopes_supported"] == ["stillmotion"]

        none = init(r.url, None)
        assert none.status_code == 401 and none.headers["www-authenticate"] == f'Bearer resource_metadata="{meta_url}"'
        good = provider.client_token(r.url)
        assert jwt.get_unverified_header(good)["kid"] == "key-a"
        assert init(r.url, good).status_code == 200

        now = int(time.time())
        right = {"iss": provider.issuer, "aud": r.url}
        bad = {
            "wrong audience (from the server)": provider.client_token("https://elsewhere.example/mcp"),
            "no scope (from the server)": provider.client_token(r.url, scope=None),
            "wrong audience": forge(a_key, "key-a", **{**right, "aud": "https://elsewhere.example/mcp"}),
            "wrong issuer": forge(a_key, "key-a", **{**right, "iss": "https://evil.example"}),
            "expired": forge(a_key, "key-a", **right, iat=now - 600, exp=now - 300),
            "not yet valid": forge(a_key, "key-a", **right, nbf=now + 300),
            "no scope": forge(a_key, "key-a", **right, scope="openid profile"),
            "badly signed": forge(b_key, "key-a", **right),
            "unknown key": forge(b_key, "key-b", **right),
            "tampered": good[: good.rindex(".")] + "." + base64.urlsafe_b64encode(b"\0" * 256).decode().rstrip("="),
            "alg none": jwt.encode({**right, "sub": "mallory", "exp": now + 300, "scope": "stillmotion"}, None,
                                   algorithm="none"),
            "not a JWT": "opaque-token-value",
        }
        assert init(r.url, forge(a_key, "key-a", **right)).status_code == 200  # the forger's control: well made
        for why, token in bad.items():
            got = init(r.url, token)
            assert got.status_code == 401, why
            assert got.headers["www-authenticate"].startswith(f'Bearer resource_metadata="{meta_url}", error="invalid_token"'), why

        # the issuer rotates to key B (A still published, B signs): picked up at once, no restart
        provider.restart([b_jwk, a_jwk])
        rotated = provider.client_token(r.url)
        assert jwt.get_unverified_header(rotated)["kid"] == "key-b"
        assert init(r.url, rotated).status_code == 200
        assert init(r.url, good).status_code == 200  # A's tokens stay good while A is published
        log = r.log.read_text()
    assert good not in log and rotated not in log
    assert "signing key(s)" in log


# -- sign-in through the browser ----------------------------------------------------------------


class Memory:
    """TokenStorage for one signed-in client."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


async def sign_in(url: str, login: str, browser: Any, pages: list[str]) -> tuple[OAuthClientProvider, Memory]:
    """An OAuthClientProvider whose browser step is a person typing `login` on the server's login
    page and pressing Continue on its consent page."""
    callback = f"http://127.0.0.1:{free_port()}/callback"
    got: dict[str, str] = {}

    async def redirect(authorization_url: str) -> None:
        q = parse_qs(urlsplit(authorization_url).query)
        assert q["code_challenge_method"] == ["S256"] and q["resource"] == [url] and "stillmotion" in q["scope"][0].split()
        page = await browser.new_page()
        done = anyio.Event()

        async def at_callback(route: Any) -> None:
            got.update({k: v[0] for k, v in parse_qs(urlsplit(route.request.url).query).items()})
            await route.fulfill(status=200, body="signed in", content_type="text/plain")
            done.set()

        await page.route(callback + "*", at_callback)
        await page.goto(authorization_url)
        await page.fill("input[name=login]", login)
        await page.fill("input[name=password]", "any password")
        pages.append(await page.title())
        await page.click("button[type=submit]")
        await page.wait_for_selector("button[type=submit]:has-text('Continue')", timeout=15000)
        pages.append(await page.title())
        await page.click("button[type=submit]")
        with anyio.fail_after(15):
            await done.wait()
        await page.close()

    async def answer() -> AuthorizationCodeResult:
        return AuthorizationCodeResult(code=got["code"], state=got.get("state"), iss=got.get("iss"))

    storage = Memory()
    metadata = OAuthClientMetadata(
        client_name=f"stillmotion test host ({login})", redirect_uris=[callback],  # type: ignore[list-item]
        grant_types=["authorization_code", "refresh_token"], response_types=["code"], token_endpoint_auth_method="none",
    )
    return OAuthClientProvider(url, metadata, storage, redirect, answer), storage


def test_sign_in_with_authorization_code_and_pkce_then_tools_as_that_user(provider: Provider, tmp_path: Path) -> None:
    async_playwright = _need_browser()
    key, _ = rsa_jwk("key-a")
    provider.start([key])
    img = write_image(tmp_path / "in" / "photo.png", 320, 240, seed=3)
    image = str(img)
    hold = tmp_path / "hold"
    env = server_env(tmp_path, provider.issuer, img, STILLMOTION_ADMINS="carol", STILLMOTION_TEST_HOLD_FILE=str(hold))
    with replicas(["rs"], env, tmp_path / "logs") as reps:
        r: Replica = reps[0]

        async def go() -> dict[str, Any]:
            pages: list[str] = []
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                try:
                    alice_auth, alice = await sign_in(r.url, "alice", browser, pages)
                    async with as_user(r.url, None, auth=alice_auth) as c:  # the 401 starts the sign-in
                        tools = {t.name for t in (await c.list_tools()).tools}
                        job = structured(await c.call_tool("animate_image", {"image": image, **LOCAL, "wait_seconds": 50}))
                    bob_auth, bob = await sign_in(r.url, "bob", browser, pages)
                    async with as_user(r.url, None, auth=bob_auth) as c:
                        bobs = structured(await c.call_tool("list_jobs", {}))["jobs"]
                finally:
                    await browser.close()
            assert alice.tokens is not None and bob.tokens is not None
            a_tok, b_tok = alice.tokens.access_token, bob.tokens.access_token
            # the signed-in users' tokens, as any host would send them: bob cannot reach alice's jobs
            b_done = await finished(r.url, b_tok, image)
            hold.touch()
            a_held, a_task = await held_task(r.url, a_tok, image)
            await stranger_cannot_touch(r.url, b_tok, Seen(job["job_id"], a_held, a_task), b_done)
            hold.unlink()
            return {"pages": pages, "tools": tools, "job": job, "bobs": bobs, "a_tok": a_tok,
                    "claims": jwt.decode(a_tok, options={"verify_signature": False})}

        out = anyio.run(go)
        log = r.log.read_text()
    assert out["job"]["status"] == "succeeded" and "animate_image" in out["tools"]
    assert out["bobs"] == []  # bob signed in: none of alice's jobs
    claims = out["claims"]
    assert claims["sub"] == "alice" and claims["aud"] == r.url and claims["iss"] == provider.issuer
    assert "stillmotion" in claims["scope"].split()
    assert len(out["pages"]) == 4  # a login and a consent page, for each of the two people
    store = SqliteStore(tmp_path / "home" / "jobs.sqlite3")
    try:
        row = store.get(out["job"]["job_id"])
        assert row is not None and row.user_id == "alice"
    finally:
        store.close()
    assert out["a_tok"] not in log and "for user alice" in log
