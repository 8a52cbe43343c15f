"""``durus browse`` on real databases, checked over HTTP and in a real headless Chromium.

The database has nested objects, a BTree of 300 items, a long list, an
object whose class no longer exists, a record whose state is garbage and
strings holding HTML.  Every page must escape them, no request may change a
byte of the file, and no page may ever show a traceback.  Chromium (Debian's
``chromium``; .ci/run installs it) checks the DOM and takes the screenshots
of an object page and of the census (kept in ``$DURUS_SCREENSHOT_DIR`` when
set); without it those tests skip, unless ``DURUS_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import urllib.error
import urllib.request

import pytest
from durus_cli_testing import COMMAND_TIMEOUT, free_port, wait_until_listening

SCRIPT_TEXT = "<script>document.title='pwned'</script><b>bold</b>"
IMG_TEXT = "<img src=x onerror=alert(1)>"

MAKE_DATABASE = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[2])
    from durus.btree import BTree
    from durus.connection import Connection
    from durus.file_storage import FileStorage
    from durus.persistent_dict import PersistentDict
    from durus.persistent_list import PersistentList
    from durus.serialize import pack_record
    import vanished_app

    storage = FileStorage(sys.argv[1])
    connection = Connection(storage)
    root = connection.get_root()
    root["nested"] = PersistentDict(inner=PersistentDict(
        deep=PersistentList([1, 2.5, {"x": [3, (4, 5)], "when": None}])))
    tree = BTree()
    for i in range(300):
        tree[i] = PersistentDict(n=i, label=f"item {i}")
    root["tree"] = tree
    root["long"] = PersistentList(range(130))
    root["gone"] = vanished_app.Vanished()
    root["html"] = @SCRIPT@
    root["attr"] = PersistentDict({@IMG@: @IMG@})
    root["garbled"] = PersistentDict(placeholder=True)
    connection.commit()
    oid = root["garbled"]._p_oid
    # A record whose state pickle is garbage (the class pickle is intact).
    good = storage.load(oid)
    data_start = 12
    class_end = good.index(b"q\\x00.", data_start) + 3
    storage.begin()
    storage.store(oid, pack_record(oid, good[data_start:class_end] + b"\\x80\\x03garbage", b""))
    storage.end()
    print(int.from_bytes(root["tree"]._p_oid, "big"), int.from_bytes(root["gone"]._p_oid, "big"),
          int.from_bytes(oid, "big"), int.from_bytes(root["long"]._p_oid, "big"))
""").replace("@SCRIPT@", repr(SCRIPT_TEXT)).replace("@IMG@", repr(IMG_TEXT))

VANISHED_APP = textwrap.dedent("""
    from durus.persistent import Persistent

    class Vanished(Persistent):
        def __init__(self):
            self.name = "<i>not here</i>"
            self.count = 3
""")


