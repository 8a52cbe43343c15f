"""Connection: one transactional view of a storage, with its object cache.

A connection hands out persistent objects (loading ghosts on first use),
records which objects the current transaction read and changed, and turns
``commit()`` / ``abort()`` into storage calls.  Other writers' commits reach it
as invalidations from ``storage.sync()``: objects this transaction did not
read become ghosts; objects it did read make the commit (or the load) fail
with a ``ConflictError``, after which the application calls ``abort()``.

With ``mvcc=True`` a transaction reads one snapshot (the database as of its
last ``commit()``/``abort()``), so loads never conflict; commits are checked
as before.  Conflicts on objects that merge (``durus.conflict_resolution``)
are resolved inside ``commit()``.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Iterable, Iterator
from typing import Any

from durus.conflict_resolution import (
    RESOLVE_ATTEMPTS,
    ConflictResolver,
    ResolvableConflict,
    pause_before_merge,
    resolves_conflicts,
)
from durus.connection_cache import Cache, ObjectDictionary, ReferenceContainer
from durus.error import (
    DurusError,
    DurusKeyError,
    ReadConflictError,
    WriteConflictError,
)
from durus.persistent import (
    _UNKNOWN,
    GHOST,
    SAVED,
    ConnectionBase,
    PersistentBase,
    _accel,
    _default_set_status_saved,
    _families,
    _make_family,
    _mark_clean_class,
    _set_class,
    _set_status_slot,
    mark_stored,
    real_class,
)
from durus.persistent_dict import PersistentDict
from durus.serialize import ObjectReader, ObjectWriter, pack_record, unpack_record
from durus.storage import ROOT_OID, Storage
from durus.utils import as_bytes, int8_to_str

__all__ = [
    "ROOT_OID",
    "Cache",
    "Connection",
    "ObjectDictionary",
    "ReferenceContainer",
    "gen_every_instance",
    "touch_every_reference",
]

logger = logging.getLogger("durus.connection")


_serial_of = PersistentBase.__dict__["_p_serial"].__get__
_set_serial = PersistentBase.__dict__["_p_serial"].__set__
_status_of = PersistentBase.__dict__["_p_status"].__get__
_oid_of = PersistentBase.__dict__["_p_oid"].__get__
_record_data_length = struct.Struct(">I").unpack_from
#: Syncs a load may make before a refusal by the storage is final.
_LOAD_SYNCS = 20
#: Looks (1 ms, 2 ms, ...) a merge takes for a conflicting commit to land.
_LANDING_WAITS = 5
#: Seconds a new connection waits for the root another client is creating.
_ROOT_WAIT = 10.0


def _as_oid(oid: bytes | int) -> bytes:
    if isinstance(oid, int):
        return int8_to_str(oid)
    return oid


class Connection(ConnectionBase):
    """A transactional view of one storage; ``Connection("file")`` opens a FileStorage.

    ``mvcc=True``: each transaction reads the snapshot taken at its start, so
    loads never raise ``ReadConflictError`` and read-only transactions never
    conflict (the storage must offer snapshots: ``Storage.enable_snapshots``).
    """

    def __init__(
        self,
        storage: Storage | str,
        cache_size: int = 100000,
        root_class: type | None = None,
        mvcc: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(storage, str):
            storage = _open_file_storage(storage)
        if not isinstance(storage, Storage):
            raise TypeError(f"Connection needs a Storage, not {type(storage).__name__}")
        self.storage = storage
        self.reader = ObjectReader(self)
        self.changed: dict[bytes, Any] = {}
        self.invalid_oids: set[bytes] = set()
        self.new_oid = storage.new_oid
        self.cache = Cache(cache_size)
        # Where first accesses go (pure: the OrderedDict; C: the RecentObjects).
        recent = self.cache.recent_objects
        self._recent = recent if _accel is not None else recent.map
        # Objects switched to a hot variant in this transaction.
        self._hot: list[Any] = []
        # Whether persistent objects may do note_access's work themselves (the
        # pure path's first touch): not for a class with its own note_access.
        self._inline_first_touch = type(self).note_access is Connection.note_access
        # The commit's serializer, kept from one commit to the next.
        self._writer: ObjectWriter | None = None
        self._resolver = ConflictResolver(self)
        self.mvcc = bool(mvcc)
        if self.mvcc:
            storage.enable_snapshots()
            self._sync()  # the first transaction's snapshot
        self.root = self.get(ROOT_OID)
        if self.root is None:
            self.root = self._create_root(root_class or PersistentDict)
        if root_class is not None and real_class(self.root) is not root_class:
            raise TypeError(
                f"the root is a {real_class(self.root).__name__}, not a {root_class.__name__}"
            )

    def _create_root(self, root_class: type) -> Any:
        oid = self.new_oid()
        if oid != ROOT_OID:
            # Another process allocated oid 0 first: it is creating the root.
            root = self._wait_for_root()
            if root is not None:
                return root
            raise DurusError(
                f"the database has no root yet and another client, which holds oid 0, "
                f"did not create it within {_ROOT_WAIT:g} s; retry"
            )
        root = self.cache.get_instance(oid, root_class, self)
        root._p_set_status_saved()
        root.__init__()
        root._p_note_change()
        self.root = root
        self.commit()
        return root

    def _wait_for_root(self) -> Any:
        """The root another client is committing, once it lands (None after ``_ROOT_WAIT``).

        Two first clients of a new server database race: the one holding
        oid 0 writes the root, the other waits for it here (Durus 4.3 failed).
        """
        deadline = time.monotonic() + _ROOT_WAIT
        pause = 0.005
        while True:
            self._sync()
            root = self.get(ROOT_OID)
            if root is not None or time.monotonic() > deadline:
                return root
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    # -- accessors -------------------------------------------------------------

    def get_storage(self) -> Storage:
        return self.storage

    def get_cache(self) -> Cache:
        return self.cache

    def get_root(self) -> Any:
        return self.root

    def get_cache_count(self) -> int:
        return self.cache.get_count()

    def get_cache_size(self) -> int:
        return self.cache.get_size()

    def set_cache_size(self, size: int) -> None:
        self.cache.set_size(size)

    def get_transaction_serial(self) -> int:
        return self.transaction_serial

    def get_load_count(self) -> int:
        return self.reader.get_load_count()

    # -- loading ---------------------------------------------------------------

    def get(self, oid: bytes | int) -> Any:
        """The object of ``oid`` (cached, maybe a ghost), or None if there is none."""
        oid = _as_oid(oid)
        obj = self.cache.get(oid)
        if obj is not None:
            return obj
        try:
            data = self.get_stored_pickle(oid)
        except KeyError:
            return None
        klass = self.reader.get_class(data)
        obj = self.cache.get_instance(oid, klass, self)
        state = self.reader.get_state(data)
        obj.__setstate__(state)
        obj._p_set_status_saved()
        if resolves_conflicts(klass):
            self._resolver.originals[oid] = data
        return obj

    __getitem__ = get

    def get_stored_pickle(self, oid: bytes) -> bytes:
        """The data field of ``oid``'s record, syncing once on a read conflict."""
        record = self._stored_record(oid)
        return record[12 : 12 + _record_data_length(record, 8)[0]]

    def _stored_record(self, oid: bytes) -> bytes:
        """``oid``'s record, syncing on a read conflict.

        A storage refuses the load while this connection has invalidations
        it has not seen.  Each sync raises the conflict if an invalidated
        object was used in this transaction; otherwise the load is tried
        again.  Durus 4.3 tried once, so a commit by another client landing
        between the sync and the second load failed a transaction that had
        used nothing stale (``Connection()`` on a busy new database, say).
        With ``mvcc`` the storage serves the snapshot: a sync here would
        move it, so there is none.
        """
        if oid in self.invalid_oids:
            raise ReadConflictError([oid])
        if self.mvcc:
            record = self.storage.load(oid)
        else:
            for _attempt in range(_LOAD_SYNCS):
                try:
                    record = self.storage.load(oid)
                    break
                except ReadConflictError:
                    self._handle_invalidations(self.storage.sync(), read_oid=oid)
            else:
                record = self.storage.load(oid)
        if record[:8] != oid:
            raise DurusError(f"storage returned the record of oid {record[:8]!r} for {oid!r}")
        return record

    def load_state(self, obj: Any) -> None:
        """Fill the ghost ``obj`` with its stored state."""
        # Every ghost's first use comes here: slots and methods are reached
        # through the class, not through the ghost's tracking __getattribute__.
        oid = _oid_of(obj)
        if self.storage is None:
            raise DurusError("this connection has no storage")
        try:
            record = self._stored_record(oid)
        except DurusKeyError:
            # The object was removed (packed away) after this ghost was made.
            raise ReadConflictError([oid]) from None
        data_end = 12 + _record_data_length(record, 8)[0]
        # An empty refs trailer is a hint for the reader, which checks the
        # state's bytes before it skips the persistent-load hook.
        state = self.reader.get_state(record[12:data_end], references=len(record) > data_end)
        cls = type(obj)
        cls.__setstate__(obj, state)
        if resolves_conflicts(cls):
            self._resolver.originals[oid] = record[12:data_end]
        if cls._p_set_status_saved is _default_set_status_saved:
            _set_status_slot(obj, SAVED)
            family = _families.get(cls)
            if family is not None and cls is not family[0]:
                _mark_clean_class(obj)
        else:
            obj._p_set_status_saved()

    def get_crawler(self, start_oid: bytes = ROOT_OID, batch_size: int = 100) -> Iterator[Any]:
        """Every object reachable from ``start_oid``, loaded, in storage order."""
        for oid, record in self.storage.gen_oid_record(start_oid=start_oid, batch_size=batch_size):
            obj = self.cache.get(oid)
            if obj is not None and not obj._p_is_ghost():
                yield obj
                continue
            data = unpack_record(record)[1]
            if obj is None:
                obj = self.cache.get_instance(oid, self.reader.get_class(data), self)
            obj.__setstate__(self.reader.get_state(data))
            obj._p_set_status_saved()
            if resolves_conflicts(type(obj)):
                self._resolver.originals[oid] = data
            yield obj

    # -- hooks called by persistent objects -------------------------------------

    if _accel is None:  # ConnectionBase.note_access does it in C

        def note_access(self, obj: Any) -> None:
            # The first read of ``obj`` in this transaction: every step counts.
            cls = type(obj)
            family = _families.get(cls, _UNKNOWN)
            if family is _UNKNOWN:
                family = _make_family(cls)
            if family is not None:
                status = _status_of(obj)
                if status == GHOST:
                    # Not loaded (a direct call): stay tracked so a read loads it.
                    target = family[0]
                else:
                    # Hot: reads untracked; UNSAVED: writes need no tracking either.
                    target = family[2] if status == 1 else family[1]
                    self._hot.append(obj)
                if cls is not target:
                    _set_class(obj, target)
            accessed = _serial_of(obj)
            serial = self.transaction_serial
            if accessed != serial:
                _set_serial(obj, serial)
                # Kept in access order: the least recently used come first.
                recent = self._recent
                key = id(obj)
                if key in recent:
                    recent.move_to_end(key)
                else:
                    recent[key] = obj  # new keys go to the end

    def note_change(self, obj: Any) -> None:
        self.changed[obj._p_oid] = obj

    # -- transactions ------------------------------------------------------------

    def _end_transaction(self) -> None:
        hot = self._hot
        if hot:
            families = _families
            for obj in hot:
                family = families.get(type(obj))
                if family is not None:
                    _set_class(obj, family[0])  # back to its own class
            del hot[:]
        self.shrink_cache()
        self.transaction_serial += 1

    def shrink_cache(self) -> None:
        self.cache.shrink(self)

    def commit(self) -> None:
        """Store every changed object (and new objects they reach) atomically."""
        if self.changed:
            self._commit()
            if self.mvcc:
                self._sync()  # the next transaction's snapshot
        else:
            self._sync()
        self._end_transaction()

    def _commit(self) -> None:
        """Store the changes, merging conflicts on objects that can merge."""
        if self.invalid_oids:
            raise WriteConflictError(sorted(self.invalid_oids))
        attempts = 0
        while True:
            try:
                self._store_changes()
                return
            except ResolvableConflict as conflict:
                attempts += 1
                if attempts > RESOLVE_ATTEMPTS:
                    raise WriteConflictError(conflict.oids) from None
                pause_before_merge(attempts)
                self._resolver.resolve(conflict.oids or ())

    def _store_changes(self) -> None:
        storage = self.storage
        storage.begin()
        changed = self.changed
        new_objects: dict[bytes, Any] = {}
        stored: list[Any] = []
        mergeable: list[tuple[bytes, bytes]] = []
        writer = self._writer
        if writer is None or not writer.suits_settings():
            writer = ObjectWriter(self)
        self._writer = None  # in use; a commit from inside a commit gets its own
        get_state = writer.get_state
        store = storage.store
        note_access = self.note_access
        resolving = resolves_conflicts
        try:
            for changed_object in list(changed.values()):
                for obj in writer.gen_new_objects(changed_object):
                    oid = _oid_of(obj)
                    if oid in new_objects:
                        continue
                    if oid not in changed:
                        new_objects[oid] = obj
                        # Storing a new object is its first access, as in Durus
                        # 4.3 (serializing reads it): it is held strongly, like
                        # the objects a transaction used, until a shrink ghosts
                        # it in its turn.  Otherwise an object that only its
                        # parent held would vanish from the cache when the
                        # parent is invalidated, and get(oid) could not return
                        # its ghost after another client packed it away (spec
                        # 1.5).
                        note_access(obj)
                    data, refs = get_state(obj)
                    store(oid, pack_record(oid, data, refs))
                    stored.append(obj)
                    if resolving(type(obj)):
                        mergeable.append((oid, data))
            self.cache.update(new_objects)
            mark_stored(stored)
            storage.end(self._handle_invalidations)
        except BaseException:
            self._undo_failed_commit(new_objects, writer)
            raise
        finally:
            writer.reset()
            self._writer = writer
        if mergeable:
            self._resolver.committed(mergeable)
        self.changed.clear()

    def _undo_failed_commit(self, new_objects: dict[bytes, Any], writer: ObjectWriter) -> None:
        """Leave things as before the commit: changes pending, new objects unattached."""
        self._resolver.merged_data.clear()
        # Objects given an oid by the writer but not yet stored are new too.
        for obj in writer.assigned:
            oid = obj._p_oid
            if oid is not None and oid not in self.changed:
                new_objects.setdefault(oid, obj)
        for oid, obj in new_objects.items():
            obj._p_oid = None
            obj._p_connection = None
            obj._p_set_status_unsaved()
            self.cache.objects.mapping.pop(oid, None)
        for obj in self.changed.values():
            obj._p_set_status_unsaved()

    def abort(self) -> None:
        """Discard this transaction's changes and catch up with other writers."""
        for obj in self.changed.values():
            obj._p_set_status_ghost()
        self.changed.clear()
        self._sync()
        self._end_transaction()

    def _sync(self) -> None:
        invalid = self.invalid_oids
        invalid.update(self.storage.sync())
        for oid in invalid:
            obj = self.cache.get(oid)
            if obj is not None:
                obj._p_set_status_ghost()
        invalid.clear()

    def _current_data(self, oid: bytes, base: bytes) -> tuple[bytes, list[bytes]]:
        """The committed data of ``oid`` for a merge, and mergeable oids it reported.

        A conflict may come from a commit the server has not applied yet
        (one that was pending beside this one): while the committed data is
        still ``base``, the state this transaction started from, it waits a
        moment and syncs to see it land.  A sync may report other changed
        objects that merge, which the caller merges too; any other conflict
        it reports is raised.
        """
        reported: list[bytes] = []
        storage = self.storage
        for attempt in range(_LOAD_SYNCS):
            try:
                data: bytes | None = unpack_record(storage.load(oid))[1]
            except ReadConflictError:
                if self.mvcc:
                    raise
                data = None
            if data is not None:
                if data != base or attempt >= _LANDING_WAITS:
                    return data, reported
                time.sleep(0.001 * (attempt + 1))
            try:
                self._handle_invalidations(storage.sync())
            except ResolvableConflict as more:
                reported.extend(more.oids or ())
        return unpack_record(storage.load(oid))[1], reported

    def _handle_invalidations(self, oids: Iterable[bytes], read_oid: bytes | None = None) -> None:
        """Ghost invalidated objects; conflicts for those this transaction used.

        In a commit (no ``read_oid``), conflicts only on changed objects
        that merge raise ``ResolvableConflict``, which the commit resolves.
        """
        conflicts = []
        serial = self.transaction_serial
        for oid in oids:
            obj = self.cache.get(oid)
            if obj is None:
                continue
            if _serial_of(obj) == serial or oid in self.changed:
                conflicts.append(oid)
                self.invalid_oids.add(oid)
            elif _status_of(obj) != GHOST:
                obj._p_set_status_ghost()
        if conflicts:
            if read_oid is None:
                if self._resolver.is_resolvable(conflicts):
                    raise ResolvableConflict(conflicts, self._resolver.merge_now)
                raise WriteConflictError(conflicts)
            raise ReadConflictError([read_oid])

    def pack(self) -> None:
        """Abort, then remove unreachable objects from the storage."""
        self.abort()
        self.storage.pack()
        if self.mvcc:
            self._sync()  # a pack may end the storage's snapshot: take the next one


