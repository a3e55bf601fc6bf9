"""The house: stages in pipeline order import only the stages below them, and no module imports itself back."""

import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def test_the_layers_contract_holds():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "2 kept, 0 broken" in proc.stdout


def test_the_package_top_holds_few_modules():
    top = sorted(p.name for p in (ROOT / "hwnas").glob("*.py"))
    assert len(top) <= 8, top
    stages = sorted(p.name for p in (ROOT / "hwnas").iterdir() if (p / "__init__.py").is_file())
    assert stages == ["cli", "core", "cost", "deploy", "devices", "foreign", "learn", "measure", "search", "spaces",
                      "tables"]


def _imports(tree) -> list:
    """Every hwnas import of a module, function-level ones included; those under ``if TYPE_CHECKING:`` are
    annotations only and never run."""
    import ast

    skip = {id(c) for n in ast.walk(tree) if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)
            for c in ast.walk(n)}
    out = []
    for n in ast.walk(tree):
        if id(n) in skip:
            continue
        if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("hwnas"):
            out += [(n.module, a.name) for a in n.names]
        elif isinstance(n, ast.Import):
            out += [(a.name, None) for a in n.names if a.name.startswith("hwnas")]
    return out


def test_no_module_imports_itself_back_even_inside_a_function():
    import ast

    import networkx as nx

    files = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
             for p in (ROOT / "hwnas").rglob("*.py")}

    def resolve(name: str) -> str:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name

    graph = nx.DiGraph()
    for mod, path in files.items():
        for module, name in _imports(ast.parse(path.read_text())):
            target = f"{module}.{name}" if f"{module}.{name}" in files else resolve(module)
            if target and target != mod:
                graph.add_edge(mod, target)
    assert graph.number_of_edges() > 200  # the graph was read
    assert list(nx.simple_cycles(graph)) == []
