"""Sign-in on the HTTP transport (issue #23): who each request is, from its bearer token.

Three ways, any of them together (a request passes when one of them accepts its token):

- `STILLMOTION_HTTP_TOKEN`: one shared token, one user (the local user, who owns every job made
  before users existed).
- `STILLMOTION_HTTP_USERS=users.json` (`{"users": {"alice": "<sha256 hex of alice's token>"}}`):
  each token a user. The file is re-read when it changes (checked at most every
  `USERS_RECHECK_S`), so removing a line revokes that user within seconds, without a restart.
  A file that cannot be read or parsed refuses everyone until it is fixed (fail closed).
- `STILLMOTION_OAUTH_ISSUER`: an OAuth 2.1 resource server (MCP authorization). Access tokens are
  JWTs from that issuer, checked by PyJWT against the issuer's published keys (its
  `jwks_uri`, or `STILLMOTION_OAUTH_JWKS_URL`): signature (asymmetric algorithms only), `iss`,
  `exp`/`nbf`, `aud` (RFC 8707: `STILLMOTION_OAUTH_AUDIENCE`, default `<public URL>/mcp`) and
  every scope in `STILLMOTION_OAUTH_SCOPES`. The user is the token's `sub`. Keys are cached and
  fetched again for an unknown key id (at most every STILLMOTION_OAUTH_JWKS_REFRESH_S) or after
  `JWKS_MAX_AGE_S`. Protected Resource Metadata (RFC 9728) is served at
  `/.well-known/oauth-protected-resource` and `/.well-known/oauth-protected-resource/mcp`.

The MCP SDK's own pieces do the plumbing: each way is an `mcp.server.auth.provider.TokenVerifier`,
the SDK's `BearerAuthBackend` turns a verified token into the ASGI scope's `AuthenticatedUser`
(its `subject` is our user, see users.py), and the SDK builds the metadata document. `RequireUser`
answers every other request with 401 and a `WWW-Authenticate: Bearer` header naming the metadata
(and `error="invalid_token"` when a token was sent). No token is ever logged or stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import httpx
import jwt
from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, BearerAuthBackend
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.routes import build_resource_metadata_url, create_protected_resource_routes
from pydantic import AnyHttpUrl
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from ..jobs.store import LOCAL_USER
from ..settings import Settings
from .users import USER_RE

log = logging.getLogger(__name__)

USERS_RECHECK_S = 1.0
"""How often the users file's stat is checked (a removed user is refused within this, plus a read)."""
JWKS_MAX_AGE_S = 3600.0
"""Keys are fetched again after this long even without an unknown key id (removed keys stop working)."""
LEEWAY_S = 10
"""Clock skew allowed on exp/nbf/iat."""
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
"""Asymmetric only: an HS* token would have to be signed with a secret we do not have; `none` never."""
PRM_ROOT = "/.well-known/oauth-protected-resource"
"""RFC 9728's metadata path; the SDK also serves it with the resource's path appended (`.../mcp`)."""


def _access(subject: str, client_id: str, scopes: Sequence[str] = (), **extra: Any) -> AccessToken:
    # `token` is required by the SDK's model; we keep no copy of the bearer token anywhere
    return AccessToken(token="", client_id=client_id, scopes=list(scopes), subject=subject, **extra)


