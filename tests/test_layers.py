"""Dependencies point one way: the tests and the benchmarks import ``harness`` (what they share)
and the production packages, never each other; ``harness`` imports neither; production code
imports none of them, and neither the wheel nor the images carry them. Production code also
carries no helper that only the tests or the benchmarks call: every function, method, class and
module-level name it defines is used by production code, or is an entry point listed here."""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Mapping
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = (ROOT / "recognizer" / "speech_recognizer", ROOT / "operator" / "speech_operator")
DEV_ONLY = {"tests", "bench", "harness"}

#: Defined in production code and called by nothing in it, on purpose: a library calls them.
#: Methods overriding an outside base class's (uvicorn's protocol, urllib's handler) and decorated
#: functions (kopf handlers, pydantic validators) count as called and need no entry here.
CALLED_FROM_OUTSIDE = {
    "speech_recognizer/metrics.py": {"_PoolCollector.collect"},  # prometheus_client's Collector protocol
    "speech_recognizer/http_limits.py": {"LimitedHttpTools._start_asgi_task"},  # uvicorn's HttpToolsProtocol calls its own
    "speech_operator/gateway.py": {"_DirectoryCollector.collect"},  # prometheus_client's Collector protocol
    "speech_operator/metrics.py": {"Exporter.collect"},  # prometheus_client's Collector protocol
    "speech_operator/gateway_http_limits.py": {"_HeadParser.message_consumed"},  # aiohttp's handler calls its parser's
    # aiohttp's WebSocketResponse calls its own (_post_start: the read queue's bound, tests/gateway/test_connections.py)
    "speech_operator/gateway_relay.py": {"_ClientSide._close_transport", "_ClientSide._post_start"},
}


def top_level_imports(folder: Path, package: str) -> dict[str, set[str]]:
    """module file (relative to ``folder``'s parent) -> top-level packages it imports, relative imports
    resolved against ``package`` (the folder's package name), also imports inside functions."""
    found: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                names.add(package if node.level else (node.module or "").split(".")[0])
        found[str(path.relative_to(folder.parent))] = names
    return found


def offenders(folder: Path, package: str, forbidden: set[str]) -> dict[str, set[str]]:
    return {module: bad for module, names in top_level_imports(folder, package).items() if (bad := names & forbidden)}


#: Decorators that make a method a property or the like: they register it with nothing that calls it.
DESCRIPTORS = {"property", "cached_property", "staticmethod", "classmethod", "setter", "deleter", "getter"}


def _name_of(decorator: ast.expr) -> str:
    node = decorator.func if isinstance(decorator, ast.Call) else decorator
    return node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""


def _used_names(node: ast.AST) -> set[str]:
    """Names a piece of code uses: variables, attributes, imported names, and strings that are one name
    (``getattr(x, "name")``, ``"module:function"`` entry points)."""
    names: set[str] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            names.add(n.id)
        elif isinstance(n, ast.Attribute):
            names.add(n.attr)
        elif isinstance(n, ast.alias):
            names.add(n.name.split(".")[-1])
        elif isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.replace(":", ".").split(".")[-1].isidentifier():
            names.add(n.value.replace(":", ".").split(".")[-1])
    return names


def unused_definitions(folders: tuple[Path, ...], roots: Mapping[str, set[str]] = {}) -> dict[str, set[str]]:
    """module file (relative to its folder's parent) -> qualified names it defines (functions, methods, classes, module-level names) that
    no code of ``folders`` uses, except from inside themselves or from other unused definitions.

    Names are matched by name alone (a method ``feed`` counts as used wherever any ``.feed`` is), so
    the check misses a helper that shares its name with something used. Used from outside: ``roots``
    (module file -> qualified names: entry points, what a library calls), functions a decorator
    registers (not a property's), dunders, and public methods of classes with a base class defined
    elsewhere (a library calls them)."""
    files = {path: str(path.relative_to(folder.parent)) for folder in folders for path in sorted(folder.rglob("*.py"))}
    defined_classes = {n.name for path in files for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ClassDef)}
    definitions: dict[tuple[str, str, str], set[str]] = {}  # (file, qualified name, name) -> names it uses
    used: set[str] = set()

    def visit(body: list[ast.stmt], file: str, prefix: str, outside_base: bool) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                definitions[(file, prefix + node.name, node.name)] = _used_names(node)
                registered = [d for d in node.decorator_list if _name_of(d) not in DESCRIPTORS]  # kopf.on..., app.route...
                if registered or node.name.startswith("__") or (outside_base and not node.name.startswith("_")):
                    used.add(node.name)
            elif isinstance(node, ast.ClassDef):
                bases = {b.id if isinstance(b, ast.Name) else b.attr for b in node.bases if isinstance(b, (ast.Name, ast.Attribute))}
                header = ast.Module([ast.Expr(e) for e in [*node.bases, *node.decorator_list, *(k.value for k in node.keywords)]], [])
                definitions[(file, prefix + node.name, node.name)] = _used_names(header)
                visit(node.body, file, prefix + node.name + ".", bool(bases - defined_classes))
            elif not prefix and isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [t.id for t in targets if isinstance(t, ast.Name) and not t.id.startswith("__")]
                for name in names:
                    definitions[(file, name, name)] = _used_names(node.value)
                if not names:
                    used.update(_used_names(node))
            else:  # module statements, class attributes: they run, so what they use is used
                used.update(_used_names(node))

    for path, file in files.items():
        visit(ast.parse(path.read_text(), str(path)).body, file, "", False)
    unused: set[tuple[str, str, str]] = set()
    while True:
        live = [key for key in definitions if key not in unused]
        reached = used.union(*(definitions[key] - {key[2]} for key in live), {key[2] for key in live if key[1] in roots.get(key[0], ())})
        newly = {key for key in live if key[2] not in reached}
        if not newly:
            break
        unused |= newly
    found: dict[str, set[str]] = {}
    for file, qualified, _ in unused:
        found.setdefault(file, set()).add(qualified)
    return found


