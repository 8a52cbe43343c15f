"""Socket addresses of Durus servers: what ``--host``/``--port``/``--address`` name.

Why a module of its own: clients, the server and the command line all turn an
address into a socket (TCP, a Unix socket file, a Linux abstract socket, one
inherited from systemd), and none of that is the wire protocol; a client-side
tool can import it without the server's modules.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import stat
from typing import Any

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "HostPortAddress",
    "InheritedSocket",
    "SocketAddress",
    "UnixAbstractAddress",
    "UnixDomainSocketAddress",
    "get_systemd_socket",
    "is_local_peer",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 2972


def _set_nodelay(sock: socket.socket) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class SocketAddress:
    """Where a server listens: make one with :meth:`SocketAddress.new`."""

    family: int = socket.AF_INET

    @staticmethod
    def new(address: Any, **kwargs: Any) -> SocketAddress:
        """An address from ``(host, port)``, ``"@name"``, a socket path, or an address."""
        if isinstance(address, SocketAddress):
            return address
        if isinstance(address, tuple):
            if len(address) != 2:
                raise ValueError(f"a TCP address is (host, port), not {address!r}")
            host, port = address
            return HostPortAddress(host=host, port=port)
        if isinstance(address, bytes):
            address = os.fsdecode(address)
        if not isinstance(address, str) or not address:
            raise ValueError(f"not a socket address: {address!r}")
        if address.startswith("@"):
            return UnixAbstractAddress(address, **kwargs)
        return UnixDomainSocketAddress(address, **kwargs)

    def get_address_family(self) -> int:
        return self.family

    def get_listening_socket(self) -> socket.socket:
        sock = socket.socket(self.get_address_family(), socket.SOCK_STREAM)
        try:
            if self.get_address_family() != socket.AF_UNIX:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.bind_socket(sock)
            sock.listen(128)
        except BaseException:
            sock.close()
            raise
        return sock

    def bind_socket(self, sock: socket.socket) -> None:
        raise NotImplementedError

    def _connect_target(self) -> Any:
        raise NotImplementedError

    _refused: tuple[int, ...] = (errno.ECONNREFUSED,)

    def get_connected_socket(self, timeout: float | None = None) -> socket.socket | None:
        """A socket connected to this address, or None if nothing listens there.

        ``timeout`` bounds the connect itself and stays set on the socket.
        """
        sock = socket.socket(self.get_address_family(), socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(self._connect_target())
        except OSError as exc:
            sock.close()
            if exc.errno in self._refused:
                return None
            raise
        _set_nodelay(sock)
        return sock

    def set_connection_options(self, s: socket.socket) -> None:
        """Options for an accepted connection (the server is non-blocking)."""
        _set_nodelay(s)

    def close(self, s: socket.socket) -> None:
        s.close()

    def is_local(self) -> bool:
        """Whether every peer of this address is on this machine."""
        return False


class HostPortAddress(SocketAddress):
    """A TCP address; a host containing ``:`` is IPv6 (brackets are allowed)."""

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
        host = str(host)
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        self.host = host
        self.port = int(port)
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port out of range: {port!r}")
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"HostPortAddress({self.host!r}, {self.port!r})"

    def bind_socket(self, sock: socket.socket) -> None:
        if self.family == socket.AF_INET6:
            try:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            except OSError:
                pass
        sock.bind((self.host, self.port))

    def _connect_target(self) -> Any:
        return (self.host, self.port)

    def is_local(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"


class UnixAbstractAddress(SocketAddress):
    """A Linux abstract socket, written ``@name``.

    As in Durus 4.3 every ``@`` becomes a NUL byte, so both name the same
    socket.  ``owner``, ``group`` and ``umask`` are accepted and ignored
    (an abstract socket has no file), which is what lets ``durus -s
    --address @name`` work.
    """

    family = socket.AF_UNIX
    _refused = (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK)

    def __init__(
        self, filename: str, owner: Any = None, group: Any = None, umask: Any = None
    ) -> None:
        if not hasattr(socket, "AF_UNIX"):
            raise OSError("this platform has no Unix-domain sockets")
        self.filename = filename.replace("@", "\0")

    def __str__(self) -> str:
        return self.filename.replace("\0", "@")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    def bind_socket(self, sock: socket.socket) -> None:
        sock.bind(self.filename)

    def _connect_target(self) -> Any:
        return self.filename

    def is_local(self) -> bool:
        return True


class UnixDomainSocketAddress(UnixAbstractAddress):
    """A Unix-domain socket file, with optional owner, group and umask."""

    def __init__(
        self,
        filename: str,
        owner: str | int | None = None,
        group: str | int | None = None,
        umask: int | None = None,
    ) -> None:
        if not hasattr(socket, "AF_UNIX"):
            raise OSError("this platform has no Unix-domain sockets")
        self.filename = os.fspath(filename)
        self.owner = owner
        self.group = group
        self.umask = umask
        self._bound_inode: int | None = None

    def __str__(self) -> str:
        result = self.filename
        try:
            st = os.stat(self.filename)
        except OSError:
            return result
        rwx = ["---", "--x", "-w-", "-wx", "r--", "r-x", "rw-", "rwx"]
        mode = "".join(rwx[(st.st_mode >> shift) & 7] for shift in (6, 3, 0))
        return f"{result} ({mode} {_user_name(st.st_uid)} {_group_name(st.st_gid)})"

    def bind_socket(self, sock: socket.socket) -> None:
        old_umask = os.umask(self.umask) if self.umask is not None else None
        try:
            try:
                sock.bind(self.filename)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or not self._is_stale_socket():
                    raise
                os.unlink(self.filename)
                sock.bind(self.filename)
        finally:
            if old_umask is not None:
                os.umask(old_umask)
        if self.owner is not None or self.group is not None:
            uid = -1 if self.owner is None else _uid_of(self.owner)
            gid = -1 if self.group is None else _gid_of(self.group)
            os.chown(self.filename, uid, gid)
        self._bound_inode = os.stat(self.filename).st_ino

    def _is_stale_socket(self) -> bool:
        """A socket file nobody listens on (never a file of another kind)."""
        try:
            st = os.stat(self.filename)
        except OSError:
            return False
        if not stat.S_ISSOCK(st.st_mode):
            return False
        probe = self.get_connected_socket(timeout=2.0)
        if probe is not None:
            probe.close()
            return False
        return True

    def close(self, s: socket.socket) -> None:
        s.close()
        try:
            st = os.stat(self.filename)
        except OSError:
            return
        # Remove the file only if it is still the socket this process bound.
        if self._bound_inode is None or st.st_ino == self._bound_inode:
            try:
                os.unlink(self.filename)
            except OSError:
                pass


class InheritedSocket(SocketAddress):
    """A listening socket handed over by the service manager (socket activation)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.family = sock.family
        self.name = sock.getsockname()

    def __str__(self) -> str:
        name = self.name
        if isinstance(name, bytes):
            name = os.fsdecode(name)
        if isinstance(name, str):
            return name.replace("\0", "@")
        host, port = name[0], name[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def get_listening_socket(self) -> socket.socket:
        return self.sock

    def _connect_target(self) -> Any:
        return self.name

    def is_local(self) -> bool:
        if self.family == getattr(socket, "AF_UNIX", None):
            return True
        try:
            return ipaddress.ip_address(self.name[0]).is_loopback
        except ValueError:
            return False


def _uid_of(owner: str | int) -> int:
    if isinstance(owner, int):
        return owner
    import pwd

    return pwd.getpwnam(owner).pw_uid


def _gid_of(group: str | int) -> int:
    if isinstance(group, int):
        return group
    import grp

    return grp.getgrnam(group).gr_gid


def _user_name(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        import grp

        return grp.getgrgid(gid).gr_name
    except (ImportError, KeyError):
        return str(gid)


def is_local_peer(family: int, peer: Any) -> bool:
    """Whether a connected peer is on this machine: a Unix socket or loopback.

    ``peer`` is what ``accept()`` / ``getpeername()`` returned.  IPv4-mapped
    IPv6 loopback (``::ffff:127.0.0.1``) counts as loopback.
    """
    if family == getattr(socket, "AF_UNIX", object()):
        return True
    if family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        host = peer[0]
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except (TypeError, ValueError, IndexError):
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    return address.is_loopback


def get_systemd_socket() -> socket.socket | None:
    """The one listening socket passed by socket activation (fd 3), if any.

    ``LISTEN_PID`` must name this process; more than one socket is an error.
    """
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    count = int(os.environ.get("LISTEN_FDS", "0") or 0)
    if count == 0:
        return None
    if count != 1:
        raise OSError(f"socket activation passed {count} sockets, one is supported")
    os.set_inheritable(3, False)
    sock = socket.socket(fileno=3)
    return sock


