"""The documentation: its examples run, and the site builds offline without a warning.

1. Every fenced ``python`` block of ``docs/**/*.md`` is executed: the blocks of one page run in
   order in one namespace (later blocks use what earlier ones defined), in a temporary working
   directory. Tracebacks point at the page and its line numbers. A block that must not run
   opts out with the brace form of the fence header, ```` ```{ .python .no-run } ````, or an
   HTML comment ``<!-- no-run -->`` on the line above the fence. Docstring examples are run by
   ``pytest --doctest-modules syn2co`` instead.
2. ``mkdocs build --strict`` succeeds (any warning fails it: broken links, unknown anchors,
   missing nav pages, griffe warnings about docstrings), every nav entry produced its page, and
   every API page documents each name of its module's ``__all__``.
3. Every public module of ``syn2co`` has an API page, and ``scripts/make_figures.py`` still
   draws the figures the pages embed.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

import syn2co

yaml: Any = importlib.import_module("yaml")  # PyYAML comes with mkdocs (typed as Any: no stubs)

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MKDOCS_YML = ROOT / "mkdocs.yml"

# An opening fence: indentation, three or more backticks or tildes, then the info string.
_FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`]*?)[ \t]*$")
_NO_RUN_COMMENT = re.compile(r"^\s*<!--\s*no-run\s*-->\s*$")
_PYTHON = {"python", "py", "python3"}


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the first code line
    code: str
    run: bool


def _language(info: str) -> tuple[str, set[str]]:
    """The fence's language and classes: ``python title="x"`` or ``{ .python .no-run }``."""
    info = info.strip()
    if info.startswith("{") and info.endswith("}"):
        classes = re.findall(r"\.([\w-]+)", info)
        return (classes[0] if classes else ""), set(classes[1:])
    return (info.split()[0] if info else ""), set()


def extract_blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page whose language is Python, in order."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE_OPEN.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence = match["indent"], match["fence"]
        language, classes = _language(match["info"])
        close = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            line = lines[j]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            j += 1
        if j == len(lines):
            raise AssertionError(f"{page}:{i + 1}: unclosed code fence")
        if language in _PYTHON:
            previous = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
            run = "no-run" not in classes and not _NO_RUN_COMMENT.match(previous)
            blocks.append(Block(page, i + 2, "\n".join(body) + "\n", run))
        i = j + 1
    return blocks


def _pages() -> list[Path]:
    """The site's pages, and the README (its MoCo example must run too)."""
    return [*sorted(DOCS.rglob("*.md")), ROOT / "README.md"]


def _pages_with_code() -> list[Path]:
    return [page for page in _pages() if any(b.run for b in extract_blocks(page))]


def _page_id(page: Path) -> str:
    return page.relative_to(DOCS).as_posix() if page.is_relative_to(DOCS) else page.name


# --------------------------------------------------------------------------------------------
# 1. The examples run
# --------------------------------------------------------------------------------------------


def test_fence_parser_handles_info_strings_and_opt_outs(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        '# t\n\n```python\na = 1\n```\n\n```python title="x.py"\nb = a + 1\n```\n\n'
        "```bash\nexit 1\n```\n\n<!-- no-run -->\n```python\nraise SystemExit\n```\n\n"
        "```{ .python .no-run }\nraise SystemExit\n```\n\n"
        "!!! note\n    ```python\n    c = b + 1\n    ```\n\n~~~~py\nd = c\n~~~~\n",
        encoding="utf-8",
    )
    blocks = extract_blocks(page)
    assert [b.code for b in blocks if b.run] == ["a = 1\n", "b = a + 1\n", "c = b + 1\n", "d = c\n"]
    assert [b.run for b in blocks] == [True, True, False, False, True, True]
    assert blocks[0].line == 4


def test_the_guides_have_examples() -> None:
    with_code = {_page_id(p) for p in _pages_with_code()}
    for page in ("index.md", "quickstart.md", "concepts.md"):
        assert page in with_code, f"docs/{page} lost its executable examples"


@pytest.mark.parametrize("page", _pages_with_code(), ids=_page_id)
def test_page_examples_run(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(page)])
    torch.manual_seed(0)
    namespace: dict[str, Any] = {"__name__": f"docs_example_{page.stem}"}
    for block in extract_blocks(page):
        if not block.run:
            continue
        # Pad with blank lines so that tracebacks report the line numbers of the Markdown file.
        source = "\n" * (block.line - 1) + block.code
        code = compile(source, str(page.relative_to(ROOT)), "exec")
        exec(code, namespace)  # running the documentation is the point
    capsys.readouterr()  # the examples print; keep the test output quiet


