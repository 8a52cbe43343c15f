"""The embedded default: one process, one database file, no server.

Run it twice: the counter it keeps in the file goes up by one each run.
"""

import os
import sys
import tempfile

from durus.connection import Connection
from durus.persistent import Persistent


class Visit(Persistent):
    def __init__(self, number):
        self.number = number


def main(path: str) -> int:
    connection = Connection(path)  # a FileStorage on `path`
    root = connection.get_root()
    visits = root.setdefault("visits", [])
    visits.append(Visit(len(visits) + 1))
    root._p_note_change()  # `visits` is a plain list: tell Durus it changed
    connection.commit()
    print(f"{path}: {len(visits)} visit(s) recorded")
    connection.get_storage().close()
    return len(visits)


if __name__ == "__main__":
    default = os.path.join(tempfile.gettempdir(), "durus-example.durus")
    main(sys.argv[1] if len(sys.argv) > 1 else default)
