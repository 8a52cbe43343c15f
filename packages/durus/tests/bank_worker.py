"""One process of the bank test: ``python bank_worker.py ROLE TARGET OPTIONS_JSON``.

Not a test module: test_bank.py starts several at once on one database.
TARGET is ``server:PORT`` or a storage URL (``sqlite:///...``,
``postgresql://...``).  Roles:

* ``transfer``: moves money between accounts until ``seconds`` have passed,
  retrying through conflicts; appends every acknowledged transfer to ``log``
  (so the test can replay them) and counts it in the ``transfers`` Counter.
* ``audit``: sums every balance in read-only transactions with a small
  cache; reports the passes, their totals and the conflicts.
* ``count``: ``increments`` commits each adding 1 to the ``hits`` Counter.

Each prints one JSON line of what it saw.
"""

from __future__ import annotations

import json
import random
import sys
import time

from durus.connection import Connection
from durus.error import ConflictError


def open_connection(target: str, mvcc: bool, cache_size: int = 10000) -> Connection:
    if target.startswith("server:"):
        from durus.client_storage import ClientStorage

        storage = ClientStorage(port=int(target.split(":", 1)[1]), timeout=60)
    else:
        from durus.storage_url import open_storage_url

        storage = open_storage_url(target)
    return Connection(storage, cache_size=cache_size, mvcc=mvcc)


def transfer(connection: Connection, options: dict) -> dict:
    rng = random.Random(options["seed"])
    accounts = options["accounts"]
    deadline = time.monotonic() + options["seconds"]
    done = conflicts = 0
    with open(options["log"], "a", encoding="utf-8") as log:
        while time.monotonic() < deadline:
            source, target = rng.sample(range(accounts), 2)
            amount = rng.randint(1, 20)
            try:
                root = connection.get_root()
                balances = root["accounts"]
                balances[source]["balance"] -= amount
                balances[target]["balance"] += amount
                root["transfers"].change(1)
                connection.commit()
            except ConflictError:
                conflicts += 1
                connection.abort()
                continue
            done += 1
            log.write(f"{source} {target} {amount}\n")
            log.flush()
    return {"transfers": done, "conflicts": conflicts}


def audit(connection: Connection, options: dict) -> dict:
    deadline = time.monotonic() + options["seconds"]
    totals: list[int] = []
    conflicts = 0
    while time.monotonic() < deadline or not totals:
        try:
            balances = connection.get_root()["accounts"]
            totals.append(sum(account["balance"] for account in balances))
            connection.commit()  # read-only
        except ConflictError:
            conflicts += 1
            connection.abort()
    return {"passes": len(totals), "totals": sorted(set(totals)), "conflicts": conflicts}


def count(connection: Connection, options: dict) -> dict:
    conflicts: list[str] = []
    for _ in range(options["increments"]):
        while True:
            try:
                connection.get_root()["hits"].change(1)
                connection.commit()
                break
            except ConflictError as conflict:
                conflicts.append(f"{type(conflict).__name__}: {conflict}")
                connection.abort()
    return {"conflicts": len(conflicts), "seen": conflicts[:5]}


def main() -> None:
    role, target, raw = sys.argv[1:4]
    options = json.loads(raw)
    connection = open_connection(target, options["mvcc"], options.get("cache_size", 10000))
    result = {"transfer": transfer, "audit": audit, "count": count}[role](connection, options)
    connection.get_storage().close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
