"""The two application classes the Durus 4.3 fixture databases refer to.

Records name them ``fixture_classes.Account`` and ``fixture_classes.Slotted``,
so this module must be importable under that name (conftest.py puts this
folder on ``sys.path``).
"""

from durus.persistent import Persistent, PersistentObject


class Account(Persistent):
    """A plain persistent class: state is the instance ``__dict__``."""

    def __init__(self, owner, balance):
        self.owner = owner
        self.balance = balance
        self.history = []


class Slotted(PersistentObject):
    """A persistent class keeping its state in ``__slots__``."""

    __slots__ = ["name", "size"]

    def __init__(self, name, size):
        self.name = name
        self.size = size
