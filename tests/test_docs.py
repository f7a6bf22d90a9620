"""The documentation points at things that exist: README.md, CHANGELOG.md and docs/*.md.

Checked without importing the package (so a test run stays quick and a module that fails to import
is reported by its own tests): every relative link reaches a file, and its ``#anchor`` a heading of
that file; every repository path a page names in backticks (``configs/...``, ``scripts/...``,
``tests/...``, ``docs/...``, ``torchreid_fgdi/...``) exists; every dotted name under
``torchreid_fgdi`` (in backticks, or imported in a code block) resolves to a module file and, past
the module, to a name that module defines or imports (CHANGELOG.md excepted: it names what was
moved, as it was). README.md stays a front door (under 300 lines), and no page states a test
count, which goes stale with the next test.
"""

from __future__ import annotations

import ast
import functools
import glob
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").glob("*.md")])
# The changelog records history: it names paths and modules as they were (old -> new).
CURRENT_PAGES = [page for page in PAGES if page.name != "CHANGELOG.md"]
README_MAX_LINES = 300

FENCE = re.compile(r"^(```|~~~)[^\n]*\n(.*?)^\1[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
# A repository path: one of the top-level folders, then path characters; <placeholders> and * globs allowed.
REPO_PATH = re.compile(r"(?<![\w./~$-])((?:configs|scripts|tests|docs|torchreid_fgdi)/[\w.*<>/-]*)")
DOTTED = re.compile(r"(?<![\w./])(torchreid_fgdi(?:\.\w+)+)")
# "412 tests", "1,204 tests", "3 passed"; not "rank 0 tests and saves" (a verb after a one-digit number).
TEST_COUNT = re.compile(
    r"\b(?:\d{2,}|\d{1,3}(?:,\d{3})+)\s+(?:tests|test cases)\b|\b\d[\d,]*\s+(?:passed|failed|skipped)\b", re.I
)


def _prose(text: str) -> str:
    """The page without its fenced code blocks."""
    return FENCE.sub("", text)


def _code_spans(text: str) -> list[str]:
    """Inline code spans of the prose, then the bodies of the fenced blocks."""
    return [m.group(2) for m in INLINE_CODE.finditer(_prose(text))] + [m.group(2) for m in FENCE.finditer(text)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: backticks and asterisks dropped, lower case, spaces to hyphens,
    other punctuation gone (underscores stay)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"[`*]", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@functools.cache
def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(_prose(path.read_text(encoding="utf-8"))):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def _page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_relative_links_reach_a_file_and_heading(page: Path) -> None:
    text = _prose(page.read_text(encoding="utf-8"))
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not broken, f"{_page_id(page)}: broken links:\n" + "\n".join(broken)


def _path_exists(name: str) -> bool:
    name = name.rstrip(".,;:")
    if "<" in name or "*" in name:
        pattern = re.sub(r"<[^>]*>", "*", name)
        return bool(glob.glob(str(ROOT / pattern)))
    return (ROOT / name).exists()


@pytest.mark.parametrize("page", CURRENT_PAGES, ids=_page_id)
def test_named_repository_paths_exist(page: Path) -> None:
    missing = sorted(
        {
            name
            for span in _code_spans(page.read_text(encoding="utf-8"))
            for name in REPO_PATH.findall(span)
            if not _path_exists(name)
        }
    )
    assert not missing, f"{_page_id(page)} names paths that do not exist: {missing}"


def _module_file(dotted: str) -> Path | None:
    base = ROOT.joinpath(*dotted.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def _top_level_names(path: Path) -> dict[str, ast.AST | None]:
    """Names a module defines or imports at its top level (a class maps to its node)."""
    names: dict[str, ast.AST | None] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ClassDef):
            names.setdefault(node.name, node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.setdefault(node.name, None)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names.setdefault((alias.asname or alias.name).split(".")[0], None)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                for leaf in ast.walk(target):
                    if isinstance(leaf, ast.Name):
                        names.setdefault(leaf.id, None)
    return names


def _class_names(node: ast.ClassDef) -> set[str]:
    """Methods, nested classes and class attributes of a class body."""
    names = set()
    for item in node.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(item.name)
        elif isinstance(item, ast.Assign):
            names.update(t.id for t in item.targets if isinstance(t, ast.Name))
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            names.add(item.target.id)
    return names


def resolves(dotted: str) -> bool:
    """`dotted` is a module of the package, or a module then a name it holds (then, for a class of
    that module, a name the class body holds)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module = _module_file(".".join(parts[:cut]))
        if module is None:
            continue
        rest = parts[cut:]
        if not rest:
            return True
        names = _top_level_names(module)
        if rest[0] not in names:
            return False
        node = names[rest[0]]
        if len(rest) > 1 and isinstance(node, ast.ClassDef):
            return rest[1] in _class_names(node)
        return True
    return False


def _dotted_names(text: str) -> set[str]:
    found = set()
    for span in _code_spans(text):
        found.update(DOTTED.findall(span))
        for line in span.splitlines():  # from torchreid_fgdi.x import A, B
            m = re.match(r"\s*from\s+(torchreid_fgdi(?:\.\w+)*)\s+import\s+\(?([\w\s,]+)\)?", line)
            if m:
                found.update(f"{m.group(1)}.{name.strip()}" for name in m.group(2).split(",") if name.strip())
    return {name.rstrip(".") for name in found}


@pytest.mark.parametrize("page", CURRENT_PAGES, ids=_page_id)
def test_named_modules_resolve(page: Path) -> None:
    missing = sorted(name for name in _dotted_names(page.read_text(encoding="utf-8")) if not resolves(name))
    assert not missing, f"{_page_id(page)} names modules or names that do not exist: {missing}"


def test_readme_is_a_front_door() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines < README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_no_test_count(page: Path) -> None:
    counts = TEST_COUNT.findall(page.read_text(encoding="utf-8"))
    assert not counts, f"{_page_id(page)} states a test count, which the next test makes wrong: {counts}"


def test_the_checker_reads_what_it_should() -> None:
    """The checker's own rules, on made-up text."""
    assert slug("Differences from the authors' code") == "differences-from-the-authors-code"
    assert slug("Using `fgdi` from torchreid: the recipe") == "using-fgdi-from-torchreid-the-recipe"
    text = "Run `bash scripts/test.sh tests/test_main.py -x`; see `configs/protocols/p2/<target>.yaml`.\n"
    assert REPO_PATH.findall(_code_spans(text)[0]) == ["scripts/test.sh", "tests/test_main.py"]
    assert _path_exists("configs/protocols/p2/<target>.yaml")
    assert not _path_exists("configs/protocols/p9.yaml")
    assert _dotted_names("```python\nfrom torchreid_fgdi.data import A, B\n```\n") == {
        "torchreid_fgdi.data",
        "torchreid_fgdi.data.A",
        "torchreid_fgdi.data.B",
    }
    assert resolves("torchreid_fgdi.errors") and not resolves("torchreid_fgdi.no_such_module")
    assert len(TEST_COUNT.findall("CI runs 412 tests; 3 passed; 1,204 tests")) == 3
    assert not TEST_COUNT.findall("the tests, in 10 minutes; rank 0 tests and saves; 10 min of tests")
