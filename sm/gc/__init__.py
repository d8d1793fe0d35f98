"""Garbage collection and coalescing that keep VHD chains short (docs/gc.md).

    plan.py       chain algebra: `Node`, `Graph`, `Action`, `plan`, `chain_report` (pure)
    collector.py  the loop (`Collector`), the `Backend` protocol an SR type implements,
                  `StepContext` (progress, abort), `report` (`sm gc status`)
    state.py      per-SR lock, status file, abort requests
    vhdops.py     engine operations for merges: `block_set`, `fill_from_parent` ("down")
    spawn.py      background runs (`start_background`, `SM_GC_AUTO`)

One collector runs per SR at a time (a lock file on the SR, so across processes and hosts).
Each run replays interrupted steps first, then repeatedly plans on a fresh graph and runs the
best action. A backend journals every step of an action and checks the graph again under the
SR lock before it changes any chain, so user operations may run at any time in between.
"""

from __future__ import annotations

from .collector import Aborted, Backend, Collector, Skip, StepContext, report
from .plan import DEPTH_LIMIT, DEPTH_WARN, Action, Graph, Node, chain_report, plan

__all__ = ["DEPTH_LIMIT", "DEPTH_WARN", "Aborted", "Action", "Backend", "Collector", "Graph",
           "Node", "Skip", "StepContext", "chain_report", "plan", "report"]
