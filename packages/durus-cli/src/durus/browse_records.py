"""Reading a record for ``durus browse`` without running any of its classes.

The inspector shows what a record holds, never what its classes would make of
it: every class a pickle names becomes an ``Unimported`` stand-in holding the
arguments and state it was given (only plain value types of the standard
library are rebuilt for real), and every persistent reference becomes a
``Ref``.  So no application code runs, a class that no longer exists reads
like any other, and a record that cannot be read at all is a message, never
a traceback.
"""

from __future__ import annotations

import importlib.util
import io
import pickle
import zlib
from dataclasses import dataclass
from typing import Any

from durus.serialize import COMPRESSED_START_BYTE, split_oids, unpack_record

__all__ = ["Decoded", "Ref", "Unimported", "class_is_importable", "decode_record"]

#: What pickles may rebuild for real: value types of the standard library.
_SAFE = {
    ("builtins", name)
    for name in ("dict", "list", "tuple", "set", "frozenset", "bytearray", "bytes", "str",
                 "int", "float", "complex", "bool", "object", "slice", "range")
} | {
    ("copyreg", "_reconstructor"),
    ("_codecs", "encode"),
    ("collections", "OrderedDict"),
    ("collections", "deque"),
    ("datetime", "date"),
    ("datetime", "datetime"),
    ("datetime", "time"),
    ("datetime", "timedelta"),
    ("datetime", "timezone"),
    ("decimal", "Decimal"),
}
#: Python 2 names in Durus 4.3's protocol-2 pickles.
_RENAMED = {"__builtin__": "builtins", "copy_reg": "copyreg"}


@dataclass(frozen=True)
class Ref:
    """A reference to the persistent object ``oid`` (an int) of class ``class_name``."""

    oid: int
    class_name: str


class Unimported:
    """A stand-in for an instance of a class the inspector does not rebuild."""

    _class_name = "?"
    # Set when a pickle builds the instance without calling __init__ (NEWOBJ).
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}  # replaced, never mutated
    state: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<{self._class_name}>"


_stand_ins: dict[str, type] = {}


def _stand_in(module: str, name: str) -> type:
    full = f"{module}.{name}"
    cls = _stand_ins.get(full)
    if cls is None:
        cls = _stand_ins[full] = type(name, (Unimported,), {"_class_name": full})
    return cls


class _Reader(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        module = _RENAMED.get(module, module)
        if (module, name) in _SAFE:
            return super().find_class(module, name)
        return _stand_in(module, name)

    def persistent_load(self, pid: Any) -> Any:
        oid, cls = pid
        if isinstance(oid, str):
            oid = oid.encode("latin1")
        name = cls._class_name if isinstance(cls, type) and issubclass(cls, Unimported) else "?"
        return Ref(int.from_bytes(oid, "big"), name)


@dataclass
class Decoded:
    """A record as the inspector shows it."""

    oid: int
    class_name: str
    state: Any
    size: int
    refs: list[int]
    #: why the state could not be read (then ``state`` is None)
    error: str | None = None


def decode_record(record: bytes) -> Decoded:
    """The class name, state and references of ``record``, read without its classes."""
    try:
        oid, data, refs = unpack_record(record)
    except Exception as error:  # a record we were given but cannot even split
        return Decoded(-1, "?", None, len(record), [], f"not a Durus record: {error}")
    number = int.from_bytes(oid, "big")
    ref_numbers = [int.from_bytes(ref, "big") for ref in split_oids(refs)]
    source = io.BytesIO(data)
    reader = _Reader(source)
    try:
        cls = reader.load()
    except Exception as error:
        return Decoded(number, "?", None, len(record), ref_numbers,
                       f"its class pickle cannot be read: {type(error).__name__}: {error}")
    class_name = getattr(cls, "_class_name", None) or _qualified(cls)
    rest = data[source.tell():]
    if rest[:1] == bytes([COMPRESSED_START_BYTE]):
        try:
            rest = zlib.decompress(rest)
        except zlib.error:
            pass
    memo = reader.memo
    state_reader = _Reader(io.BytesIO(rest))
    state_reader.memo = memo  # the state pickle shares the class pickle's memo
    try:
        state = state_reader.load()
    except Exception as error:
        return Decoded(number, class_name, None, len(record), ref_numbers,
                       f"its state cannot be read: {type(error).__name__}: {error}")
    return Decoded(number, class_name, state, len(record), ref_numbers)


def _qualified(cls: Any) -> str:
    module = getattr(cls, "__module__", None)
    name = getattr(cls, "__qualname__", None)
    return f"{module}.{name}" if module and name else repr(cls)


def class_is_importable(class_name: str) -> bool:
    """Whether the module of ``class_name`` can be found (it is not imported)."""
    module = class_name.rpartition(".")[0]
    if not module:
        return False
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
