"""An oid packed away by one client and reused by another, seen from a third
party's cache (spec 1.3, 1.5; Durus 4.3's utest_client_storage check_oid_reuse).

The client that had the removed object cached keeps a ghost of it for that
oid, and sees the new object's class once a reference to it is loaded.
"""

from __future__ import annotations

import pytest

from durus.persistent import Persistent
from durus.persistent_dict import PersistentDict


def wait_for_pack(connection, packs_before: int) -> None:
    """Abort until the server reports a finished pack (packs run in the background)."""
    for _ in range(500):
        connection.abort()
        if connection.storage.get_server_stats()["packs"] > packs_before:
            return
    raise AssertionError("the server never finished the pack")


@pytest.mark.parametrize("family", ["tcp", "unix"])
def test_a_cached_object_whose_oid_is_packed_away_and_reused(start_server, tmp_path, family):
    address = str(tmp_path / "durus.sock") if family == "unix" else None
    server = start_server(address=address)
    first, second = server.connection(), server.connection()
    first.storage.oid_pool_size = second.storage.oid_pool_size = 1
    root1, root2 = first.get_root(), second.get_root()
    root1["a"] = PersistentDict()
    root1["b"] = PersistentDict()
    first.commit()
    second.abort()
    a_oid = root1["a"]._p_oid
    assert len(root2["b"]) == 0 and "a" in root2

    del root2["a"]  # the only reference to a
    second.commit()
    packs = second.storage.get_server_stats()["packs"]
    second.pack()
    wait_for_pack(second, packs)
    assert second.get(a_oid) is None

    first.abort()  # the root is invalidated; a's ghost stays in the cache
    ghost = first.get(a_oid)
    assert ghost is not None and ghost._p_is_ghost()
    assert type(ghost) is PersistentDict

    root2["b"]["new"] = Persistent()
    root2["b"]["new"].bogus = 1
    second.commit()
    assert root2["b"]["new"]._p_oid == a_oid  # the freed oid was reused
    assert second.get(a_oid) is root2["b"]["new"]

    first.abort()
    assert first.get(a_oid).__class__ is PersistentDict  # not loaded yet
    assert root1["b"]["new"].bogus == 1
    assert first.get(a_oid).__class__ is Persistent
    assert first.get(a_oid) is root1["b"]["new"]
    for connection in (first, second):
        connection.storage.close()
