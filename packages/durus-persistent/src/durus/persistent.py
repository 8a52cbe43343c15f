"""Persistent base classes: state loading, access and change tracking.

Reading an attribute of a loaded object is the hottest path of every Durus
application, yet Durus must notice the *first* access of each object in a
transaction (its conflict rules depend on it) and load ghosts on demand.

Instead of a Python-level ``__getattribute__`` on every read, each persistent
class gets three internal "variants" (subclasses adding no slots):

========== ============================ =========================
variant    reads                        writes
========== ============================ =========================
cold       tracked (load, note access)  tracked (note change)
hot-clean  plain ``object`` machinery   tracked (note change)
hot-dirty  plain                        plain
cold-dirty tracked                      plain
========== ============================ =========================

"cold" is the application's own class.  The first tracked read in a
transaction records the access and switches the object's ``__class__`` to a
hot variant; the connection switches every such object back to its own class
when the transaction ends (commit or abort).  After the first touch, reads and
writes cost what they cost on a plain Python object.  Variants report the
application's class through ``__class__``, build instances of it when called,
and the serializer always records the application's class, so the variants
never reach a database file.  Only ``type(obj)`` reveals them.

A class that defines its own ``__getattribute__``, ``__setattr__`` or
``__delattr__`` keeps full tracking on every access (no variants).

The C accelerator (``durus._persistent_accel``, built with the wheel when a
compiler is at hand) replaces the variants: its ``PersistentBase`` does the
same bookkeeping in C on every read, so objects keep their class.
``accelerated`` tells which path runs; ``DURUS_PURE_PYTHON=1`` forces this
module's pure-Python code, which stays the reference of every rule.
"""

from __future__ import annotations

import copyreg
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

__all__ = [
    "GHOST",
    "SAVED",
    "UNSAVED",
    "ComputedAttribute",
    "ConnectionBase",
    "Persistent",
    "PersistentBase",
    "PersistentObject",
    "accelerated",
    "call_if_persistent",
]

UNSAVED = 1
SAVED = 0
GHOST = -1