# --------------------------------------------------------------------------------------------
# 2. The site builds
# --------------------------------------------------------------------------------------------


# Reads mkdocs.yml, ignoring tags such as !ENV or !!python/name: (only the nav matters here).
_ConfigLoader: Any = type("_ConfigLoader", (yaml.SafeLoader,), {})
_ConfigLoader.add_multi_constructor("", lambda loader, suffix, node: None)


def _config() -> dict[str, Any]:
    with MKDOCS_YML.open(encoding="utf-8") as f:
        config: dict[str, Any] = yaml.load(f, Loader=_ConfigLoader)  # a SafeLoader subclass
    return config


def _nav_pages(nav: Any) -> Iterator[str]:
    """Every local Markdown page named in a mkdocs nav (external links are skipped)."""
    if isinstance(nav, str):
        if not re.match(r"^[a-z]+://", nav):
            yield nav
    elif isinstance(nav, list):
        for item in nav:
            yield from _nav_pages(item)
    elif isinstance(nav, dict):
        for value in nav.values():
            yield from _nav_pages(value)


def _html_path(site: Path, page: str, directory_urls: bool) -> Path:
    stem = page[: -len(".md")]
    if not directory_urls or stem == "index" or stem.endswith("/index"):
        return site / f"{stem}.html"
    return site / stem / "index.html"


def _api_pages() -> list[Path]:
    return sorted(p for p in (DOCS / "api").glob("*.md") if p.name != "index.md")


def _documented_modules(page: Path) -> list[str]:
    return re.findall(r"^:::\s*([\w.]+)", page.read_text(encoding="utf-8"), flags=re.MULTILINE)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{log}"
    warnings = [line for line in log.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert not warnings, "\n".join(warnings)
    return out


@pytest.mark.slow
def test_every_nav_entry_has_a_page(site: Path) -> None:
    config = _config()
    pages = list(_nav_pages(config["nav"]))
    assert "index.md" in pages and any(p.startswith("api/") for p in pages)
    directory_urls = config.get("use_directory_urls", True)
    missing = [p for p in pages if not _html_path(site, p, directory_urls).is_file()]
    assert not missing, f"nav entries without an HTML page: {missing}"


@pytest.mark.slow
@pytest.mark.parametrize("page", _api_pages(), ids=_page_id)
def test_api_page_documents_every_public_name(site: Path, page: Path) -> None:
    config = _config()
    rel = page.relative_to(DOCS).as_posix()
    assert rel in set(_nav_pages(config["nav"])), f"{rel} is not in the nav of mkdocs.yml"
    html = _html_path(site, rel, config.get("use_directory_urls", True)).read_text("utf-8")
    modules = _documented_modules(page)
    assert modules, f"{rel} has no ::: directive"
    for name in modules:
        module = importlib.import_module(name)
        public = list(getattr(module, "__all__", []))
        assert public, f"{name} has no __all__"
        missing = [n for n in public if f'id="{name}.{n}"' not in html]
        assert not missing, f"{rel}: no entry for {missing}"


# --------------------------------------------------------------------------------------------
# 3. Coverage of the package, figures
# --------------------------------------------------------------------------------------------


def test_every_public_module_has_an_api_page() -> None:
    public = {
        f"syn2co.{m.name}"
        for m in pkgutil.iter_modules(syn2co.__path__)
        if not m.name.startswith("_")
    }
    documented = {name for page in _api_pages() for name in _documented_modules(page)}
    assert public <= documented, f"modules without an API page: {sorted(public - documented)}"


def test_pages_embed_existing_figures() -> None:
    for page in _pages():
        for image in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if not re.match(r"^[a-z]+://", image):
                assert (page.parent / image).is_file(), f"{_page_id(page)}: missing {image}"


@pytest.mark.slow
def test_make_figures_draws_every_figure(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        make_figures = importlib.import_module("make_figures")
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    paths = make_figures.main(["--out-dir", str(tmp_path)])
    for path in paths:
        assert path.read_bytes().startswith(b"\x89PNG"), path
        assert (DOCS / "img" / path.name).is_file(), f"docs/img/{path.name} is not committed"
