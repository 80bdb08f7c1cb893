"""The package's version, written only here: pyproject.toml reads it for the distribution's
metadata (``[tool.setuptools.dynamic]``, parsed without importing the package), and
``shmsession.__version__`` re-exports it."""

__version__ = "0.1.0"
