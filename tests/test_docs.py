"""The docs are executed: every Python example in docs/ runs here, and the site builds.

Contributor note -- how a page's code blocks are run
-----------------------------------------------------
* A page's ```python blocks run top to bottom in one namespace per page (a fresh
  one for each page), with the working directory set to a scratch copy of docs/,
  so a block that saves ``figures/name.png`` writes next to the page's sources.
* A ```python block followed (only blank lines between) by a ```text block must
  print exactly that text; trailing spaces and trailing blank lines are ignored,
  nothing else is. A python block with no ```text block after it may print anything;
  a ```text block after anything else (say, the output of a long shell command
  that is shown but not run) is illustration and is not checked.
* ```bash (and other non-python) blocks are shown, not run -- except a bash block
  right after the marker ``<!-- docs-test: run -->``, which runs in the same
  scratch directory and must exit 0 (keep such commands cheap).
* A block that needs something this machine may not have carries a marker on the
  line just above its fence: ``<!-- docs-test: needs backend=cpu -->`` (or
  ``backend=cuda``, ``backend=cuda-emu``). If that backend cannot be loaded, the
  block is not run; the rest of the page still runs and must pass, and the
  page's test then ends as *skipped* with a reason naming the blocks that did
  not run and how to make them run (never silently).
* Pages run in well under a minute each: examples use tiny configurations.

``test_site_builds`` runs ``mkdocs build --strict`` on the same scratch copy of
docs/ (with the figures the examples just made) into a temporary directory: a
broken link, a missing nav page or a bad API reference fails the suite.

Figures: pages save their figures under ``figures/`` in the scratch copy, and the
site is built with those fresh files. The committed PNGs in docs/figures/ (what a
plain ``mkdocs build`` shows) are refreshed from a run with
``SONIQ_DOCS_UPDATE_FIGURES=1 python -m pytest tests/test_docs.py``. Two figures
come from a full training run instead (digits-bits.png, digits-curves.png: the
``bits.png`` and ``curves.png`` of ``soniq train --out runs/digits``).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
MARKER = re.compile(r"^<!--\s*docs-test:\s*(.+?)\s*-->$")
FENCE = re.compile(r"^```\s*([\w+-]*)(.*)$")


@dataclass
class Block:
    """One fenced code block of a page."""

    lang: str
    source: str
    line: int                     # 1-based line of the opening fence
    end: int = 0                  # 1-based line of the closing fence
    marker: str | None = None     # text of a docs-test marker just above the fence
    expected: str | None = None   # the ```text block that follows, if any


@dataclass
class PageRun:
    """What happened when a page ran."""

    ran: int = 0
    skipped: list = field(default_factory=list)   # (line, reason)


def parse_blocks(text: str) -> list[Block]:
    """Top-level fenced blocks, each with its marker and its expected output."""
    blocks, lines, i, previous = [], text.splitlines(), 0, ""
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            if lines[i].strip():
                previous = lines[i].strip()
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1
        marker = MARKER.match(previous)
        block = Block(match.group(1).lower(), "\n".join(body) + "\n", start + 1, i,
                      marker.group(1) if marker else None)
        if block.lang == "text" and blocks and blocks[-1].lang == "python" \
                and not any(line.strip() for line in lines[blocks[-1].end:start]):
            blocks[-1].expected = block.source
        blocks.append(block)
        previous = ""
    return blocks


def normalise(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


def missing_requirement(marker: str | None) -> str | None:
    """None if the block can run here, else the reason and what would run it."""
    if marker is None or marker == "run":
        return None
    match = re.fullmatch(r"needs backend=([\w-]+)", marker)
    if not match:
        raise ValueError(f"unknown docs-test marker {marker!r}")
    from soniq_ref import get_backend
    try:
        get_backend(match.group(1))
    except RuntimeError as exc:
        return str(exc)
    return None


def run_python(block: Block, namespace: dict, page: str) -> str:
    out = io.StringIO()
    code = compile(block.source, f"docs/{page}:{block.line}", "exec")
    with contextlib.redirect_stdout(out):
        exec(code, namespace)
    return out.getvalue()


def run_bash(block: Block, cwd: Path, page: str) -> None:
    # Console scripts (``soniq``) sit next to the interpreter running the tests,
    # which need not be on PATH (a virtual environment that is not activated).
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.source], cwd=cwd,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PATH": path})
    assert done.returncode == 0, (f"docs/{page}:{block.line}: bash block failed "
                                  f"({done.returncode})\n{done.stdout}\n{done.stderr}")


def run_page(page: str, cwd: Path) -> PageRun:
    """Run every runnable block of ``page`` with ``cwd`` as working directory."""
    result, namespace = PageRun(), {"__name__": f"docs_{Path(page).stem}"}
    for block in parse_blocks((DOCS / page).read_text(encoding="utf-8")):
        runnable = block.lang == "python" or (block.lang == "bash" and block.marker == "run")
        if not runnable:
            continue
        reason = missing_requirement(block.marker)
        if reason:
            result.skipped.append((block.line, reason))
            continue
        if block.lang == "bash":
            run_bash(block, cwd, page)
        else:
            printed = run_python(block, namespace, page)
            if block.expected is not None:
                assert normalise(printed) == normalise(block.expected), (
                    f"docs/{page}:{block.line}: printed output differs from the page\n"
                    f"--- page shows ---\n{block.expected}--- code printed ---\n{printed}")
        result.ran += 1
    return result


@pytest.fixture(scope="session")
def scratch_docs(tmp_path_factory) -> Path:
    """A copy of docs/ to run the pages in (figures are written there)."""
    target = tmp_path_factory.mktemp("docs_run") / "docs"
    shutil.copytree(DOCS, target)
    return target


@pytest.fixture(autouse=True)
def _headless_plots(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")


@pytest.mark.parametrize("page", PAGES)
def test_page_examples(page, scratch_docs, monkeypatch):
    monkeypatch.chdir(scratch_docs)
    monkeypatch.syspath_prepend(str(scratch_docs))
    result = run_page(page, scratch_docs)
    if os.environ.get("SONIQ_DOCS_UPDATE_FIGURES") == "1":
        _copy_figures(scratch_docs / "figures", DOCS / "figures")
    if result.skipped:
        where = "; ".join(f"line {line}: {reason}" for line, reason in result.skipped)
        pytest.skip(f"docs/{page}: {result.ran} blocks ran and passed, "
                    f"{len(result.skipped)} skipped for a backend not available here -- {where}")


def _copy_figures(source: Path, target: Path) -> None:
    """Copy every PNG of ``source`` into ``target`` (temp file + rename each)."""
    for png in sorted(source.glob("*.png")):
        tmp = target / f".{png.name}.tmp"
        shutil.copyfile(png, tmp)
        os.replace(tmp, target / png.name)


def test_parser_pairs_code_with_output():
    text = ("x\n\n```python\nprint(1)\n```\n\n```text\n1\n```\n"
            "<!-- docs-test: needs backend=cpu -->\n```python\npass\n```\n")
    blocks = parse_blocks(text)
    assert [b.lang for b in blocks] == ["python", "text", "python"]
    assert blocks[0].expected == "1\n" and blocks[0].line == 3
    assert blocks[2].marker == "needs backend=cpu" and blocks[2].expected is None


def test_a_broken_example_fails(tmp_path, monkeypatch):
    """The checker is not a no-op: wrong shown output is an error."""
    page = tmp_path / "broken.md"
    page.write_text("```python\nprint(2 + 2)\n```\n\n```text\n5\n```\n")
    monkeypatch.setattr(sys.modules[__name__], "DOCS", tmp_path)
    with pytest.raises(AssertionError, match="printed output differs"):
        run_page("broken.md", tmp_path)


def build_site(docs_dir: Path, out: Path, nav=None) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` with the project's mkdocs.yml, on ``docs_dir``."""
    pytest.importorskip("mkdocs", reason="mkdocs is not installed: pip install -e '.[test]'")
    pytest.importorskip("mkdocstrings", reason="mkdocstrings is not installed: "
                                               "pip install -e '.[test]'")
    import yaml   # comes with mkdocs

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    config["docs_dir"] = str(docs_dir)
    if nav is not None:
        config["nav"] = nav
    for plugin in config.get("plugins", []):
        if isinstance(plugin, dict) and "mkdocstrings" in plugin:
            plugin["mkdocstrings"]["handlers"]["python"]["paths"] = [str(ROOT)]
    config_file = out / "mkdocs.yml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    # No -q: it would hide the warnings that --strict turns into a failure.
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                           "-f", str(config_file), "-d", str(out / "site")],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


def test_site_builds(scratch_docs, tmp_path):
    """``mkdocs build --strict`` on docs/ (after the examples ran) succeeds."""
    done = build_site(scratch_docs, tmp_path)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    assert (tmp_path / "site" / "index.html").exists()


def test_strict_build_refuses_a_broken_link(tmp_path):
    """The build really is strict: a link to a missing page fails it."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\nSee [the missing page](missing.md).\n")
    done = build_site(docs, tmp_path, nav=[{"Home": "index.md"}])
    assert done.returncode != 0
    assert "missing.md" in done.stdout + done.stderr
