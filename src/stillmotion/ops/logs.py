"""Logging set-up: text (the default) or `STILLMOTION_LOG_FORMAT=json`, one JSON object per line.

JSON lines carry time (UTC, ISO 8601), level, logger, message, and `job_id`, `provider` and `user`
where known (the runner sets them for the job a task drives; `user` is set by whoever knows the
caller). The credential scrubber (scrub.py) has already cleaned each record's message and
traceback when a formatter sees it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime

JOB_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("stillmotion_log_job", default=None)
PROVIDER: contextvars.ContextVar[str | None] = contextvars.ContextVar("stillmotion_log_provider", default=None)
USER: contextvars.ContextVar[str | None] = contextvars.ContextVar("stillmotion_log_user", default=None)

NOISY = ("httpx", "httpcore", "mcp", "uvicorn.access")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, var in (("job_id", JOB_ID), ("provider", PROVIDER), ("user", USER)):
            value = getattr(record, key, None) or var.get()
            if value:
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["traceback"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)


def formatter(fmt: str) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)


def log_format_from_env() -> str:
    """STILLMOTION_LOG_FORMAT read early (before the settings, whose errors must be logged too)."""
    import os

    raw = os.environ.get("STILLMOTION_LOG_FORMAT", "").strip().lower()
    return "json" if raw == "json" else "text"


def setup(verbose: bool = False, fmt: str | None = None) -> None:
    """The root logger writes to stderr in the chosen format; stdout stays the protocol's."""
    from ..scrub import install_log_scrubber

    install_log_scrubber()  # no credential in any log line, whichever logger writes it
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "_stillmotion", False)]
    if len(ours) == len(root.handlers):  # like logging.basicConfig: a host's own handlers stay in charge
        for old in ours:
            root.removeHandler(old)
        handler = logging.StreamHandler(sys.stderr)
        handler._stillmotion = True  # type: ignore[attr-defined]
        handler.setFormatter(formatter(fmt or log_format_from_env()))
        root.addHandler(handler)
        root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
