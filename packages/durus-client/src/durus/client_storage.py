"""ClientStorage: a storage that talks to a Durus storage server.

It speaks protocol 1 (``durus.wire_protocol``) with Durus 4.3's client
semantics: oids come from a pool of 32 reserved at a time, a load the server
answers ``I`` raises ``ReadConflictError`` (the connection then syncs), and a
commit first receives the oids other clients changed so the connection can
detect a conflict before anything is written.

Against a server of this distribution it also uses the extensions the server
announced: one-message commits, prefetching loads and readable refusals, and,
once ``enable_snapshots()`` was called (``Connection(..., mvcc=True)``),
snapshot syncs (``W``): loads then read as of the last sync.
Every socket operation has a timeout: a dead or silent server raises
``DurusConnectionError`` (an ``OSError``) naming the address, never a hang.

A ClientStorage is not thread-safe: give each thread its own, as with
``Connection``.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from durus.conflict_resolution import ResolvableConflict
from durus.error import (
    DurusKeyError,
    ProtocolError,
    ReadConflictError,
    SnapshotExpiredError,
    SnapshotsUnsupportedError,
    WriteConflictError,
)
from durus.serialize import check_record, unpack_record
from durus.storage import Storage
from durus.wire_protocol import (
    ABANDON,
    APPROVE,
    BULK_LOAD,
    CLOSE,
    COMMIT,
    COMMIT_DATA,
    COMMIT_MERGING,
    DEFAULT_CLIENT_TIMEOUT,
    DEFAULT_HOST,
    DEFAULT_PORT,
    FETCH,
    HELLO_OID,
    LOAD,
    NEW_OIDS,
    PACK,
    PROTOCOL,
    REPLACE,
    SNAPSHOT_SYNC,
    STATS,
    STATUS_ERROR,
    STATUS_EXPIRED,
    STATUS_INVALID,
    STATUS_KEYERROR,
    STATUS_OKAY,
    STATUS_REVIEW,
    SYNC,
    VERSION,
    AuthenticationError,
    DurusConnectionError,
    RequestRefusedError,
    SocketAddress,
    as_secret,
    client_authenticate,
    connection_lost,
    encode_transaction,
)

__all__ = [
    "ClientStorage",
    "DurusConnectionError",
    "RequestRefusedError",
]

_int4_from = int.from_bytes


class _RecvReader:
    """``read(n)`` over an object that has only ``recv()`` (see ``ClientStorage.s``)."""

    def __init__(self, sock: Any) -> None:
        self._recv = sock.recv

    def read(self, n: int) -> bytes:
        chunks = []
        while n > 0:
            chunk = self._recv(n)
            if not chunk:
                break
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        pass


class ClientStorage(Storage):
    """A storage served by a ``StorageServer`` (or a Durus 4.3 server).

    ``address`` wins over ``host``/``port``; it is a ``(host, port)`` tuple,
    a Unix socket path, ``"@name"`` for a Linux abstract socket, or a
    ``SocketAddress``.  Keyword-only options:

    * ``timeout``: seconds any request may wait for its reply (also the
      connect timeout); None waits forever as Durus 4.3 did.
    * ``ssl_context``: an ``ssl.SSLContext`` to speak TLS (the server must
      have TLS on); ``server_hostname`` for certificate checks (default: the
      host).
    * ``secret``: shared secret for servers that require authentication.
    * ``extensions``: use the server's announced extensions (default True);
      False speaks plain protocol 1 exactly as a Durus 4.3 client.
    * ``prefetch``: keep records the server sends ahead in a small buffer
      (``prefetch_limit`` records), so scans need far fewer round trips.
      Buffered records are dropped whenever an invalidation names them, so
      a load never returns a record older than the client's last sync.
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        address: Any = None,
        *,
        timeout: float | None = DEFAULT_CLIENT_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        secret: str | bytes | None = None,
        extensions: bool = True,
        prefetch: bool = True,
        prefetch_limit: int = 4096,
        oid_pool_size: int = 32,
    ) -> None:
        self.address = SocketAddress.new(address or (host, port))
        self.timeout = timeout
        if not 1 <= oid_pool_size <= 255:
            raise ValueError("oid_pool_size must be between 1 and 255 (it is sent as one byte)")
        self.oid_pool: list[bytes] = []
        self.oid_pool_size = oid_pool_size
        self.records: dict[bytes, bytes] = {}
        self.transaction_new_oids: list[bytes] = []
        #: What the server announced about itself (None: a Durus 4.3 server).
        self.server_info: dict[str, Any] | None = None
        self.prefetch_limit = max(0, int(prefetch_limit))
        self._prefetched: dict[bytes, bytes] = {}
        self._use_fetch = False
        self._use_commit_data = False
        self._use_merging = False
        self._use_errors = False
        # Snapshot mode, and whether the snapshot is the one just after this
        # client's own commit (then the next sync needs no round trip).
        self._snapshots = False
        self._snapshot_fresh = False
        self._max_bulk = 10000
        self._closed = False
        self._sock: Any = None
        self._rfile: Any = None
        self._connect(ssl_context, server_hostname, as_secret(secret))
        if extensions:
            self._hello(prefetch)

    # -- connection --------------------------------------------------------------------

    def __str__(self) -> str:
        return f"ClientStorage({self.address})"

    def _connect(
        self,
        ssl_context: ssl.SSLContext | None,
        server_hostname: str | None,
        secret: bytes | None,
    ) -> None:
        where = str(self.address)
        try:
            sock = self.address.get_connected_socket(timeout=self.timeout)
        except OSError as exc:
            reason = exc.strerror or exc
            raise DurusConnectionError(
                exc.errno, f"could not connect to the Durus server at {where}: {reason}"
            ) from exc
        if sock is None:
            import errno

            raise DurusConnectionError(
                errno.ECONNREFUSED,
                f"could not connect to the Durus server at {where}: nothing is listening there",
            )
        try:
            if ssl_context is not None:
                if server_hostname is None:
                    server_hostname = getattr(self.address, "host", None)
                sock = ssl_context.wrap_socket(sock, server_hostname=server_hostname)
            if secret is not None:
                client_authenticate(sock, secret, where)
        except AuthenticationError:
            sock.close()
            raise
        except (OSError, EOFError) as exc:
            sock.close()
            raise connection_lost(where, exc) from exc
        self._sock = sock
        self._rfile = sock.makefile("rb", buffering=65536)
        self.begin()
        self._send(VERSION + PROTOCOL)
        if self._recv(4) != PROTOCOL:
            self._shutdown()
            raise ProtocolError("Protocol version mismatch.")

    def _hello(self, prefetch: bool) -> None:
        self._send(LOAD + HELLO_OID)
        status = self._recv(1)
        if status != STATUS_OKAY:
            if status not in (STATUS_KEYERROR, STATUS_INVALID):
                self._broken(None)
                raise ProtocolError(f"unexpected reply {status!r} to the hello")
            return  # A Durus 4.3 server: plain protocol 1.
        body = self._recv(_int4_from(self._recv(4), "big"))
        try:
            info = json.loads(body.decode("utf-8"))
        except ValueError as exc:
            self._broken(None)
            raise ProtocolError("the server's hello is not JSON") from exc
        if not isinstance(info, dict):
            info = {}
        self.server_info = info
        features = set(info.get("features", ()))
        self._use_errors = "E" in features
        self._use_commit_data = "X" in features
        self._use_merging = self._use_commit_data and "Y" in features
        self._use_fetch = prefetch and "F" in features and self.prefetch_limit > 0
        limits = info.get("limits", {})
        max_bulk = limits.get("max_bulk_oids") if isinstance(limits, dict) else None
        if isinstance(max_bulk, int) and max_bulk > 0:
            self._max_bulk = min(max_bulk, 10000)

    @property
    def s(self) -> Any:
        """The connected socket (Durus 4.3's attribute)."""
        return self._sock

    @s.setter
    def s(self, sock: Any) -> None:
        # Durus 4.3's own tests put a socket-like object here that answers in
        # plain protocol 1: read it through its recv(), without extensions.
        self._sock = sock
        self._rfile = None if sock is None else _RecvReader(sock)
        self._prefetched.clear()
        self._use_fetch = self._use_commit_data = self._use_merging = self._use_errors = False
        self._snapshots = self._snapshot_fresh = False

    def _send(self, data: bytes) -> None:
        sock = self._sock
        if sock is None:
            raise self._closed_error()
        try:
            sock.sendall(data)
        except OSError as exc:
            self._broken(exc)

    def _recv(self, n: int) -> bytes:
        rfile = self._rfile
        if rfile is None:
            raise self._closed_error()
        try:
            data = rfile.read(n)
        except (OSError, ValueError) as exc:
            self._broken(exc)
        if len(data) != n:
            self._broken(EOFError())
        return data

    def _recv_int4(self) -> int:
        return _int4_from(self._recv(4), "big")

    def _closed_error(self) -> DurusConnectionError:
        import errno

        return DurusConnectionError(
            errno.ENOTCONN, f"the connection to the Durus server at {self.address} is closed"
        )

    def _shutdown(self) -> None:
        rfile, sock = self._rfile, self._sock
        self._rfile = None
        self._sock = None
        self._prefetched.clear()
        if rfile is not None:
            try:
                rfile.close()
            except OSError:
                pass
        close = getattr(sock, "close", None)  # a socket-like object may have none
        if close is not None:
            try:
                close()
            except OSError:
                pass

    def _broken(self, exc: BaseException | None) -> Any:
        """Close a connection that can no longer be trusted and raise."""
        self._shutdown()
        if exc is None:
            return None
        raise connection_lost(str(self.address), exc) from exc

    def _refusal(self) -> RequestRefusedError:
        message = self._recv(self._recv_int4()).decode("utf-8", "replace")
        return RequestRefusedError(f"the server at {self.address} refused: {message}")

    def close(self) -> None:
        """Say goodbye (``.``) and close; closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        sock = self._sock
        if sock is not None and hasattr(sock, "settimeout"):
            try:
                sock.settimeout(min(self.timeout or 5.0, 5.0))
                sock.sendall(CLOSE)
            except OSError:
                pass
        self._shutdown()

    # -- oids --------------------------------------------------------------------------

    def new_oid(self) -> bytes:
        if not self.oid_pool:
            count = self.oid_pool_size
            self._send(NEW_OIDS + bytes((count,)))
            raw = self._recv(8 * count)
            pool = [raw[i : i + 8] for i in range(0, len(raw), 8)]
            if len(set(pool)) != count:
                self._broken(None)
                raise ProtocolError("the server handed out the same oid twice")
            pool.reverse()
            self.oid_pool = pool
        oid = self.oid_pool.pop()
        self.transaction_new_oids.append(oid)
        return oid

    # -- loading -----------------------------------------------------------------------

    def load(self, oid: bytes) -> bytes:
        prefetched = self._prefetched
        if prefetched:
            record = prefetched.pop(oid, None)
            if record is not None:
                return record
        if self._use_fetch:
            self._send(FETCH + oid)
            result = self._load_reply(oid)
            if self._sock is not None:
                self._read_prefetched()
        else:
            self._send(LOAD + oid)
            result = self._load_reply(oid)
        if result.__class__ is bytes:
            return result
        raise result

    def _load_reply(self, oid: bytes) -> Any:
        """Read one load reply; raise its error only after reading all of it."""
        status = self._recv(1)
        if status == STATUS_OKAY:
            return self._recv(self._recv_int4())
        if status == STATUS_INVALID:
            return ReadConflictError([oid])
        if status == STATUS_KEYERROR:
            return DurusKeyError(oid)
        if status == STATUS_ERROR and self._use_errors:
            return self._refusal()
        if status == STATUS_EXPIRED and self._snapshots:
            reason = self._recv(self._recv_int4()).decode("utf-8", "replace")
            return SnapshotExpiredError(reason, [oid])
        self._broken(None)
        return ProtocolError(f"status={status!r}, oid={oid!r}")

    def _read_prefetched(self) -> None:
        count = self._recv_int4()
        if not count:
            return
        prefetched = self._prefetched
        recv = self._recv
        for _ in range(count):
            head = recv(12)
            prefetched[head[:8]] = recv(_int4_from(head[8:], "big"))
        overflow = len(prefetched) - self.prefetch_limit
        if overflow > 0:
            for key in list(prefetched)[:overflow]:
                del prefetched[key]

    def bulk_load(self, oids: Iterable[bytes]) -> Iterator[bytes]:
        """The records of ``oids``, in order, fetched in large batches.

        Every reply of a batch is read before the first error is raised, so
        the connection stays usable after a missing or invalid oid.
        """
        oid_list = list(oids)
        for oid in oid_list:
            if len(oid) != 8:
                raise ValueError(f"an oid is 8 bytes, not {oid!r}")
        step = self._max_bulk
        for start in range(0, len(oid_list), step):
            batch = oid_list[start : start + step]
            results: list[Any] = [None] * len(batch)
            wanted = []
            prefetched = self._prefetched
            for index, oid in enumerate(batch):
                record = prefetched.pop(oid, None) if prefetched else None
                if record is None:
                    wanted.append(index)
                else:
                    results[index] = record
            if wanted:
                request = b"".join(batch[i] for i in wanted)
                self._send(BULK_LOAD + len(wanted).to_bytes(4, "big") + request)
                for index in wanted:
                    results[index] = self._load_reply(batch[index])
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            yield from results

    # -- transactions ------------------------------------------------------------------

    def begin(self) -> None:
        self.records = {}
        self.transaction_new_oids = []

    def store(self, oid: bytes, record: bytes) -> None:
        if len(oid) != 8:
            raise ValueError(f"an oid is 8 bytes, not {oid!r}")
        if oid in self.records:
            raise ValueError(f"oid {int.from_bytes(oid, 'big')} is stored twice in one commit")
        self.records[oid] = record
        self._prefetched.pop(oid, None)

    def _forget(self, oids: list[bytes]) -> None:
        prefetched = self._prefetched
        if prefetched:
            for oid in oids:
                prefetched.pop(oid, None)

    def _return_new_oids(self) -> None:
        new_oids = self.transaction_new_oids
        new_oids.reverse()
        self.oid_pool.extend(new_oids)
        self.begin()

    def _read_oid_list(self) -> list[bytes]:
        count = self._recv_int4()
        if not count:
            return []
        raw = self._recv(8 * count)
        oids = [raw[i : i + 8] for i in range(0, len(raw), 8)]
        self._forget(oids)
        return oids

    def end(self, handle_invalidations: Callable[[list[bytes]], None] | None = None) -> None:
        """Commit what was stored since ``begin()`` (spec 4.4).

        Oids changed by other clients are passed to ``handle_invalidations``
        first; if it raises a ``ConflictError`` nothing is written, the new
        oids of this transaction go back to the pool and the error
        propagates.  A conflict the server detects raises
        ``WriteConflictError()``.
        """
        self._snapshot_fresh = False
        if self._use_commit_data and self.records:
            self._end_with_data(handle_invalidations)
        else:
            self._end_protocol_1(handle_invalidations)
        self._snapshot_fresh = self._snapshots

    def _end_protocol_1(self, handle_invalidations: Callable[[list[bytes]], None] | None) -> None:
        self._send(COMMIT)
        oids = self._read_oid_list()
        if oids and handle_invalidations is not None:
            try:
                handle_invalidations(oids)
            except BaseException:
                self._return_new_oids()
                self._send(b"\x00\x00\x00\x00")  # Tell the server we are done.
                raise
        tdata = encode_transaction(self.records)
        self.records = {}
        self._send(len(tdata).to_bytes(4, "big") + tdata)
        if tdata:
            self._commit_status()

    def _commit_status(self) -> None:
        status = self._recv(1)
        if status == STATUS_OKAY:
            self.transaction_new_oids = []
            return
        if status == STATUS_INVALID:
            raise WriteConflictError()
        if status == STATUS_ERROR and self._use_errors:
            raise self._refusal()
        self._broken(None)
        raise ProtocolError(f"server returned invalid status {status!r}")

    def _end_with_data(self, handle_invalidations: Callable[[list[bytes]], None] | None) -> None:
        """``X``, or ``Y`` where the server merges: a review then brings the
        records committed now, and a resolvable conflict is merged with them
        and sent back in the same exchange."""
        records, self.records = self.records, {}
        tdata = encode_transaction(records)
        merging = self._use_merging
        self._send((COMMIT_MERGING if merging else COMMIT_DATA)
                   + len(tdata).to_bytes(4, "big") + tdata)
        while True:
            status = self._recv(1)
            if status != STATUS_REVIEW:
                break
            oids = self._read_oid_list()
            current = self._read_records() if merging else {}
            answer = APPROVE
            if oids and handle_invalidations is not None:
                try:
                    handle_invalidations(oids)
                except ResolvableConflict as conflict:
                    try:
                        merged = self._merge(conflict, current)
                    except BaseException:
                        self._abandon()
                        raise
                    if merged is None:
                        self._abandon()
                        raise
                    records.update(merged)
                    tdata = encode_transaction(records)
                    answer = REPLACE + len(tdata).to_bytes(4, "big") + tdata
                except BaseException:
                    self._abandon()
                    raise
            self._send(answer)
        if status == STATUS_OKAY:
            self.transaction_new_oids = []
            return
        if status == STATUS_INVALID:
            raise WriteConflictError()
        if status == STATUS_ERROR:
            raise self._refusal()
        self._broken(None)
        raise ProtocolError(f"server returned invalid status {status!r}")

    def _abandon(self) -> None:
        self._return_new_oids()
        self._send(ABANDON)

    def _read_records(self) -> dict[bytes, bytes]:
        """``int4 n`` and n times oid + ``int4 len`` + record (``Y`` reviews)."""
        records = {}
        for _ in range(self._recv_int4()):
            head = self._recv(12)
            records[head[:8]] = self._recv(_int4_from(head[8:], "big"))
        return records

    def _merge(
        self, conflict: ResolvableConflict, current: dict[bytes, bytes]
    ) -> dict[bytes, bytes] | None:
        """The merged records, if the review brought every one the merge needs."""
        oids = conflict.oids or []
        if conflict.merge is None or not oids or any(oid not in current for oid in oids):
            return None
        merged = conflict.merge({oid: unpack_record(current[oid])[1] for oid in oids})
        if merged is not None:
            for oid, record in merged.items():
                check_record(oid, record)
        return merged

    def sync(self) -> list[bytes]:
        """The oids other clients changed (or a pack removed) since the last list.

        In snapshot mode it starts a new snapshot; right after a commit of
        this client the snapshot is already new, and the list waits for the
        next sync or commit.
        """
        if self._snapshots:
            if self._snapshot_fresh:
                self._snapshot_fresh = False
                return []
            self._send(SNAPSHOT_SYNC)
        else:
            self._send(SYNC)
        return self._read_oid_list()

    def enable_snapshots(self) -> None:
        """Read as of the last ``sync()`` from now on (see ``Storage.enable_snapshots``).

        Needs a server of this distribution that announced ``W``: a Durus
        4.3 server (or ``extensions=False``) raises ``SnapshotsUnsupportedError``
        at once.
        """
        info = self.server_info
        if info is None:
            raise SnapshotsUnsupportedError(
                f"the server at {self.address} speaks plain protocol 1 (a Durus 4.3 server, "
                "or extensions=False): it cannot serve snapshot reads (mvcc=True)"
            )
        if "W" not in info.get("features", ()) or not self._use_commit_data:
            raise SnapshotsUnsupportedError(
                f"the server at {self.address} ({info.get('server')} {info.get('version')}) "
                "does not serve snapshot reads (mvcc=True): upgrade durus-server"
            )
        self._snapshots = True
        self._snapshot_fresh = False

    def pack(self) -> None:
        """Ask the server to pack; returns before the pack has finished."""
        self._send(PACK)
        status = self._recv(1)
        if status == STATUS_OKAY:
            return
        if status == STATUS_ERROR and self._use_errors:
            raise self._refusal()
        self._broken(None)
        raise ProtocolError(f"server returned invalid status {status!r}")

    # -- extensions --------------------------------------------------------------------

    def get_server_stats(self) -> dict[str, Any]:
        """The counters of the server (needs a server of this distribution)."""
        info = self.server_info
        if info is None or "T" not in info.get("features", ()):
            raise RequestRefusedError(f"the server at {self.address} has no statistics")
        self._send(STATS)
        body = self._recv(self._recv_int4())
        try:
            stats = json.loads(body.decode("utf-8"))
        except ValueError as exc:
            self._broken(None)
            raise ProtocolError("the server's statistics are not JSON") from exc
        return stats
