"""``scripts/check_dist.py``, which CI runs on the built sdist and wheel: it passes archives
that hold the whole package, and names each file that one of them lacks -- the compiled module
in the wheel too, unless told (``--pure``) that the wheel was built without a C compiler."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Iterable

import shmsession

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "check_dist.py"
PACKAGE = Path(shmsession.__file__).resolve().parent
VERSION = shmsession.__version__
# The package's files as in the checkout (the package under test may have its compiled module
# or not), and the compiled module as a wheel built with a C compiler holds it.
FILES = sorted(p.relative_to(PACKAGE.parent).as_posix() for p in PACKAGE.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".so")
COMPILED = "shmsession/_hot.cpython-311-x86_64-linux-gnu.so"
SDIST = (*FILES, "pyproject.toml", "setup.py", "README.md", "LICENSE", "CHANGELOG.md")


def make_dist(dist: Path, wheel: Iterable[str] = (*FILES, COMPILED), sdist: Iterable[str] = SDIST,
              version: str = VERSION) -> Path:
    """A dist folder laid out as ``python -m build`` lays it out, holding these files."""
    dist.mkdir()
    with zipfile.ZipFile(dist / f"shmsession-{version}-py3-none-any.whl", "w") as z:
        for name in wheel:
            z.writestr(name, "")
        z.writestr(f"shmsession-{version}.dist-info/METADATA", f"Version: {version}\n")
    with tarfile.open(dist / f"shmsession-{version}.tar.gz", "w:gz") as t:
        for name in sdist:
            info = tarfile.TarInfo(f"shmsession-{version}/{name}")
            t.addfile(info, io.BytesIO(b""))
    return dist


def check(dist: Path, *options: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(dist), "--package", str(PACKAGE), *options],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_the_package_has_the_files_the_check_is_about() -> None:
    assert {"shmsession/py.typed", "shmsession/cli/__init__.py", "shmsession/demo/__init__.py",
            "shmsession/redis/__init__.py", "shmsession/contrib/__init__.py",
            "shmsession/_hot.c", "shmsession/_hot.pyi", "shmsession/_blake2b.h"} <= set(FILES)


def test_archives_holding_the_whole_package_pass(tmp_path: Path) -> None:
    done = check(make_dist(tmp_path / "dist"))
    assert (done.returncode, done.stderr) == (0, "")


def test_a_wheel_without_a_subpackage_or_py_typed_fails_naming_each_file(tmp_path: Path) -> None:
    gone = [f for f in FILES if f.startswith("shmsession/redis/") or f.endswith("py.typed")]
    done = check(make_dist(tmp_path / "dist", wheel=[*(f for f in FILES if f not in gone),
                                                       COMPILED]))
    assert done.returncode == 1
    wheel = f"shmsession-{VERSION}-py3-none-any.whl"
    assert done.stderr.splitlines() == [f"{wheel} lacks {f}" for f in sorted(gone)]


def test_an_sdist_without_what_pip_install_reads_fails(tmp_path: Path) -> None:
    done = check(make_dist(tmp_path / "dist", sdist=[*FILES, "pyproject.toml", "LICENSE"]))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"shmsession-{VERSION}.tar.gz lacks {f}"
                                        for f in ("CHANGELOG.md", "README.md", "setup.py")]


def test_an_sdist_without_the_c_sources_or_the_stub_fails_naming_each(tmp_path: Path) -> None:
    gone = ["shmsession/_blake2b.h", "shmsession/_hot.c", "shmsession/_hot.pyi"]
    done = check(make_dist(tmp_path / "dist", sdist=[f for f in SDIST if f not in gone]))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"shmsession-{VERSION}.tar.gz lacks {f}" for f in gone]


def test_a_wheel_without_the_compiled_module_fails_unless_built_without_a_compiler(
        tmp_path: Path) -> None:
    dist = make_dist(tmp_path / "dist", wheel=FILES)
    done = check(dist)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"shmsession-{VERSION}-py3-none-any.whl lacks shmsession/_hot.*.so "
        "(built without a C compiler? then say --pure)"]
    done = check(dist, "--pure")
    assert (done.returncode, done.stderr) == (0, "")


def test_a_wheel_said_to_be_pure_that_holds_the_compiled_module_fails(tmp_path: Path) -> None:
    done = check(make_dist(tmp_path / "dist"), "--pure")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"shmsession-{VERSION}-py3-none-any.whl holds {COMPILED}, but --pure says it was built "
        "without a C compiler"]


def test_a_wheel_without_the_stub_fails_even_when_pure(tmp_path: Path) -> None:
    dist = make_dist(tmp_path / "dist", wheel=[f for f in FILES if f != "shmsession/_hot.pyi"])
    done = check(dist, "--pure")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"shmsession-{VERSION}-py3-none-any.whl lacks shmsession/_hot.pyi"]


def test_archives_of_another_version_fail(tmp_path: Path) -> None:
    done = check(make_dist(tmp_path / "dist", version="0.0.0"))
    assert done.returncode == 1
    assert f"shmsession-{VERSION}-*.whl, not one" in done.stderr
    assert f"shmsession-{VERSION}.tar.gz, not one" in done.stderr
