"""Storage URLs: ``sqlite:///path`` and ``postgresql://...`` name SQL storages.

The command line and a server's configuration take them besides plain file
names.  ``sqlite:///relative/file`` and ``sqlite:////absolute/file`` follow the
usual convention (three slashes, then the path); a PostgreSQL URL is handed to
libpq as it is, so every libpq parameter works (``?sslmode=require``, ...).
"""

from __future__ import annotations

import urllib.parse
from typing import Any

__all__ = ["SCHEMES", "is_storage_url", "open_storage_url"]

#: URL schemes this distribution opens.
SCHEMES = ("sqlite", "postgresql", "postgres")


def is_storage_url(text: str) -> bool:
    """Whether ``text`` is a URL of a storage this distribution opens."""
    scheme, sep, _rest = text.partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


def sqlite_path(url: str) -> str:
    """The file a ``sqlite:///...`` URL names."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.netloc not in ("", "localhost"):
        raise ValueError(f"{url}: a sqlite URL names a local file: sqlite:///path/to/file")
    path = urllib.parse.unquote(parsed.path)
    if path.startswith("/"):
        path = path[1:]  # sqlite:///rel -> "rel", sqlite:////abs -> "/abs"
    if not path:
        raise ValueError(f"{url}: no file name (sqlite:///path/to/file)")
    return path


def open_storage_url(url: str, readonly: bool = False, **options: Any) -> Any:
    """A new storage on the database ``url`` names."""
    scheme = url.partition("://")[0].lower()
    if scheme == "sqlite":
        from durus.sqlite_storage import SqliteStorage

        return SqliteStorage(sqlite_path(url), readonly=readonly, **options)
    if scheme in ("postgresql", "postgres"):
        from durus.pg_storage import PostgresStorage

        return PostgresStorage(url, readonly=readonly, **options)
    raise ValueError(f"{url}: not a storage URL (use {', '.join(s + '://' for s in SCHEMES)})")