class SharedToken:
    """STILLMOTION_HTTP_TOKEN: one token, the local user."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def verify_token(self, token: str) -> AccessToken | None:
        if hmac.compare_digest(token.encode(), self._token):
            return _access(LOCAL_USER, "stillmotion-http-token")
        return None


class UsersFile:
    """STILLMOTION_HTTP_USERS: token -> user by the token's SHA-256, re-read when the file changes."""

    def __init__(self, path: Path, recheck_s: float = USERS_RECHECK_S) -> None:
        self.path = path
        self.recheck_s = recheck_s
        self._by_hash: dict[str, str] = {}
        self._signature: tuple[int, int, int] | None = None
        self._checked = float("-inf")
        self._lock = anyio.Lock()
        self._load()  # at start-up: a broken file is a configuration error now, not a silent refusal later
        if not self._by_hash:
            raise ValueError(f"STILLMOTION_HTTP_USERS: {path} has no users")

    async def verify_token(self, token: str) -> AccessToken | None:
        if time.monotonic() - self._checked >= self.recheck_s:
            async with self._lock:
                if time.monotonic() - self._checked >= self.recheck_s:
                    await anyio.to_thread.run_sync(self._reload_quietly)
        digest = hashlib.sha256(token.encode()).hexdigest()
        user = self._by_hash.get(digest)
        return _access(user, "stillmotion-users-file") if user is not None else None

    def _reload_quietly(self) -> None:
        try:
            self._load()
        except ValueError as exc:
            self._by_hash = {}  # fail closed: nobody until the file is fixed
            log.error("STILLMOTION_HTTP_USERS: refusing every user until the file is fixed: %s", exc)

    def _load(self) -> None:
        self._checked = time.monotonic()
        try:
            st = os.stat(self.path)
        except OSError as exc:
            self._signature = None
            raise ValueError(f"cannot read {self.path}: {exc.strerror}") from None
        signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        if signature == self._signature:
            return
        self._signature = signature
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{self.path} is not readable JSON ({type(exc).__name__})") from None
        users = data.get("users") if isinstance(data, dict) else None
        if not isinstance(users, dict):
            raise ValueError(f'{self.path} must be {{"users": {{"<name>": "<sha256 hex of the token>"}}}}')
        table: dict[str, str] = {}
        for name, digest in users.items():
            if not USER_RE.match(name):
                raise ValueError(f"user name {name[:40]!r} in {self.path}: 1-200 characters, no control characters")
            if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digest):
                raise ValueError(f"user {name!r} in {self.path}: the value must be the token's SHA-256 as 64 hex digits")
            if digest.lower() in table:
                raise ValueError(f"users {table[digest.lower()]!r} and {name!r} in {self.path} have the same token")
            table[digest.lower()] = name
        if table.keys() != self._by_hash.keys() or list(table.values()) != list(self._by_hash.values()):
            log.info("STILLMOTION_HTTP_USERS: %d user(s) from %s", len(table), self.path)
        self._by_hash = table


