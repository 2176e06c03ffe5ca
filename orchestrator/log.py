"""Logging configuration, in one place, and the secret redaction every output goes through.

Operators paste logs into tickets and cron mails them around, so a credential must never reach one:
values under secret-looking keys are replaced, and so is every occurrence of a secret the run
registered (the resolved WinRM passwords), even inside a message string or an exception text.
The journal and the reports reuse `redact` on what they write.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Mapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[REDACTED]"

_SECRET_KEY = re.compile(
    r"passw(or)?d|pwd|secret|token|authori[sz]ation|credential|api_?key|private_?key", re.IGNORECASE
)
# Values that are plain data pass through untouched; anything else is logged by its repr, which may
# embed a secret (an exception's args, a settings object), so it is scrubbed as text.
_PLAIN_SCALARS = (int, float, bool, type(None))

_registry_lock = threading.Lock()
_secrets: set[str] = set()
_secret_pattern: re.Pattern[str] | None = None


def register_secret(value: str) -> None:
    """Never print `value` again, wherever it appears. Empty values are ignored."""
    global _secret_pattern
    if not value:
        return
    with _registry_lock:
        _secrets.add(value)
        # Longest first, so a secret that contains another is removed whole.
        ordered = sorted(_secrets, key=len, reverse=True)
        _secret_pattern = re.compile("|".join(re.escape(secret) for secret in ordered))


def is_secret_key(key: object) -> bool:
    return isinstance(key, str) and _SECRET_KEY.search(key) is not None


def scrub(text: str) -> str:
    """`text` with every registered secret replaced."""
    pattern = _secret_pattern
    return text if pattern is None else pattern.sub(REDACTED, text)


def redact(value: Any, *, by_key: bool = True) -> Any:
    """A copy of `value` (JSON-like data, nested) safe to write anywhere.

    `by_key=False` only scrubs registered secrets, for data whose keys are names from the farm (a
    service called TokenBroker is not a token).
    """
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, _PLAIN_SCALARS):
        return value
    if isinstance(value, Mapping):
        return {
            key: REDACTED if by_key and is_secret_key(key) else redact(item, by_key=by_key)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(item, by_key=by_key) for item in value]
    return scrub(repr(value))


def redact_event(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: `redact` over the whole event, message included."""
    redacted: EventDict = redact(event_dict)
    return redacted


def _level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {level!r} (use debug, info, warning, error)")
    return number


_HANDLER_NAME = "orchestrator"


def configure_logging(
    level: str | int = "info", *, stream: TextIO | None = None, json: bool | None = None
) -> None:
    """Route structlog and standard-library logging (pypsrp, urllib3) through one redacting handler.

    `json=None` picks JSON lines when `stream` is not a terminal (cron, CI, files) and the console
    renderer on a terminal. Calling it again replaces the previous configuration.
    """
    out = stream if stream is not None else sys.stderr
    as_json = not out.isatty() if json is None else json
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Tracebacks become text before redaction: a rich traceback would print frame locals,
            # passwords included, after the redactor had run.
            structlog.processors.format_exc_info,
            redact_event,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for existing in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(_level_number(level))

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # A logger cached before this call (at import time) would keep structlog's default,
        # unredacted chain.
        cache_logger_on_first_use=False,
    )
