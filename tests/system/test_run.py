"""``./run`` installs into its venv only when what the install is made from changed: the extra
asked for, pyproject.toml and the version's file. Code changes need no reinstall (the install
is editable). It says on stderr when it installs, and nothing when it does not.

Real runs of a copy of ``./run`` with real pip, into a venv of the test's own (``VENV``), so
the checkout's .venv is never touched: about 15 s, most of it the first install."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest

import shmsession

REPO_ROOT = Path(__file__).resolve().parents[2]
# The package's source, wherever the package under test is (./run test --installed tests it
# from a copy of the checkout without shmsession/).
PACKAGE = Path(shmsession.__file__).resolve().parent
RUN_TIMEOUT = 240  # a first install on a cold pip cache downloads every dependency


class Checkout(NamedTuple):
    root: Path
    venv: Path


@pytest.fixture
def checkout() -> Iterator[Checkout]:
    """What ``./run demo`` needs of a checkout, copied, and where its venv goes; all of it
    removed after the test, whatever happens (a venv is tens of MB; pytest keeps tmp_path)."""
    with tempfile.TemporaryDirectory(prefix="shmsession-run-") as tmp:
        root = Path(tmp, "checkout")
        root.mkdir()
        for name in ("run", "pyproject.toml", "README.md"):
            shutil.copy2(REPO_ROOT / name, root / name)
        shutil.copytree(PACKAGE, root / "shmsession",
                        ignore=shutil.ignore_patterns("__pycache__"))
        yield Checkout(root, Path(tmp, "venv"))


def run_demo_help(c: Checkout) -> "subprocess.CompletedProcess[str]":
    env = {**os.environ, "VENV": str(c.venv)}
    done = subprocess.run([str(c.root / "run"), "demo", "--help"], env=env, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout  # the demo ran, from the venv
    return done


def notes(done: "subprocess.CompletedProcess[str]") -> list[str]:
    """The lines ./run itself wrote to stderr (pip may warn about this machine's indexes)."""
    return [line for line in done.stderr.splitlines() if "shmsession[" in line]


def metadata(c: Checkout, field: str) -> str:
    """``field`` of shmsession's metadata in the venv (run in the venv: a ``*.egg-info`` that
    a build left in the working directory would be found first)."""
    done = subprocess.run(
        [str(c.venv / "bin" / "python"), "-c",
         f"import importlib.metadata as m; print(m.metadata('shmsession')[{field!r}])"],
        cwd=c.venv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def installed_record(c: Checkout) -> tuple[int, int]:
    """Identity of the install's RECORD file: pip writes a new one on every install."""
    (record,) = c.venv.glob("lib/python*/site-packages/shmsession-*.dist-info/RECORD")
    st = record.stat()
    return st.st_ino, st.st_mtime_ns


@pytest.mark.timeout(4 * RUN_TIMEOUT)
def test_run_installs_once_and_again_only_when_the_install_would_differ(
        checkout: Checkout) -> None:
    first = run_demo_help(checkout)
    assert notes(first) == [
        f"installing shmsession[demo] into {checkout.venv} (first run, about 30 s)..."]
    installed = installed_record(checkout)

    again = run_demo_help(checkout)
    assert again.stderr == ""
    assert installed_record(checkout) == installed

    # Code is served from the checkout as it is (an editable install): no reinstall.
    with open(checkout.root / "shmsession" / "store.py", "a", encoding="utf-8") as f:
        f.write("\n# an edit\n")
    assert run_demo_help(checkout).stderr == ""
    assert installed_record(checkout) == installed

    # The metadata comes from pyproject.toml and the version's file: a change to either is
    # installed, and the venv's metadata follows it.
    pyproject = checkout.root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text(encoding="utf-8").replace(
        'description = "', 'description = "Edited: '), encoding="utf-8")
    changed = run_demo_help(checkout)
    assert notes(changed) == [f"reinstalling shmsession[demo] into {checkout.venv} "
                              "(pyproject.toml or shmsession/_version.py changed)..."]
    assert metadata(checkout, "Summary").startswith("Edited: ")
    assert installed_record(checkout) != installed

    version = checkout.root / "shmsession" / "_version.py"
    version.write_text(version.read_text(encoding="utf-8").replace(
        f'"{shmsession.__version__}"', '"99.0"'), encoding="utf-8")
    assert len(notes(run_demo_help(checkout))) == 1
    assert metadata(checkout, "Version") == "99.0"
    assert run_demo_help(checkout).stderr == ""
