"""Random sequences of commits, packs, crashes and reopens against a plain dict model."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durus.file_storage import FileStorage
from durus.utils import int8_to_str

ROOT = int8_to_str(0)


def make_record(name: bytes, payload: bytes, refs: list[int]) -> bytes:
    return name + len(payload).to_bytes(4, "big") + payload + b"".join(map(int8_to_str, refs))


operation = st.one_of(
    st.tuples(
        st.just("commit"),
        st.lists(st.tuples(st.integers(1, 30), st.binary(max_size=40)), max_size=6),
        st.lists(st.integers(1, 30), max_size=8),
    ),
    st.tuples(st.just("pack")),
    st.tuples(st.just("reopen")),
    st.tuples(st.just("crash"), st.integers(1, 200)),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(operation, max_size=14))
def test_random_operations_match_a_model(tmp_path_factory, operations):
    path = str(tmp_path_factory.mktemp("model") / "m.durus")
    storage = FileStorage(path, fsync=False)
    model: dict[bytes, bytes] = {}
    names: dict[int, bytes] = {}

    def reachable() -> set[bytes]:
        if ROOT not in model:
            return set()
        seen, todo = set(), [ROOT]
        while todo:
            oid = todo.pop()
            if oid in seen or oid not in model:
                continue
            seen.add(oid)
            record = model[oid]
            refs = record[12 + int.from_bytes(record[8:12], "big") :]
            todo.extend(refs[i : i + 8] for i in range(0, len(refs), 8))
        return seen

    for op in operations:
        if op[0] == "commit":
            _kind, writes, root_refs = op
            storage.begin()
            pending = {}
            for key, payload in writes:
                if key not in names:
                    names[key] = storage.new_oid()
                name = names[key]
                pending[name] = make_record(name, payload, [])
            live = sorted({int.from_bytes(names[k], "big") for k in root_refs if k in names})
            pending[ROOT] = make_record(ROOT, b"root", live)
            for name, record in pending.items():
                storage.store(name, record)
            storage.end()
            model.update(pending)
        elif op[0] == "pack":
            storage.pack()
            keep = reachable()
            removed = set(model) - keep
            model = {oid: model[oid] for oid in keep}
            assert set(storage.sync()) == removed
            names = {k: v for k, v in names.items() if v in model}
        elif op[0] == "reopen":
            storage.close()
            storage = FileStorage(path, fsync=False)
            names = {k: v for k, v in names.items() if v in model}
        else:
            # A crash in the middle of one more commit: its bytes are cut short.
            storage.close()
            size = os.path.getsize(path)
            garbage_name = int8_to_str(999)
            record = make_record(garbage_name, b"x" * 300, [])
            item = (8 + len(record)).to_bytes(8, "big") + garbage_name + record
            transaction = len(item).to_bytes(8, "big") + item
            with open(path, "ab") as f:
                f.write(transaction[: min(op[1], len(transaction) - 1)])
            storage = FileStorage(path, fsync=False)
            assert os.path.getsize(path) == size
            names = {k: v for k, v in names.items() if v in model}
        assert dict(storage.gen_oid_record()) == model
        for oid, record in model.items():
            assert storage.load(oid) == record
    storage.close()
    reader = FileStorage(path, readonly=True)
    assert dict(reader.gen_oid_record()) == model
    reader.close()
    assert not Path(path + ".pack").exists()
