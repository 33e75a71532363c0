"""The package's shape (DESIGN.md, issue 12): layers kept, no import circles, training a leaf.

The import graph is grimp's (import-linter's graph library): every ``import`` statement in
the source, including those inside functions, which run sooner or later too.
"""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "napari_refocus"
MAX_LINES = 400


@pytest.fixture(scope="module")
def graph():
    grimp = pytest.importorskip("grimp")
    return grimp.build_graph("napari_refocus", cache_dir=None)


def import_cycles(graph) -> list[list[str]]:
    """Each set of modules that import one another in a circle, as one example circle."""
    modules = sorted(graph.modules)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in modules}
    # Tarjan's strongly connected components, iteratively (the graph may be deep)
    index, low, on_stack, stack, components = {}, {}, set(), [], []
    for root in modules:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges[node]:
                    components.append(sorted(component))
    cycles = []
    for component in components:
        first = component[0]
        # first -> a module of the circle that imports first back -> ... -> first
        back = next(m for m in component if first in edges[m])
        there = graph.find_shortest_chain(importer=first, imported=back) or (first,)
        cycles.append([*there, first])
    return cycles


def test_cycle_finder_finds_a_circle():
    grimp = pytest.importorskip("grimp")
    g = grimp.ImportGraph()
    for a, b in [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")]:
        g.add_import(importer=a, imported=b)
    assert import_cycles(g) == [["p.a", "p.b", "p.c", "p.a"]]


def test_no_import_cycles_between_modules(graph):
    cycles = import_cycles(graph)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_run_time_module_imports_training(graph):
    # only the CLI's `train` command (cli.commands, and the cli package that holds it) may reach training/
    importers = graph.find_downstream_modules("napari_refocus.training", as_package=True)
    bad = sorted(m for m in importers if m != "napari_refocus.cli" and not m.startswith("napari_refocus.cli."))
    chains = [
        " -> ".join(graph.find_shortest_chain(importer=m, imported="napari_refocus.training") or (m,))
        for m in bad
    ]
    assert not bad, "run-time modules that import training/:\n" + "\n".join(chains)


def test_no_module_imports_the_root_package(graph):
    # the root re-exports from io/ and core/: importing it from below would reach upward
    importers = sorted(graph.find_modules_that_directly_import("napari_refocus"))
    assert not importers, f"modules importing the public API package: {importers}"


def test_no_module_over_400_lines():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in sorted(PACKAGE.rglob("*.py"))
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_import_contracts_are_kept():
    pytest.importorskip("importlinter")
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint), "pyproject.toml", "--no-cache", "--no-logo"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
