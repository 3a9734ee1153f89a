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
4. The built site reads offline: no page or stylesheet loads a script, stylesheet, font, image
   or frame from outside the site, no script holds an outside URL beyond the theme's known ones
   and no page triggers those (the repository widget's API calls among them), every internal
   link and anchor resolves, and every formula was rendered to MathML at build time
   (``scripts/mathml_hook.py``): no TeX is left in a page.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import posixpath
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

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


# Words about how the project is made rather than about the software (the measurement pages and
# the benchmark scripts state machine, date, commit, command and result, or "not yet measured").
_DEVELOPMENT_TALK = re.compile(
    r"\b(issues?|sessions?|pending|we could(?: not)?|earlier code|earlier version)\b", re.IGNORECASE
)


@pytest.mark.parametrize(
    "path",
    [
        DOCS / "benchmarks.md",
        DOCS / "trainer" / "index.md",
        *sorted((ROOT / "benchmarks").glob("*.py")),
        *sorted((ROOT / "benchmarks").glob("*.sh")),
    ],
    ids=lambda p: p.relative_to(ROOT).as_posix(),
)
def test_measurement_pages_speak_about_the_software(path: Path) -> None:
    text = path.read_text(encoding="utf-8").replace('scope="session"', "")  # pytest's term
    found = [m.group() for m in _DEVELOPMENT_TALK.finditer(text)]
    assert not found, f"{path.relative_to(ROOT)}: {found}"


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


# --------------------------------------------------------------------------------------------
# 4. The built site reads offline
# --------------------------------------------------------------------------------------------

# Attributes through which a tag makes the browser fetch something when the page loads.
_LOADS = {
    "script": ("src",),
    "img": ("src", "srcset"),
    "source": ("src", "srcset"),
    "iframe": ("src",),
    "frame": ("src",),
    "embed": ("src",),
    "object": ("data",),
    "video": ("src", "poster"),
    "audio": ("src",),
    "track": ("src",),
    "input": ("src",),
}
# <link rel=...> values that fetch their href (rel="canonical", "next", ... only name a page).
_LINK_LOADS = {
    "stylesheet",
    "icon",
    "apple-touch-icon",
    "mask-icon",
    "manifest",
    "preload",
    "prefetch",
    "modulepreload",
    "preconnect",
    "dns-prefetch",
}
_CSS_URL = re.compile(
    r"""url\(\s*(['"]?)(?P<url>[^'")]*)\1\s*\)|@import\s+(['"])(?P<imp>[^'"]*)\3"""
)
# Text that is TeX rather than prose: delimiters, or a command such as \frac or \tau.
_TEX = re.compile(
    r"\\[()\[\]]|\$\$|\\[A-Za-z]{2,}|(?<![\w$])\$(?=[^\s$])[^$\n]{1,200}(?<=[^\s$])\$(?!\w)"
)
_NOT_PROSE = {"code", "pre", "script", "style", "textarea", "kbd", "samp"}


@dataclass
class ScannedPage:
    """What one built HTML page loads, links to, defines and says."""

    loads: list[tuple[str, str]] = field(default_factory=list)  # (what, url)
    links: list[str] = field(default_factory=list)  # <a href>
    ids: set[str] = field(default_factory=set)
    text: list[str] = field(default_factory=list)  # prose, outside code and math
    math: list[str] = field(default_factory=list)  # the text inside each <math>
    math_errors: int = 0
    arithmatex: int = 0  # elements marked for rendering that were left as they are


class _Scanner(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = ScannedPage()
        self._skip = 0  # depth inside code, pre, script, style
        self._math = 0  # depth inside <math>
        self._style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.page.ids.add(a["id"])
        if tag == "a" and "name" in a:
            self.page.ids.add(a["name"])
        if "arithmatex" in a.get("class", "").split():
            self.page.arithmatex += 1
        for attr in _LOADS.get(tag, ()):
            if not a.get(attr):
                continue
            # srcset: "url 2x, url 3x"; every other attribute holds one URL
            urls = [u.split()[0] for u in a[attr].split(",") if u.strip()]
            self.page.loads += [
                (f"<{tag} {attr}>", u) for u in (urls if attr == "srcset" else [a[attr]])
            ]
        if tag == "link" and _LINK_LOADS & set(a.get("rel", "").lower().split()):
            self.page.loads.append((f"<link rel={a['rel']}>", a.get("href", "")))
        if tag == "a" and a.get("href"):
            self.page.links.append(a["href"])
        if a.get("style"):
            self.page.loads += [("style attribute", u) for u in css_urls(a["style"])]
        if tag == "math":
            self._math += 1
            self.page.math.append("")
        if tag == "merror":
            self.page.math_errors += 1
        if tag in _NOT_PROSE:
            self._skip += 1
        self._style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        if tag in _NOT_PROSE:
            self._skip = max(0, self._skip - 1)
        if tag == "math":
            self._math = max(0, self._math - 1)
        self._style = False

    def handle_data(self, data: str) -> None:
        if self._style:
            self.page.loads += [("<style>", u) for u in css_urls(data)]
        if self._math:
            self.page.math[-1] += data
        elif not self._skip:
            self.page.text.append(data)


def scan_page(html: str) -> ScannedPage:
    scanner = _Scanner()
    scanner.feed(html)
    scanner.close()
    return scanner.page


def css_urls(css: str) -> list[str]:
    """The URLs a piece of CSS fetches: ``url(...)`` and ``@import``."""
    return [m["url"] if m["url"] is not None else m["imp"] for m in _CSS_URL.finditer(css)]


def is_external(url: str) -> bool:
    """Whether fetching the URL leaves the site (``data:`` URLs are part of the page)."""
    parts = urlsplit(url)
    return bool(parts.netloc) or parts.scheme not in ("", "data")


def _site_pages(site: Path) -> dict[str, ScannedPage]:
    return {
        path.relative_to(site).as_posix(): scan_page(path.read_text("utf-8"))
        for path in sorted(site.rglob("*.html"))
    }


def _resolve(site: Path, page: str, url: str, base_path: str) -> tuple[str | None, str]:
    """The site file a local URL of ``page`` points at (None if missing), and its fragment."""
    parts = urlsplit(url)
    path = unquote(parts.path)
    if path.startswith("/"):  # root-relative (the 404 page): under site_url's path
        target = posixpath.normpath(path[len(base_path) :] if path.startswith(base_path) else path)
    elif path:
        target = posixpath.normpath(posixpath.join(posixpath.dirname(page), path))
    else:
        target = page
    target = target.lstrip("/")
    for candidate in (target, posixpath.join(target, "index.html")):
        if candidate not in ("", ".") and (site / candidate).is_file():
            return candidate, parts.fragment
    if target in ("", "."):
        return "index.html", parts.fragment
    return None, parts.fragment


def _base_path() -> str:
    return urlsplit(_config().get("site_url") or "/").path.rstrip("/") + "/"


def find_offline_problems(site: Path) -> list[str]:
    """Everything on the built site that a reader without a network would miss."""
    problems = []
    for page, scanned in _site_pages(site).items():
        problems += [
            f"{page}: {what} loads {url}" for what, url in scanned.loads if is_external(url)
        ]
    for css in sorted(site.rglob("*.css")):
        for url in css_urls(css.read_text("utf-8")):
            if is_external(url):
                problems.append(f"{css.relative_to(site).as_posix()}: url({url})")
    return problems


def find_broken_links(site: Path) -> list[str]:
    """Internal links, anchors and loaded files that do not exist on the built site."""
    pages = _site_pages(site)
    base = _base_path()
    problems = []
    for page, scanned in pages.items():
        local_loads = [url for _, url in scanned.loads if not is_external(url)]
        for url in local_loads + scanned.links:
            if is_external(url) or url.startswith("data:"):
                continue
            target, fragment = _resolve(site, page, url, base)
            if target is None:
                problems.append(f"{page}: {url} points at no file")
            elif fragment and target.endswith(".html") and fragment not in pages[target].ids:
                problems.append(f"{page}: {url}: no id {fragment!r} in {target}")
    return problems


def find_unrendered_math(site: Path) -> list[str]:
    """TeX left in the built pages: marked formulas, delimiters or commands in the prose."""
    problems = []
    for page, scanned in _site_pages(site).items():
        if scanned.arithmatex:
            problems.append(f"{page}: {scanned.arithmatex} formulas left for a script to render")
        if scanned.math_errors:
            problems.append(f"{page}: {scanned.math_errors} <merror> elements")
        problems += [f"{page}: TeX inside <math>: {m!r}" for m in scanned.math if "\\" in m]
        prose = " ".join(scanned.text)
        problems += [f"{page}: TeX in the text: {m.group()!r}" for m in _TEX.finditer(prose)]
    return problems


def test_site_checks_catch_what_they_look_for(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "index.html").write_text(
        '<p id="here">$x$ and \\(y\\)</p><a href="../b.html#nowhere">b</a><a href="#here">.</a>'
        '<a href="https://example.org/">fine: a link, not a load</a><code>\\tau, $HOME$</code>'
        '<script src="https://cdn.example/x.js"></script><img src="//cdn.example/i.png">'
        '<span class="arithmatex">\\(z\\)</span><img src="missing.png">'
        '<img src="data:image/png;base64,AAAA"><math><mi>\\foo</mi></math>',
        encoding="utf-8",
    )
    (tmp_path / "b.html").write_text('<h1 id="top">b</h1>', encoding="utf-8")
    (tmp_path / "s.css").write_text(
        '@font-face{src:url("https://fonts.example/f.woff2")} a{background:url(data:x)}',
        encoding="utf-8",
    )
    assert find_offline_problems(tmp_path) == [
        "a/index.html: <script src> loads https://cdn.example/x.js",
        "a/index.html: <img src> loads //cdn.example/i.png",
        "s.css: url(https://fonts.example/f.woff2)",
    ]
    assert find_broken_links(tmp_path) == [
        "a/index.html: missing.png points at no file",
        "a/index.html: ../b.html#nowhere: no id 'nowhere' in b.html",
    ]
    unrendered = find_unrendered_math(tmp_path)
    assert unrendered[0] == "a/index.html: 1 formulas left for a script to render"
    assert unrendered[1] == "a/index.html: TeX inside <math>: '\\\\foo'"
    assert {p.split(": ", 2)[2] for p in unrendered[2:]} == {"'$x$'", "'\\\\('", "'\\\\)'"}


def _mathml_hook() -> Any:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        return importlib.import_module("mathml_hook")
    finally:
        sys.path.remove(str(ROOT / "scripts"))


def test_math_hook_renders_formulas_and_refuses_what_it_cannot() -> None:
    hook = _mathml_hook()
    page = (
        '<p>cost <span class="arithmatex">\\(a \\sim U(0, 1)\\)</span></p>\n'
        '<div class="arithmatex">\\[\\sum_{j=1}^{K} e^{s_j/\\tau}\\]</div>'
    )
    html = hook.render_math(page, "page.md")
    assert "arithmatex" not in html and "\\" not in html
    assert '<math xmlns="http://www.w3.org/1998/Math/MathML" display="inline">' in html
    assert "<mo>&#x0223C;</mo>" in html  # \sim as a relation, not a tilde identifier
    assert '<div class="math-display"><math' in html and 'display="block"' in html
    assert "<munderover><mo>&#x02211;</mo>" in html  # display: limits below and above
    with pytest.raises(hook.MathError, match="left in the MathML"):
        hook.tex_to_mathml("\\unknowncommand x", display=False)
    with pytest.raises(hook.MathError):
        hook.tex_to_mathml("\\operatorname*{top-N}_n", display=True)


# Every outside URL that the theme's shipped JavaScript holds outside its comments, with what a
# built page must contain for the script to fetch it (None: no page content makes it fetch).
# find_script_fetches fails on any other outside URL in a script, and on any page containing
# one of these triggers: the site then reads offline, and asks no API anything.
THEME_SCRIPT_URLS: dict[str, str | None] = {
    # the repository widget (mkdocs.yml's repo_url): stars, forks and latest release
    "https://api.github.com/": 'data-md-component="source"',
    "https://${e}/api/v4/projects/": 'data-md-component="source"',  # the same for GitLab
    # diagrams: the theme loads mermaid when a page holds one
    "https://unpkg.com/mermaid": 'class="mermaid"',
    # a polyfill loaded only by browsers without ResizeObserver (before 2020); no page content
    "https://unpkg.com/resize-observer-polyfill": None,
    # the search worker's message for an invalid query (console.warn), never fetched
    "https://bit.ly/2s3ChXG": None,
}
_JS_BLOCK_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)
_JS_LINE_COMMENT = re.compile(r"(?m)(^|[\s;{}(),])//[^\n]*")
_JS_URL = re.compile(r"""https?://[^\s"'`)<>,\\]+""")


def script_urls(js: str) -> set[str]:
    """The outside URLs a script holds in its code (its comments, licences among them, left out)."""
    code = _JS_LINE_COMMENT.sub(r"\1", _JS_BLOCK_COMMENT.sub("", js))
    return set(_JS_URL.findall(code))


def find_script_fetches(site: Path) -> list[str]:
    """Outside URLs in the site's scripts that are not known theme URLs, and pages that make a
    known theme URL fetch (see THEME_SCRIPT_URLS)."""
    problems = []
    for js in sorted(site.rglob("*.js")):
        for url in sorted(script_urls(js.read_text("utf-8", errors="replace"))):
            if not any(url.startswith(known) for known in THEME_SCRIPT_URLS):
                problems.append(f"{js.relative_to(site).as_posix()}: {url}")
    triggers = {t for t in THEME_SCRIPT_URLS.values() if t is not None}
    for page in sorted(site.rglob("*.html")):
        html = page.read_text("utf-8")
        problems += [
            f"{page.relative_to(site).as_posix()}: {t} makes the theme fetch from outside"
            for t in sorted(triggers)
            if t in html
        ]
    return problems


def test_script_checks_catch_what_they_look_for(tmp_path: Path) -> None:
    (tmp_path / "a.js").write_text(
        "/*! lib | https://licence.example/ */ // https://comment.example/\n"
        'let x=fetch("https://api.example.org/v1/stars");'
        "let y=`https://api.github.com/repos/${e}/${t}`;",
        encoding="utf-8",
    )
    (tmp_path / "index.html").write_text(
        '<div data-md-component="source"></div><a href="https://github.com/x">x</a>',
        encoding="utf-8",
    )
    assert find_script_fetches(tmp_path) == [
        "a.js: https://api.example.org/v1/stars",
        'index.html: data-md-component="source" makes the theme fetch from outside',
    ]


@pytest.mark.slow
def test_site_loads_nothing_from_outside(site: Path) -> None:
    problems = find_offline_problems(site) + find_script_fetches(site)
    assert not problems, "\n".join(problems)
    home = scan_page((site / "index.html").read_text("utf-8"))
    assert "https://github.com/syn2co/syn2co" in home.links, "the link to the repository"


@pytest.mark.slow
def test_site_links_and_anchors_resolve(site: Path) -> None:
    problems = find_broken_links(site)
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_site_math_is_rendered(site: Path) -> None:
    problems = find_unrendered_math(site)
    assert not problems, "\n".join(problems[:30])
    concepts = scan_page((site / "concepts" / "index.html").read_text("utf-8"))
    assert len(concepts.math) > 50, "the concepts page lost its formulas"


@pytest.mark.slow
def test_cli_reference_lists_whole_summaries(site: Path) -> None:
    pytest.importorskip("typer")
    from typer.main import get_command

    from reference_trainer.cli import app

    page = " ".join((site / "trainer" / "cli" / "index.html").read_text("utf-8").split())
    command = get_command(app)
    for name, sub in command.commands.items():  # type: ignore[attr-defined]
        summary = " ".join((sub.help or "").split("\n\n")[0].split(". ")[0].split()).rstrip(".")
        assert f"<li><code>{name}</code>: {summary}" in unescape(page), name
