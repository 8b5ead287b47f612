"""The house: the package's modules import each other one way (lazy imports inside functions count too), and each
is used by a stage script or another module, not only by tests or benchmarks."""

import ast

from tests.conftest import ROOT

PACKAGE = ROOT / "playlist_gen"
SCRIPTS = sorted(ROOT.glob("*.py"))


def imported_modules(path) -> set[str]:
    """The playlist_gen modules `path` imports, anywhere in the file."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                out |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
            elif node.module == "playlist_gen":
                out |= {a.name for a in node.names}
            elif node.module and node.module.startswith("playlist_gen."):
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("playlist_gen.")}
    return out


def test_the_package_has_no_import_cycle():
    graph = {p.stem: imported_modules(p) - {p.stem} for p in PACKAGE.glob("*.py")}
    done, path = set(), []

    def visit(module):
        assert module not in path, f"import cycle: {' -> '.join(path[path.index(module):] + [module])}"
        if module in done:
            return
        path.append(module)
        for dep in sorted(graph.get(module, ())):
            visit(dep)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_every_module_is_used_by_the_product():
    used = set().union(*(imported_modules(p) for p in [*SCRIPTS, *PACKAGE.glob("*.py")]))
    unused = {p.stem for p in PACKAGE.glob("*.py")} - used - {"__init__"}
    assert not unused, f"modules only tests or benchmarks use: {sorted(unused)}"
