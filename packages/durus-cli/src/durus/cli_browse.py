"""``durus browse``: a read-only web inspector of a database.

The standard library's HTTP server is enough here: one user on this machine,
a few pages of plain HTML, no sessions.  A template engine or an ASGI server
would add a dependency for nothing the inspector needs; escaping is done in
one place (``durus.browse_pages.text``) and a Content-Security-Policy that
allows no script backs it up.  Requests are served one at a time (the
storage is not thread-safe); a server target is a normal client, and our
server keeps serving its other clients while a page is being made.
"""

from __future__ import annotations

import argparse
import html
import logging
import sys
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from durus.browse_model import Browser
from durus.browse_pages import (
    census_page,
    facts_page,
    layout,
    object_page,
    referrers_page,
    search_page,
)
from durus.cli_common import (
    CliError,
    CommandParser,
    add_security_options,
    client_security,
    display_name,
    format_bytes,
    open_storage,
    parse,
    port_number,
    run_command,
)
from durus.storage_url import is_storage_url

__all__ = ["browse_main", "build_parser", "make_handler", "open_target"]

logger = logging.getLogger("durus.browse")

#: Headers of every answer: no script, no framing, no sniffing, nothing sent elsewhere.
SAFE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "img-src data:; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="durus browse",
        description="Look inside a database in a web browser: a read-only inspector of a "
        "file (opened read-only), a storage URL, or a running server (as a normal client).",
    )
    parser.add_argument(
        "target", nargs="?", metavar="TARGET",
        help="a database file, or a storage URL (sqlite:///path, postgresql://...); "
        "omit it to browse a running server (--server-port, --address)",
    )
    parser.add_argument("--host", default="127.0.0.1", metavar="HOST",
                        help="where the pages are served (default: 127.0.0.1, this machine "
                        "only)")
    parser.add_argument("--port", default=8080, type=port_number, metavar="PORT",
                        help="TCP port of the pages (default: 8080; 0 picks a free one)")
    group = parser.add_argument_group("a running server")
    group.add_argument("--server-host", default="127.0.0.1", metavar="HOST",
                       help="host of the Durus server (default: 127.0.0.1)")
    group.add_argument("--server-port", default=None, type=port_number, metavar="PORT",
                       help="TCP port of the Durus server (2972 for `durus -s`'s default)")
    group.add_argument("--address", default=None, metavar="ADDRESS",
                       help="the Durus server's Unix socket (a path, or @NAME)")
    add_security_options(parser)
    return parser


def open_target(options: argparse.Namespace) -> Browser:
    """The Browser of what the options name, opened so that nothing can be written."""
    if options.target is not None:
        if options.server_port is not None or options.address is not None:
            raise CliError("give a TARGET or a server (--server-port, --address), not both")
        target = options.target
        storage = open_storage(target, None, readonly=True, must_exist=True)
        return Browser(storage, display_name(target), lambda: file_facts(target, storage))
    from durus.cli_client import connect_to_server
    from durus.socket_address import SocketAddress

    if options.address is not None:
        address = SocketAddress.new(options.address)
    elif options.server_port is not None:
        address = SocketAddress.new((options.server_host, options.server_port))
    else:
        raise CliError("nothing to browse: give a database file, a storage URL, or a "
                       "server (--server-port PORT, --address SOCKET)")
    storage = connect_to_server(address, 0, client_security(options, address))
    return Browser(storage, f"server {address}", lambda: server_facts(storage))


def file_facts(target: str, storage: Any) -> list[tuple[str, str]]:
    """Size, objects, garbage and the last transactions of a file or database."""
    from durus.cli_admin import FORMAT_NAMES, gather_info

    facts = gather_info(target, progress=False)
    e = html.escape
    rows = [
        ("database", e(facts["file"])),
        ("format", e(FORMAT_NAMES.get(facts["format"], facts["format"]))),
        ("size", e(format_bytes(facts["size"]))),
        ("objects", f"{facts['objects']} reachable from the root ({facts['stored_oids']} "
                    "oids stored)"),
        ("transactions", "not recorded" if facts["transactions"] is None
         else f"{facts['transactions']} ({facts['object_versions']} object versions)"),
        ("garbage", "unknown: the database is damaged" if facts["garbage_bytes"] is None
         else f"about {e(format_bytes(facts['garbage_bytes']))} (packing reclaims it)"),
        ("last change", e(facts["last_change"])),
    ]
    if facts["damaged"]:
        rows.append(("problems", f"{facts['problems']}: `durus verify` lists them"))
    if not is_storage_url(target) and facts["format"] == "SHELF-1":
        from durus.shelf_check import last_transactions

        for number, oids in last_transactions(target, 10):
            shown = ", ".join(f"<a href='/oid/{oid}'>{oid}</a>" for oid in oids[:20])
            more = f" and {len(oids) - 20} more" if len(oids) > 20 else ""
            rows.append((f"transaction {number}", f"{len(oids)} objects: {shown}{more}"))
    return rows


