"""Fetch Durus 4.3's sdist from PyPI (at test time) and check its sha256.

Why: the durus43suite tox environments run the unit tests that ship in Durus
4.3's sdist against our distributions, and those files must never be stored in
this repository.  The download is cached in a folder of the caller's choice
(the tox env's tmp dir), and any file whose digest differs from the one pinned
here is refused, cached or not.

The sdist is found through PyPI's JSON simple API with urllib (tox-uv
environments have no pip); without network access to pypi.org, ``pip
download`` of an interpreter that has pip (this one, else the one this venv
was made from) is tried, which honours a local pip index configuration.

Usage: python tools/fetch_durus43_sdist.py CACHE_DIR   (prints the sdist's path)
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import urllib.request

FILENAME = "durus-4.3.tar.gz"
SHA256 = "690334236ea3ba8d966e3aecce025477909d6b240d0b3203d3327f6243726007"
# DURUS43_INDEX_URL may name a mirror that serves PyPI's JSON simple API.
INDEX_URL = os.environ.get("DURUS43_INDEX_URL", "https://pypi.org/simple/")


class FetchError(Exception):
    """The sdist could not be fetched, or its digest is not the pinned one."""


def sha256_of(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check(path: pathlib.Path, origin: str) -> None:
    digest = sha256_of(path)
    if digest != SHA256:
        path.unlink()
        raise FetchError(
            f"{FILENAME} from {origin} has sha256 {digest}, expected {SHA256}: refused"
        )


def _from_index(target: pathlib.Path) -> None:
    request = urllib.request.Request(
        INDEX_URL.rstrip("/") + "/durus/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    for entry in files:
        if entry["filename"].lower() == FILENAME:
            with urllib.request.urlopen(entry["url"], timeout=120) as response:
                target.write_bytes(response.read())
            _check(target, entry["url"])
            return
    raise FetchError(f"{FILENAME} is not listed by {INDEX_URL}")


def _pythons_with_pip() -> list[str]:
    candidates = [sys.executable, getattr(sys, "_base_executable", "")]
    found = []
    for python in dict.fromkeys(c for c in candidates if c):
        probe = subprocess.run([python, "-m", "pip", "--version"], capture_output=True)
        if probe.returncode == 0:
            found.append(python)
    return found


def _with_pip(target: pathlib.Path) -> None:
    for python in _pythons_with_pip():
        with tempfile.TemporaryDirectory() as folder:
            subprocess.run(
                [python, "-m", "pip", "download", "--quiet", "--no-deps",
                 "--no-binary", ":all:", "--dest", folder, "durus==4.3"],
                check=True, stdout=subprocess.DEVNULL,
            )
            downloaded = [p for p in pathlib.Path(folder).iterdir()
                          if p.name.lower() == FILENAME]
            if downloaded:
                target.write_bytes(downloaded[0].read_bytes())
                _check(target, f"pip download ({python})")
                return
    raise FetchError("no interpreter with pip could download durus==4.3")


def fetch(cache_dir: pathlib.Path) -> pathlib.Path:
    """Return the path of the verified sdist in ``cache_dir``, downloading it if needed."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / FILENAME
    if target.exists():
        _check(target, f"the cache {cache_dir}")  # a bad cached copy is removed, then refused
        return target
    partial = cache_dir / (FILENAME + ".part")
    try:
        _from_index(partial)
    except FetchError:
        raise
    except Exception as error:  # no network to the index: let pip try its own indexes
        print(f"fetch_durus43_sdist: {INDEX_URL} failed ({error}); trying pip download",
              file=sys.stderr)
        _with_pip(partial)
    partial.replace(target)
    return target


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    try:
        print(fetch(pathlib.Path(argv[0])))
    except FetchError as error:
        print(f"fetch_durus43_sdist: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
