"""durus.logger: nothing configured at import, output only when asked."""

from __future__ import annotations

import io
import logging
import subprocess
import sys

from durus.logger import direct_output, is_logging, log, logger


def test_import_configures_nothing():
    code = (
        "import logging, sys; out = sys.stdout\n"
        "import durus.logger, durus.connection, durus.storage\n"
        "assert logging.getLogger('durus').handlers == []\n"
        "assert sys.stdout is out\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == result.stderr == ""


def test_direct_output_sends_messages_to_a_file():
    buffer = io.StringIO()
    handler = direct_output(buffer)
    try:
        assert is_logging(logging.INFO)
        log(logging.INFO, "committed %d objects", 3)
        log(logging.DEBUG, "not shown")
        assert buffer.getvalue() == "committed 3 objects\n"
        again = io.StringIO()
        direct_output(again)
        log(logging.WARNING, "moved")
        assert again.getvalue() == "moved\n"
        assert "moved" not in buffer.getvalue()
    finally:
        for h in list(logger.handlers):
            logger.removeHandler(h)
        logger.setLevel(logging.NOTSET)
        logger.propagate = True
        del handler
