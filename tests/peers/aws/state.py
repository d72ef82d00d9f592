"""The AWS peer's own state beside moto's models: injected faults, request counters and
the token lifetime. Reset with moto's state (`POST /moto-api/reset`) or alone
(`POST /_peer/reset`)."""

from __future__ import annotations

import random
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field

DEFAULT_TOKEN_LIFETIME = 600.0  # seconds a block or page token lives (AWS: 10 min)


@dataclass
class Faults:
    throttle_rate: float = 0.0
    reset_rate: float = 0.0
    latency_ms: float = 0.0
    services: list[str] = field(default_factory=list)  # empty: every service
    operations: list[str] = field(default_factory=list)  # empty: every operation
    token_lifetime_seconds: float = DEFAULT_TOKEN_LIFETIME
    seed: int | None = None

    def applies(self, service: str, operation: str) -> bool:
        return ((not self.services or service in self.services)
                and (not self.operations or operation in self.operations))


class PeerState:
    """Everything the peer keeps besides moto's models; reset with them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.set_faults(Faults())
        self.reset_stats()

    def set_faults(self, faults: Faults) -> None:
        self.faults = faults
        self.rng = random.Random(faults.seed)

    def reset_stats(self) -> None:
        self.counts: dict[str, Counter[str]] = defaultdict(Counter)
        self.injected: Counter[str] = Counter({"throttled": 0, "reset": 0})
        # Attempts per request target ("s3 PutObject /bucket/key"), faulted ones included:
        # how often a client sent the same request.
        self.attempts: Counter[str] = Counter()

    def draw(self) -> float:
        with self.lock:
            return self.rng.random()

    def count(self, service: str, operation: str) -> None:
        with self.lock:
            self.counts[service][operation] += 1

    def count_attempt(self, service: str, operation: str, path: str) -> None:
        with self.lock:
            self.attempts[f"{service} {operation} {path}"] += 1

    def count_fault(self, kind: str) -> None:
        with self.lock:
            self.injected[kind] += 1

    def stats(self) -> dict[str, dict[str, int]]:
        with self.lock:
            out = {svc: dict(c) for svc, c in self.counts.items()}
            for svc in ("ebs", "s3", "ec2"):
                out.setdefault(svc, {})
            out["faults"] = dict(self.injected)
            most: dict[str, int] = {}
            for key, n in self.attempts.items():
                op = key.rsplit(" ", 1)[0]
                most[op] = max(most.get(op, 0), n)
            out["max_attempts"] = most  # "s3 PutObject" -> the most tries of one request
            return out


STATE = PeerState()
