"""The example of the README runs as written."""

from __future__ import annotations

import re
from pathlib import Path

from durus.connection import Connection
from durus.file_storage import FileStorage

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks and len(blocks[0].strip().splitlines()) == 5
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], str(README), "exec"), {})
    storage = FileStorage(str(tmp_path / "app.durus"), readonly=True)
    assert Connection(storage).get_root()["greeting"] == "hello"
    storage.close()