def test_production_imports_no_test_or_bench_code() -> None:
    for folder in PRODUCTION:
        assert offenders(folder, folder.name, DEV_ONLY) == {}


def test_bench_does_not_import_the_tests() -> None:
    assert offenders(ROOT / "bench", "bench", {"tests"}) == {}


def test_the_tests_do_not_import_bench() -> None:
    """What the tests share with the benchmarks is in ``harness``: the tests stand without the benchmarks."""
    assert offenders(ROOT / "tests", "tests", {"bench"}) == {}


def test_harness_imports_neither_tests_nor_bench() -> None:
    assert offenders(ROOT / "harness", "harness", {"tests", "bench"}) == {}


def module_imports(folders: tuple[Path, ...]) -> dict[str, set[str]]:
    """module -> the modules of ``folders``' packages it imports (``speech_recognizer.serving``), imports inside
    functions too: an import deferred into a function still makes the two modules depend on each other."""
    modules = {".".join(path.relative_to(folder.parent).with_suffix("").parts).removesuffix(".__init__"): path
               for folder in folders for path in sorted(folder.rglob("*.py"))}
    found: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]) if node.level else ""
                source = ".".join(part for part in (base, node.module or "") if part)
                targets |= {f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source for alias in node.names}
        found[name] = (targets & modules.keys()) - {name}
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The groups of modules that import one another round a circle (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_production_modules_import_one_another_one_way() -> None:
    """No two modules depend on each other, not even through an import deferred into a function (it hides a
    circle from Python, not from a reader): a shared fact lives below both (``contract``, for the recognizer's and
    the gateway's)."""
    assert import_cycles(module_imports(PRODUCTION)) == []


def test_the_cycle_check_sees_deferred_and_relative_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import LIMIT\n")
    (pkg / "b.py").write_text("LIMIT = 1\n\ndef f():\n    from .sub import c\n")
    (pkg / "sub" / "c.py").write_text("from ..a import x\nimport pkg.d\n")
    (pkg / "d.py").write_text("from pkg import sub\n")
    graph = module_imports((pkg,))
    assert graph["pkg.b"] == {"pkg.sub.c"} and graph["pkg.sub.c"] == {"pkg.a", "pkg.d"} and graph["pkg.d"] == {"pkg.sub"}
    assert import_cycles(graph) == [{"pkg.a", "pkg.b", "pkg.sub.c"}]


def test_the_check_sees_imports(tmp_path: Path) -> None:
    """The checker itself: absolute, dotted, relative and function-level imports are all seen."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("import tests.support\nfrom bench.common import Audio\n")
    (pkg / "b.py").write_text("from . import x\n\ndef f():\n    import harness.speech\n")
    (pkg / "c.py").write_text("from .tests import y\nimport speech_recognizer\n")
    assert offenders(pkg, "pkg", DEV_ONLY) == {"pkg/a.py": {"tests", "bench"}, "pkg/b.py": {"harness"}}


def _entry_points() -> dict[str, set[str]]:
    """The functions ``[project.scripts]`` names (``package.module:function``), by module file."""
    found: dict[str, set[str]] = {}
    for target in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"].values():
        module, _, function = target.partition(":")
        found.setdefault(module.replace(".", "/") + ".py", set()).add(function)
    return found


def test_production_code_carries_no_helper_only_tests_or_bench_use() -> None:
    """A client's frame writer, a convenience wrapper for a test, a setter for a benchmark: what only the
    tests and the benchmarks call lives in ``harness`` (or in the test), not in what ships."""
    entry_points = _entry_points()
    unused_without_roots = unused_definitions(PRODUCTION)
    for file, names in CALLED_FROM_OUTSIDE.items():
        assert names <= unused_without_roots.get(file, set()), f"{file}: {names} are gone, or used in production now: unlist them"
    assert unused_definitions(PRODUCTION, {**entry_points, **CALLED_FROM_OUTSIDE}) == {}


def test_the_check_sees_unused_definitions(tmp_path: Path) -> None:
    """The checker itself: a helper used only by another unused helper is unused, and so is an unused
    property; a used name, a method a library calls (outside base class), a decorated function, an
    entry point and a name used in a module statement are not."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text(
        "import outside\n\nLIMIT = 3\nDEFAULT = 128\n\ndef _head(): return LIMIT\n\n"
        "def client_frame(): return _head() + DEFAULT\n\ndef server_frame(): return _head()\n\n"
        "class Protocol(outside.Base):\n    def on_body(self): return self._refuse()\n    def _refuse(self): return 1\n\n"
        "class Session:\n    def feed(self): return self.feed()\n    @property\n    def stream_id(self): return 1\n\n"
        "@outside.route\ndef handler(): return server_frame()\n\ndef main(): return Protocol(), Session()\n\nTABLE = {1: 'x'}\nTABLE[2] = 'y'\n")
    (pkg / "b.py").write_text("from .a import main\n\ndef unused(): return main()\n")
    assert unused_definitions((pkg,), {"pkg/a.py": {"main"}}) == {
        "pkg/a.py": {"DEFAULT", "client_frame", "Session.feed", "Session.stream_id"}, "pkg/b.py": {"unused"}}


def test_harness_is_not_shipped() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert not any(p.split(".")[0] in DEV_ONLY for p in setuptools["packages"])
    allowed = [line[1:].strip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")]
    assert not set(allowed) & DEV_ONLY, "the images' build context allows only the package sources"
