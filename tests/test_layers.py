"""The import contract in pyproject.toml holds, and breaks when an import runs the wrong way."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports over the package under ``root``, with the contract in its pyproject."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_package_keeps_its_import_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"Contracts: \d+ kept, 0 broken", result.stdout)


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The package and its pyproject.toml, copied where a test may break them."""
    shutil.copytree(ROOT / "mailmerge", tmp_path / "mailmerge",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize("module, line, broken", [
    # a type-only import counts: it is a cycle all the same
    ("render.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                  "    from .pipeline import Outcome\n",
     "Layers of the package: the command line on top, errors at the bottom BROKEN"),
    ("sending/journal.py", "from .runner import Event\n",
     "Layers of sending: the plan, the run, the transports, what they record BROKEN"),
    ("preview/gallery.py", "from ..sending import journal_path\n",
     "Layers of the package: the command line on top, errors at the bottom BROKEN"),
    ("pipeline.py", "import click\n", "Only the command line knows click BROKEN"),
    ("mime.py", "import smtplib\n",
     "The core builds messages without the network or the journal BROKEN"),
])
def test_a_wrong_way_import_breaks_the_contract(copy: Path, module: str, line: str,
                                                broken: str) -> None:
    with (copy / "mailmerge" / module).open("a") as handle:
        handle.write("\n" + line)
    result = lint_imports(copy)
    assert result.returncode == 1, result.stdout + result.stderr
    assert broken in result.stdout


def test_a_new_module_must_be_given_its_place(copy: Path) -> None:
    (copy / "mailmerge" / "newthing.py").write_text('"""Not yet in the contract."""\n')
    result = lint_imports(copy)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "newthing" in result.stdout + result.stderr


def test_the_readme_layout_names_every_module() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme.split("## Layout\n", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([\w/]+\.py)` \|", layout, re.M))
    modules = {str(p.relative_to(ROOT / "mailmerge")) for p in (ROOT / "mailmerge").rglob("*.py")}
    modules -= {"__init__.py", "__main__.py"}  # the package's own: its API is the README's
    assert listed == modules


def test_a_check_imports_only_what_its_campaign_needs(tmp_path: Path) -> None:
    """`check` of the shipped newsletter (5 rows, no DKIM, no Markdown, no .eml folder)
    run a second time (its inlined CSS kept from the first) leaves the dry run, the
    worker pool, the browser and the CSS inliner unloaded: start-up is mostly imports."""
    shutil.copytree(ROOT / "campaigns", tmp_path / "campaigns")
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    script = ("import sys\nfrom mailmerge.cli import main\n"
              "sys.argv = ['mailmerge', 'check', 'campaigns/newsletter.yaml', '-q']\n"
              "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
              "print(code, sorted(m for m in sys.modules if m in {'multiprocessing', "
              "'webbrowser', 'importlib.resources', 'mailmerge.preview', "
              "'mailmerge.scaffold', 'markdown_it', 'dkim', 'premailer'}))\n")
    env = {**os.environ, "MAILMERGE_CACHE_DIR": str(tmp_path / "cache")}
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60, check=False)
    assert done.stdout.splitlines()[-1] == "0 []", done.stdout + done.stderr
