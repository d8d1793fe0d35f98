"""Names other File SR modules still import from here: create, delete, resize, update and
introduce are the chain core's (`sm.chain.vdiops`, `sm.chain.resize`); `mark_garbage` is
`sm.chain.vdiops`'s, `physical` the adapter's (`.chainsr`). Goes when its users move."""

from __future__ import annotations

from sm.chain.vdiops import mark_garbage

from .chainsr import physical

__all__ = ["mark_garbage", "physical"]
