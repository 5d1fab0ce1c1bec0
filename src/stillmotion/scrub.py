"""One scrubber for every text stillmotion stores, logs or returns.

It knows every configured credential (each `settings.Secret` registers itself when it is made:
API keys, access and secret keys, the HTTP bearer token, and any database password or storage
token a later module wraps in a `Secret`) and every token derived from them (a Kling JWT as it
was signed: `register_derived`). Any occurrence of one, in any text, becomes ``***``.

It is applied:
- to every error message, when the error is made (`errors.StillmotionError`), so job rows, tool
  results, resources and exceptions never carry one;
- to every log record, by a record factory installed once (`install_log_scrubber`), so no
  handler, stillmotion's or a library's, can write one to stderr;
- to provider texts kept as warnings, and to job results on the way out (`scrub_obj`).

Adding a secret that is not a `Secret`: `register_secret(value)`.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

MIN_SECRET_LEN = 4
"""Shorter values are not scrubbed (they would blank out ordinary words)."""
MAX_DERIVED = 256
"""Derived tokens kept (a fresh Kling JWT per request: the oldest are long expired)."""
MASK = "***"


class Scrubber:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._derived: deque[str] = deque(maxlen=MAX_DERIVED)
        self._pattern: re.Pattern[str] | None = None

    def _forms(self, value: str) -> list[str]:
        value = value.strip()
        if len(value) < MIN_SECRET_LEN:
            return []
        forms = [value, quote(value, safe="")]
        return list(dict.fromkeys(forms))

    def register(self, value: str) -> None:
        forms = self._forms(value)
        with self._lock:
            new = [f for f in forms if f not in self._secrets]
            if new:
                self._secrets.update(new)
                self._pattern = None

    def register_derived(self, value: str) -> None:
        forms = self._forms(value)
        with self._lock:
            for f in forms:
                if f not in self._derived:
                    self._derived.append(f)
                    self._pattern = None

    def _compiled(self) -> re.Pattern[str] | None:
        with self._lock:
            if self._pattern is None:
                every = sorted({*self._secrets, *self._derived}, key=len, reverse=True)
                if not every:
                    return None
                self._pattern = re.compile("|".join(re.escape(s) for s in every))
            return self._pattern

    def scrub(self, text: str) -> str:
        if not text:
            return text
        pattern = self._compiled()
        return pattern.sub(MASK, text) if pattern is not None else text

    def scrub_obj(self, obj: Any) -> Any:
        """Strings inside dicts, lists and tuples scrubbed (keys too); other values kept."""
        if isinstance(obj, str):
            return self.scrub(obj)
        if isinstance(obj, dict):
            return {self.scrub(k) if isinstance(k, str) else k: self.scrub_obj(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return type(obj)(self.scrub_obj(v) for v in obj)
        return obj

    def clear(self) -> None:
        """Forget every registered value (tests only)."""
        with self._lock:
            self._secrets.clear()
            self._derived.clear()
            self._pattern = None


SCRUBBER = Scrubber()


def register_secret(value: str) -> None:
    """A credential the server was given: scrubbed from every text from now on."""
    SCRUBBER.register(value)


def register_derived(value: str) -> None:
    """A token made from a credential (a signed JWT): scrubbed like one, the newest MAX_DERIVED kept."""
    SCRUBBER.register_derived(value)


def scrub(text: str) -> str:
    return SCRUBBER.scrub(text)


def scrub_obj(obj: Any) -> Any:
    return SCRUBBER.scrub_obj(obj)


# -- logging ---------------------------------------------------------------------------------

_installed: list[Callable[..., logging.LogRecord]] = []
_formatter = logging.Formatter()


def install_log_scrubber() -> None:
    """Scrub every log record as it is made (message, arguments and traceback text), whichever
    logger or handler it goes to. Idempotent."""
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to the handler to report
            return record
        record.msg = SCRUBBER.scrub(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = SCRUBBER.scrub(_formatter.formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = SCRUBBER.scrub(record.stack_info)
        return record

    _installed.append(previous)
    logging.setLogRecordFactory(factory)
