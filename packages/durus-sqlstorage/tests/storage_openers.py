"""Open SQLite and PostgreSQL storages on one database, for tests run against both.

``opener(readonly=False, **options)`` returns a new storage on the same
database each call, like separate processes would open it; ``url`` names that
database for ``open_storage_url`` and the command line; ``other()`` makes an
opener on a second fresh database of the same kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Opener:
    kind: str
    url: str
    factory: Callable[..., Any]
    other: Callable[[], Opener]
    opened: list[Any] = field(default_factory=list)

    def __call__(self, readonly: bool = False, **options: Any) -> Any:
        storage = self.factory(readonly=readonly, **options)
        self.opened.append(storage)
        return storage

    def close_all(self) -> None:
        for storage in self.opened:
            storage.close()
