"""Temporary files next to a database ``F``, which must not outlive their process.

A writer makes three kinds: ``F.index.<pid>.tmp`` (the side index being saved,
renamed over ``F.index`` once complete), ``F.<pid>-<hex>.new`` (a new database,
linked to ``F`` once complete) and ``F.pack`` (a pack in progress, renamed over
``F`` at its end).  Each exists only while it is being written, and a failure
removes it.  Two things used to leave them behind:

- A process exiting without closing its storage.  The storage was then closed
  by a finalizer during interpreter shutdown, when opening a file object (or
  anything that imports) fails: the index temporary was created and never
  written nor removed.  Now the storages still open are checkpointed by an
  ``atexit`` hook, while the interpreter is whole (``watch_at_exit``), and the
  index is written with plain ``os`` calls.
- A process killed (SIGKILL, power loss) while writing one.  The next writer of
  ``F`` removes them once it holds ``F``'s lock (``remove_leftovers``).

Why the lock makes the removal safe, whatever the pid in the name says (a pid
tells nothing about processes of another machine sharing the directory over
NFS, where ``flock`` is honoured across machines): ``.tmp`` and ``.pack`` files
of ``F`` are only written by the holder of ``F``'s writer lock, so once we hold
it nobody else is writing one.  A ``.new`` file is written by a process that
found no ``F``; once ``F`` exists it can no longer become ``F``: its creator,
if still alive, finds ``F`` and opens it instead (removing its file makes its
link fail, and it does exactly that).  Readers take no lock and remove nothing.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from durus.shelf_format import fsync_file

if TYPE_CHECKING:
    from durus.shelf import Shelf

__all__ = ["index_temporary", "remove_leftovers", "replace_file", "watch_at_exit"]

logger = logging.getLogger("durus.file_storage")

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def index_temporary(path: str) -> str:
    """The temporary name under which ``path`` (an index file) is written."""
    return f"{path}.{os.getpid()}.tmp"


def replace_file(
    path: str, parts: Iterable[bytes], durable: bool, *, _unlink: Any = os.unlink
) -> None:
    """Write ``parts`` to a temporary, then rename it over ``path``.

    Only ``os`` calls, no file objects: this also works while the interpreter
    shuts down.  Any failure removes the temporary (``_unlink`` is bound at
    import so that even then it is at hand).
    """
    temporary = index_temporary(path)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _O_CLOEXEC, 0o666)
    try:
        try:
            for part in parts:
                view = memoryview(part)
                while view:
                    view = view[os.write(fd, view) :]
            if durable:
                fsync_file(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        try:
            _unlink(temporary)
        except OSError:
            pass
        raise


def _leftover_pattern(base: str) -> re.Pattern[str]:
    name = re.escape(base)
    return re.compile(rf"{name}\.index\.\d+\.tmp|{name}\.\d+-[0-9a-f]{{8}}\.new|{name}\.pack")


def remove_leftovers(path: str) -> list[str]:
    """Remove the temporaries of ``path`` that a dead process left; the names removed.

    Only for the holder of ``path``'s writer lock (see the module's docstring).
    """
    directory, base = os.path.split(path)
    pattern = _leftover_pattern(base)
    removed: list[str] = []
    try:
        names = os.listdir(directory or ".")
    except OSError as error:  # pragma: no cover - e.g. a directory we may not list
        logger.warning("could not look for leftover temporaries of %r: %s", path, error)
        return removed
    for name in sorted(names):
        if not pattern.fullmatch(name):
            continue
        leftover = os.path.join(directory, name)
        try:
            os.unlink(leftover)
        except FileNotFoundError:
            continue
        except OSError as error:  # pragma: no cover - permissions
            logger.warning("could not remove the leftover %r: %s", leftover, error)
            continue
        removed.append(leftover)
        logger.info("removed %r, left by an interrupted process", leftover)
    return removed


#: Objects to act on at exit, with the pid of the process that registered them.
_watched: weakref.WeakKeyDictionary[Any, tuple[int, Callable[[Any], None]]] = (
    weakref.WeakKeyDictionary()
)


def watch_at_exit(obj: Any, action: Callable[[Any], None] | None = None) -> None:
    """Call ``action(obj)`` at interpreter exit if ``obj`` is still alive then.

    The default action checkpoints a ``Shelf``.  Never in a forked child: its
    parent's files are not its own.
    """
    _watched[obj] = (os.getpid(), _checkpoint_shelf if action is None else action)


def _checkpoint_shelf(shelf: Shelf) -> None:
    """A shelf still open at exit: sync it and save its index, or remove a temporary one.

    It is not closed: a daemon thread may still use it until the very end (its
    descriptor then stays valid), and the operating system releases the lock.
    """
    if shelf.closed:
        return
    if shelf.temporary:
        try:
            os.unlink(shelf.path)
        except FileNotFoundError:
            pass
        return
    shelf.flush_to_disk()
    with shelf._lock:
        shelf.save_index()


@atexit.register
def _at_exit() -> None:
    pid = os.getpid()
    for obj, (owner, action) in list(_watched.items()):
        if owner != pid:
            continue
        try:
            action(obj)
        except Exception as error:
            logger.warning("at exit, %r: %s", obj, error)
