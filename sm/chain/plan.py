"""Typed crash journals: a multi-step operation's plan and its steps.

Each multi-step chain operation declares two types:

- a ``Steps`` enum (subclass of :class:`Steps`), its members in the order the operation passes
  them, each member's value the one-line description of what is true once it is passed. The
  crash points (``<op>:<step>``), the replay's view of progress (``entry.has_step``) and the
  documented step order (:meth:`Steps.table`) all derive from it;
- a plan (subclass of :class:`Plan`): the frozen, typed intent written into the journal entry
  before anything changes (:meth:`Plan.to_journal`) and read back on replay
  (:meth:`Plan.from_journal`), instead of ``dict[str, Any]`` read with string keys.

An operation marks a step with ``entry.once(Steps.x)`` (``sm.journal.Entry.once``: record it
unless it already is, then hit the crash point).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Self

from sm.struct import Frozen

__all__ = ["Plan", "Steps"]


class Steps(enum.Enum):
    """Base of every operation's step enum: member name = step name, value = description."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(m.name for m in cls)

    @classmethod
    def crash_points(cls, op: str) -> tuple[str, ...]:
        """Every crash point of `op`, in step order."""
        return tuple(f"{op}:{m.name}" for m in cls)

    @classmethod
    def table(cls) -> str:
        """The step order as documentation lines (``name  description``)."""
        width = max(len(m.name) for m in cls)
        return "\n".join(f"{m.name:<{width}}  {m.value}" for m in cls)


class Plan(Frozen, kw_only=True):
    """A multi-step operation's intent, as written into its journal entry."""

    def to_journal(self) -> dict[str, Any]:
        return self.as_dict()

    @classmethod
    def from_journal(cls, data: Mapping[str, Any]) -> Self:
        """The plan in an entry's data; keys the plan does not know (an entry written by
        another version, the LVHD journal's ``op`` and ``steps``) are ignored, missing ones
        with a default take it."""
        return cls(**{k: data[k] for k in cls._names if k in data})
