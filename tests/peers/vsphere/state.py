"""The front's own state beside the inventory: injected faults, counters, logged-in
sessions (for /folder), the outage switch and datastore space. `reset()` clears it all."""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

DATASTORE_GET = "GET /folder"  # the targets of rules on the datastore's HTTP access
DATASTORE_PUT = "PUT /folder"


@dataclass
class Rule:
    """One injected fault. `method` is a SOAP method ("CreateSnapshot_Task") or
    "GET /folder" / "PUT /folder"; it applies to the next `count` matching calls (None: all)
    with probability `rate`. What it does:
      fault="TaskInProgress"                 the call answers that SOAP fault
      fault=..., in_task=True                the call answers a task that fails with it
      task_seconds=S                         the call's task stays running S seconds
      reset=True                             the connection is reset, no answer
    """
    method: str
    fault: str = ""
    in_task: bool = False
    task_seconds: float = 0.0
    reset: bool = False
    count: int | None = None
    rate: float = 1.0
    message: str = ""

    def __post_init__(self) -> None:
        if not (self.fault or self.task_seconds or self.reset):
            raise ValueError("a fault rule needs fault=, task_seconds= or reset=True")
        if self.in_task and not self.fault:
            raise ValueError("in_task=True needs fault=")


class PeerState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.rules: list[Rule] = []
            self.rng = random.Random(0)
            self.sessions: set[str] = set()
            self.outage = False
            self.datastores: dict[str, dict[str, int]] = {}  # name -> capacity, free
            self.query_span = 1 << 30  # QueryChangedDiskAreas: bytes per answer at most
            self.query_extents = 2048  # ... and extents per answer at most
            self._reset_stats()

    def _reset_stats(self) -> None:
        self.calls: Counter[str] = Counter()
        self.served: Counter[str] = Counter()
        self.received: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()

    def reset_stats(self) -> None:
        with self.lock:
            self._reset_stats()

    def add_rule(self, **settings: Any) -> None:
        rule = Rule(**settings)
        with self.lock:
            self.rules.append(rule)

    def clear_rules(self, seed: int = 0) -> None:
        with self.lock:
            self.rules, self.rng = [], random.Random(seed)

    def draw(self, method: str) -> Rule | None:
        """The rule that applies to this call of `method`, if any (and counts it)."""
        with self.lock:
            for rule in self.rules:
                if rule.method != method or rule.count == 0:
                    continue
                if rule.rate < 1.0 and self.rng.random() >= rule.rate:
                    continue
                if rule.count is not None:
                    rule.count -= 1
                kind = ("reset" if rule.reset else "task_fault" if rule.in_task
                        else "fault" if rule.fault else "slow_task")
                self.injected[f"{method} {kind}"] += 1
                return rule
        return None

    def count_call(self, method: str) -> None:
        with self.lock:
            self.calls[method] += 1

    def count_bytes(self, counter: Counter[str], name: str, n: int) -> None:
        with self.lock:
            counter[name] += n
