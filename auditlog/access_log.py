"""Signed download links stay out of the access log.

An export download link is signed in its query string (`?expires=...&signature=...`):
whoever holds it downloads the file, and uvicorn's access log prints every
request's path with its query. The filter here rewrites each `signature=`
value to `[redacted]` before the line is written; the path, the expiry and
the status stay, so the log still shows who downloaded what and when.
"""

from __future__ import annotations

import logging
import re

ACCESS_LOGGER = "uvicorn.access"
_SIGNATURE = re.compile(r"(?i)((?:^|[?&])signature=)[^&\s]*")


def redact(text: str) -> str:
    return _SIGNATURE.sub(r"\1[redacted]", text)


class RedactSignatures(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def redact_access_log() -> None:
    """Install the filter on uvicorn's access logger, once per process (uvicorn's
    logging configuration replaces that logger's handlers, never its filters)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, RedactSignatures) for f in logger.filters):
        logger.addFilter(RedactSignatures())
