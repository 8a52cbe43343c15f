"""Runs operation sequences on one path (C accelerator or pure Python) and reports.

``test_paths_agree.py`` starts this script twice, with and without
``DURUS_PURE_PYTHON=1``, sends both the same programs (one JSON list of
operations per line) and compares what comes back: after every operation the
observable state of two connections on one shared database (each cached
object's ``_p_`` fields, the recent objects in order, the changed oids, the
transaction serial), the results and errors of the operations, and at the end
every stored record, byte for byte.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import SharedDatabase

from durus.connection import Connection
from durus.persistent import Persistent, PersistentObject, accelerated


class Item(Persistent):
    def __init__(self, value: Any) -> None:
        self.value = value


class Slotted(PersistentObject):
    __slots__ = ("other", "value")

    def __init__(self, value: Any) -> None:
        self.value = value


def _object(connection: Connection, key: int) -> Any:
    return connection.get_root().get(f"k{key}")


def _run(connection: Connection, op: list[Any]) -> Any:
    name, key, value = op[0], op[2], op[3]
    if name == "new":
        cls = Item if key % 2 else Slotted
        connection.get_root()[f"k{key}"] = cls(value)
        return None
    if name == "commit":
        connection.commit()
        return None
    if name == "abort":
        connection.abort()
        return None
    if name == "shrink":
        connection.cache.set_size(1 + value % 4)
        connection.shrink_cache()
        return None
    obj = _object(connection, key)
    if obj is None:
        return "absent"
    if name == "get":
        return repr(obj.value)
    if name == "getother":
        return repr(obj.other)
    if name == "set":
        obj.value = value
    elif name == "del":
        del obj.value
    elif name == "link":
        obj.other = _object(connection, value)
    elif name == "ghost":
        if obj._p_is_saved():
            obj._p_set_status_ghost()
    elif name == "note_access":
        connection.note_access(obj)
    elif name == "note_change":
        obj._p_note_change()
    return None


def _oid(obj: Any) -> str:
    return "new" if obj._p_oid is None else obj._p_oid.hex()


def _snapshot(connection: Connection) -> dict[str, Any]:
    cache = connection.cache
    fields = sorted(
        (_oid(obj), obj._p_status, obj._p_serial, obj.__class__.__name__) for obj in cache
    )
    return {
        "objects": fields,
        "recent": [_oid(obj) for obj in cache.recent_objects.list()],
        "changed": sorted(oid.hex() for oid in connection.changed),
        "serial": connection.transaction_serial,
    }


def run_program(program: list[list[Any]]) -> dict[str, Any]:
    database = SharedDatabase()
    connections = [Connection(database.storage()), Connection(database.storage())]
    trace = []
    for op in program:
        try:
            result = _run(connections[op[1]], op)
        except Exception as error:  # the error's type is part of the behaviour
            result = f"raised {type(error).__name__}"
        trace.append([result, [_snapshot(connection) for connection in connections]])
    records = {oid.hex(): record.hex() for oid, record in sorted(database.records.items())}
    return {"trace": trace, "records": records}


def main() -> None:
    print(json.dumps({"accelerated": accelerated}), flush=True)
    for line in sys.stdin:
        print(json.dumps(run_program(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
