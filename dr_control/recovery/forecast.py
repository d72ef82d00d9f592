"""The RTO forecast of a recovery plan, from the steps its executions recorded.

Every recovery execution records the time of each step (DESIGN.md 6), so each recovery
plan gets a forecast of how long its next execution takes, made of parts an operator
can check against the last measured RTO (the UI and `drctl recovery-plan forecast NAME`
show each part).

`measure` splits one ended execution's RTO (its `started` event, else its create_time,
to its last event `completed` / `partially-completed` / `failed` / `cancelled`, else its
end_time) into parts that are disjoint in time and so add up to it:
- *restore*: from the event before the first disk-prepared to prepare-completed (for
  executions recorded before prepare-completed existed, the last disk-prepared), with
  the bytes of every disk-prepared event: their quotient is the aggregate throughput of
  the nodes writing disks at the site, all groups at once;
- *provider*: per boot group, group-started (else the event before the group's first
  launch step) to group-running: the provider's wait for the instances or VMs to come
  up;
- *validation*: per boot group, group-running to group-validated;
- *delay*: per boot group, group-delayed to group-started (the configured waits);
- *scripts*: each script-completed / script-failed event ends a script that lasted
  the last "in N s" of its detail if it says so ("parsed"), else the gap since the
  previous event ("gaps"); scripts of a group's workloads run side by side, so it is
  the time covered by any script (their union), and that time is taken out of the
  window it falls in, never counted twice;
- *overhead*: the rest (never negative): our own orchestration, a control-plane
  restart's downtime, a migrate's final sync.

`forecast` then takes up to the last 5 usable executions (newest last) and predicts:
restore = the plan's bytes today / the median measured throughput; provider wait per
boot group = the median of that group's measured waits (a renamed or new group: the
median across every group's, else a default); validation, scripts and overhead = the
medians of the measured totals; delays = the configured ones. Medians, so one slow
run (a throttled API, a cold cache) does not move the forecast.

What the model does not know: it scales restore with bytes at a fixed aggregate
throughput (more disks than nodes have slots can make it slower, a new node faster);
a group's provider wait does not grow with its number of workloads (they start in
parallel, within the provider's limiter); executions of every mode count alike (a test
drill's isolated network boots as fast as a failover's); without any usable execution
it is a guess from defaults, and `basis` says so.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

MIB = 1 << 20
# A node writing a disk at a site through its API (a datastore upload, a managed-disk
# upload, a local qcow2) does about this much when nothing was ever measured.
DEFAULT_THROUGHPUT = 100.0 * MIB
# What a provider typically takes to bring a boot group's instances up (EC2, Azure,
# vSphere all take tens of seconds to a few minutes).
DEFAULT_PROVIDER_WAIT = 60.0
# Enough executions to have a median that ignores one or two odd runs, few enough that
# a plan that changed (a new site, new nodes) is forecast from what it is now.
HISTORY = 5

ENDS = frozenset({"completed", "partially-completed", "failed", "cancelled"})
# Executions that did not get every workload up are a basis only if every boot group
# they touched reached group-running (their parts up to there are real).
GOOD_ENDS = frozenset({"completed", "partially-completed"})
SCRIPT_STEPS = frozenset({"script-completed", "script-failed"})
LAUNCH_STEPS = frozenset({"image-registered", "instance-launched", "instance-running",
                          "group-running"})

# prepare_disks (recovery/base.py): "{where}: {size} bytes in {seconds:.1f} s (...)"
_DISK = re.compile(r": (\d+) bytes in (\d+(?:\.\d+)?) s \(")
_SECONDS = re.compile(r"\bin (\d+(?:\.\d+)?) ?s\b")


# --- values -------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """One ended execution's RTO split into disjoint parts (seconds); they add up to
    `rto_seconds` unless the events overlap in a way the model does not expect, in
    which case overhead is 0 and the parts are the measured windows."""

    execution: str
    state: str
    rto_seconds: float
    restore_seconds: float
    restore_bytes: int
    provider_seconds: float
    validation_seconds: float
    script_seconds: float
    delay_seconds: float
    overhead_seconds: float
    provider_seconds_by_group: dict[str, float] = field(default_factory=dict)
    # How script_seconds was found: "parsed" (the events said how long), "gaps" (the
    # time since the event before each), "parsed and gaps", or "" (no script ran).
    script_timing: str = ""

    @property
    def throughput_bytes_per_second(self) -> float | None:
        if self.restore_bytes > 0 and self.restore_seconds > 0:
            return self.restore_bytes / self.restore_seconds
        return None


@dataclass(frozen=True)
class Forecast:
    """The predicted RTO of a recovery plan's next execution and its parts (seconds)."""

    rto_seconds: float
    restore_seconds: float
    provider_seconds: float
    validation_seconds: float
    script_seconds: float
    delay_seconds: float
    overhead_seconds: float
    throughput_bytes_per_second: float
    basis: str
    last_measured_rto_seconds: float | None
    last_execution: str
    restore_bytes: int = 0
    provider_seconds_by_group: dict[str, float] = field(default_factory=dict)
    # Where a part is not from its own measurements (a group's wait from the median
    # across groups, restore at the default throughput), one sentence each.
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["notes"] = list(self.notes)
        return d


