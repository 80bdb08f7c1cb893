"""Which hot path this process runs: the compiled one (``shmsession._hot``, built from
``_hot.c`` when a C compiler was there at install) or the pure-Python reference, which is
always there. ``SHMSESSION_PURE=1`` in the environment picks the pure one; both work on the
same segments, so processes of either kind share a store."""

from __future__ import annotations

import os
from types import ModuleType
from typing import Optional

__all__ = ["BUILD", "hot"]

hot: Optional[ModuleType] = None
if os.environ.get("SHMSESSION_PURE", "") in ("", "0"):
    try:
        from . import _hot as hot
    except ImportError:  # installed without a compiler: the pure path
        hot = None

#: ``"compiled"`` or ``"pure"``: the hot path this process runs.
BUILD = "pure" if hot is None else "compiled"
