#!/usr/bin/env python3
"""Check a built sdist and wheel against the package they were built from (CI runs this
between ``python -m build`` and installing the wheel: ``./run test --installed``).

    python scripts/check_dist.py DIST_DIR [--package DIR] [--pure]

DIST_DIR holds one ``shmsession-VERSION.tar.gz`` and one ``shmsession-VERSION-*.whl``, with
the version of ``shmsession/_version.py``. The wheel holds every module of the package, in
every subpackage, its stubs (``*.pyi``) and ``py.typed``, and a compiled module
(``shmsession/_hot.*.so``) for each C source of the package (``shmsession/_hot.c``); with
``--pure`` (the wheel was built without a C compiler, so ``setup.py``'s optional extension
was left out) it holds no compiled module at all. The sdist holds the package too, with its C
sources and headers, and what ``pip install`` of the sdist reads (pyproject.toml, setup.py,
README.md) and LICENSE and CHANGELOG.md. A subpackage that ``pyproject.toml`` forgot to list,
or a C file the sdist left out, would otherwise install without complaint and fail only on
import, or install without its compiled path. Exits 1 naming each file missing.
``--package`` names another package folder (default: this checkout's shmsession/).
"""

from __future__ import annotations

import ast
import fnmatch
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import List, Optional, Sequence, Set

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "shmsession"
#: What ``pip install`` of the sdist reads besides the package, and what a source release
#: carries with it (its licence, its changes).
SDIST_FILES = ("pyproject.toml", "setup.py", "README.md", "LICENSE", "CHANGELOG.md")


def package_files(package: Path, *patterns: str) -> Set[str]:
    """The files under ``package`` whose names match ``patterns``, as paths from its parent
    folder."""
    found = {p for pattern in patterns for p in package.rglob(pattern)
             if "__pycache__" not in p.parts}
    return {p.relative_to(package.parent).as_posix() for p in found}


def compiled_modules(package: Path) -> List[str]:
    """What the wheel's compiled module for each C source of ``package`` is called: for
    ``shmsession/_hot.c``, ``shmsession/_hot.*.so`` (``.cpython-311-x86_64-linux-gnu.so``,
    ``.abi3.so``)."""
    return sorted(f"{c[:-len('.c')]}.*.so" for c in package_files(package, "*.c"))


def version_of(package: Path) -> str:
    """The literal assigned to ``__version__`` in ``package/_version.py``."""
    tree = ast.parse((package / "_version.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets):
            return str(ast.literal_eval(node.value))
    raise ValueError(f"{package / '_version.py'} assigns no __version__")


def one(dist: Path, pattern: str, problems: List[str]) -> Optional[Path]:
    found = sorted(dist.glob(pattern))
    if len(found) != 1:
        problems.append(f"{dist}: {len(found)} files match {pattern}, not one")
        return None
    return found[0]


def check(dist: Path, package: Path, pure: bool = False) -> List[str]:
    """What is wrong with the sdist and wheel in ``dist``: one line each; none when right.
    ``pure``: the wheel was built without a C compiler, so holds no compiled module."""
    problems: List[str] = []
    version = version_of(package)
    files = package_files(package, "*.py", "*.pyi", "py.typed")
    wheel = one(dist, f"{package.name}-{version}-*.whl", problems)
    if wheel is not None:
        with zipfile.ZipFile(wheel) as z:
            held = set(z.namelist())
        problems += [f"{wheel.name} lacks {f}" for f in sorted(files - held)]
        for module in compiled_modules(package):
            built = sorted(fnmatch.filter(held, module))
            if pure:
                problems += [f"{wheel.name} holds {f}, but --pure says it was built without "
                             "a C compiler" for f in built]
            elif not built:
                problems.append(f"{wheel.name} lacks {module} (built without a C compiler? "
                                "then say --pure)")
    sdist = one(dist, f"{package.name}-{version}.tar.gz", problems)
    if sdist is not None:
        top = f"{package.name}-{version}/"
        with tarfile.open(sdist) as t:
            held = {n[len(top):] for n in t.getnames() if n.startswith(top)}
        needed = files | package_files(package, "*.c", "*.h") | set(SDIST_FILES)
        problems += [f"{sdist.name} lacks {f}" for f in sorted(needed - held)]
    return problems


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    package = PACKAGE
    pure = "--pure" in args
    if pure:
        args.remove("--pure")
    if len(args) == 3 and args[1] == "--package":
        package = Path(args.pop())
        args.pop()
    if len(args) != 1:
        print("usage: check_dist.py DIST_DIR [--package DIR] [--pure]", file=sys.stderr)
        return 2
    problems = check(Path(args[0]), package, pure)
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
