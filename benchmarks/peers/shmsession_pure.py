"""shmsession's SessionStorage on its pure-Python path, beside the compiled one in the same
run: the ``shmsession`` peer with every handle put on the pure path (see ``pure`` there)."""

from __future__ import annotations

from peers.shmsession import ShmsessionPeer


class ShmsessionPurePeer(ShmsessionPeer):
    label = "shmsession-pure"
    pure = True


PEER = ShmsessionPurePeer
