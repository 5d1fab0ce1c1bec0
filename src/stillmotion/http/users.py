"""Who is asking (issue #23): every MCP request runs as one user, and every job read answers only
that user's jobs.

- stdio, in-process, and HTTP with one shared STILLMOTION_HTTP_TOKEN (or none, on loopback): the
  local user (`local`), who also owns every job made before users existed.
- HTTP with STILLMOTION_HTTP_USERS or OAuth (signin.py): the user the bearer token names (a
  users-file name, or the access token's `sub`).
- STILLMOTION_ADMINS: users who read and act on every user's jobs (their own jobs are still theirs).
- Where nobody else can sign in (stdio, in-process, HTTP without a users file or OAuth), the
  local user is the whole server's, and sees every job in the store as an admin does (the
  machine's user can read the store file anyway); with per-user sign-in, the shared token's local
  user is one user among others.

`ask_as` (a server middleware, outermost of stillmotion's) sets the asker for the whole handling of
one request; `Service` reads it (`current()`), so every tool, resource, task and subscription goes
through the same scoped reads in `Service.find` (see there) and a new tool is scoped for free.
"""

from __future__ import annotations

import contextvars
import re
from dataclasses import dataclass
from typing import Any

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext

from ..jobs.store import LOCAL_USER
from ..ops import logs
from ..settings import Settings

USER_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,200}$")
"""A user id: 1-200 characters, no control characters (the key separator among them)."""


@dataclass(frozen=True)
class Principal:
    user: str
    admin: bool = False

    @property
    def scope(self) -> str | None:
        """The `user` filter for store reads: None (every user's jobs) for an admin."""
        return None if self.admin else self.user


_ASKER: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("stillmotion_asker", default=None)


def current() -> Principal:
    """The user of the request being handled; outside any request (the CLI's own calls), the local user."""
    return _ASKER.get() or Principal(LOCAL_USER)


def principal_of(ctx: ServerRequestContext[Any, Any], admins: frozenset[str], local_is_admin: bool) -> Principal:
    """The request's user: the authenticated subject on HTTP (signin.py puts it on the ASGI scope),
    else the local user (stdio, in-process, HTTP without per-user sign-in)."""
    scope = getattr(ctx.request, "scope", None)
    user = scope.get("user") if isinstance(scope, dict) else None
    name = LOCAL_USER
    if isinstance(user, AuthenticatedUser):
        name = user.access_token.subject or user.access_token.client_id
    return Principal(name, name in admins or (name == LOCAL_USER and local_is_admin))


def per_user_signin(settings: Settings) -> bool:
    """Whether users other than the local one can sign in to this server."""
    return settings.transport == "http" and (settings.http_users is not None or settings.oauth_issuer is not None)


def asker_middleware(settings: Settings) -> Any:
    """The server middleware that runs each request as its user."""
    admins, local_is_admin = settings.admins, not per_user_signin(settings)

    async def ask_as(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        asker = principal_of(ctx, admins, local_is_admin)
        token, log_token = _ASKER.set(asker), logs.USER.set(asker.user)  # log lines of this request say who
        try:
            return await call_next(ctx)
        finally:
            logs.USER.reset(log_token)
            _ASKER.reset(token)

    return ask_as
