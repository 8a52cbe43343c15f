"""Run a StorageServer for the tests: ``python server_main.py CONFIG_JSON``.

Not a test module: the fixtures in conftest.py start it as a subprocess, so
every test talks to a real server process over a real socket.
"""

from __future__ import annotations

import json
import logging
import ssl
import sys


def main() -> None:
    config = json.loads(sys.argv[1])
    logging.basicConfig(
        level=config.pop("log_level", "INFO"),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    from durus.storage_server import StorageServer

    kind = config.pop("storage")
    if kind == "memory":
        from durus.storage import MemoryStorage

        storage = MemoryStorage()
    else:
        from durus.file_storage import FileStorage

        storage = FileStorage(
            config.pop("file"),
            readonly=config.pop("readonly", False),
            fsync=config.pop("fsync", True),
        )
    address = config.pop("address")
    if isinstance(address, list):
        address = tuple(address)
    tls = config.pop("tls", None)
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls["cert"], tls["key"])
        config["ssl_context"] = context
    StorageServer(storage, address=address, **config).serve()


if __name__ == "__main__":
    main()
