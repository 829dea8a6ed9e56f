"""soniq_ref is the specification: importing it needs no compiler and loads nothing compiled
of the project, and nothing from soniq_fast (docs/index.md)."""

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_import_loads_no_fast_backend_and_no_extension():
    code = ("import sys, soniq_ref, soniq_ref.train, soniq_ref.deploy, soniq_ref.cli\n"
            "bad = [m for m in sys.modules if m.startswith('soniq_fast')]\n"
            "ext = [m for m, mod in sys.modules.items() if m.startswith('soniq')\n"
            "       and str(getattr(mod, '__file__', '') or '').endswith(('.so', '.pyd'))]\n"
            "print(bad, ext)\n"
            "sys.exit(1 if bad or ext else 0)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_source_file_of_the_reference_imports_soniq_fast():
    for path in (ROOT / "soniq_ref").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.startswith("soniq_fast") for n in names), path


def test_fast_backends_use_only_the_references_public_names():
    # a backend builds on the reference's public functions; a private one may change
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    private = []
    for path in sorted((root / "soniq_fast").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("soniq_ref"):
                private += [f"{path.relative_to(root)}: {node.module}.{a.name}"
                            for a in node.names if a.name.startswith("_")]
    assert not private, private
