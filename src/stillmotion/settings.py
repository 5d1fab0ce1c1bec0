"""Environment -> typed settings. Secrets are wrapped so that no repr or log shows them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

import platformdirs

from .pricing import PriceBook, PriceFileError, load_price_book
from .providers.families import ENDPOINTS, FAMILIES, GATEWAY
from .scrub import register_secret

if TYPE_CHECKING:
    from .http.links import FileLinks

Route = Literal["auto", "direct", "gateway"]
BudgetPeriod = Literal["day", "month", "total"]
Transport = Literal["stdio", "http", "inproc"]

BLOB_BASE_URL = ("VERCEL_BLOB_API_URL", "https://vercel.com/api/blob")
BASE_URL_VARS = {
    **{name: e.base_url for name, e in ENDPOINTS.items() if e.base_url is not None}, "blob": BLOB_BASE_URL
}
"""(variable, default) of every remote API's base URL: the direct families', the Gateway's, Blob's."""
DEFAULT_BASE_URLS = {name: default for name, (_, default) in BASE_URL_VARS.items()}


class Secret:
    """A credential. ``str()``/``repr()`` never reveal it; use ``.reveal()`` at the wire."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        register_secret(value)  # from now on no stored, logged or returned text can carry it

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _secret(env: Mapping[str, str], *names: str) -> Secret | None:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return Secret(value)
    return None


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from exc


def _number(env: Mapping[str, str], name: str) -> tuple[str, float] | None:
    """(the text, its value or -1 when it is not a number) of a set variable; None when unset."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        return raw, float(raw)
    except ValueError:
        return raw, -1.0


def _usd(env: Mapping[str, str], name: str) -> float | None:
    got = _number(env, name)
    if got is None:
        return None
    raw, value = got
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"environment variable {name} must be an amount in US dollars >= 0 (like 25 or 2.50), got {raw!r}")
    return value


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    value = _int(env, name, default)
    if value <= 0:
        raise ValueError(f"environment variable {name} must be a positive integer, got {value}")
    return value


def _positive_number(env: Mapping[str, str], name: str, what: str) -> float | None:
    got = _number(env, name)
    if got is None:
        return None
    raw, value = got
    if not 0 < value < float("inf"):
        raise ValueError(f"environment variable {name} must be a positive number of {what} (unset: no limit), got {raw!r}")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name} must be a number of seconds, got {raw!r}") from exc
    if not 0 < value <= 3600:
        raise ValueError(f"environment variable {name} must be between 0 and 3600 seconds, got {raw!r}")
    return value


def _auth_url(env: Mapping[str, str], name: str) -> str | None:
    """An authorization server URL: https, or http on a loopback host (a local test server)."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    parts = urlsplit(raw)
    loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if not parts.hostname or parts.scheme not in ("https", "http") or (parts.scheme == "http" and not loopback):
        raise ValueError(f"{name} must be an https:// URL (http:// only on loopback), got {raw!r}")
    return raw


MAX_RUNNING_VARS = {name: e.max_running_var for name, e in ENDPOINTS.items() if e.max_running_var}
"""Concurrency caps: the key is the catalog provider for direct routes, or "gateway"."""


