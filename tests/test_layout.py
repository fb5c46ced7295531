"""The layout is the architecture: the core imports no tool, the tools import no command, and no
module imports another module's private names."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "framefusion"
CORE = ["algorithm", "methods", "adapters", "engine.py", "ledger.py", "masks.py", "probe.py", "generation.py",
        "report.py", "config.py", "registry.py", "cache_book.py", "outputs.py", "flops.py"]  # fmt: skip


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(absolute module, imported names) of every import in ``path``, relative ones resolved."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = parts[:-1] if path.name != "__init__.py" else parts[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            out.append((module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out.extend((a.name, []) for a in node.names)
    return out


def _files(*names: str) -> list[Path]:
    files = []
    for name in names:
        path = PACKAGE / name
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return files


def test_the_core_imports_no_tool_and_no_command():
    for path in _files(*CORE):
        for module, _ in _imports(path):
            assert not module.startswith(("framefusion.tools", "framefusion.commands", "framefusion.tiny_models")), (path, module)


def test_the_tools_import_no_command():
    for path in _files("tools"):
        for module, _ in _imports(path):
            assert not module.startswith("framefusion.commands"), (path, module)


def test_no_module_imports_another_modules_private_names():
    for path in _files(""):
        for module, names in _imports(path):
            if module.startswith("framefusion"):
                private = [n for n in names if n.startswith("_") and not n.startswith("__")]
                assert not private, (path, module, private)
