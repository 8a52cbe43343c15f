"""The two application classes the Durus 4.3 fixture databases name.

The records in ``durus43-*.durus`` refer to ``fixture_classes.Account`` and
``fixture_classes.Slotted``; the tests put this folder on the module search
path of the ``durus`` subprocesses so those records can be loaded.
"""

from durus.persistent import Persistent, PersistentObject


class Account(Persistent):
    """A persistent object whose state is its ``__dict__``."""

    def __init__(self, owner, balance):
        self.owner = owner
        self.balance = balance
        self.history = []


class Slotted(PersistentObject):
    """A persistent object whose state lives in ``__slots__``."""

    __slots__ = ("name", "size")

    def __init__(self, name, size):
        self.name = name
        self.size = size