@dataclass(frozen=True)
class Settings:
    home: Path
    output_dir: Path
    input_roots: tuple[Path, ...] | None
    """None = unrestricted; () = local paths refused."""
    allow_private_network: bool
    default_model: str
    strict_capabilities: bool
    route: Route
    transport: Transport
    keys: dict[str, Secret] = field(default_factory=dict)
    """The providers' credentials, each named by its first variable (`families.Family.keys`)."""
    base_urls: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_BASE_URLS))
    http_token: Secret | None = None
    poll_interval_ms: int = 5000
    poll_timeout_ms: int = 600_000
    retry_base_ms: int = 1000
    max_retries: int = 5
    local_concurrency: int = 1
    max_fetch_bytes: int = 50 * 1024 * 1024
    max_download_bytes: int = 1024 * 1024 * 1024
    """STILLMOTION_MAX_RESULT_BYTES: the largest result video downloaded (default 1 GiB)."""
    max_resource_bytes: int = 32 * 1024 * 1024
    """STILLMOTION_MAX_RESOURCE_BYTES: larger files are not sent inline by resources/read."""
    public_url: str | None = None
    """STILLMOTION_PUBLIC_URL: the base URL clients reach the HTTP transport at (for file links)."""
    http_header_timeout_s: float = 10.0
    """STILLMOTION_HTTP_HEADER_TIMEOUT_S: a request's headers must be complete within this."""
    http_body_timeout_s: float = 30.0
    """STILLMOTION_HTTP_BODY_TIMEOUT_S: each piece of a request body must arrive within this of the last."""
    fetch_timeout_s: float = 120.0
    """STILLMOTION_FETCH_TIMEOUT_S: the whole of one fetch (input or result) must end within this."""
    max_join_seconds: float = 600.0
    """STILLMOTION_MAX_JOIN_SECONDS: the longest output join_clips accepts to make."""
    file_links: FileLinks | None = field(default=None, compare=False, repr=False)
    """Set by the HTTP transport: signs the `/files/...` links results carry as `http_url`."""
    prices: PriceBook = field(default_factory=PriceBook)
    """The built-in price table plus STILLMOTION_PRICES (validated at start-up)."""
    budget_usd: float | None = None
    """STILLMOTION_BUDGET_USD: the most the period's committed + in-flight spend may reach."""
    budget_period: BudgetPeriod = "month"
    confirm_above_usd: float | None = None
    """STILLMOTION_CONFIRM_ABOVE_USD: jobs estimated above this need the person's yes."""
    database_url: Secret | None = None
    """STILLMOTION_DATABASE_URL (postgresql://...): the job store in PostgreSQL, shared by replicas."""
    allowed_hosts: tuple[str, ...] = ()
    """STILLMOTION_ALLOWED_HOSTS: host names HTTP clients use (checked against the Host header)."""
    max_running: dict[str, int] = field(default_factory=dict)
    """STILLMOTION_MAX_RUNNING_<KLINGAI|ALIBABA|XAI|GATEWAY>: provider tasks running at once, across the store."""
    blob_token: Secret | None = None
    """BLOB_READ_WRITE_TOKEN: Vercel Blob hosts local inputs where a route needs public URLs."""
    gateway_max_body_bytes: int = 4 * 1024 * 1024
    """STILLMOTION_GATEWAY_MAX_BODY_BYTES: larger Gateway bodies send their images as Blob URLs."""
    resource_links: bool = True
    """STILLMOTION_RESOURCE_LINKS=0: tool results carry no resource_link (the text names the file)."""
    test_hold_file: Path | None = None
    """Test hook: while this file exists, local renders pause after their first frames."""
    lease_ms: int = 30_000
    """How long a process's claim on a job lasts without a heartbeat (STILLMOTION_LEASE_MS)."""
    background: bool = True
    """A stdio server that stops while owning unfinished jobs hands them to a background worker."""
    worker_idle_ms: int = 120_000
    """The background worker exits after this long with nothing to do."""
    worker_log_bytes: int = 5_000_000
    """`worker.log` is rotated at this size (STILLMOTION_WORKER_LOG_BYTES); three old files are kept."""
    user_budget_usd: float | None = None
    """STILLMOTION_USER_BUDGET_USD: the most each user's committed + in-flight spend may reach per period."""
    admins: frozenset[str] = frozenset()
    """STILLMOTION_ADMINS: users (users-file names or OAuth subjects) who see and act on every user's jobs."""
    http_users: Path | None = None
    """STILLMOTION_HTTP_USERS: a JSON file {"users": {name: sha256 hex of that user's token}}."""
    oauth_issuer: str | None = None
    """STILLMOTION_OAUTH_ISSUER: the OAuth 2.1 authorization server whose JWT access tokens are accepted."""
    oauth_jwks_url: str | None = None
    """STILLMOTION_OAUTH_JWKS_URL: the issuer's keys (default: from its metadata)."""
    oauth_audience: str | None = None
    """STILLMOTION_OAUTH_AUDIENCE: the `aud` tokens must carry (default: <STILLMOTION_PUBLIC_URL>/mcp)."""
    oauth_scopes: tuple[str, ...] = ("stillmotion",)
    """STILLMOTION_OAUTH_SCOPES: scopes every token must carry (space or comma separated)."""
    oauth_jwks_refresh_s: float = 10.0
    """STILLMOTION_OAUTH_JWKS_REFRESH_S: the least time between two key fetches for an unknown key id."""
    retention_days: float | None = None
    """STILLMOTION_RETENTION_DAYS: finished jobs created longer ago are deleted (files and rows)."""
    max_output_bytes: int | None = None
    """STILLMOTION_MAX_OUTPUT_GB: above it, the oldest finished jobs' files are deleted (rows stay)."""
    metrics_token: Secret | None = None
    """STILLMOTION_METRICS_TOKEN: a bearer token for /metrics alone (else /mcp's token applies)."""
    log_format: Literal["text", "json"] = "text"
    """STILLMOTION_LOG_FORMAT=json: one JSON object per stderr line."""
    store_busy_timeout_ms: int = 30_000
    """STILLMOTION_STORE_BUSY_TIMEOUT_MS: how long one SQLite statement waits for another process's
    write lock before the runner retries it (with backoff, while the job's lease allows)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, transport: Transport = "stdio") -> Settings:
        env = os.environ if env is None else env
        home = Path(env.get("STILLMOTION_HOME") or platformdirs.user_data_dir("stillmotion")).expanduser()
        output_dir = Path(env.get("STILLMOTION_OUTPUT_DIR") or home / "outputs").expanduser()
        roots_raw = env.get("STILLMOTION_INPUT_ROOTS", "")
        roots: tuple[Path, ...] | None
        if roots_raw.strip():
            roots = tuple(Path(p).expanduser().resolve() for p in roots_raw.split(os.pathsep) if p.strip())
        else:
            roots = () if transport == "http" else None
        route_raw = env.get("STILLMOTION_ROUTE", "auto").strip().lower() or "auto"
        if route_raw not in ("auto", "direct", "gateway"):
            raise ValueError(f"STILLMOTION_ROUTE must be auto, direct or gateway, got {route_raw!r}")
        base_urls = dict(DEFAULT_BASE_URLS)
        for key, (var, _) in BASE_URL_VARS.items():
            value = env.get(var, "").strip()
            if value:
                base_urls[key] = value.rstrip("/")
        keys = {
            names[0]: secret for e in ENDPOINTS.values() for names in e.keys if (secret := _secret(env, *names)) is not None
        }
        hold = env.get("STILLMOTION_TEST_HOLD_FILE", "").strip()
        try:
            prices = load_price_book(env.get("STILLMOTION_PRICES"))
        except PriceFileError as exc:
            raise ValueError(str(exc)) from None
        period = env.get("STILLMOTION_BUDGET_PERIOD", "").strip().lower() or "month"
        if period not in ("day", "month", "total"):
            raise ValueError(f"STILLMOTION_BUDGET_PERIOD must be day, month or total, got {period!r}")
        database_url = _secret(env, "STILLMOTION_DATABASE_URL")
        if database_url is not None and not database_url.reveal().startswith(("postgresql://", "postgres://")):
            raise ValueError("STILLMOTION_DATABASE_URL must be a postgresql:// URL (unset: SQLite under STILLMOTION_HOME)")
        allowed_hosts = tuple(
            h.strip().lower() for h in env.get("STILLMOTION_ALLOWED_HOSTS", "").split(",") if h.strip()
        )
        for h in allowed_hosts:
            if "/" in h or "@" in h or " " in h:
                raise ValueError(f"STILLMOTION_ALLOWED_HOSTS takes host names (optionally host:port), got {h!r}")
        max_running: dict[str, int] = {}
        for key, var in MAX_RUNNING_VARS.items():
            if env.get(var, "").strip():
                cap = _int(env, var, 0)
                if cap < 1:
                    raise ValueError(f"{var} must be a positive integer, got {cap}")
                max_running[key] = cap
        max_gb = _positive_number(env, "STILLMOTION_MAX_OUTPUT_GB", "gigabytes")
        log_format = env.get("STILLMOTION_LOG_FORMAT", "").strip().lower() or "text"
        if log_format not in ("text", "json"):
            raise ValueError(f"STILLMOTION_LOG_FORMAT must be text or json, got {log_format!r}")
        return cls(
            home=home,
            output_dir=output_dir,
            input_roots=roots,
            allow_private_network=_flag(env, "STILLMOTION_ALLOW_PRIVATE_NETWORK", False),
            default_model=env.get("STILLMOTION_DEFAULT_MODEL", "").strip() or "local/preview",
            strict_capabilities=_flag(env, "STILLMOTION_STRICT_CAPABILITIES", True),
            route=route_raw,  # type: ignore[arg-type]
            transport=transport,
            keys=keys,
            base_urls=base_urls,
            http_token=_secret(env, "STILLMOTION_HTTP_TOKEN"),
            poll_interval_ms=_int(env, "STILLMOTION_POLL_INTERVAL_MS", 5000),
            poll_timeout_ms=_int(env, "STILLMOTION_POLL_TIMEOUT_MS", 600_000),
            retry_base_ms=_int(env, "STILLMOTION_RETRY_BASE_MS", 1000),
            max_retries=max(0, _int(env, "STILLMOTION_MAX_RETRIES", 5)),
            local_concurrency=max(1, _int(env, "STILLMOTION_LOCAL_CONCURRENCY", 1)),
            blob_token=_secret(env, "BLOB_READ_WRITE_TOKEN"),
            gateway_max_body_bytes=max(1024, _int(env, "STILLMOTION_GATEWAY_MAX_BODY_BYTES", 4 * 1024 * 1024)),
            prices=prices,
            budget_usd=_usd(env, "STILLMOTION_BUDGET_USD"),
            budget_period=period,  # type: ignore[arg-type]
            confirm_above_usd=_usd(env, "STILLMOTION_CONFIRM_ABOVE_USD"),
            resource_links=_flag(env, "STILLMOTION_RESOURCE_LINKS", True),
            test_hold_file=Path(hold) if hold else None,
            max_download_bytes=_positive(env, "STILLMOTION_MAX_RESULT_BYTES", 1024 * 1024 * 1024),
            max_resource_bytes=_positive(env, "STILLMOTION_MAX_RESOURCE_BYTES", 32 * 1024 * 1024),
            public_url=env.get("STILLMOTION_PUBLIC_URL", "").strip().rstrip("/") or None,
            http_header_timeout_s=_seconds(env, "STILLMOTION_HTTP_HEADER_TIMEOUT_S", 10.0),
            http_body_timeout_s=_seconds(env, "STILLMOTION_HTTP_BODY_TIMEOUT_S", 30.0),
            fetch_timeout_s=_seconds(env, "STILLMOTION_FETCH_TIMEOUT_S", 120.0),
            max_join_seconds=_seconds(env, "STILLMOTION_MAX_JOIN_SECONDS", 600.0),
            database_url=database_url,
            allowed_hosts=allowed_hosts,
            max_running=max_running,
            lease_ms=max(100, _int(env, "STILLMOTION_LEASE_MS", 30_000)),
            background=_flag(env, "STILLMOTION_BACKGROUND", True),
            worker_idle_ms=max(0, _int(env, "STILLMOTION_WORKER_IDLE_MS", 120_000)),
            worker_log_bytes=max(1000, _int(env, "STILLMOTION_WORKER_LOG_BYTES", 5_000_000)),
            user_budget_usd=_usd(env, "STILLMOTION_USER_BUDGET_USD"),
            admins=frozenset(a.strip() for a in env.get("STILLMOTION_ADMINS", "").split(",") if a.strip()),
            http_users=Path(users).expanduser() if (users := env.get("STILLMOTION_HTTP_USERS", "").strip()) else None,
            oauth_issuer=_auth_url(env, "STILLMOTION_OAUTH_ISSUER"),
            oauth_jwks_url=_auth_url(env, "STILLMOTION_OAUTH_JWKS_URL"),
            oauth_audience=env.get("STILLMOTION_OAUTH_AUDIENCE", "").strip() or None,
            oauth_scopes=tuple(x for x in env.get("STILLMOTION_OAUTH_SCOPES", "stillmotion").replace(",", " ").split()),
            oauth_jwks_refresh_s=_seconds(env, "STILLMOTION_OAUTH_JWKS_REFRESH_S", 10.0),
            retention_days=_positive_number(env, "STILLMOTION_RETENTION_DAYS", "days"),
            max_output_bytes=None if max_gb is None else int(max_gb * 1e9),
            metrics_token=_secret(env, "STILLMOTION_METRICS_TOKEN"),
            log_format=log_format,  # type: ignore[arg-type]
            store_busy_timeout_ms=max(50, _int(env, "STILLMOTION_STORE_BUSY_TIMEOUT_MS", 30_000)),
        )

    def has_direct_key(self, provider: str) -> bool:
        family = FAMILIES.get(provider)
        return family is not None and any(all(n in self.keys for n in group) for group in family.credential_sets())

    @property
    def gateway_api_key(self) -> Secret | None:
        return self.keys.get(GATEWAY.keys[0][0])

    def trusted_origins(self) -> set[str]:
        """Origins of the configured base URLs: result downloads from them are allowed even on loopback."""
        out: set[str] = set()
        for url in self.base_urls.values():
            parts = urlsplit(url)
            if parts.scheme and parts.netloc:
                out.add(f"{parts.scheme}://{parts.netloc}".lower())
        return out

    @property
    def db_path(self) -> Path:
        return self.home / "jobs.sqlite3"

    @property
    def inputs_dir(self) -> Path:
        return self.home / "inputs"