def _load_accelerator() -> Any:
    """The C accelerator module, or None (not built, or DURUS_PURE_PYTHON set)."""
    if os.environ.get("DURUS_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from durus import _persistent_accel  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return None
    return _persistent_accel


_accel: Any = _load_accelerator()
#: Whether the C accelerator runs (False: the pure-Python reference code).
accelerated: bool = _accel is not None

_getattribute = object.__getattribute__
# object.__setattr__ refuses objects whose C base has its own setattr.
_setattribute: Callable[[Any, str, Any], None] = (
    object.__setattr__ if _accel is None else _accel.setattr_plain
)
_delattribute: Callable[[Any, str], None] = (
    object.__delattr__ if _accel is None else _accel.delattr_plain
)
# On CPython 3.11+ an object keeps its attributes in compact per-class storage
# until something asks for its __dict__; the accelerator can fill a new
# ghost's state without asking (None on the pure path, whose class switches
# ask anyway).
_set_pristine_state: Callable[[Any, Any], bool] | None = (
    None if _accel is None else _accel.set_pristine_state
)
_set_class = object.__dict__["__class__"].__set__


def _hasattribute(obj: object, name: str) -> bool:
    """Whether ``obj`` has ``name``, without loading or tracking."""
    try:
        _getattribute(obj, name)
    except AttributeError:
        return False
    return True


# Names whose access never loads a ghost nor counts as an access (the
# accelerator's is_tracked() spells out the same list).
_UNTRACKED = frozenset(("__repr__", "__class__", "__setstate__"))
# Names already classified by _is_tracked (a dict lookup beats slicing).
_tracked_names: dict[str, bool] = {}


def _is_tracked(name: str) -> bool:
    """Whether reading ``name`` loads a ghost and counts as an access."""
    tracked = name[:3] != "_p_" and name not in _UNTRACKED
    if type(name) is str and len(_tracked_names) < 10_000:
        _tracked_names[name] = tracked
    return tracked


if TYPE_CHECKING or _accel is None:

    class ConnectionBase:
        """What persistent objects need from a connection: the transaction serial."""

        transaction_serial = 1

        def __init__(self) -> None:
            self.transaction_serial = 1

else:
    ConnectionBase = _accel.ConnectionBase


class _PurePersistentBase:
    """The four per-object fields Durus keeps outside an object's state."""

    __slots__ = ("_p_connection", "_p_oid", "_p_serial", "_p_status")

    _p_connection: Any
    _p_oid: bytes | None
    _p_serial: int
    _p_status: int

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        # A new object has nothing to track until a commit stores it: it is
        # born as the hot-dirty variant (cheaper than switching its class).
        # Python still runs the application's __init__, which the variant
        # inherits.
        family = _families.get(cls, _UNKNOWN)
        if family is _UNKNOWN:
            family = _make_family(cls)
        if family is not None and family[_COLD] is cls:
            self = object.__new__(family[_HOT_DIRTY])
            # The variant writes with object.__setattr__ itself: plain stores.
            self._p_status = UNSAVED
            self._p_serial = 0
            self._p_connection = None
            self._p_oid = None
            return self
        self = object.__new__(cls)
        _setattribute(self, "_p_status", UNSAVED)
        _setattribute(self, "_p_serial", 0)
        _setattribute(self, "_p_connection", None)
        _setattribute(self, "_p_oid", None)
        return self


if TYPE_CHECKING or _accel is None:
    PersistentBase = _PurePersistentBase
else:
    # The C type: the same fields, and the tracking of PersistentObject's
    # __getattribute__/__setattr__/__delattr__ below (as in Durus 4.3's C).
    PersistentBase = _accel.PersistentBase
del _PurePersistentBase

_base_new = PersistentBase.__new__
_set_status_slot = PersistentBase.__dict__["_p_status"].__set__
_set_serial_slot = PersistentBase.__dict__["_p_serial"].__set__
_set_connection_slot = PersistentBase.__dict__["_p_connection"].__set__
_set_oid_slot = PersistentBase.__dict__["_p_oid"].__set__
_status_of = PersistentBase.__dict__["_p_status"].__get__
_connection_of = PersistentBase.__dict__["_p_connection"].__get__


# -- variants -----------------------------------------------------------------

# Every class of a family (the application's class and its variants) maps to
# the family tuple (cold, hot_clean, hot_dirty, cold_dirty), or to None for a
# class that cannot switch.
_COLD, _HOT_CLEAN, _HOT_DIRTY, _COLD_DIRTY = range(4)
_families: dict[type, tuple[type, type, type, type] | None] = {}
# Every variant (both paths) -> the application's class it stands in for.
_real_classes: dict[type, type] = {}
_UNKNOWN: Any = object()
_variant_metas: dict[type, type] = {}


def _variant_meta(meta: type) -> type:
    """A metaclass whose classes, when called, build the application's class."""
    variant_meta = _variant_metas.get(meta)
    if variant_meta is None:

        def __call__(cls: Any, *args: Any, **kwargs: Any) -> Any:
            return cls._p_real_class(*args, **kwargs)

        variant_meta = type(meta)(
            f"Variant{meta.__name__}", (meta,), {"__call__": __call__}
        )
        _variant_metas[meta] = variant_meta
    return variant_meta


def _can_switch(cls: type) -> bool:
    """Whether the pure path's variants may stand in for ``cls``.

    Not on the C path (its base tracks every access without switching), not
    for a class that asks to keep its class (``_p_keep_class = True``), nor
    for one that defines its own ``__getattribute__``, ``__setattr__`` or
    ``__delattr__``: those keep full tracking on every access.
    """
    if _accel is not None or getattr(cls, "_p_keep_class", False):
        return False
    for klass in cls.__mro__:
        if klass is PersistentObject:
            return True
        own = klass.__dict__
        if "__getattribute__" in own or "__setattr__" in own or "__delattr__" in own:
            return False
    return False


def _variant(cls: type, tracked_reads: bool, tracked_writes: bool) -> type:
    """A subclass of ``cls`` adding no slots that passes for ``cls``."""
    namespace: dict[str, Any] = {
        "__slots__": (),
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "__doc__": cls.__doc__,
        "__class__": property(lambda self: cls, _set_class),
        "_p_real_class": cls,
    }
    if not tracked_reads:
        namespace["__getattribute__"] = object.__getattribute__
    if not tracked_writes:
        namespace["__setattr__"] = object.__setattr__
        namespace["__delattr__"] = object.__delattr__
    variant: type = _variant_meta(type(cls))(cls.__name__, (cls,), namespace)
    _real_classes[variant] = cls
    return variant


def _make_family(cls: type) -> tuple[type, type, type, type] | None:
    if not _can_switch(cls):
        _families[cls] = None
        return None
    try:
        family = (
            cls,
            _variant(cls, False, True),
            _variant(cls, False, False),
            _variant(cls, True, False),
        )
    except Exception:  # a metaclass or __init_subclass__ that refuses: no variants
        _families[cls] = None
        return None
    for klass in family:
        _families[klass] = family
    return family


def _family_of(cls: type) -> tuple[type, type, type, type] | None:
    """The family of ``cls`` (made on first use), or None if it cannot switch.

    ``Connection.note_access`` inlines this lookup: it runs on every first access.
    """
    family = _families.get(cls, _UNKNOWN)
    if family is _UNKNOWN:
        family = _make_family(cls)
    return family


def real_class(obj: object) -> type:
    """The application's class of ``obj``, whatever variant it runs as."""
    cls = type(obj)
    return _real_classes.get(cls, cls)


def _new_ghost(cls: Any, oid: bytes | None, connection: Any) -> Any:
    """A ghost of ``cls`` (its own class, not a variant): state comes later."""
    if cls.__new__ is _base_new:
        ghost = object.__new__(cls)
        _set_serial_slot(ghost, 0)
    else:
        # The class has its own __new__: call it as Durus does, no arguments.
        ghost = cls.__new__(cls)
        _cool(ghost)
    # Straight through the slots: a ghost's class tracks attribute writes.
    _set_status_slot(ghost, GHOST)
    _set_connection_slot(ghost, connection)
    _set_oid_slot(ghost, oid)
    return ghost


new_ghost: Callable[[Any, bytes | None, Any], Any] = (
    _new_ghost if _accel is None else _accel.new_ghost
)


def _cool(obj: object) -> None:
    """Switch ``obj`` back to the application's class (end of a transaction)."""
    family = _families.get(type(obj))
    if family is not None:
        _set_class(obj, family[_COLD])


def _mark_dirty_class(obj: object) -> None:
    family = _families.get(type(obj))
    if family is None:
        if _connection_of(obj) is None:
            return
        family = _family_of(type(obj))
        if family is None:
            return
    cls = type(obj)
    if cls is family[_HOT_CLEAN]:
        _set_class(obj, family[_HOT_DIRTY])
    elif cls is family[_COLD]:
        _set_class(obj, family[_COLD_DIRTY])


def _mark_clean_class(obj: object) -> None:
    family = _families.get(type(obj))
    if family is None:
        return
    cls = type(obj)
    if cls is family[_HOT_DIRTY]:
        _set_class(obj, family[_HOT_CLEAN])
    elif cls is family[_COLD_DIRTY]:
        _set_class(obj, family[_COLD])


# -- state enumeration ---------------------------------------------------------

_slot_names_cache: dict[type, tuple[str, ...]] = {}


def _data_slot_names(cls: type) -> tuple[str, ...]:
    """Names of the data slots of ``cls`` in MRO order (mangled where needed)."""
    names = _slot_names_cache.get(cls)
    if names is None:
        collected: list[str] = []
        for klass in cls.__mro__:
            if klass is PersistentBase or klass is object:
                continue
            slots = klass.__dict__.get("__slots__", ())
            if isinstance(slots, str):
                slots = (slots,)
            for name in slots:
                if name in ("__weakref__", "__dict__"):
                    continue
                if name.startswith("__") and not name.endswith("__"):
                    # Durus 4.3 silently dropped private slots; keep them.
                    name = f"_{klass.__name__.lstrip('_')}{name}"
                if name not in collected:
                    collected.append(name)
        names = tuple(collected)
        _slot_names_cache[cls] = names
    return names


# -- the classes -----------------------------------------------------------------


class PersistentObject(PersistentBase):
    """A persistent object whose state is its data slots (and ``__dict__``).

    Subclass it with ``__slots__`` for compact objects; subclass
    ``Persistent`` for ordinary ``__dict__``-based objects.
    """

    __slots__ = ("__weakref__",)

    if _accel is None:
        # The accelerator's PersistentBase does this in C, rule for rule.

        def __getattribute__(self, name: str) -> Any:
            tracked = _tracked_names.get(name)
            if tracked is None:
                tracked = _is_tracked(name)
            if tracked:
                cold = type(self)
                family = _families.get(cold)
                if family is not None:
                    # Connection.note_access, inlined for the connections that
                    # keep it (the hottest path of the pure code: once per
                    # object and transaction).  The class switches first: then
                    # the _p_ fields are plain slot reads, not descriptor calls.
                    _set_class(self, family[_HOT_CLEAN])
                    connection = self._p_connection
                    status = self._p_status
                    try:
                        inline = connection._inline_first_touch
                    except AttributeError:  # None, or not a Connection
                        inline = False
                    if inline and status != GHOST:
                        if status == UNSAVED:
                            _set_class(self, family[_HOT_DIRTY])
                        connection._hot.append(self)
                        serial = connection.transaction_serial
                        if self._p_serial != serial:
                            _set_serial_slot(self, serial)
                            recent = connection._recent
                            key = id(self)
                            try:
                                recent.move_to_end(key)
                            except KeyError:
                                recent[key] = self
                        return _getattribute(self, name)
                    _set_class(self, cold)
                connection = _connection_of(self)
                if connection is not None:
                    if _status_of(self) == GHOST:
                        _load_ghost(self)
                    connection.note_access(self)
            return _getattribute(self, name)

        def __setattr__(self, name: str, value: Any) -> None:
            if name[:3] != "_p_" and name not in _UNTRACKED:
                _getattribute(self, "_p_note_change")()
            _setattribute(self, name, value)

        def __delattr__(self, name: str) -> None:
            if name[:3] != "_p_" and name not in _UNTRACKED:
                _getattribute(self, "_p_note_change")()
            _delattribute(self, name)

    def __reduce_ex__(self, protocol: Any) -> Any:
        # Plain pickle/copy outside Durus: always the application's class.
        return (copyreg.__newobj__, (real_class(self),), self.__getstate__())  # type: ignore[attr-defined]

    def __getstate__(self) -> Any:
        if _status_of(self) == GHOST:
            _getattribute(self, "_p_load_state")()
        state: dict[str, Any] = {}
        if _hasattribute(self, "__dict__"):
            state.update(_getattribute(self, "__dict__"))
        for name in _data_slot_names(real_class(self)):
            try:
                state[name] = _getattribute(self, name)
            except AttributeError:
                pass
        return state

    def __setstate__(self, state: Any) -> None:
        if _set_pristine_state is not None and _set_pristine_state(self, state):
            return  # a ghost with nothing to clear, filled attribute by attribute
        if _hasattribute(self, "__dict__"):
            _getattribute(self, "__dict__").clear()
        for name in _data_slot_names(real_class(self)):
            try:
                _delattribute(self, name)
            except AttributeError:
                pass
        if state is not None:
            for name, value in state.items():
                _setattribute(self, name, value)

    def __repr__(self) -> str:
        oid = _getattribute(self, "_p_oid")
        name = real_class(self).__name__
        if oid is None:
            return f"<{name} @{id(self):x}>"
        return f"<{name} {int.from_bytes(oid, 'big')}>"

    def _p_gen_data_slots(self) -> Iterator[str]:
        yield from _data_slot_names(real_class(self))

    def _p_load_state(self) -> None:
        connection = _connection_of(self)
        if connection is None:
            raise RuntimeError(f"{self!r} is a ghost without a connection")
        connection.load_state(self)

    def _p_note_change(self) -> None:
        status = _status_of(self)
        if status != UNSAVED:
            if status == GHOST:
                _getattribute(self, "_p_load_state")()
            _getattribute(self, "_p_set_status_unsaved")()
            connection = _connection_of(self)
            if connection is not None:
                connection.note_change(self)

    def _p_format_oid(self) -> str:
        oid = _getattribute(self, "_p_oid")
        if oid is None:
            return "None"
        if isinstance(oid, str):
            # An oid set by hand as text: Durus 4.3 reads it as latin-1 bytes.
            oid = oid.encode("latin1")
        return str(int.from_bytes(oid, "big"))

    def _p_set_status_ghost(self) -> None:
        _cool(self)
        _getattribute(self, "__setstate__")({})
        _setattribute(self, "_p_status", GHOST)

    def _p_set_status_saved(self) -> None:
        _setattribute(self, "_p_status", SAVED)
        _mark_clean_class(self)

    def _p_set_status_unsaved(self) -> None:
        _setattribute(self, "_p_status", UNSAVED)
        _mark_dirty_class(self)

    def _p_is_ghost(self) -> bool:
        return _status_of(self) == GHOST

    def _p_is_unsaved(self) -> bool:
        return _status_of(self) == UNSAVED

    def _p_is_saved(self) -> bool:
        return _status_of(self) == SAVED


_default_set_status_saved = PersistentObject._p_set_status_saved
_default_load_state = PersistentObject._p_load_state


def _load_ghost(obj: Any) -> None:
    """Load a ghost on its first tracked read (the accelerator calls this)."""
    if type(obj)._p_load_state is _default_load_state:
        _connection_of(obj).load_state(obj)
    else:
        _getattribute(obj, "_p_load_state")()


if _accel is not None:
    _accel.set_load_hook(_load_ghost)


def mark_stored(objects: list[Any]) -> None:
    """Mark the objects a commit just stored as saved.

    Only for the connection's commit: a hot-dirty object keeps its class here,
    because the end of the transaction, a moment later, switches every hot
    object back to its own class anyway (one class switch instead of two).
    Classes that override ``_p_set_status_saved`` get their own method.
    """
    families = _families
    for obj in objects:
        cls = type(obj)
        if cls._p_set_status_saved is not _default_set_status_saved:
            obj._p_set_status_saved()
            continue
        family = families.get(cls)
        if family is None:
            _set_status_slot(obj, SAVED)
            continue
        _set_status_slot(obj, SAVED)
        if cls is family[_COLD_DIRTY]:
            _set_class(obj, family[_COLD])


class Persistent(PersistentObject):
    """The usual persistent class: its state is the instance ``__dict__``."""

    def __getstate__(self) -> Any:
        if _status_of(self) == GHOST:
            _getattribute(self, "_p_load_state")()
        return _getattribute(self, "__dict__")

    def __setstate__(self, state: Any) -> None:
        if state is None:
            raise TypeError(f"{real_class(self).__name__} state must be a dict, not None")
        if _set_pristine_state is not None and _set_pristine_state(self, state):
            return  # as update() would store it, without making __dict__ a real dict
        instance_dict = _getattribute(self, "__dict__")
        instance_dict.clear()
        instance_dict.update(state)


if _accel is not None:
    _accel.set_state_functions(Persistent.__setstate__, PersistentObject.__setstate__)


class ComputedAttribute(PersistentObject):
    """A locally computed value, dropped everywhere when one process invalidates it.

    Its record carries no state; committing ``invalidate()`` makes every other
    connection ghost its copy and so recompute the value on next ``get()``.
    """

    __slots__ = ("value",)

    def __getstate__(self) -> None:
        return None

    def _p_load_state(self) -> None:
        # Nothing to load: the value is computed locally.
        _getattribute(self, "_p_set_status_saved")()

    def invalidate(self) -> None:
        """Forget the value here and, once committed, in every connection."""
        try:
            _delattribute(self, "value")
        except AttributeError:
            pass
        self._p_note_change()

    def get(self, compute: Callable[[], Any]) -> Any:
        """The cached value, computing and caching it first when needed."""
        try:
            return self.value
        except AttributeError:
            value = compute()
            _setattribute(self, "value", value)
            return value


def call_if_persistent(f: Callable[[Any], Any], x: object) -> Any:
    """``f(x)`` when ``x`` is persistent, else None."""
    if isinstance(x, PersistentBase):
        return f(x)
    return None
