"""The package layout stays a one-way street: no import cycles, and the report and the runner hold no
defense-specific code."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "sgt"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """Every sgt module imported anywhere in the file (function-level imports included). `from P import X`
    imports the submodule P.X when there is one, else a name defined in P (an edge to P itself)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found |= {f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m in modules and m != name}


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    return {name: imports(path, set(modules)) for name, path in modules.items()}


def test_no_import_cycles_between_modules():
    """Every import counts, function-level ones and those between a package and its own submodules included
    (a submodule that imports its package while the package imports it back is a cycle like any other)."""
    edges = graph()
    seen, stack, cycles = set(), [], []

    def visit(node):
        if node in stack:
            cycles.append(stack[stack.index(node):] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            visit(target)
        stack.pop()

    for module in sorted(edges):
        visit(module)
    assert not cycles, f"import cycles: {cycles[:3]}"


def test_runner_and_report_name_no_defense():
    # every file of the report and of the runner; the experiment schema's defaults may name defenses
    files = [*(SRC / "report").glob("*.py"), *(SRC / "experiment").glob("*.py")]
    for path in [f for f in files if f.name != "config.py"]:
        text = path.read_text()
        for kind in ('"sgt"', '"sft"', '"none"', "'sgt'", "'sft'"):
            assert kind not in text, f"{path.name} mentions the {kind} defense"


def test_no_source_file_is_over_400_lines():
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"split these files by job: {long}"


def test_the_readme_layout_names_every_module():
    """The README's layout (under Development) is the tree: every package and module of src/sgt is named."""
    import re

    readme = (SRC.parents[1] / "README.md").read_text()
    development = readme[readme.index("## Development"):]
    layout = development[development.index("src/sgt/"):development.index("configs/")]
    words = set(re.findall(r"[\w]+", layout))
    missing = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                     if p.stem != "__init__" and p.stem not in words)
    missing += sorted(f"{p.relative_to(SRC)}/" for p in SRC.rglob("*") if p.is_dir() and (p / "__init__.py").is_file()
                      and p.name not in words)
    assert not missing, f"add to the README's layout: {missing}"
