"""Imports between mole_inference packages follow DESIGN.md's directions: no package circles, export never
imports runtime (runtime -> export: backends read exported stages). Function-level (lazy) imports count too."""

import ast
import itertools
from collections import defaultdict
from pathlib import Path

import mole_inference

LIB = Path(mole_inference.__file__).parent


def package_of(path: Path) -> str:
    parts = path.relative_to(LIB).parts
    return parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")


def package_imports() -> dict[str, dict[str, set[str]]]:
    """package -> imported package -> files making that import (every import statement, lazy ones included)."""
    graph: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in LIB.rglob("*.py"):
        src = package_of(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] == "mole_inference" and len(parts) > 1 and parts[1] != src:
                    graph[src][parts[1]].add(str(path.relative_to(LIB)))
    return graph


def find_cycle(graph: dict[str, dict[str, set[str]]]) -> list[str] | None:
    """One cycle of packages (first node repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_packages_import_without_circles():
    graph = package_imports()
    cycle = find_cycle(graph)
    if cycle:
        hops = [f"{a} -> {b} ({', '.join(sorted(graph[a][b]))})" for a, b in itertools.pairwise(cycle)]
        raise AssertionError("import circle between mole_inference packages:\n  " + "\n  ".join(hops))


def test_export_never_imports_runtime():
    assert "runtime" not in package_imports()["export"], package_imports()["export"]["runtime"]


def test_runtime_reads_export_but_not_the_reverse():
    graph = package_imports()
    assert "export" in graph["runtime"]  # backends read exported stages (the allowed direction)
    for low in ("config", "model", "policy"):
        assert not {"export", "runtime"} & set(graph[low]), f"{low} imports {sorted(graph[low])}"


def test_the_detector_finds_the_old_circle():
    """export/quantize -> runtime/onnx_backend -> export/pipeline, as it was before onnx_run."""
    old = {"export": {"runtime": {"export/quantize.py"}}, "runtime": {"export": {"runtime/onnx_backend.py"}}}
    assert find_cycle(old) == ["export", "runtime", "export"]
