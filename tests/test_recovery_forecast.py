"""The RTO forecast: one execution's RTO split into parts that add up, and a plan's
forecast from the medians of its last executions (dr_control/recovery/forecast.py)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from dr_control.recovery.forecast import (DEFAULT_PROVIDER_WAIT, DEFAULT_THROUGHPUT, MIB,
                                          forecast, format_forecast, measure)

GIB = 1 << 30
T0 = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)


def ev(at: float, step: str, group: str = "", workload: str = "", detail: str = "") -> dict:
    return {"time": (T0 + timedelta(seconds=at)).isoformat(), "group": group,
            "workload": workload, "step": step, "detail": detail}


def disk(at: float, group: str, size: int, seconds: float) -> dict:
    # The detail exactly as recovery/base.py prepare_disks writes it.
    return ev(at, "disk-prepared", group, f"sites/s/workloads/{group}-1",
              f"datastore1/{group}.vmdk: {size} bytes in {seconds:.1f} s "
              f"({size / MIB / seconds:.1f} MiB/s); uploaded")


def execution(events: list[dict], *, state: str = "completed", name: str = "e",
              end_time: datetime | None = None) -> dict:
    last = datetime.fromisoformat(events[-1]["time"])
    return {"name": name, "events": events, "state": state, "mode": "test",
            "create_time": T0, "end_time": end_time or last}


def run(name: str, *, size: int = 10 * GIB, restore: float = 100.0,
        waits: dict[str, float] | None = None, validation: float = 5.0,
        overhead: float = 2.0) -> dict:
    """A completed execution: restore of `size` bytes (one disk per group, all at once)
    in `restore` s, then each group up in its wait, validated in `validation` s, and
    `overhead` s of our own before each group and before the end."""
    waits = {"db": 40.0, "web": 60.0} if waits is None else waits
    t = 0.0
    events = [ev(t, "started", detail="test")]
    share = size // len(waits)
    events += [disk(t + restore, g, share, restore) for g in waits]
    t += restore
    events.append(ev(t, "prepare-completed"))
    for g, wait in waits.items():
        t += overhead
        events.append(ev(t, "group-started", g))
        events.append(ev(t + 1, "instance-launched", g, f"sites/s/workloads/{g}-1"))
        t += wait
        events.append(ev(t, "instance-running", g, f"sites/s/workloads/{g}-1"))
        events.append(ev(t, "group-running", g))
        t += validation
        events.append(ev(t - 1, "validation-passed", g, f"sites/s/workloads/{g}-1"))
        events.append(ev(t, "group-validated", g))
    t += overhead
    events.append(ev(t, "completed"))
    return execution(events, name=name)


PLAN = [("db", 0.0, [5 * GIB]), ("web", 0.0, [5 * GIB])]


# --- measure --------------------------------------------------------------------------


def test_measure_splits_the_rto_into_parts_that_add_up():
    events = [
        ev(0, "started", detail="failover"),
        ev(5, "script-completed", detail="pre ./quiesce.sh: exit 0 in 4.0 s"),  # [1, 5]
        disk(86, "db", 5 * GIB, 80.0),
        disk(106, "web", 10 * GIB, 100.0),
        ev(106, "prepare-completed"),                                  # restore 5 -> 106
        ev(110, "group-started", "db"),
        ev(111, "instance-launched", "db", "sites/s/workloads/db-1"),
        ev(150, "instance-running", "db", "sites/s/workloads/db-1"),
        ev(150, "group-running", "db"),                                # db waits 40
        ev(155, "validation-passed", "db", "sites/s/workloads/db-1"),
        ev(156, "group-validated", "db"),                              # 6
        ev(156, "group-delayed", "web", detail="30"),
        ev(186, "group-started", "web"),                               # delay 30
        # No duration in the detail: the gap since the event before, [186, 190], which
        # is taken out of web's provider window.
        ev(190, "script-completed", "web", "sites/s/workloads/web-1",
           "pre ./warm.sh: exit 0"),
        ev(191, "instance-launched", "web", "sites/s/workloads/web-1"),
        ev(240, "instance-running", "web", "sites/s/workloads/web-1"),
        ev(246, "group-running", "web"),                               # web 60 - 4
        ev(250, "validation-failed", "web", "sites/s/workloads/web-1",
           "tcp 443: refused"),
        ev(251, "group-validated", "web"),                             # 5
        ev(255, "script-completed", detail="post ./notify.sh: exit 0 in 2.5 s"),
        ev(260, "partially-completed"),
    ]
    m = measure(execution(events, state="partially-completed", name="x"))
    assert m is not None
    assert m.execution == "x" and m.state == "partially-completed"
    assert m.rto_seconds == pytest.approx(260)
    assert m.restore_seconds == pytest.approx(101)
    assert m.restore_bytes == 15 * GIB
    assert m.provider_seconds_by_group == pytest.approx({"db": 40, "web": 56})
    assert m.provider_seconds == pytest.approx(96)
    assert m.validation_seconds == pytest.approx(11)
    assert m.delay_seconds == pytest.approx(30)
    assert m.script_seconds == pytest.approx(4 + 4 + 2.5)
    assert m.script_timing == "parsed and gaps"
    # The rest: 0-1, 106-110, 251-252.5, 255-260.
    assert m.overhead_seconds == pytest.approx(1 + 4 + 1.5 + 5)
    parts = (m.restore_seconds + m.provider_seconds + m.validation_seconds
             + m.script_seconds + m.delay_seconds + m.overhead_seconds)
    assert parts == pytest.approx(m.rto_seconds)


def test_a_drills_cleanup_is_not_part_of_its_rto():
    done = run("drill")
    events = [*done["events"], ev(900, "cleanup-started"), ev(960, "cleanup-completed")]
    cleaned = execution(events, state="cleaned-up", end_time=T0 + timedelta(seconds=960))
    plain, after = measure(done), measure(cleaned)
    assert plain is not None and after is not None
    assert after.rto_seconds == pytest.approx(plain.rto_seconds)
    assert after.overhead_seconds == pytest.approx(plain.overhead_seconds)
    assert after.state == "completed"


def test_a_cleaned_up_drill_without_an_end_event_ends_before_its_cleanup():
    # As executions recorded before the end events existed: the state and end_time are
    # the cleanup's; the drill ended at its last event before the cleanup started.
    done = run("drill")
    events = [*done["events"][:-1], ev(900, "cleanup-started"),
              ev(960, "cleanup-completed")]
    cleaned = execution(events, state="cleaned-up", end_time=T0 + timedelta(seconds=960))
    m = measure(cleaned)
    assert m is not None and m.state == "cleaned-up"
    assert m.rto_seconds == pytest.approx(measure(done).rto_seconds - 2.0)


def test_no_started_event_starts_at_create_time():
    e = run("old")
    e["events"] = e["events"][1:]
    e["create_time"] = (T0 - timedelta(seconds=10)).isoformat()
    m = measure(e)
    assert m is not None and m.rto_seconds == pytest.approx(measure(run("new")).rto_seconds + 10)


def test_failed_and_running_executions_are_no_basis():
    failed = execution([
        ev(0, "started"), disk(50, "db", GIB, 50.0), disk(50, "web", GIB, 50.0),
        ev(50, "prepare-completed"), ev(52, "group-started", "db"),
        ev(90, "group-running", "db"), ev(95, "group-validated", "db"),
        ev(97, "group-started", "web"), ev(2000, "failed", detail="web did not come up")],
        state="failed")
    running = run("r")
    running["events"] = running["events"][:-1]
    running["state"], running["end_time"] = "running", None
    assert measure(failed) is None
    assert measure(running) is None

    base = forecast(PLAN, [run("a"), run("b")])
    with_failed = forecast(PLAN, [run("a"), run("b"), failed, running])
    assert with_failed == base
    assert with_failed.last_execution == "b"


def test_a_failed_execution_with_every_group_up_is_a_basis():
    e = run("late")
    e["events"][-1] = {**e["events"][-1], "step": "failed", "detail": "post step failed"}
    e["state"] = "failed"
    m = measure(e)
    assert m is not None and m.state == "failed"
    f = forecast(PLAN, [e])
    assert "every boot group up" in f.basis


# --- forecast ---------------------------------------------------------------------------


def test_doubled_disks_forecast_double_the_restore():
    history = [run(f"e{i}", size=10 * GIB, restore=100.0) for i in range(3)]
    now = forecast(PLAN, history)
    doubled = forecast([("db", 0.0, [5 * GIB, 5 * GIB]), ("web", 0.0, [10 * GIB])],
                       history)
    assert now.throughput_bytes_per_second == pytest.approx(10 * GIB / 100.0)
    assert now.restore_seconds == pytest.approx(100.0)
    assert doubled.restore_seconds == pytest.approx(2 * now.restore_seconds)
    assert doubled.restore_bytes == 20 * GIB
    # Only the restore grows.
    assert doubled.rto_seconds - now.rto_seconds == pytest.approx(100.0)


def test_medians_resist_one_outlier():
    history = [run("e1"), run("e2"),
               run("slow", restore=1000.0, waits={"db": 400.0, "web": 600.0},
                   validation=90.0, overhead=300.0),
               run("e3"), run("e4")]
    f = forecast(PLAN, history)
    assert f.restore_seconds == pytest.approx(100.0)
    assert f.provider_seconds_by_group == pytest.approx({"db": 40.0, "web": 60.0})
    assert f.validation_seconds == pytest.approx(10.0)
    assert f.overhead_seconds == pytest.approx(6.0)
    assert f.rto_seconds == pytest.approx(measure(run("x")).rto_seconds)
    assert f.basis == "the last 5 completed executions (median)"
    assert f.last_execution == "e4"


def test_only_the_last_five_usable_executions_count():
    old = [run(f"old{i}", waits={"db": 400.0, "web": 600.0}) for i in range(5)]
    new = [run(f"new{i}") for i in range(5)]
    f = forecast(PLAN, old + new)
    assert f.provider_seconds_by_group == pytest.approx({"db": 40.0, "web": 60.0})


def test_no_history_uses_defaults_and_says_so():
    plan = [("db", 0.0, [10 * GIB]), ("web", 30.0, [GIB, GIB])]
    f = forecast(plan, [])
    assert f.basis.startswith("no execution yet: defaults")
    assert f.throughput_bytes_per_second == DEFAULT_THROUGHPUT
    assert f.restore_seconds == pytest.approx(12 * GIB / DEFAULT_THROUGHPUT)
    assert f.provider_seconds == pytest.approx(2 * DEFAULT_PROVIDER_WAIT)
    assert f.delay_seconds == pytest.approx(30.0)
    assert f.validation_seconds == f.script_seconds == f.overhead_seconds == 0.0
    assert f.rto_seconds == pytest.approx(12 * GIB / DEFAULT_THROUGHPUT + 120 + 30)
    assert f.last_measured_rto_seconds is None and f.last_execution == ""
    assert forecast(plan, [], moves_data=False).restore_seconds == 0.0


def test_only_unusable_history_says_so():
    failed = execution([ev(0, "started"), ev(10, "failed", detail="no quota")],
                       state="failed")
    f = forecast(PLAN, [failed])
    assert f.basis.startswith("no usable execution yet (1 did not")
    assert f.provider_seconds == pytest.approx(2 * DEFAULT_PROVIDER_WAIT)


def test_a_renamed_group_uses_the_median_across_groups():
    history = [run(f"e{i}", waits={"db": 40.0, "web": 100.0}) for i in range(3)]
    f = forecast([("db", 0.0, [GIB]), ("frontend", 0.0, [GIB])], history)
    assert f.provider_seconds_by_group == pytest.approx({"db": 40.0, "frontend": 70.0})
    assert f.provider_seconds == pytest.approx(110.0)
    assert any("'frontend'" in n for n in f.notes)


def test_a_provider_that_moves_no_data_forecasts_no_restore():
    history = []
    for i in range(2):
        e = run(f"aws{i}")
        e["events"] = [x for x in e["events"]
                       if x["step"] not in ("disk-prepared", "prepare-completed")]
        history.append(e)
    f = forecast(PLAN, history)
    assert f.restore_seconds == 0.0
    # The time the restore took in run() is now the gap before db starts: overhead.
    assert f.overhead_seconds == pytest.approx(106.0)


def test_format_shows_each_part_its_share_the_basis_and_the_last_rto():
    f = forecast([("db", 0.0, [5 * GIB]), ("web", 20.0, [5 * GIB])],
                 [run("e1"), run("20261201t100000z-7")])
    text = format_forecast(f)
    lines = text.splitlines()
    restore = next(ln for ln in lines if ln.startswith("restore (10.0 GiB at 102.4 MiB/s)"))
    assert restore.split()[-2:] == ["100.0", f"{100 * 100 / f.rto_seconds:.1f}%"]
    assert any(ln.startswith("  boot group web") and ln.split()[-1] == "60.0" for ln in lines)
    delays = next(ln for ln in lines if ln.startswith("configured delays"))
    assert delays.split()[-2] == "20.0"
    total = next(ln for ln in lines if ln.startswith("forecast RTO"))
    assert f"{f.rto_seconds:.1f}" in total and "100.0%" in total
    assert "basis: the last 2 completed executions (median)" in lines
    assert lines[-1] == (f"last measured RTO: {f.last_measured_rto_seconds:.1f} s "
                         f"(3 min 36 s, 20261201t100000z-7)")
    none = format_forecast(forecast(PLAN, []))
    assert none.splitlines()[-1] == "last measured RTO: none"


def test_as_dict_is_json():
    f = forecast(PLAN, [run("e1")])
    d = json.loads(json.dumps(f.as_dict()))
    assert d["rto_seconds"] == pytest.approx(f.rto_seconds)
    assert d["provider_seconds_by_group"] == {"db": 40.0, "web": 60.0}
    assert d["basis"] == "the last completed execution (one, no median)"


def test_a_prepare_step_that_moved_nothing_forecasts_no_restore():
    """EC2 recovery: a prepare-completed a few ms after the start and no disk-prepared
    (EC2 makes the volumes itself): the plan's bytes are not forecast as a restore."""
    events = [ev(0, "started", detail="test"), ev(0.004, "prepare-completed"),
              ev(0.01, "group-started", "db"),
              ev(0.5, "instance-launched", "db", "sites/s/workloads/db-1"),
              ev(2.0, "instance-running", "db", "sites/s/workloads/db-1"),
              ev(2.0, "group-running", "db"), ev(2.0, "group-validated", "db"),
              ev(2.02, "completed")]
    f = forecast([("db", 0.0, [80 * GIB])], [execution(events)])
    assert f.restore_seconds == 0
    assert f.rto_seconds == pytest.approx(2.02, abs=0.05)