def server_facts(storage: Any) -> list[tuple[str, str]]:
    """What a server of ours says of itself (a Durus 4.3 server says nothing)."""
    e = html.escape
    info = getattr(storage, "server_info", None)
    if not info:
        return [("server", "a Durus 4.3 server (it reports nothing about itself)")]
    rows = [("server", e(f"{info.get('server')} {info.get('version')}"))]
    try:
        stats = storage.get_server_stats()
    except Exception as error:
        return rows + [("statistics", e(f"not available: {error}"))]
    for key in ("clients", "commits", "loads", "bytes_since_pack", "packs", "last_pack_end",
                "uptime_s", "snapshot_clients"):
        if key in stats:
            rows.append((key.replace("_", " "), e(str(stats[key]))))
    return rows


def _route(browser: Browser, path: str, query: dict[str, str]) -> tuple[int, str | None]:
    parts = [part for part in path.split("/") if part]
    if not parts:
        return object_page(browser, 0, query)
    if parts[0] == "oid" and len(parts) in (2, 3) and parts[1].isdigit():
        oid = int(parts[1])
        if len(parts) == 2:
            return object_page(browser, oid, query)
        if parts[2] == "referrers":
            return referrers_page(browser, oid)
    if parts == ["census"]:
        return census_page(browser)
    if parts == ["facts"]:
        return facts_page(browser)
    if parts == ["search"]:
        return search_page(browser, query.get("q", ""))
    return 404, layout(browser, "not found", "<p>No such page.</p>")


def make_handler(browser: Browser) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "durus-browse"

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = {key: values[-1] for key, values in parse_qs(url.query).items()}
            try:
                with browser.lock:
                    status, body = _route(browser, url.path, query)
            except Exception as error:  # a page must never show a traceback
                logger.exception("page %s failed", url.path)
                status, body = 500, layout(browser, "error", "<p>This page could not be "
                                           f"made: {html.escape(type(error).__name__)}: "
                                           f"{html.escape(str(error))}</p>")
            if status == HTTPStatus.SEE_OTHER:
                self.send_response(status)
                self.send_header("Location", body or "/")
                self._common_headers()
                self.end_headers()
                return
            payload = (body or "").encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self._common_headers()
            self.end_headers()
            self.wfile.write(payload)

        def _refuse(self) -> None:
            payload = b"durus browse is read-only: only GET requests\n"
            self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
            self.send_header("Allow", "GET")
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self._common_headers()
            self.end_headers()
            self.wfile.write(payload)

        do_POST = do_PUT = do_DELETE = do_PATCH = _refuse

        def _common_headers(self) -> None:
            for name, value in SAFE_HEADERS.items():
                self.send_header(name, value)

        def log_message(self, format: str, *args: Any) -> None:
            logger.info("%s %s", self.address_string(), format % args)

    return Handler


def _browse(options: argparse.Namespace) -> int:
    browser = open_target(options)
    try:
        try:
            server = HTTPServer((options.host, options.port), make_handler(browser))
        except OSError as error:
            raise CliError(f"cannot serve pages on {options.host}:{options.port}: "
                           f"{error.strerror or error}") from None
        host, port = str(server.server_address[0]), int(server.server_address[1])
        shown = f"[{host}]" if ":" in host else host
        sys.stdout.write(f"durus browse: {browser.description} at http://{shown}:{port}/ "
                         "(Control-C stops)\n")
        sys.stdout.flush()
        if options.host not in ("127.0.0.1", "localhost", "::1"):
            sys.stderr.write("durus: warning: the pages can be reached from other machines, "
                             "without a password\n")
        try:
            server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    finally:
        browser.close()
    return 0


def browse_main(argv: Sequence[str] | None = None) -> int:
    """``durus browse [TARGET] [options]``."""
    options = parse(build_parser(), argv)
    return run_command(lambda: _browse(options))