# --- measuring one execution --------------------------------------------------------


def _seconds(value: Any) -> float | None:
    """A time as POSIX seconds: an ISO 8601 string (an event's, or create_time /
    end_time as the API gives them) or a datetime (the database's); naive means UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if not isinstance(value, datetime):
        raise TypeError(f"a time is an ISO 8601 string or a datetime, not {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


@dataclass(frozen=True)
class _Event:
    t: float
    group: str
    step: str
    detail: str


def _union(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(s for s in spans if s[1] > s[0]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _outside(a: float, b: float, covered: list[tuple[float, float]]) -> float:
    """The part of [a, b] that no span of `covered` (disjoint, sorted) overlaps."""
    if b <= a:
        return 0.0
    inside = sum(max(0.0, min(b, y) - max(a, x)) for x, y in covered)
    return max(0.0, (b - a) - inside)


def measure(execution: Mapping[str, Any]) -> Measured | None:
    """Splits an ended execution's RTO into its parts; None when it is no basis for a
    forecast: still running, or failed / cancelled before every boot group it touched
    (by a disk, a script or a launch) reached group-running, or with no times.

    `execution` has "events" (dicts with "time", "group", "workload", "step",
    "detail"), "create_time", "end_time", "state" and "name" (or "id")."""
    raw = [_Event(t, str(e.get("group") or ""), str(e.get("step") or ""),
                  str(e.get("detail") or ""))
           for e in execution.get("events") or () if (t := _seconds(e.get("time"))) is not None]
    events = sorted(raw, key=lambda e: e.t)  # stable: same-time events keep their order
    # A test drill's cleanup comes after its end and is not part of the RTO.
    first_cleanup = next((i for i, e in enumerate(events) if e.step.startswith("cleanup")),
                         len(events))
    events = events[:first_cleanup]

    starts = [e.t for e in events if e.step == "started"]
    start = starts[0] if starts else _seconds(execution.get("create_time"))
    ends = [e for e in events if e.step in ENDS]
    state = ends[-1].step if ends else str(execution.get("state") or "")
    if ends:
        end: float | None = ends[-1].t
    elif state == "cleaned-up":
        # Its end_time is the cleanup's; how it ended is not recorded, so it must pass
        # the test a failed one does.
        end = events[-1].t if events else None
    else:
        end = _seconds(execution.get("end_time"))
    if state not in ENDS and state != "cleaned-up":
        return None
    if start is None or end is None or end < start:
        return None
    events = [e for e in events if start <= e.t <= end]

    groups: list[str] = []
    for e in events:
        if e.group and e.group not in groups:
            groups.append(e.group)
    running = {e.group for e in events if e.step == "group-running"}
    if not running or any(g not in running for g in groups):
        if state not in GOOD_ENDS or not groups:
            return None

    def before(i: int) -> float:
        return events[i - 1].t if i > 0 else start

    # Scripts: the time any of them ran, taken out of every other window.
    spans, parsed, gaps = [], False, False
    for i, e in enumerate(events):
        if e.step not in SCRIPT_STEPS:
            continue
        said = _SECONDS.findall(e.detail)
        if said:
            spans.append((max(start, e.t - float(said[-1])), e.t))
            parsed = True
        else:
            spans.append((before(i), e.t))
            gaps = True
    scripts = _union(spans)
    script_seconds = sum(b - a for a, b in scripts)
    timing = " and ".join(w for w, on in (("parsed", parsed), ("gaps", gaps)) if on)

    # Restore: every disk of every group, before any group boots.
    restore_bytes, restore_seconds = 0, 0.0
    prep = [i for i, e in enumerate(events) if e.step in ("disk-prepared", "prepare-completed")]
    if prep:
        for i in prep:
            m = _DISK.search(events[i].detail)
            if events[i].step == "disk-prepared" and m:
                restore_bytes += int(m.group(1))
        done = [events[i].t for i in prep if events[i].step == "prepare-completed"]
        prep_end = done[-1] if done else events[prep[-1]].t
        restore_seconds = _outside(before(prep[0]), prep_end, scripts)

    provider_by_group: dict[str, float] = {}
    validation_seconds = delay_seconds = 0.0
    for g in groups:
        mine = [(i, e) for i, e in enumerate(events) if e.group == g]
        at = {e.step: e.t for _, e in mine}  # the last of each step
        launch = next((i for i, e in mine if e.step in LAUNCH_STEPS), None)
        if "group-started" in at:
            boot = at["group-started"]
        elif launch is not None:
            boot = before(launch)
        else:
            continue  # only disks or scripts of it: it never booted
        if "group-running" in at:
            provider_by_group[g] = _outside(boot, at["group-running"], scripts)
            checked = at.get("group-validated") or max(
                (e.t for _, e in mine if e.step.startswith("validation-")), default=None)
            if checked is not None:
                validation_seconds += _outside(at["group-running"], checked, scripts)
        if "group-delayed" in at:
            delay_seconds += _outside(at["group-delayed"], boot, scripts)

    provider_seconds = sum(provider_by_group.values())
    rto = end - start
    accounted = (restore_seconds + provider_seconds + validation_seconds + script_seconds
                 + delay_seconds)
    return Measured(
        execution=str(execution.get("name") or execution.get("id") or ""), state=state,
        rto_seconds=rto, restore_seconds=restore_seconds, restore_bytes=restore_bytes,
        provider_seconds=provider_seconds, validation_seconds=validation_seconds,
        script_seconds=script_seconds, delay_seconds=delay_seconds,
        overhead_seconds=max(0.0, rto - accounted),
        provider_seconds_by_group=provider_by_group, script_timing=timing)


# --- the forecast ---------------------------------------------------------------------


def forecast(groups: Sequence[tuple[str, float, Sequence[int]]],
             executions: Sequence[Mapping[str, Any]], *,
             default_throughput: float = DEFAULT_THROUGHPUT,
             default_provider_wait: float = DEFAULT_PROVIDER_WAIT,
             moves_data: bool = True) -> Forecast:
    """The RTO forecast of a recovery plan whose boot groups are `groups` (in boot
    order: name, configured delay_seconds, the sizes in bytes of every disk of its
    workloads in the newest recovery point), from `executions` (oldest first; any
    state: the unusable are skipped). `moves_data` is for a plan never executed: False
    for a provider that restores nothing itself (aws boots from snapshots), so restore
    is 0; with history, the executions tell."""
    usable = [m for e in executions if (m := measure(e)) is not None][-HISTORY:]
    notes: list[str] = []
    total_bytes = sum(int(s) for _, _, sizes in groups for s in sizes)

    throughputs = [t for m in usable if (t := m.throughput_bytes_per_second) is not None]
    # Bytes, not time: an aws execution has a prepare step of a few ms that moves
    # nothing (EC2 makes the volumes from the snapshots itself).
    moved = any(m.restore_bytes for m in usable)
    if throughputs:
        throughput = statistics.median(throughputs)
    else:
        throughput = default_throughput
    if (usable and not moved) or (not usable and not moves_data) or total_bytes == 0:
        restore = 0.0
        if usable and not moved and total_bytes:
            notes.append("no execution moved data (the provider restores the disks "
                         "itself, in its wait): restore 0 s")
    else:
        restore = total_bytes / throughput
        if not throughputs and usable:
            notes.append(f"no execution timed its restore: at the default "
                         f"{default_throughput / MIB:.1f} MiB/s")

    waits: dict[str, list[float]] = {}
    for m in usable:
        for g, w in m.provider_seconds_by_group.items():
            waits.setdefault(g, []).append(w)
    every = [w for ws in waits.values() for w in ws]
    across = statistics.median(every) if every else default_provider_wait
    by_group: dict[str, float] = {}
    for name, _, _ in groups:
        if name in waits:
            by_group[name] = statistics.median(waits[name])
        else:
            by_group[name] = across
            if every:
                notes.append(f"boot group {name!r} was never measured: the median wait "
                             f"across groups, {across:.1f} s")

    def median_of(part: str) -> float:
        return statistics.median(getattr(m, part) for m in usable) if usable else 0.0

    provider = sum(by_group.values())
    validation = median_of("validation_seconds")
    scripts = median_of("script_seconds")
    overhead = median_of("overhead_seconds")
    delays = sum(max(0.0, float(d)) for _, d, _ in groups)
    last = usable[-1] if usable else None
    return Forecast(
        rto_seconds=restore + provider + validation + scripts + delays + overhead,
        restore_seconds=restore, provider_seconds=provider, validation_seconds=validation,
        script_seconds=scripts, delay_seconds=delays, overhead_seconds=overhead,
        throughput_bytes_per_second=throughput,
        basis=_basis(usable, len(executions), default_throughput, default_provider_wait),
        last_measured_rto_seconds=last.rto_seconds if last else None,
        last_execution=last.execution if last else "", restore_bytes=total_bytes,
        provider_seconds_by_group=by_group, notes=tuple(notes))


def _basis(usable: Sequence[Measured], seen: int, throughput: float, wait: float) -> str:
    if not usable:
        defaults = (f"defaults: restore at {throughput / MIB:.1f} MiB/s, {wait:.0f} s "
                    f"provider wait per boot group, no validation, script or overhead time")
        if seen:
            return (f"no usable execution yet ({seen} did not bring every boot group up): "
                    f"{defaults}")
        return f"no execution yet: {defaults}"
    kind = ("completed" if all(m.state in GOOD_ENDS for m in usable)
            else "ended (every boot group up)")
    if len(usable) == 1:
        return f"the last {kind} execution (one, no median)"
    return f"the last {len(usable)} {kind} executions (median)"


# --- the table ------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s"


def format_forecast(f: Forecast) -> str:
    """The forecast as `drctl recovery-plan forecast NAME` prints it: each part in
    seconds and as a share of the RTO, the basis and the last measured RTO."""
    total = f.rto_seconds

    def pct(v: float) -> str:
        return f"{100 * v / total:5.1f}%" if total > 0 else "    -"

    restore_how = (f"restore ({f.restore_bytes / (1 << 30):.1f} GiB at "
                   f"{f.throughput_bytes_per_second / MIB:.1f} MiB/s)"
                   if f.restore_seconds else "restore")
    rows = [(restore_how, f.restore_seconds),
            ("provider waits", f.provider_seconds),
            *((f"  boot group {g}", w) for g, w in f.provider_seconds_by_group.items()),
            ("validation", f.validation_seconds),
            ("scripts", f.script_seconds),
            ("configured delays", f.delay_seconds),
            ("orchestration overhead", f.overhead_seconds)]
    width = max(36, *(len(r[0]) + 2 for r in rows))
    lines = [f"{'PART':<{width}}{'SECONDS':>10}  {'OF RTO':>6}"]
    for label, v in rows:
        share = "" if label.startswith("  ") else pct(v)
        lines.append(f"{label:<{width}}{v:>10.1f}  {share:>6}".rstrip())
    lines.append(f"{'forecast RTO':<{width}}{total:>10.1f}  {pct(total):>6}"
                 f"  ({_duration(total)})")
    lines.append(f"basis: {f.basis}")
    lines.extend(f"note: {n}" for n in f.notes)
    if f.last_measured_rto_seconds is None:
        lines.append("last measured RTO: none")
    else:
        lines.append(f"last measured RTO: {f.last_measured_rto_seconds:.1f} s "
                     f"({_duration(f.last_measured_rto_seconds)}, {f.last_execution})")
    return "\n".join(lines)
