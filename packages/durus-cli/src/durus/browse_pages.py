"""The HTML pages of ``durus browse``: plain HTML and CSS, no script.

Everything that comes from the database goes through ``text()`` (HTML
escaping) or ``quote()`` (URLs); the server also forbids scripts with its
Content-Security-Policy, so data can never become markup.  Containers are
expandable with ``<details>`` and the large ones are paged, so every page
works without JavaScript.
"""

from __future__ import annotations

import html
import itertools
from typing import Any
from urllib.parse import quote

from durus.browse_model import BTREE, Browser, iterate_btree, state_fields
from durus.browse_records import Decoded, Ref, Unimported, class_is_importable

__all__ = ["PAGE", "census_page", "facts_page", "layout", "object_page", "referrers_page",
           "search_page"]

#: Entries per page of a large container or BTree.
PAGE = 50
#: Entries shown inside an expandable value before "N more".
SHOWN = 100
#: How deep plain containers nest on a page before "..." (expand the object instead).
DEPTH = 4
LONG_TEXT = 300

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0; color: #1d232b; }
header { background: #1d3557; color: #fff; padding: .6em 1.2em; display: flex;
         gap: 1.2em; align-items: center; flex-wrap: wrap; }
header a { color: #fff; } main { padding: 1em 1.2em; }
table { border-collapse: collapse; margin: .4em 0; }
td, th { border: 1px solid #ccd; padding: .2em .6em; vertical-align: top; text-align: left; }
th { background: #eef1f6; } code, .value { font-family: ui-monospace, monospace; }
.broken { background: #fff3cd; padding: .4em .8em; border-left: 4px solid #e0a800; }
.pager a { margin-right: 1em; } details { margin: .1em 0; } summary { cursor: pointer; }
"""


def text(value: Any) -> str:
    return html.escape(str(value), quote=True)


def layout(browser: Browser, title: str, body: str) -> str:
    """A whole page: the navigation, the search box, then ``body``."""
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{text(title)} - durus browse</title><style>{STYLE}</style></head><body>"
        f"<header><strong>durus browse</strong><span>{text(browser.description)}</span>"
        "<a href='/'>root</a><a href='/census'>census</a><a href='/facts'>facts</a>"
        "<form action='/search' method='get'><input name='q' placeholder='oid or class name'"
        " aria-label='search'> <button>search</button></form></header>"
        f"<main><h1>{text(title)}</h1>{body}</main></body></html>"
    )


def link(ref: Ref) -> str:
    short = ref.class_name.rpartition(".")[2]
    return f"<a href='/oid/{ref.oid}' class='ref'>{text(short)} {ref.oid}</a>"


def render(value: Any, depth: int = 0) -> str:
    """One value: a link for a persistent object, expandable for a container."""
    if isinstance(value, Ref):
        return link(value)
    if isinstance(value, Unimported):
        parts = [("args", value.args)] if value.args else []
        if value.state is not None:
            parts.append(("state", value.state))
        inner = _table(parts, depth + 1) if parts else ""
        return (f"<details><summary><code>{text(value._class_name)}</code> (a plain object,"
                f" shown from its pickle)</summary>{inner}</details>")
    if isinstance(value, dict):
        return _container("dict", len(value), list(value.items()), depth, keyed=True)
    if isinstance(value, (list, tuple, set, frozenset)):
        entries = list(value) if not isinstance(value, (set, frozenset)) else sorted(
            value, key=repr)
        return _container(type(value).__name__, len(value), list(enumerate(entries)), depth)
    shown = repr(value)
    if len(shown) > LONG_TEXT:
        shown = shown[:LONG_TEXT] + f"... ({len(shown)} characters)"
    return f"<span class='value'>{text(shown)}</span>"


def _container(kind: str, count: int, entries: list[tuple[Any, Any]], depth: int,
               keyed: bool = False) -> str:
    if depth >= DEPTH:
        return f"<span class='value'>{text(kind)} of {count}</span>"
    rows = _rows(entries[:SHOWN], keyed, depth + 1)
    more = f"<p>... {count - SHOWN} more</p>" if count > SHOWN else ""
    return (f"<details{' open' if depth == 0 and count <= 20 else ''}><summary>{text(kind)}"
            f" ({count} {'entry' if count == 1 else 'entries'})</summary>"
            f"<table>{rows}</table>{more}</details>")


def _rows(entries: list[tuple[Any, Any]], keyed: bool, depth: int) -> str:
    """Table rows of ``(key or index, value)`` entries (keys rendered as values)."""
    return "".join(
        f"<tr><td>{render(key, depth) if keyed else text(key)}</td>"
        f"<td>{render(value, depth)}</td></tr>" for key, value in entries)


def _table(fields: list[tuple[Any, Any]], depth: int = 0) -> str:
    rows = "".join(f"<tr><th>{text(name)}</th><td>{render(value, depth)}</td></tr>"
                   for name, value in fields)
    return f"<table>{rows}</table>"


def _pager(entries: list[tuple[Any, Any]], page: int, base: str, keyed: bool) -> str:
    start = page * PAGE
    shown = entries[start:start + PAGE]
    rows = _rows(shown, keyed, 1)
    links = [f"<a href='{base}?page=0'>first</a>"]
    if start + PAGE < len(entries):
        links.append(f"<a href='{base}?page={page + 1}' rel='next'>next</a>")
    return (f"<p>{len(entries)} entries; {start + 1 if shown else 0}-{start + len(shown)}"
            f" shown</p><p class='pager'>{''.join(links)}</p>"
            f"<table class='entries'><tr><th>{'key' if keyed else 'index'}</th>"
            f"<th>value</th></tr>{rows}</table>")


def object_page(browser: Browser, oid: int, query: dict[str, str]) -> tuple[int, str]:
    decoded = browser.object(oid)
    if decoded is None:
        return 404, layout(browser, f"no object {oid}",
                           f"<p>The database has no object with oid {oid}.</p>")
    importable = class_is_importable(decoded.class_name)
    facts = [
        ("oid", str(oid)),
        ("class", decoded.class_name),
        ("status", "stored" + ("" if importable else
                               "; its class cannot be imported here: shown from its pickle")),
        ("record", f"{decoded.size} bytes, {len(decoded.refs)} references"),
    ]
    head = "".join(f"<tr><th>{text(k)}</th><td>{text(v)}</td></tr>" for k, v in facts)
    body = [f"<table class='facts'>{head}</table>",
            f"<p><a href='/oid/{oid}/referrers'>objects that refer to it</a></p>"]
    if not importable:
        body.append(f"<p class='broken'>The class <code>{text(decoded.class_name)}</code> "
                    "cannot be imported: its fields are read from the record.</p>")
    if decoded.error:
        body.append(f"<p class='broken'>The record cannot be read: {text(decoded.error)}</p>")
    else:
        body.append(_contents(browser, decoded, oid, query))
    return 200, layout(browser, f"{decoded.class_name.rpartition('.')[2]} {oid}",
                       "".join(body))


def _contents(browser: Browser, decoded: Decoded, oid: int, query: dict[str, str]) -> str:
    page = _int(query.get("page"), 0)
    base = f"/oid/{oid}"
    if decoded.class_name == BTREE:
        return _btree(browser, decoded, base, page, query.get("key"))
    fields = state_fields(decoded)
    data = dict(fields).get("data") if len(fields) == 1 else None
    name = decoded.class_name.rpartition(".")[2]
    if isinstance(data, dict) and name == "PersistentDict":
        return "<h2>items</h2>" + _pager(list(data.items()), page, base, keyed=True)
    if isinstance(data, list) and name == "PersistentList":
        return "<h2>items</h2>" + _pager(list(enumerate(data)), page, base, keyed=False)
    members = dict(fields).get("s") if len(fields) == 1 else None
    if isinstance(members, set) and name == "PersistentSet":
        ordered = sorted(members, key=repr)
        return "<h2>members</h2>" + _pager(list(enumerate(ordered)), page, base, keyed=False)
    return "<h2>attributes</h2>" + _table(fields)


def _btree(browser: Browser, tree: Decoded, base: str, page: int, key_text: str | None) -> str:
    start_key: Any = None
    if key_text:
        start_key = _parse_key(browser, tree, key_text)
    try:
        items = iterate_btree(browser, tree, start_key)
        if start_key is None:
            items = itertools.islice(items, page * PAGE, None)
        chunk = list(itertools.islice(items, PAGE + 1))
    except LookupError as error:
        return f"<p class='broken'>{text(error)}</p>"
    rows = _rows(chunk[:PAGE], True, 1)
    links = [f"<a href='{base}?page=0'>first</a>"]
    if len(chunk) > PAGE:
        if start_key is None:
            links.append(f"<a href='{base}?page={page + 1}' rel='next'>next</a>")
        else:
            links.append(f"<a href='{base}?key={quote(str(chunk[PAGE][0]))}' rel='next'>"
                         "next</a>")
    where = (f"from key {text(repr(start_key))}" if start_key is not None
             else f"page {page + 1}")
    jump = (f"<form action='{base}' method='get'><input name='key' aria-label='key'"
            f" value='{text(key_text or '')}'> <button>jump to key</button></form>")
    return (f"<h2>items in key order</h2><p>{where}</p>{jump}"
            f"<p class='pager'>{''.join(links)}</p>"
            f"<table class='entries'><tr><th>key</th><th>value</th></tr>{rows}</table>")


def _parse_key(browser: Browser, tree: Decoded, key_text: str) -> Any:
    """The key asked for, as an int when the tree's keys are ints."""
    try:
        first = next(iterate_btree(browser, tree), None)
    except LookupError:
        first = None
    if first is not None and isinstance(first[0], int):
        try:
            return int(key_text)
        except ValueError:
            pass
    return key_text


def referrers_page(browser: Browser, oid: int) -> tuple[int, str]:
    index = browser.index()
    referrers = sorted(index.referrers.get(oid, []))
    rows = "".join(
        f"<li>{link(Ref(number, index.classes.get(number, '?')))}</li>" for number in referrers)
    body = (f"<p>{len(referrers)} objects reachable from the root refer to "
            f"<a href='/oid/{oid}'>object {oid}</a>.</p><ul>{rows}</ul>")
    return 200, layout(browser, f"referrers of {oid}", body)


def census_page(browser: Browser) -> tuple[int, str]:
    rows = browser.index().census()
    widest = max((size for _name, _n, size in rows), default=1) or 1
    bar_height, width = 22, 420
    bars = []
    for position, (name, _count, size) in enumerate(rows):
        y = position * bar_height
        length = max(1, round(width * size / widest))
        bars.append(f"<rect x='0' y='{y + 3}' width='{length}' height='{bar_height - 6}'"
                    f" fill='#457b9d'><title>{text(name)}: {size} bytes</title></rect>"
                    f"<text x='{length + 6}' y='{y + bar_height - 7}' font-size='13'>"
                    f"{text(name.rpartition('.')[2])} {size} B</text>")
    chart = (f"<svg xmlns='http://www.w3.org/2000/svg' role='img' aria-label='bytes per class'"
             f" width='{width + 320}' height='{max(1, len(rows)) * bar_height}'>"
             f"{''.join(bars)}</svg>")
    table = "".join(
        f"<tr><td><a href='/search?q={quote(name)}'>{text(name)}</a></td><td>{count}</td>"
        f"<td>{size}</td></tr>" for name, count, size in rows)
    objects = sum(count for _name, count, _size in rows)
    body = (f"<p>{objects} objects reachable from the root, in {len(rows)} classes.</p>"
            f"{chart}<table class='census'><tr><th>class</th><th>objects</th><th>bytes</th></tr>"
            f"{table}</table>")
    return 200, layout(browser, "census", body)


def facts_page(browser: Browser) -> tuple[int, str]:
    rows = browser.facts_source() if browser.facts_source is not None else []
    table = "".join(f"<tr><th>{text(label)}</th><td>{value}</td></tr>" for label, value in rows)
    return 200, layout(browser, "facts", f"<table class='facts'>{table}</table>")


def search_page(browser: Browser, query: str) -> tuple[int, str | None]:
    """A redirect target (status 303, the oid's path) or a page of matching objects."""
    wanted = query.strip()
    if wanted.isdigit():
        return 303, f"/oid/{int(wanted)}"
    index = browser.index()
    needle = wanted.lower()
    found = sorted(oid for oid, name in index.classes.items() if needle and needle in name.lower())
    shown = "".join(f"<li>{link(Ref(oid, index.classes[oid]))}</li>" for oid in found[:500])
    more = f"<p>... and {len(found) - 500} more</p>" if len(found) > 500 else ""
    body = (f"<p>{len(found)} objects whose class name contains "
            f"<code>{text(wanted)}</code>.</p><ul>{shown}</ul>{more}")
    return 200, layout(browser, "search", body)


def _int(value: str | None, default: int) -> int:
    try:
        return max(0, int(value)) if value is not None else default
    except ValueError:
        return default
