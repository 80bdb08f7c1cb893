"""A griffe extension for the documentation site (``mkdocs.yml`` loads it): the package's
docstrings are reST-ish, and mkdocstrings renders them as Markdown, so two reST forms are
rewritten before they are rendered.

* A role, ``:class:`SessionStorage``` or ``:meth:`~shmsession.Store.add```, becomes a link
  to the object when the site documents it, and plain code otherwise. The name is resolved
  as Python would from where the docstring is, then among the package's public names (a
  docstring may name an error its module does not import). The link is an *optional*
  cross-reference, as mkdocstrings makes for annotations: one to an object the site does not
  render (a private helper, the standard library) is left as code, never a warning.
* A literal block, ``text::`` then an indented block, becomes ``text:`` and a Markdown code
  block (an indented block already is one); a ``::`` alone on its line goes.

Field lists (``:param x:``, ``:raises X:``) are griffe's sphinx parser's to read. And a
private keyword-only parameter (``SessionStorage(..., _secret=...)``, for ``load``) is left
out of the signatures: it is no part of the API.
"""

from __future__ import annotations

import html
import re
from typing import Any, Iterator

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|exc|mod|data|obj|const):`(?P<target>[^`]+)`")


class RestDocstrings(griffe.Extension):
    """Rewrites every docstring of a package once it is loaded (names resolve then), and
    drops the private keyword-only parameters from its signatures."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for obj in _walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = markdown(obj.docstring.value, obj, pkg)
            if isinstance(obj, griffe.Function):
                for param in list(obj.parameters):
                    if param.kind is griffe.ParameterKind.keyword_only and param.name[0] == "_":
                        del obj.parameters[param.name]


def _walk(obj: griffe.Object) -> Iterator[griffe.Object]:
    yield obj
    for member in obj.members.values():
        if not member.is_alias:  # an import: its docstring is its own module's
            yield from _walk(member)  # type: ignore[arg-type]


def markdown(text: str, scope: griffe.Object, pkg: griffe.Module) -> str:
    """``text`` with its roles as cross-references and its literal blocks as code blocks."""
    lines = []
    for line in ROLE.sub(lambda m: _reference(m["target"], scope, pkg), text).split("\n"):
        if line.strip() == "::":
            line = ""
        elif line.endswith("::"):
            line = line[:-1]
        lines.append(line)
    return "\n".join(lines)


def _reference(target: str, scope: griffe.Object, pkg: griffe.Module) -> str:
    short = target.startswith("~")
    name = target.lstrip("~.")
    title = name.rpartition(".")[2] if short else name
    identifier = _resolve(name, scope, pkg)
    return (
        f'<autoref identifier="{html.escape(identifier)}" optional>'
        f"<code>{html.escape(title)}</code></autoref>"
    )


def _resolve(name: str, scope: griffe.Object, pkg: griffe.Module) -> str:
    """The full path of ``name`` seen from ``scope``; ``name`` itself when nothing fits."""
    first, dot, rest = name.partition(".")
    if dot and first.islower():  # a module's path (``cachelib.BaseCache``) is already full
        return name
    try:
        return scope.resolve(first) + dot + rest
    except griffe.NameResolutionError:
        pass
    if first in pkg.members:  # a public name of the package, not imported where it is named
        return f"{pkg.path}.{name}"
    return name
