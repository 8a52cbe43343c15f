"""Fixtures of the durus-cli tests; the helpers live in ``durus_cli_testing``."""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Iterator

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from durus_cli_testing import Durus


@pytest.fixture
def durus(tmp_path: pathlib.Path) -> Iterator[Durus]:
    """A ``durus`` runner working in a fresh folder, with its own HOME."""
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    runner = Durus(work, home)
    try:
        yield runner
    finally:
        runner.stop_servers()
