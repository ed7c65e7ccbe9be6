"""The package has no import cycles, counting imports inside functions too, and the teaching
code never reaches the capture machinery."""

import ast
from pathlib import Path

import attnscope

PACKAGE = Path(attnscope.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """attnscope module -> the attnscope modules it imports (anywhere in its body)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from attnscope.a import b` imports the module attnscope.a.b if there is one
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                           else node.module for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def _reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_import_cycles():
    graph = _graph()
    cycles = sorted(name for name in graph if name in _reaches(graph, name))
    assert cycles == [], f"modules on an import cycle: {cycles}"


def test_teaching_code_does_not_reach_capture():
    graph = _graph()
    reached = _reaches(graph, "attnscope.scratch.attention")
    assert "attnscope.capture" not in reached
    assert "attnscope.adapters.hooks" not in reached


def test_results_do_not_import_their_figures():
    graph = _graph()
    for result in ("flow", "patterns", "layers", "norms", "embeddings"):
        assert "attnscope.analysis.figures" not in _reaches(graph, f"attnscope.analysis.{result}")
