"""The package under test: its one version, and where it is imported from. ``./run test``
tests the checkout (an editable install); ``./run test --installed``, which CI runs, tests a
built wheel in a fresh venv and sets SHMSESSION_EXPECT_INSTALLED=1, so that a test run which
quietly imported the checkout instead of the wheel fails here rather than passing.

Its build too: CI sets SHMSESSION_EXPECT_COMPILED=1, as its machine has a C compiler, so a
wheel that lost its compiled module (``shmsession._hot``), or a pass meant to run it that runs
the pure path, fails here instead of testing the pure path twice."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import shmsession
from shmsession._build import BUILD

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALLED = os.environ.get("SHMSESSION_EXPECT_INSTALLED") == "1"
EXPECT_COMPILED = os.environ.get("SHMSESSION_EXPECT_COMPILED") == "1"
#: The compiled module is there (it is not when the package was installed without a compiler).
COMPILED = importlib.util.find_spec("shmsession._hot") is not None
PURE = os.environ.get("SHMSESSION_PURE", "") not in ("", "0")
# The checkout's package, or the wheel's in the venv's site-packages.
EXPECTED = (Path(sysconfig.get_paths()["purelib"]) if INSTALLED else REPO_ROOT) / "shmsession"


def test_the_version_is_the_installed_metadata() -> None:
    assert shmsession.__version__ == importlib.metadata.version("shmsession")


def version_line(**env: str) -> list[str]:
    """The words of ``shmsession --version`` in a process started with ``env`` added."""
    done = subprocess.run([sys.executable, "-m", "shmsession", "--version"], cwd=REPO_ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_the_command_prints_the_version_and_the_build() -> None:
    version = importlib.metadata.version("shmsession")
    assert version_line(SHMSESSION_PURE="0") == [
        "shmsession", version, "(compiled)" if COMPILED else "(pure)"]
    assert version_line(SHMSESSION_PURE="1") == ["shmsession", version, "(pure)"]


def test_the_build_is_the_one_expected() -> None:
    """SHMSESSION_PURE=1 runs the pure path; otherwise the compiled one whenever it was built,
    and in CI (SHMSESSION_EXPECT_COMPILED=1) it must have been, in either pass."""
    if EXPECT_COMPILED:
        assert COMPILED, "SHMSESSION_EXPECT_COMPILED=1, but shmsession._hot was not built"
    assert BUILD == ("compiled" if COMPILED and not PURE else "pure")


def test_the_tests_import_the_package_under_test() -> None:
    assert Path(shmsession.__file__).resolve().parent == EXPECTED.resolve()


def test_a_process_started_in_the_repo_root_imports_the_package_under_test() -> None:
    """As the CLI, demo and README tests start theirs: ``python -m``/``-c`` put the working
    directory first on sys.path, where a checkout's ``shmsession/`` would shadow the wheel."""
    done = subprocess.run([sys.executable, "-c", "import shmsession; print(shmsession.__file__)"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).resolve().parent == EXPECTED.resolve()
