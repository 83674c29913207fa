"""The house plan, checked: the import graph of src/hone has no cycle and none of the forbidden arrows.

The graph is read with ``ast`` from the source (no hone code runs): every ``import`` and
``from ... import`` in a module, at the top or inside a function or an ``if TYPE_CHECKING:`` block,
is an arrow from that module to the hone module it names. ``from hone.pkg import name`` points at
``hone.pkg.name`` when that is a module, else at ``hone.pkg``. Importing ``hone.a.b`` runs the
package ``hone.a`` first, but that is not counted as an arrow: a package's ``__init__`` is charged
only for what it imports itself.

Run ``python tests/test_architecture.py`` to print the graph's size, its arrows and any cycle.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "hone"
PLAN = SOURCE.parents[1] / "docs" / "architecture.md"
PLAN_HEADING = "## Modules: what each owns and what it may import"

# The arrows docs/architecture.md forbids: (importer prefix, imported prefixes). An arrow into a
# package's ``types`` module is allowed across them: result types are the contract between layers
# (the report renders the server's LoadTestResult without importing the server), and a types
# module may import nothing but other types modules and the light core (TYPES_MAY_IMPORT).
CORE = ("hone.model", "hone.runtime", "hone.data", "hone.verify", "hone.errors", "hone.machine")
FORBIDDEN: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
    (CORE, ("hone.cli", "hone.serve", "hone.export", "hone.pipeline", "hone.report", "hone.kernels")),
    (("hone.passes", "hone.kernels"), ("hone.cli", "hone.serve", "hone.report")),
    (("hone.report",), ("hone.passes", "hone.serve")),
]


TYPES_MAY_IMPORT = ("hone.errors", "hone.specs", "hone._version", "hone.results", "hone.session_options")


def is_types_module(module: str) -> bool:
    return module.rpartition(".")[2] in ("types", "job_types")


@dataclass(frozen=True)
class ImportGraph:
    modules: frozenset[str]
    arrows: frozenset[tuple[str, str]]  # every import, TYPE_CHECKING ones included
    runtime_arrows: frozenset[tuple[str, str]]  # the imports that run

    def successors(self, module: str) -> list[str]:
        return sorted(b for a, b in self.arrows if a == module)


def module_name(path: Path, package: Path = SOURCE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(name: str, modules: frozenset[str]) -> str | None:
    """The longest hone module that ``name`` is or lies in."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _type_checking_imports(tree: ast.Module) -> set[int]:
    """The ids of the import nodes inside ``if TYPE_CHECKING:`` blocks (never run)."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            for child in node.body:
                inside.update(id(n) for n in ast.walk(child) if isinstance(n, (ast.Import, ast.ImportFrom)))
    return inside


def _imported(tree: ast.Module, importer: str, is_package: bool, modules: frozenset[str]) -> dict[str, bool]:
    """Each hone module ``importer`` imports, and whether it does so at run time (not only for the
    type checker)."""
    typing_only = _type_checking_imports(tree)
    found: dict[str, bool] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = importer.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                package = ".".join(base + ([node.module] if node.module else []))
            else:
                package = node.module or ""
            # ``from hone.pkg import name``: the submodule if there is one, else the package.
            candidates = [f"{package}.{alias.name}" for alias in node.names]
            names = [n for n in candidates if n in modules]
            if len(names) < len(candidates):
                names.append(package)
        else:
            continue
        for name in names:
            if name == "hone" or name.startswith("hone."):
                target = _resolve(name, modules)
                if target is not None and target != importer:
                    found[target] = found.get(target, False) or id(node) not in typing_only
    return found


def build_graph(source: Path = SOURCE) -> ImportGraph:
    files = sorted(source.rglob("*.py"))
    modules = frozenset(module_name(f, source) for f in files)
    arrows: set[tuple[str, str]] = set()
    runtime: set[tuple[str, str]] = set()
    for file in files:
        name = module_name(file, source)
        tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
        for target, at_run_time in _imported(tree, name, file.name == "__init__.py", modules).items():
            arrows.add((name, target))
            if at_run_time:
                runtime.add((name, target))
    return ImportGraph(modules, frozenset(arrows), frozenset(runtime))


def find_cycles(graph: ImportGraph) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan), as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.successors(node):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return sorted(components)


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def forbidden_arrows(graph: ImportGraph) -> list[tuple[str, str]]:
    return sorted(
        (a, b)
        for a, b in graph.arrows
        for importers, imported in FORBIDDEN
        if _under(a, importers) and _under(b, imported) and not is_types_module(b)
    )


def heavy_type_imports(graph: ImportGraph) -> list[tuple[str, str]]:
    """Imports that run, out of a types module, to anything but another types module or the light
    core (a types module may name any type for the type checker)."""
    return sorted(
        (a, b)
        for a, b in graph.runtime_arrows
        if is_types_module(a) and not is_types_module(b) and b not in TYPES_MAY_IMPORT
    )


def unit(module: str) -> str:
    """The row of docs/architecture.md a module belongs to: ``hone.serve.http`` -> ``serve``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "hone"


def unit_arrows(graph: ImportGraph) -> dict[str, set[str]]:
    """Per module row, the other rows it imports (every import counts)."""
    found: dict[str, set[str]] = {unit(m): set() for m in graph.modules}
    for a, b in graph.arrows:
        if unit(a) != unit(b):
            found[unit(a)].add(unit(b))
    return found


