"""The monorepo's shape: one namespace package, a dependency DAG, honest imports.

These read the source tree, so they hold for every distribution at once: no
``durus/__init__.py``, no module shadowing the standard library, and every
``durus.X`` a distribution imports is its own or comes from a distribution it
declares (directly or through the declared ones).
"""

from __future__ import annotations

import ast
import pathlib
import re
import sys

try:
    import tomllib
except ModuleNotFoundError:  # CPython 3.10
    import tomli as tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
PACKAGES = ROOT / "packages"
DISTRIBUTIONS = sorted(p for p in PACKAGES.iterdir() if (p / "pyproject.toml").exists())


def metadata(dist: pathlib.Path) -> dict:
    return tomllib.loads((dist / "pyproject.toml").read_text())["project"]


def requirement_names(dist: pathlib.Path) -> set[str]:
    requirements = metadata(dist).get("dependencies", [])
    return {re.split(r"[<>=!~ \[;]", req, maxsplit=1)[0] for req in requirements}


def modules_of(dist: pathlib.Path) -> dict[str, pathlib.Path]:
    src = dist / "src" / "durus"
    return {path.stem: path for path in src.glob("*.py")} if src.exists() else {}


BY_NAME = {metadata(d)["name"]: d for d in DISTRIBUTIONS}
OWNER = {module: metadata(d)["name"] for d in DISTRIBUTIONS for module in modules_of(d)}


def closure(name: str) -> set[str]:
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend(n for n in requirement_names(BY_NAME[current]) if n in BY_NAME)
    return seen


def test_no_distribution_ships_durus_init():
    assert not list(PACKAGES.glob("*/src/durus/__init__.py"))


def test_no_module_takes_a_standard_library_name():
    clashes = {m for m in OWNER if m in sys.stdlib_module_names}
    assert not clashes


def test_every_module_belongs_to_one_distribution():
    seen: dict[str, str] = {}
    for dist in DISTRIBUTIONS:
        for module in modules_of(dist):
            assert module not in seen, f"durus.{module} in {seen.get(module)} and {dist.name}"
            seen[module] = dist.name


def test_sibling_dependencies_have_explicit_ranges_and_form_a_dag():
    for dist in DISTRIBUTIONS:
        for req in metadata(dist).get("dependencies", []):
            name = re.split(r"[<>=!~ \[;]", req, maxsplit=1)[0]
            if name in BY_NAME:
                assert ">=" in req and "<" in req.replace("<=", ""), req
        name = metadata(dist)["name"]
        for dependency in requirement_names(dist) & set(BY_NAME):
            assert name not in closure(dependency), f"cycle through {name} and {dependency}"


def test_the_meta_distribution_installs_everything():
    assert closure("durus") == set(BY_NAME)


@pytest.mark.parametrize("dist", DISTRIBUTIONS, ids=lambda d: d.name)
def test_imports_stay_within_declared_dependencies(dist):
    allowed = closure(metadata(dist)["name"])
    for module, path in modules_of(dist).items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("durus."):
                names.append(node.module.split(".")[1])  # type: ignore[union-attr]
            elif isinstance(node, ast.Import):
                names += [a.name.split(".")[1] for a in node.names if a.name.startswith("durus.")]
            for name in names:
                owner = OWNER.get(name)
                if owner is None or owner in allowed:
                    continue
                # An optional import must be guarded (try/except ImportError).
                assert _guarded(tree, node), (
                    f"durus.{module} ({dist.name}) imports durus.{name} from {owner}, "
                    "which it does not declare"
                )


def _guarded(tree: ast.AST, target: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(target is n for b in node.body for n in ast.walk(b)):
            return any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                for h in node.handlers
            )
    return False


def _module_level_assignments(name: str) -> list[str]:
    """``durus.X`` modules that bind ``name`` at module level with ``=``."""
    found = []
    for dist in DISTRIBUTIONS:
        for module, path in modules_of(dist).items():
            for node in ast.parse(path.read_text()).body:
                targets = node.targets if isinstance(node, ast.Assign) else []
                if isinstance(node, ast.AnnAssign) and node.value is not None:
                    targets = [node.target]
                if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                    found.append(module)
    return found


def test_one_copy_of_each_rule():
    """Issue 15: the root oid is defined once; others import it (and re-export
    it where Durus 4.3 applications import it from); one record check."""
    assert _module_level_assignments("ROOT_OID") == ["storage"]
    checks = [
        module
        for dist in DISTRIBUTIONS
        for module, path in modules_of(dist).items()
        for node in ast.parse(path.read_text()).body
        if isinstance(node, ast.FunctionDef) and node.name == "check_record"
    ]
    assert checks == ["serialize"]


def test_the_cli_knows_no_file_format():
    """Issue 15: the CLI reads files only through durus-filestorage's public
    check (``durus.shelf_check``) and FileStorage, never the format modules."""
    internals = {
        module
        for module in OWNER
        if (module.startswith("shelf_") and module != "shelf_check")
        or module in ("file_storage2", "file_lock")
    }
    for module, path in modules_of(BY_NAME["durus-cli"]).items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("durus."):
                names.append(node.module.split(".")[1])  # type: ignore[union-attr]
            elif isinstance(node, ast.Import):
                names += [a.name.split(".")[1] for a in node.names if a.name.startswith("durus.")]
            assert not set(names) & internals, f"durus.{module} imports {set(names) & internals}"


def test_every_source_module_is_at_most_about_700_lines():
    too_long = {
        f"{dist.name}/{path.name}": length
        for dist in DISTRIBUTIONS
        for path in [*modules_of(dist).values(), *(dist / "src" / "durus").glob("*.c")]
        if (length := len(path.read_text().splitlines())) > 750
    }
    assert not too_long
