"""The docs site builds with the Makefile's own `docs` command, and that command fails on a defect.

The build runs on a copy of docs/ and mkdocs.yml in a temporary folder (src/ and examples/ linked,
for the API pages and the tutorial's snippets), so that a test never writes into the work tree. The defects: a link to a missing page, a
link to a missing anchor, a page outside the nav. Each must be named in the output and make the
build exit non-zero (strict mode; `--quiet` would hide them and exit 0 with mkdocs 1.6).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tradi

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # each build renders the API pages: ~10 s of CPU


def make_docs_command() -> tuple[dict[str, str], list[str]]:
    """The environment and argv of the Makefile's `docs` recipe, `$(BIN)/mkdocs` run by this
    Python. Fails if the recipe is not one mkdocs line."""
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    match = re.search(r"^docs:.*\n\t(.+)$", text, re.MULTILINE)
    assert match, "Makefile: no `docs:` target followed by a recipe line"
    words = shlex.split(match.group(1))
    env = {}
    while "=" in words[0]:
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    assert words[0] == "$(BIN)/mkdocs", f"Makefile docs recipe: expected $(BIN)/mkdocs, got {words}"
    return env, [sys.executable, "-m", "mkdocs", *words[1:]]


def build(tmp_path: Path, edit: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Copy docs/ and mkdocs.yml to ``tmp_path``, write ``edit`` ({page: text appended, or a new
    page}), then run the Makefile's docs command there."""
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    for code in ("src", "examples"):  # the API pages' source, the tutorial's snippets
        (tmp_path / code).symlink_to(ROOT / code)
    for page, text in (edit or {}).items():
        with open(tmp_path / "docs" / page, "a", encoding="utf-8") as file:
            file.write(text)
    env, argv = make_docs_command()
    return subprocess.run(
        argv,
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_the_docs_target_is_strict_and_not_quiet() -> None:
    _, argv = make_docs_command()
    assert "--strict" in argv and "--quiet" not in argv and "-q" not in argv


def test_the_site_builds_and_documents_every_public_name(tmp_path: Path) -> None:
    result = build(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    html = "".join(
        p.read_text(encoding="utf-8") for p in (tmp_path / "site" / "api").rglob("*.html")
    )
    ids = set(re.findall(r'id="(tradi[\w.]*)"', html))
    for name in tradi.__all__:
        obj = getattr(tradi, name)
        rendered = [i for i in ids if i.rsplit(".", 1)[-1] == name]
        # the heading's owner really exports this object (not a method of the same name)
        assert any(_owner_exports(i.rsplit(".", 1)[0], name, obj) for i in rendered), (
            f"tradi.{name} has no heading in the built API reference (ids: {rendered})"
        )


def _owner_exports(path: str, name: str, obj: object) -> bool:
    try:
        owner = __import__(path, fromlist=["_"])
    except ImportError:
        return False
    return getattr(owner, name, None) is obj


def test_a_broken_link_anchor_or_orphan_page_fails_the_build(tmp_path: Path) -> None:
    result = build(
        tmp_path,
        {
            "index.md": "\n[gone](no-such-page.md) and [no anchor](tracker.md#no-such-anchor)\n",
            "orphan-page.md": "# Not in the nav\n",
        },
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    for defect in ("no-such-page.md", "no-such-anchor", "orphan-page.md"):
        assert defect in output, f"{defect!r} not reported:\n{output}"
