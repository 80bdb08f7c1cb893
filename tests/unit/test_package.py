"""The package's one version: ``shmsession.__version__`` is what its metadata says."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import shmsession

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_version_is_the_installed_metadata() -> None:
    assert shmsession.__version__ == importlib.metadata.version("shmsession")


def test_the_command_prints_the_version() -> None:
    done = subprocess.run([sys.executable, "-m", "shmsession", "--version"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["shmsession", importlib.metadata.version("shmsession")]

