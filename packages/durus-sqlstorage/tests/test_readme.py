"""The README's examples run as written, the PostgreSQL one against a real server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), re.MULTILINE | re.DOTALL)


def test_sqlite_example(tmp_path):
    result = subprocess.run([sys.executable, "-c", BLOCKS[0]], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "app.sqlite").exists()


def test_postgresql_example(tmp_path, pg_url):
    assert BLOCKS[1].startswith("# needs PostgreSQL: DURUS_PG_URL")
    env = dict(os.environ, DURUS_PG_URL=pg_url)
    for _run in range(2):
        result = subprocess.run([sys.executable, "-c", BLOCKS[1]], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
    from durus.connection import Connection
    from durus.pg_storage import PostgresStorage

    assert Connection(PostgresStorage(pg_url)).get_root()["visits"] == 2
