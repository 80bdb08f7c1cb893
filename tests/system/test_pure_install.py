"""``pip install .`` where no C compiler works: setup.py's extension is optional, so the
install succeeds without the compiled module, and the package runs its pure path.

A real pip into a real venv of the test's own, in a temporary folder removed after, from a
copy of the package's source. ``CC=false`` is the compiler setuptools then calls (it takes
the C compiler from ``CC``, over Python's own), so every compile fails. posix_ipc is compiled
too: pip takes its wheel from PyPI (or pip's cache), ``--only-binary`` making sure it is never
built. About 20 s, most of it pip."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import shmsession

REPO_ROOT = Path(__file__).resolve().parents[2]
# The package's source, wherever the package under test is (./run test --installed tests it
# from a copy of the checkout without shmsession/; the wheel carries the C sources).
PACKAGE = Path(shmsession.__file__).resolve().parent
SOURCE_FILES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE",
                "CHANGELOG.md")
PIP_TIMEOUT = 300  # a cold pip cache downloads setuptools and posix_ipc

# Run in the new venv, from its own folder: a store written and read back, and the build.
PROBE = """
import sys
import shmsession
from shmsession import _build
with shmsession.SessionStorage(sys.argv[1], size=1 << 20) as store:
    store.write("an id", b"a value")
    assert store.read("an id") == b"a value"
    store.check()
    store.unlink()
print(_build.BUILD, shmsession.__file__)
"""


def run(args: list[str], cwd: Path, timeout: float = 60, **env: str
        ) -> "subprocess.CompletedProcess[str]":
    """``args`` in ``cwd``, with ``env`` added to an environment that picks no build."""
    env = {**{k: v for k, v in os.environ.items()
              if k not in ("SHMSESSION_PURE", "SHMSESSION_EXPECT_COMPILED")}, **env}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.mark.slow
@pytest.mark.timeout(2 * PIP_TIMEOUT)
def test_pip_install_without_a_compiler_installs_the_pure_path(name: str) -> None:
    with tempfile.TemporaryDirectory(prefix="shmsession-pure-install-") as tmp:
        source, venv = Path(tmp, "source"), Path(tmp, "venv")
        source.mkdir()
        for f in SOURCE_FILES:
            shutil.copy2(REPO_ROOT / f, source / f)
        shutil.copytree(PACKAGE, source / "shmsession",
                        ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        run([sys.executable, "-m", "venv", str(venv)], cwd=Path(tmp))
        python = str(venv / "bin" / "python")

        done = run([python, "-m", "pip", "install", "-v", "--disable-pip-version-check",
                    "--only-binary", "posix_ipc", str(source)],
                   cwd=Path(tmp), timeout=PIP_TIMEOUT, CC="false")
        # setuptools tried to compile and could not: the install went on without it.
        assert 'building extension "shmsession._hot" failed' in done.stdout + done.stderr
        (site,) = venv.glob("lib/python*/site-packages")
        assert (site / "shmsession" / "_hot.pyi").is_file()
        assert list((site / "shmsession").glob("_hot*.so")) == []

        build, where = run([python, "-c", PROBE, name], cwd=venv).stdout.split()
        assert build == "pure"
        assert Path(where).parent == site / "shmsession"
        version = run([str(venv / "bin" / "shmsession"), "--version"], cwd=venv).stdout
        assert version.split() == ["shmsession", shmsession.__version__, "(pure)"]
