"""The README's and the docs' code examples run as written, and the README's links resolve.

The loss API example moved from the README to docs/method.md ("Losses: a small functional API"); the
docs pages' own links and anchors are checked by `mkdocs build --strict` (tests/test_docs.py).
"""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").rglob("*.md"))]


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL)


def run_blocks(page: Path) -> None:
    for block in python_blocks(page):
        exec(compile(block, str(page), "exec"), {})


def test_the_python_examples_run(capsys):
    assert python_blocks(REPO / "docs" / "method.md"), "docs/method.md has no python example"
    for page in PAGES:
        run_blocks(page)
    assert "distilled" in capsys.readouterr().out  # the loss example of docs/method.md


def test_the_readme_keeps_the_quick_start_commands():
    text = README.read_text()
    quick = text[text.index("## Quick start") :].split("\n## ", 1)[0]
    commands = re.findall(r"^(make \w+)", quick, flags=re.MULTILINE)
    assert commands == ["make demo", "make test"]


def test_the_readme_links_resolve():
    text = README.read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [t.split("#", 1)[0] for t in targets if not re.match(r"[a-z]+:", t)]
    assert local, "the README links to no file"
    assert [t for t in local if not (REPO / t).exists()] == []
