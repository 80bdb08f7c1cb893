"""The package under test: its one version, and where it is imported from. ``./run test``
tests the checkout (an editable install); ``./run test --installed``, which CI runs, tests a
built wheel in a fresh venv and sets SHMSESSION_EXPECT_INSTALLED=1, so that a test run which
quietly imported the checkout instead of the wheel fails here rather than passing."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import shmsession

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALLED = os.environ.get("SHMSESSION_EXPECT_INSTALLED") == "1"
# The checkout's package, or the wheel's in the venv's site-packages.
EXPECTED = (Path(sysconfig.get_paths()["purelib"]) if INSTALLED else REPO_ROOT) / "shmsession"


def test_the_version_is_the_installed_metadata() -> None:
    assert shmsession.__version__ == importlib.metadata.version("shmsession")


def test_the_command_prints_the_version() -> None:
    done = subprocess.run([sys.executable, "-m", "shmsession", "--version"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["shmsession", importlib.metadata.version("shmsession")]


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