def _row_name(cell: str) -> str:
    name = cell.split("`")[1] if "`" in cell else cell.strip()
    if name == "__init__.py":
        return "hone"
    return name.removesuffix("/").removesuffix(".py")


def planned_imports(text: str) -> dict[str, set[str]]:
    """The plan's table: per row, the names in its "may import" column ("nothing": none)."""
    section = text.split(PLAN_HEADING, 1)[1].split("\n## ", 1)[0]
    rows: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        allowed = cells[2]
        rows[_row_name(cells[0])] = (
            set() if allowed == "nothing" else {_row_name(part) for part in allowed.split(",")}
        )
    return rows


def test_the_graph_reader_sees_relative_imports_and_submodules(tmp_path: Path) -> None:
    package = tmp_path / "hone"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from hone.sub import leaf\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "leaf.py").write_text("from .. import other\n")
    (package / "other.py").write_text("def f():\n    import hone.sub.leaf\n")
    (package / "typed.py").write_text(
        "from typing import TYPE_CHECKING\nfrom hone.sub import leaf, name\n"
        "if TYPE_CHECKING:\n    from hone import other\n"
    )
    graph = build_graph(package)
    assert graph.arrows == {
        ("hone", "hone.sub.leaf"),
        ("hone.sub.leaf", "hone.other"),
        ("hone.other", "hone.sub.leaf"),
        ("hone.typed", "hone.sub.leaf"),
        ("hone.typed", "hone.sub"),
        ("hone.typed", "hone.other"),
    }
    assert graph.runtime_arrows == graph.arrows - {("hone.typed", "hone.other")}
    assert find_cycles(graph) == [["hone.other", "hone.sub.leaf"]]


def test_src_hone_has_no_import_cycle() -> None:
    graph = build_graph()
    assert len(graph.modules) > 50, "the reader found too few modules: is SOURCE right?"
    cycles = find_cycles(graph)
    assert cycles == [], "import cycles in src/hone: " + "; ".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize(("importers", "imported"), FORBIDDEN, ids=lambda p: ",".join(p))
def test_no_module_imports_across_a_forbidden_arrow(
    importers: tuple[str, ...], imported: tuple[str, ...]
) -> None:
    graph = build_graph()
    bad = [(a, b) for a, b in forbidden_arrows(graph) if _under(a, importers) and _under(b, imported)]
    assert bad == [], "forbidden imports: " + ", ".join(f"{a} -> {b}" for a, b in bad)


def test_the_plan_reader_reads_rows_and_their_imports() -> None:
    text = (
        f"{PLAN_HEADING}\n\n| module | owns | may import |\n| --- | --- | --- |\n"
        "| `errors.py` | the tree | nothing |\n| `serve/` | servers | `errors`, `model` |\n"
        "| `__init__.py` (`hone`) | the API | `serve` |\n\n## Next\n| `x.py` | y | `z` |\n"
    )
    assert planned_imports(text) == {"errors": set(), "serve": {"errors", "model"}, "hone": {"serve"}}


def test_every_module_imports_only_what_docs_architecture_md_says() -> None:
    planned = planned_imports(PLAN.read_text(encoding="utf-8"))
    actual = unit_arrows(build_graph())
    missing_rows = sorted(set(actual) - set(planned))
    assert missing_rows == [], f"docs/architecture.md has no row for: {', '.join(missing_rows)}"
    stale_rows = sorted(set(planned) - set(actual))
    assert stale_rows == [], f"docs/architecture.md has rows for modules that are gone: {stale_rows}"
    unplanned = {
        name: sorted(actual[name] - planned[name]) for name in actual if actual[name] - planned[name]
    }
    assert unplanned == {}, (
        f"imports the plan does not allow (add them to its row, or remove them): {unplanned}"
    )
    unused = {name: sorted(planned[name] - actual[name]) for name in actual if planned[name] - actual[name]}
    assert unused == {}, f"the plan allows imports the code does not make (keep the table true): {unused}"


def test_types_modules_import_only_types_and_the_light_core() -> None:
    graph = build_graph()
    assert sum(is_types_module(m) for m in graph.modules) >= 3
    bad = heavy_type_imports(graph)
    assert bad == [], "types modules importing more than types: " + ", ".join(f"{a} -> {b}" for a, b in bad)


if __name__ == "__main__":
    graph = build_graph()
    cycles = find_cycles(graph)
    print(
        f"{len(graph.modules)} modules, {len(graph.arrows)} arrows "
        f"({len(graph.runtime_arrows)} that run, the rest for the type checker), {len(cycles)} cycles"
    )
    for cycle in cycles:
        print("cycle:", " <-> ".join(cycle))
    for a, b in forbidden_arrows(graph):
        print("forbidden:", a, "->", b)
    for a, b in heavy_type_imports(graph):
        print("heavy types import:", a, "->", b)
    for name, imports in sorted(unit_arrows(graph).items()):
        print(f"{name}: {', '.join(sorted(imports)) or 'nothing'}")
    if "-v" in sys.argv:
        for a, b in sorted(graph.arrows):
            print(f"{a} -> {b}")
