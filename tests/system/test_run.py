"""``./run`` installs into its venv only when what the install is made from changed: the extra
asked for, pyproject.toml and the version's file. Code changes need no reinstall (the install
is editable). It says on stderr when it installs, and nothing when it does not. Its compiled
module (shmsession/_hot.*.so, built in place) it builds again, without reinstalling, when
setup.py or the C sources change; a build that fails leaves the pure path, not the old module.

Real runs of a copy of ``./run`` with real pip and a real C compiler, into a venv of the
test's own (``VENV``), so the checkout's .venv is never touched: about 15 s each, most of it
the first install."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path
from typing import Iterator, List, NamedTuple

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
        for name in ("run", "pyproject.toml", "README.md", "setup.py"):
            shutil.copy2(REPO_ROOT / name, root / name)
        shutil.copytree(PACKAGE, root / "shmsession",
                        ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        yield Checkout(root, Path(tmp, "venv"))


def run_demo(c: Checkout, **env: str) -> "subprocess.CompletedProcess[str]":
    """``./run demo --help`` in the checkout, with ``env`` added to an environment that picks
    no build (the test's own run may be a pure one, or CI's, which expects the compiled)."""
    env = {**{k: v for k, v in os.environ.items()
              if k not in ("SHMSESSION_PURE", "SHMSESSION_EXPECT_COMPILED")},
           "VENV": str(c.venv), **env}
    return subprocess.run([str(c.root / "run"), "demo", "--help"], env=env, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL)


def run_demo_help(c: Checkout) -> "subprocess.CompletedProcess[str]":
    done = run_demo(c)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout  # the demo ran, from the venv
    return done


def notes(done: "subprocess.CompletedProcess[str]") -> list[str]:
    """The lines ./run itself wrote to stderr (pip may warn about this machine's indexes)."""
    return [line for line in done.stderr.splitlines() if "shmsession[" in line]


def builds(done: "subprocess.CompletedProcess[str]") -> List[str]:
    """The lines ./run wrote on building the compiled module."""
    return [line for line in done.stderr.splitlines() if "shmsession._hot" in line]


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


BUILT = "building shmsession._hot in place (setup.py or its C sources changed)..."


def compiled_module(c: Checkout) -> Path:
    (module,) = (c.root / "shmsession").glob("_hot.*.so")
    return module


def identity(path: Path) -> tuple[int, int]:
    """Which file ``path`` is: a new one may get the inode of the one removed before it, and
    setuptools gives it the whole-second mtime of the build's copy; the change time it sets
    itself, to the nanosecond."""
    st = path.stat()
    return st.st_ino, st.st_ctime_ns


def build_in_venv(c: Checkout) -> str:
    """The build the venv's package runs, as ``shmsession --version`` names it."""
    done = subprocess.run([str(c.venv / "bin" / "shmsession"), "--version"], cwd=c.venv,
                          env={k: v for k, v in os.environ.items() if k != "SHMSESSION_PURE"},
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[-1]


def append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


@pytest.mark.skipif(shutil.which(str(sysconfig.get_config_var("CC")).split()[0]) is None,
                    reason="no C compiler")
@pytest.mark.timeout(4 * RUN_TIMEOUT)
def test_run_builds_the_compiled_module_again_only_when_its_sources_change(
        checkout: Checkout) -> None:
    first = run_demo_help(checkout)
    assert len(notes(first)) == 1 and builds(first) == [BUILT]
    assert build_in_venv(checkout) == "(compiled)"
    installed, module = installed_record(checkout), identity(compiled_module(checkout))
    assert run_demo_help(checkout).stderr == ""
    assert identity(compiled_module(checkout)) == module

    # A change to the C source is compiled in, without a reinstall.
    source = checkout.root / "shmsession" / "_hot.c"
    original = source.read_text(encoding="utf-8")
    append(source, '\nconst char shmsession_run_test_mark[] = "a mark of the test";\n')
    assert run_demo_help(checkout).stderr.splitlines() == [BUILT]
    assert b"a mark of the test" in compiled_module(checkout).read_bytes()
    assert installed_record(checkout) == installed
    assert run_demo_help(checkout).stderr == ""

    for name in ("shmsession/_blake2b.h", "setup.py"):
        module = identity(compiled_module(checkout))
        append(checkout.root / name, "\n/* an edit */\n" if name.endswith(".h") else "\n#\n")
        assert run_demo_help(checkout).stderr.splitlines() == [BUILT], name
        assert identity(compiled_module(checkout)) != module, name
    assert installed_record(checkout) == installed

    # A compile that fails leaves the pure path, not the module before it; CI's
    # SHMSESSION_EXPECT_COMPILED=1 refuses to run then.
    append(source, "\n#error the test breaks the build\n")
    broken = run_demo_help(checkout)
    assert builds(broken)[0] == BUILT
    assert builds(broken)[-1] == "shmsession._hot did not build: the package runs its pure path"
    assert "#error the test breaks the build" in broken.stderr
    assert list((checkout.root / "shmsession").glob("_hot.*.so")) == []
    assert build_in_venv(checkout) == "(pure)"
    assert run_demo_help(checkout).stderr == ""
    refused = run_demo(checkout, SHMSESSION_EXPECT_COMPILED="1")
    assert refused.returncode == 1
    assert refused.stderr == "SHMSESSION_EXPECT_COMPILED=1, but shmsession._hot is not built\n"

    source.write_text(original, encoding="utf-8")
    assert builds(run_demo_help(checkout)) == [BUILT]
    assert build_in_venv(checkout) == "(compiled)"


def test_the_pure_pass_names_only_tests_that_exist() -> None:
    """``./run test --installed`` runs PURE_PASS again on the pure path; pytest would skip a
    path that is not there without a word, and an --ignore of one ignores nothing."""
    (words,) = re.findall(r'^PURE_PASS="([^"]*)"', (REPO_ROOT / "run").read_text(), re.M)
    paths = [w.removeprefix("--ignore=") for w in shlex.split(words)]
    assert "tests/contract" in paths and "tests/system/test_docs_examples.py" in paths
    assert [p for p in paths if not (REPO_ROOT / p).exists()] == []