class JwtVerifier:
    """OAuth 2.1 access tokens (JWT) from one issuer; PyJWT checks them, we only pick the key."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        scopes: Sequence[str],
        *,
        jwks_url: str | None = None,
        refresh_s: float = 10.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.scopes = tuple(scopes)
        self.jwks_url = jwks_url
        self.refresh_s = refresh_s
        self._client = client
        self._keys: dict[str | None, tuple[jwt.PyJWK, str | None]] = {}
        """kid -> (key, the alg its JWK pins, if any)"""
        self._fetched = float("-inf")
        self._discovered: str | None = None
        """The jwks_uri found in the issuer's metadata (kept until a fetch from it fails)."""
        self._lock = anyio.Lock()

    # -- keys -------------------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(10.0), follow_redirects=False)
        return self._client

    def discovery_urls(self) -> list[str]:
        """RFC 8414 (path-inserted, then appended for issuers without a path) and OpenID Connect."""
        parts = urlsplit(self.issuer)
        origin, path = f"{parts.scheme}://{parts.netloc}", parts.path.rstrip("/")
        urls = [f"{origin}/.well-known/oauth-authorization-server{path}", f"{origin}/.well-known/openid-configuration{path}",
                f"{self.issuer.rstrip('/')}/.well-known/openid-configuration"]
        return list(dict.fromkeys(urls))

    async def _discover(self) -> str:
        for url in self.discovery_urls():
            try:
                r = await self._http().get(url, headers={"Accept": "application/json"})
            except httpx.HTTPError as exc:
                log.warning("OAuth: %s did not answer (%s)", url, type(exc).__name__)
                continue
            if r.status_code != 200:
                continue
            meta = r.json()
            if not isinstance(meta, dict):
                continue
            if meta.get("issuer") != self.issuer:
                log.error("OAuth: %s names issuer %r, not STILLMOTION_OAUTH_ISSUER %r", url, meta.get("issuer"), self.issuer)
                continue
            if isinstance(meta.get("jwks_uri"), str):
                return str(meta["jwks_uri"])
        raise LookupError(f"no authorization server metadata with a jwks_uri for {self.issuer}")

    async def _refresh(self) -> None:
        self._fetched = time.monotonic()
        url = self.jwks_url or self._discovered or await self._discover()
        try:
            r = await self._http().get(url, headers={"Accept": "application/json"})
            r.raise_for_status()
            body = r.json()
        except (httpx.HTTPError, ValueError):
            self._discovered = None  # discover again next time: the issuer may have moved its keys
            raise
        self._discovered = None if self.jwks_url else url
        keys: dict[str | None, tuple[jwt.PyJWK, str | None]] = {}
        for jwk in body.get("keys", []) if isinstance(body, dict) else []:
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK.from_dict(jwk)
            except jwt.PyJWTError:
                continue  # a key type or algorithm PyJWT does not know: not usable for us either
            keys[jwk.get("kid")] = (key, jwk.get("alg"))
        self._keys = keys
        log.info("OAuth: %d signing key(s) from %s", len(keys), url)

    async def key_for(self, kid: str | None) -> tuple[jwt.PyJWK, str | None] | None:
        now = time.monotonic()
        stale = now - self._fetched >= JWKS_MAX_AGE_S
        unknown = kid not in self._keys and now - self._fetched >= self.refresh_s
        if stale or unknown:
            async with self._lock:
                if time.monotonic() - self._fetched >= min(self.refresh_s, JWKS_MAX_AGE_S):  # not fetched meanwhile
                    try:
                        await self._refresh()
                    except (httpx.HTTPError, LookupError, ValueError) as exc:
                        log.warning("OAuth: could not fetch the issuer's keys: %s", exc)
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    # -- tokens -----------------------------------------------------------------------------

    async def verify_token(self, token: str) -> AccessToken | None:
        if token.count(".") != 2:
            return None  # not a JWT (a users-file token, say)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            log.info("OAuth: refused a token signed with %r", alg)
            return None
        found = await self.key_for(header.get("kid"))
        if found is None:
            log.info("OAuth: refused a token: no key %r at the issuer", header.get("kid"))
            return None
        key, pinned = found
        if pinned is not None and pinned != alg:
            log.info("OAuth: refused a token: its alg %s is not its key's (%s)", alg, pinned)
            return None
        try:
            claims = jwt.decode(
                token, key.key, algorithms=[alg], audience=self.audience, issuer=self.issuer, leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            log.info("OAuth: refused a token: %s", exc)  # PyJWT's messages name the claim, never the token
            return None
        granted = _scopes(claims)
        missing = [s for s in self.scopes if s not in granted]
        sub = claims.get("sub")
        if missing:
            log.info("OAuth: refused a token of %r without scope %s", sub, " ".join(missing))
            return None
        if not isinstance(sub, str) or not USER_RE.match(sub):
            log.info("OAuth: refused a token whose sub is not a usable user id")
            return None
        client_id = claims.get("client_id") or claims.get("azp") or ""
        return _access(sub, str(client_id), granted, expires_at=int(claims["exp"]), resource=self.audience,
                       claims={"iss": claims["iss"]})


def _scopes(claims: dict[str, Any]) -> list[str]:
    raw = claims.get("scope", claims.get("scp"))
    if isinstance(raw, str):
        return raw.split()
    if isinstance(raw, list):
        return [str(s) for s in raw]
    return []


class AnyOf:
    """The first of several verifiers to accept a token."""

    def __init__(self, verifiers: Sequence[TokenVerifier]) -> None:
        self.verifiers = list(verifiers)

    async def verify_token(self, token: str) -> AccessToken | None:
        for v in self.verifiers:
            got = await v.verify_token(token)
            if got is not None:
                return got
        return None


class RequireUser:
    """401 for a request the bearer backend did not authenticate, with the header a host needs to
    start signing in (RFC 6750 + RFC 9728)."""

    def __init__(self, app: ASGIApp, metadata_url: str | None) -> None:
        self.app = app
        self.metadata_url = metadata_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or isinstance(scope.get("user"), AuthenticatedUser):
            await self.app(scope, receive, send)
            return
        auth = dict(scope.get("headers") or []).get(b"authorization", b"")
        sent = auth[:7].lower() == b"bearer " and bool(auth[7:].strip())
        params = [f'resource_metadata="{self.metadata_url}"'] if self.metadata_url else ['realm="stillmotion"']
        if sent:
            params += ['error="invalid_token"', 'error_description="the access token is not valid here"']
        body = json.dumps(
            {"error": "invalid_token", "error_description": "the access token is not valid here"} if sent
            else {"error": "unauthorized", "error_description": "sign in: send Authorization: Bearer <token>"}
        ).encode()
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"), (b"www-authenticate", ("Bearer " + ", ".join(params)).encode())]})
        await send({"type": "http.response.body", "body": body})


class SignIn:
    """The HTTP app behind sign-in: metadata routes open, everything else needs a user."""

    def __init__(self, app: ASGIApp, verifier: TokenVerifier, *, metadata: Router | None, metadata_url: str | None) -> None:
        inner = AuthContextMiddleware(app)
        gated = RequireUser(inner, metadata_url)
        self.app = AuthenticationMiddleware(gated, backend=BearerAuthBackend(verifier))
        self.metadata = metadata

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.metadata is not None and scope["type"] == "http" and str(scope.get("path", "")).startswith(PRM_ROOT):
            await self.metadata(scope, receive, send)
            return
        await self.app(scope, receive, send)


def signin_required(settings: Settings) -> bool:
    return settings.http_token is not None or settings.http_users is not None or settings.oauth_issuer is not None


def wrap_signin(app: ASGIApp, settings: Settings, base_url: str) -> ASGIApp:
    """`app` behind whichever sign-in the settings configure (unchanged when none is)."""
    verifiers: list[TokenVerifier] = []
    if settings.http_token is not None:
        verifiers.append(SharedToken(settings.http_token.reveal()))
    if settings.http_users is not None:
        try:
            verifiers.append(UsersFile(settings.http_users))
        except ValueError as exc:
            raise SystemExit(f"STILLMOTION_HTTP_USERS: {exc}") from None
    metadata: Router | None = None
    metadata_url: str | None = None
    if settings.oauth_issuer is not None:
        resource = f"{base_url.rstrip('/')}/mcp"
        audience = settings.oauth_audience or resource
        verifiers.append(JwtVerifier(
            settings.oauth_issuer, audience, settings.oauth_scopes, jwks_url=settings.oauth_jwks_url,
            refresh_s=settings.oauth_jwks_refresh_s,
        ))
        # the issuer as a string: the metadata model keeps it exactly as configured (RFC 8414 compares
        # issuers as strings; `AnyHttpUrl()` on its own would add a trailing slash to a bare origin)
        routes = create_protected_resource_routes(
            resource_url=AnyHttpUrl(resource), authorization_servers=cast(list[AnyHttpUrl], [settings.oauth_issuer]),
            scopes_supported=list(settings.oauth_scopes), resource_name="stillmotion",
        )
        first = routes[0]
        assert isinstance(first, Route)
        metadata = Router(routes=[first, Route(PRM_ROOT, endpoint=first.endpoint, methods=["GET", "OPTIONS"])])
        metadata_url = str(build_resource_metadata_url(AnyHttpUrl(resource)))
    if not verifiers:
        return app
    return SignIn(app, AnyOf(verifiers), metadata=metadata, metadata_url=metadata_url)
