"""The compiled hot path, ``shmsession._hot`` (see shmsession/_hot.c): built when a C compiler
is there, left out when not -- ``optional`` makes a failed build a warning, and the package
then runs its pure-Python reference path (``shmsession._build``). Everything else about the
package is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "shmsession._hot",
            sources=["shmsession/_hot.c"],
            depends=["shmsession/_blake2b.h"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)
