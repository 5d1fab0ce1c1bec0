"""One error tree for the whole server.

    StillmotionError(kind, message, retryable, provider_code)
    ├── InvalidInput        kind=invalid_input   bad argument; names argument, rule, allowed values
    ├── MissingCredentials  kind=auth            no key for the chosen route; names the env vars
    ├── AuthError           kind=auth            the provider refused the key
    ├── QuotaError          kind=quota           balance / resource pack / credits used up (never retried)
    ├── RateLimited         kind=rate_limited    retried with backoff, honours Retry-After
    │   └── ConcurrencyLimited                   the provider's parallel-task limit: the job waits locally
    ├── ContentFiltered     kind=content_filtered
    ├── ProviderError       kind=provider_error  retryable when the provider said 5xx
    ├── JobTimeout          kind=timeout
    ├── Expired             kind=expired         the task or its result URL expired
    ├── Cancelled           kind=cancelled
    ├── Interrupted         kind=interrupted     a crash left a submission whose fate cannot be looked up
    ├── BudgetExceeded      kind=budget          the estimate would take the period's spend over the budget
    ├── ConfirmationRequired kind=confirmation_required  above STILLMOTION_CONFIRM_ABOVE_USD, not confirmed
    └── Unavailable         kind=unavailable     the job store or the disk cannot take the request now; retry

Messages never contain secrets: providers build them from the provider's answer, never from
request headers, and every message goes through the one scrubber (`scrub.py`) when the error is
made, in case a provider echoed a credential back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from .scrub import scrub

ErrorKind = Literal[
    "invalid_input",
    "auth",
    "quota",
    "rate_limited",
    "content_filtered",
    "provider_error",
    "timeout",
    "expired",
    "cancelled",
    "interrupted",
    "budget",
    "confirmation_required",
    "unavailable",
]


class StillmotionError(Exception):
    kind: ErrorKind = "provider_error"
    retryable: bool = False

    def __init_subclass__(cls, *, kind: ErrorKind | None = None, retryable: bool | None = None, **kw: Any) -> None:
        """`class AuthError(StillmotionError, kind="auth")`: a subclass names its kind (and whether it
        is retried) in its header."""
        super().__init_subclass__(**kw)
        if kind is not None:
            cls.kind = kind
        if retryable is not None:
            cls.retryable = retryable

    def __init__(
        self,
        message: str,
        *,
        provider_code: str | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        message = scrub(message)
        super().__init__(message)
        self.message = message
        self.provider_code = scrub(provider_code) if provider_code is not None else None
        if retryable is not None:
            self.retryable = retryable
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "message": self.message,
            "retryable": self.retryable,
            "provider_code": self.provider_code,
        }


def _fmt_allowed(allowed: object) -> str:
    if isinstance(allowed, str):
        return allowed
    if isinstance(allowed, Sequence):
        return ", ".join(str(a) for a in allowed)
    return str(allowed)


class InvalidInput(StillmotionError, kind="invalid_input"):
    """A request that breaks a rule. The text names the argument, the rule and what is allowed."""

    def __init__(self, argument: str, rule: str, allowed: object | None = None) -> None:
        text = f"Invalid argument '{argument}': {rule}"
        if allowed is not None:
            text += f" Allowed: {_fmt_allowed(allowed)}."
        super().__init__(text)
        self.argument = argument
        self.rule = rule
        self.allowed = allowed


class MissingCredentials(StillmotionError, kind="auth"): ...


class AuthError(StillmotionError, kind="auth"): ...


class QuotaError(StillmotionError, kind="quota"): ...


class RateLimited(StillmotionError, kind="rate_limited", retryable=True): ...


class ConcurrencyLimited(RateLimited):
    """The account's parallel-task limit: the job waits in our queue and is submitted later."""


class ContentFiltered(StillmotionError, kind="content_filtered"): ...


class ProviderError(StillmotionError, kind="provider_error"): ...


class JobTimeout(StillmotionError, kind="timeout"): ...


class Expired(StillmotionError, kind="expired"): ...


class Cancelled(StillmotionError, kind="cancelled"): ...


class Interrupted(StillmotionError, kind="interrupted"): ...


class AmbiguousSubmission(StillmotionError, kind="interrupted"):
    """The create request was sent but its answer was lost (read timeout, dropped connection).

    Whether the provider started the task is unknown; the runner asks the provider to recover
    the task (Kling by external_task_id, the Gateway by idempotency key) or ends the job as
    ``interrupted``. It is never turned into a blind second submission.
    """


class ProviderRejectedInput(StillmotionError, kind="invalid_input"):
    """The provider refused a request parameter that our own checks let through."""


class BudgetExceeded(StillmotionError, kind="budget"):
    """Refused before any request: the estimate would take the period's spend over the budget."""


class ConfirmationRequired(StillmotionError, kind="confirmation_required"):
    """The estimate is above STILLMOTION_CONFIRM_ABOVE_USD and nobody confirmed it."""


class Unavailable(StillmotionError, kind="unavailable", retryable=True):
    """Something the server needs (the job store, the disk) cannot be used right now; nothing was
    accepted, and the same call may simply be retried (issue #21)."""
