"""The one retry policy: create, poll, recover and download all retry through it.

Retryable errors (429, 5xx, connection failures: `StillmotionError.retryable`) are tried again
up to `max_retries` times with exponential backoff and jitter, or exactly after the provider's
Retry-After. Requests that cost nothing (status queries, downloads of a paid result) answered 429 or 5xx
are instead retried until a deadline (`until`, the job's poll timeout), with backoff capped at
PATIENT_CAP_BASES times the base delay: a paid task is never abandoned because its status or its
video was slow to read; only creates keep the small attempt count. A provider concurrency limit (`ConcurrencyLimited`) is not a failure: the job waits
for a slot with no attempt limit. Before each wait the caller hears what is happening (the
runner writes it to the job's `status_detail`, so any process can show it).
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import anyio

from ..errors import ConcurrencyLimited, RateLimited, StillmotionError

T = TypeVar("T")

OnWait = Callable[[StillmotionError, str], Awaitable[None]]
"""(the error, a one-line status detail) -> awaited before sleeping."""


async def _sleep(seconds: float) -> None:
    await anyio.sleep(seconds)


PATIENT_CAP_BASES = 30.0
"""Retries until a deadline back off to at most this many base delays (30 s at the default 1 s)."""


def answered_busy(err: StillmotionError) -> bool:
    """The provider answered 429 or a retryable server error (5xx): it is there, only busy. (A
    connection failure or a truncated body keeps the attempt count even where `until` is given.)"""
    return isinstance(err, RateLimited) or (err.retryable and err.provider_code is not None)


def _secs(delay: float) -> str:
    return f"{delay:.0f} s" if delay >= 10 else f"{delay:.1f} s"


@dataclass
class RetryPolicy:
    base_s: float = 1.0
    max_retries: int = 5
    cap_s: float = 60.0
    sleep: Callable[[float], Awaitable[None]] = field(default=_sleep)
    jitter: Callable[[], float] = field(default=random.random)
    """0-1; the delay is scaled by 0.5 + jitter/2 (Retry-After is honoured exactly)."""

    def delay(self, attempt: int, err: StillmotionError, *, cap: float | None = None) -> float:
        if err.retry_after is not None:
            return max(0.0, min(self.cap_s, err.retry_after))
        exp = min(attempt, 6) if isinstance(err, ConcurrencyLimited) else min(attempt, 30)
        return min(cap or self.cap_s, self.base_s * 2.0 ** (exp - 1)) * (0.5 + self.jitter() / 2)

    def detail(self, attempt: int, err: StillmotionError, delay: float, *, patient: bool = False) -> str:
        if isinstance(err, ConcurrencyLimited):
            return f"queued: {err.message}; trying again in {_secs(delay)}"
        if patient and isinstance(err, RateLimited):
            return (
                f"retrying: the provider is throttling ({err.message}); attempt {attempt}, next in {_secs(delay)}, "
                "until the poll timeout"
            )
        if patient:
            return f"retrying: {err.message}, attempt {attempt}, next in {_secs(delay)}, until the poll timeout"
        return f"retrying: {err.message}, attempt {attempt} of {self.max_retries}, next in {_secs(delay)}"

    def should_retry(self, attempt: int, err: StillmotionError) -> bool:
        """attempt = how many retries this would be (1 = the first retry)."""
        if not err.retryable:
            return False
        return isinstance(err, ConcurrencyLimited) or attempt <= self.max_retries

    async def run(
        self, fn: Callable[[], Awaitable[T]], *, on_wait: OnWait | None = None, until: float | None = None
    ) -> T:
        """`until`: epoch seconds; given, a 429 or 5xx answer (`answered_busy`) is retried with no
        attempt limit until then; other retryable errors keep the attempt count."""
        attempt = 0
        while True:
            try:
                return await fn()
            except StillmotionError as err:
                attempt += 1
                patient = until is not None and answered_busy(err)
                if not patient:
                    if not self.should_retry(attempt, err):
                        raise
                    delay = self.delay(attempt, err)
                else:
                    assert until is not None
                    left = until - time.time()
                    if left <= 0:
                        raise
                    delay = min(left, self.delay(attempt, err, cap=min(self.cap_s, PATIENT_CAP_BASES * self.base_s)))
                if on_wait is not None:
                    await on_wait(err, self.detail(attempt, err, delay, patient=patient))
                await self.sleep(delay)
