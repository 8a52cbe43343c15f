"""Durus 4.3's logging helpers, without its import-time side effects.

Everything Durus logs goes to loggers under ``"durus"``.  Importing this
module configures nothing; ``direct_output()`` is the explicit, opt-in way to
send those messages somewhere, as Durus 4.3 applications used to.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

__all__ = ["direct_output", "is_logging", "log", "logger"]

logger = logging.getLogger("durus")


def log(level: int, message: str, *args: Any) -> None:
    """Log ``message % args`` at ``level`` on the ``durus`` logger."""
    logger.log(level, message, *args)


def is_logging(level: int) -> bool:
    """Whether a message at ``level`` would be emitted."""
    return logger.isEnabledFor(level)


def direct_output(file: TextIO, redirect_std: bool = False) -> logging.Handler:
    """Send ``durus`` messages (format ``%(message)s``) to ``file``.

    Replaces handlers an earlier call installed.  Durus 4.3 also rebound
    ``sys.stdout`` and ``sys.stderr`` to ``file``; pass ``redirect_std=True``
    for that.
    """
    for handler in list(logger.handlers):
        if getattr(handler, "_durus_direct_output", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(file)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler._durus_direct_output = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    logger.propagate = False
    if redirect_std and file is not sys.__stderr__:
        sys.stdout = sys.stderr = file
    return handler