def _open_file_storage(filename: str) -> Storage:
    try:
        from durus.file_storage import FileStorage  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise DurusError(
            f"Connection({filename!r}) needs FileStorage: install durus-filestorage"
        ) from None
    return FileStorage(filename)  # type: ignore[no-any-return,unused-ignore]


def _record_mentions(reader: ObjectReader, data: bytes, words: list[bytes]) -> bool:
    if any(word in data for word in words):
        return True
    state_pickle = reader.get_state_pickle(data)
    return any(word in state_pickle for word in words)


def touch_every_reference(connection: Connection, *words: str | bytes) -> None:
    """Mark changed every object whose record mentions one of ``words``.

    References embed the referred object's class, so after renaming a class
    every record that refers to its instances must be rewritten: call this
    with the old name, then commit.
    """
    needles = [as_bytes(word) for word in words]
    for oid, record in connection.get_storage().gen_oid_record():
        data = unpack_record(record)[1]
        if _record_mentions(connection.reader, data, needles):  # type: ignore[arg-type]
            obj = connection.get(oid)
            if obj is not None:
                obj._p_note_change()


def gen_every_instance(connection: Connection, *classes: type) -> Iterator[Any]:
    """Every stored object that is an instance of one of ``classes``."""
    reader = connection.reader
    for oid, record in connection.get_storage().gen_oid_record():
        klass = reader.get_class(unpack_record(record)[1])
        if isinstance(klass, type) and issubclass(klass, classes):
            yield connection.get(oid)

