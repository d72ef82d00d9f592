"""Injected faults, set at runtime through /_peer/faults and drawn from one seeded RNG (a
test that sets a seed sees the same faults on every run, for the same request order).

Storage (the front): each matching request draws, in this order, a connection reset, a
503 ServerBusy, a 500 OperationTimedOut (Azure's XML error bodies and `x-ms-error-code`),
a request body or an answer body with one byte flipped (damage in transit, which the
MD5s of Storage and its clients catch), then waits `latency` seconds; `times` caps how
many faults are injected (0: no cap), so a test can ask for exactly one. ARM: a matching request is answered 429 with `Retry-After`
at rate `throttle`. `method` ("GET", "PUT", ...) and `operation` (storage: putpage,
clearpage, pagelist, get, getproperties, putblob, putblock, putblocklist, delete, ...;
ARM: "disks.beginGetAccess", "virtualMachines.put", ...) narrow a kind to matching
requests; empty means every request."""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass, fields
from typing import Any


STORAGE_KINDS = ("reset", "server_busy", "timeout", "corrupt_request", "corrupt_response")


@dataclass
class StorageFaults:
    reset: float = 0.0        # rate of connections closed without an answer
    server_busy: float = 0.0  # rate of 503 ServerBusy
    timeout: float = 0.0      # rate of 500 OperationTimedOut
    corrupt_request: float = 0.0   # rate of bodies damaged on their way to Azurite
    corrupt_response: float = 0.0  # rate of answers damaged on their way back
    latency: float = 0.0      # seconds added before a matching request is served
    times: int = 0            # at most this many faults in all; 0: no limit
    method: str = ""
    operation: str = ""


@dataclass
class ArmFaults:
    throttle: float = 0.0     # rate of 429 TooManyRequests
    retry_after: int = 1      # seconds, the Retry-After of those answers
    method: str = ""
    operation: str = ""


def _build(kind: type, values: dict[str, Any]) -> Any:
    known = {f.name for f in fields(kind)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown {kind.__name__} settings {sorted(unknown)}; "
                         f"known: {sorted(known)}")
    return kind(**values)


class Faults:
    """The current settings, the RNG, and how many faults of each kind were injected."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.configure({}, {}, 0)

    def configure(self, storage: dict[str, Any], arm: dict[str, Any], seed: int) -> None:
        storage_faults, arm_faults = _build(StorageFaults, storage), _build(ArmFaults, arm)
        with self.lock:
            self.storage, self.arm = storage_faults, arm_faults
            self.rng = random.Random(seed)
            self.injected: dict[str, int] = {}

    def settings(self) -> dict[str, Any]:
        with self.lock:
            return {"storage": asdict(self.storage), "arm": asdict(self.arm)}

    def storage_fault(self, method: str, operation: str) -> tuple[str, float]:
        """(kind, latency): kind is "" or one of STORAGE_KINDS."""
        with self.lock:
            f = self.storage
            if not _matches(f.method, f.operation, method, operation):
                return "", 0.0
            if f.times and sum(n for k, n in self.injected.items()
                               if k.startswith("storage.")) >= f.times:
                return "", f.latency
            for kind in STORAGE_KINDS:
                rate = getattr(f, kind)
                if rate and self.rng.random() < rate:
                    self._count(f"storage.{kind}")
                    return kind, f.latency
            return "", f.latency

    def arm_throttle(self, method: str, operation: str) -> int | None:
        """Retry-After seconds if this ARM request is to be throttled."""
        with self.lock:
            f = self.arm
            if (f.throttle and _matches(f.method, f.operation, method, operation)
                    and self.rng.random() < f.throttle):
                self._count("arm.throttle")
                return f.retry_after
            return None

    def counts(self) -> dict[str, int]:
        with self.lock:
            return dict(self.injected)

    def _count(self, kind: str) -> None:
        self.injected[kind] = self.injected.get(kind, 0) + 1


def _matches(want_method: str, want_operation: str, method: str, operation: str) -> bool:
    return ((not want_method or want_method.upper() == method)
            and (not want_operation or want_operation.lower() == operation.lower()))