class Database:
    def __init__(self, path: pathlib.Path, oids: list[int]) -> None:
        self.path = path
        self.tree, self.gone, self.garbled, self.long = oids

    def digest(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def database(tmp_path_factory) -> Database:
    folder = tmp_path_factory.mktemp("browse")
    app = folder / "app"
    app.mkdir()
    (app / "vanished_app.py").write_text(VANISHED_APP)
    path = folder / "shop.durus"
    made = subprocess.run([sys.executable, "-c", MAKE_DATABASE, str(path), str(app)],
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    assert made.returncode == 0, made.stderr
    shutil.rmtree(app)  # the class is gone: `durus browse` cannot import it
    return Database(path, [int(n) for n in made.stdout.split()])


class Browse:
    """A running ``durus browse``: its base URL and HTTP helpers."""

    def __init__(self, process: subprocess.Popen, url: str) -> None:
        self.process = process
        self.url = url

    def get(self, path: str) -> tuple[int, str, dict[str, str]]:
        request = urllib.request.Request(self.url + path.lstrip("/"))
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(request, timeout=COMMAND_TIMEOUT) as answer:
                return answer.status, answer.read().decode("utf-8"), dict(answer.headers)
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode("utf-8", "replace"), dict(error.headers)

    def send(self, method: str, path: str) -> int:
        request = urllib.request.Request(self.url + path.lstrip("/"), data=b"x=1",
                                         method=method)
        try:
            with urllib.request.urlopen(request, timeout=COMMAND_TIMEOUT) as answer:
                return answer.status
        except urllib.error.HTTPError as error:
            return error.code


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def start_browse(*args: str) -> Browse:
    process = subprocess.Popen([sys.executable, "-m", "durus", "browse", *args, "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
    if match is None:
        process.kill()
        pytest.fail(f"durus browse did not start: {line}{process.stderr.read()}")
    return Browse(process, match.group(1))


def stop_browse(browse: Browse) -> str:
    browse.process.terminate()
    _out, err = browse.process.communicate(timeout=COMMAND_TIMEOUT)
    return err


@pytest.fixture(scope="module")
def browse(database) -> Browse:
    before = database.digest()
    running = start_browse(str(database.path))
    yield running
    err = stop_browse(running)
    assert "Traceback" not in err, err
    assert database.digest() == before  # browsing changed no byte of the file


def test_the_root_escapes_html_from_the_database(browse):
    status, body, headers = browse.get("/")
    assert status == 200
    assert "&#x27;nested&#x27;" in body and "BTree" in body and "href='/oid/1'" in body
    assert "&lt;script&gt;document.title=" in body and "&lt;b&gt;bold&lt;/b&gt;" in body
    assert "<script" not in body.lower() and "<b>bold" not in body
    assert "script-src" not in headers["Content-Security-Policy"]  # default-src 'none'
    assert headers["Content-Security-Policy"].startswith("default-src 'none'")


def test_html_in_keys_and_values_of_any_page_stays_text(browse, database):
    for path in ("/", "/census", "/facts", f"/oid/{database.gone}", "/search?q=Persistent",
                 "/search?q=" + urllib.request.quote(IMG_TEXT)):
        status, body, _headers = browse.get(path)
        assert status == 200, path
        assert "<img" not in body and "<script" not in body.lower(), path
        assert "onerror=alert" not in body or "&lt;img" in body, path


def test_nested_plain_containers_are_expandable(browse):
    status, body, _headers = browse.get("/oid/1")  # root["nested"], the first object made
    assert status == 200
    inner = re.search(r"href='/oid/(\d+)'", body.split("<h2>")[1]).group(1)
    status, body, _headers = browse.get(f"/oid/{inner}")
    deep = re.search(r"href='/oid/(\d+)'", body.split("<h2>")[1]).group(1)
    status, body, _headers = browse.get(f"/oid/{deep}")
    assert status == 200 and "<details" in body and "&#x27;x&#x27;" in body
    assert "2.5" in body and "(4, 5)" not in body  # a tuple is a container too


def test_a_btree_is_paged_in_key_order_with_jump_to_key(browse, database):
    tree = f"/oid/{database.tree}"
    status, body, _headers = browse.get(tree)
    assert status == 200
    keys = [int(k) for k in re.findall(r"<tr><td><span class='value'>(\d+)</span>", body)]
    assert keys == list(range(50))
    assert f"href='{tree}?page=1' rel='next'" in body
    _status, body, _headers = browse.get(tree + "?page=5")
    keys = [int(k) for k in re.findall(r"<tr><td><span class='value'>(\d+)</span>", body)]
    assert keys == list(range(250, 300)) and "rel='next'" not in body
    _status, body, _headers = browse.get(tree + "?key=173")
    keys = [int(k) for k in re.findall(r"<tr><td><span class='value'>(\d+)</span>", body)]
    assert keys == list(range(173, 223))
    assert f"href='{tree}?key=223' rel='next'" in body
    _status, body, _headers = browse.get(tree + "?key=nonsense")
    assert _status == 200  # a key of the wrong type is not an error


def test_a_long_list_is_paged(browse, database):
    _status, body, _headers = browse.get(f"/oid/{database.long}?page=2")
    assert "130 entries; 101-130 shown" in body and "rel='next'" not in body


def test_an_object_whose_class_is_gone_is_shown_from_its_pickle(browse, database):
    status, body, _headers = browse.get(f"/oid/{database.gone}")
    assert status == 200
    assert "vanished_app.Vanished" in body and "cannot be imported" in body
    assert "&lt;i&gt;not here&lt;/i&gt;" in body and "<th>count</th>" in body


def test_an_unreadable_record_is_a_message_not_a_traceback(browse, database):
    status, body, _headers = browse.get(f"/oid/{database.garbled}")
    assert status == 200 and "cannot be read" in body and "Traceback" not in body


def test_referrers_census_facts_and_search(browse, database):
    status, body, _headers = browse.get(f"/oid/{database.tree}/referrers")
    assert status == 200 and "href='/oid/0'" in body
    status, body, _headers = browse.get("/census")
    assert status == 200 and "<svg" in body and "<rect" in body
    assert re.search(r"BNode\d+</a></td><td>\d+</td>", body)
    status, body, _headers = browse.get("/facts")
    assert status == 200 and "SHELF-1" in body and "garbage" in body and "transaction" in body
    status, _body, headers = browse.get("/search?q=7")
    assert status == 303 and headers["Location"] == "/oid/7"
    status, body, _headers = browse.get("/search?q=bnode")
    assert status == 200 and "objects whose class name contains" in body
    assert browse.get("/oid/987654")[0] == 404 and browse.get("/nowhere")[0] == 404


def test_nothing_but_get_is_accepted(browse, database):
    before = database.digest()
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert browse.send(method, "/") == 405
    assert database.digest() == before


def test_it_listens_on_this_machine_only_by_default():
    from durus.cli_browse import build_parser

    assert build_parser().parse_args(["x.durus"]).host == "127.0.0.1"


def test_a_running_server_is_browsed_as_a_normal_client(database, tmp_path):
    from durus.client_storage import ClientStorage

    copy = tmp_path / "served.durus"
    shutil.copy(database.path, copy)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "durus", "-s", "--file", str(copy),
                               "--port", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        wait_until_listening(("127.0.0.1", port), server)
        running = start_browse("--server-port", str(port))
        try:
            other = ClientStorage(port=port)
            census: list = []
            scan = threading.Thread(target=lambda: census.append(running.get("/census")))
            scan.start()  # a scan of every record through the server...
            for _ in range(50):  # ...while the server keeps serving its other clients
                assert other.load(b"\0" * 8) and other.sync() == []
            scan.join(COMMAND_TIMEOUT)
            status, body, _headers = census[0]
            assert status == 200 and "BNode" in body
            status, body, _headers = running.get("/facts")
            assert status == 200 and "durus-server" in body
            assert running.get(f"/oid/{database.gone}")[0] == 200
            other.close()
        finally:
            assert "Traceback" not in stop_browse(running)
    finally:
        server.terminate()
        server.wait(COMMAND_TIMEOUT)


def test_a_sqlite_database_by_url(tmp_path):
    from durus.connection import Connection
    from durus.persistent_dict import PersistentDict
    from durus.sqlite_storage import SqliteStorage

    path = tmp_path / "app.sqlite"
    connection = Connection(SqliteStorage(path))
    connection.get_root()["greeting"] = PersistentDict(text="<hello>")
    connection.commit()
    connection.get_storage().close()
    running = start_browse(f"sqlite:///{path}")
    try:
        status, body, _headers = running.get("/oid/1")
        assert status == 200 and "&lt;hello&gt;" in body
        assert running.get("/facts")[0] == 200
    finally:
        assert "Traceback" not in stop_browse(running)


def test_a_missing_file_or_no_target_is_one_clear_line(tmp_path):
    for args in ([str(tmp_path / "missing.durus")], []):
        result = subprocess.run([sys.executable, "-m", "durus", "browse", *args],
                                capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
        assert result.returncode != 0
        assert result.stderr.startswith("durus: error:") and "Traceback" not in result.stderr


# -- in a real browser --------------------------------------------------------------------


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("DURUS_REQUIRE_BROWSER") == "1":
            pytest.fail("DURUS_REQUIRE_BROWSER=1 but no chromium on PATH")
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    return found


def headless(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--no-first-run", "--disable-extensions", *args],
        capture_output=True, text=True, timeout=120)


def test_chromium_sees_the_data_as_text_and_runs_nothing(browse, database):
    result = headless("--dump-dom", browse.url)
    dom = result.stdout
    assert "<title>PersistentDict 0 - durus browse</title>" in dom, result.stderr[-2000:]
    assert "<script" not in dom.lower()  # the data's script tag stayed text: no element
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom
    result = headless("--dump-dom", f"{browse.url}oid/{database.tree}?key=100")
    assert "<td><span class=\"value\">100</span></td>" in result.stdout
    assert "jump to key" in result.stdout


def test_screenshots_of_an_object_page_and_the_census(browse, database, tmp_path):
    shared = os.environ.get("DURUS_SCREENSHOT_DIR")
    # One folder per run: tox runs several at once into the same directory.
    version = f"py{sys.version_info[0]}{sys.version_info[1]}-{os.getpid()}"
    folder = pathlib.Path(shared) / version if shared else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    for name, path in (("browse-object", f"oid/{database.tree}"), ("browse-census", "census")):
        target = folder / f"{name}.png"
        headless(f"--screenshot={target}", "--window-size=1100,760", browse.url + path)
        data = target.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000


def test_a_file_written_by_durus_4_3(tmp_path):
    from durus_cli_testing import copy_fixture

    path = copy_fixture("durus43-unpacked.durus", tmp_path)
    before = path.read_bytes()
    running = start_browse(str(path))  # its classes (fixture_classes) are not importable here
    try:
        status, body, _headers = running.get("/")
        assert status == 200 and "PersistentDict 0" in body
        status, body, _headers = running.get("/census")
        assert status == 200 and "<svg" in body
        for oid in re.findall(r"href='/oid/(\d+)'", running.get("/")[1])[:10]:
            assert running.get(f"/oid/{oid}")[0] == 200
    finally:
        assert "Traceback" not in stop_browse(running)
    assert path.read_bytes() == before
