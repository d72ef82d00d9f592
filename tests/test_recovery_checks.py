"""Validation checks and pre/post scripts of a recovery (dr_control.recovery.checks and
.scripts), against real things: TCP listeners and an aiohttp server on loopback, real
shell commands and their process groups. Each test takes at most a couple of seconds."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest
from aiohttp import web

from dr_common.errors import InvalidArgument
from dr_control.recovery.checks import check_checks, run_check, run_checks
from dr_control.recovery.scripts import check_scripts, run_script

FACTS = {"address": "127.0.0.1", "workload": "sites/s/workloads/web 1",
         "instance_id": "i-0abc", "name": "web 1"}


def one(**given) -> dict:
    """A check as check_checks normalizes it, fast: no retries unless asked."""
    given.setdefault("retries", 0)
    given.setdefault("interval_seconds", 0)
    return check_checks("checks", [given])[0]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def running(pid: int) -> bool:
    """Whether `pid` still runs (a zombie does not: this machine's init may never reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def gone(pid: int) -> bool:
    """Whether `pid` has stopped running within a second of being killed (a kill is
    delivered, not waited for)."""
    for _ in range(100):
        if not running(pid):
            return True
        await asyncio.sleep(0.01)
    return False


# --- check_checks ---------------------------------------------------------------------


def test_checks_normalized_with_defaults_and_stable():
    given = [{"kind": "tcp", "port": 22},
             {"kind": "http", "url": "http://{address}:8080/health"},
             {"kind": "command", "command": "ping -c1 {address}", "retries": 0}]
    out = check_checks("boot_groups[0].workloads[0].checks", given)
    assert out[0] == {"kind": "tcp", "host": "{address}", "port": 22, "url": "", "status": 0,
                      "body_contains": "", "command": "", "timeout_seconds": 10,
                      "retries": 5, "interval_seconds": 2}
    assert out[1]["status"] == 200 and out[1]["host"] == "" and out[1]["port"] == 0
    assert out[2]["retries"] == 0 and out[2]["command"] == "ping -c1 {address}"
    # Stored as JSON and read back (a Struct makes numbers doubles), it checks the same.
    again = json.loads(json.dumps(out).replace(": 22,", ": 22.0,"))
    assert check_checks("x", again) == out
    assert check_checks("x", None) == []


@pytest.mark.parametrize("given, field", [
    ({"kind": "ping"}, "c[0].kind"),
    ({"port": 1}, "c[0].kind"),
    ({"kind": "tcp"}, "c[0].port"),
    ({"kind": "tcp", "port": 70000}, "c[0].port"),
    ({"kind": "tcp", "port": "ssh"}, "c[0].port"),
    ({"kind": "tcp", "port": True}, "c[0].port"),
    ({"kind": "tcp", "port": 22, "prot": 1}, "c[0].prot"),
    ({"kind": "tcp", "port": 22, "url": "http://x/"}, "c[0].url"),
    ({"kind": "tcp", "port": 22, "host": "{hostname}"}, "c[0].host"),
    ({"kind": "tcp", "port": 22, "timeout_seconds": 0}, "c[0].timeout_seconds"),
    ({"kind": "tcp", "port": 22, "timeout_seconds": 3601}, "c[0].timeout_seconds"),
    ({"kind": "tcp", "port": 22, "retries": -1}, "c[0].retries"),
    ({"kind": "tcp", "port": 22, "retries": 1.5}, "c[0].retries"),
    ({"kind": "tcp", "port": 22, "interval_seconds": 3601}, "c[0].interval_seconds"),
    ({"kind": "http"}, "c[0].url"),
    ({"kind": "http", "url": "ftp://{address}/"}, "c[0].url"),
    ({"kind": "http", "url": "{address}:8080/health"}, "c[0].url"),
    ({"kind": "http", "url": "http://{address}:8080/{path}"}, "c[0].url"),
    ({"kind": "http", "url": "http://{address}/", "status": 700}, "c[0].status"),
    ({"kind": "http", "url": "http://{address}/", "body_contains": 5}, "c[0].body_contains"),
    ({"kind": "http", "url": "http://{address}/", "command": "true"}, "c[0].command"),
    ({"kind": "command"}, "c[0].command"),
    ({"kind": "command", "command": "   "}, "c[0].command"),
    ({"kind": "command", "command": "awk '{print $1}'"}, "c[0].command"),
    ({"kind": "command", "command": "echo ${HOME}"}, "c[0].command"),
    ({"kind": "command", "command": "echo {address!r}"}, "c[0].command"),
    ({"kind": "command", "command": "echo }"}, "c[0].command"),
])
def test_checks_refused_naming_the_field(given, field):
    with pytest.raises(InvalidArgument) as e:
        check_checks("c", [given])
    assert e.value.field == field, e.value.message
    assert field.split(".")[-1] in e.value.message


def test_checks_not_a_list_or_not_objects():
    with pytest.raises(InvalidArgument) as e:
        check_checks("c", {"kind": "tcp"})
    assert e.value.field == "c"
    with pytest.raises(InvalidArgument) as e:
        check_checks("c", [{"kind": "tcp", "port": 1}, "tcp:22"])
    assert e.value.field == "c[1]"
    # Literal braces are written doubled.
    assert check_checks("c", [{"kind": "command", "command": "awk '{{print $1}}'"}])


# --- tcp ------------------------------------------------------------------------------


async def test_tcp_open_and_closed_port():
    accepted = asyncio.Event()

    async def serve(reader, writer):
        accepted.set()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        ok = await run_check(one(kind="tcp", port=port), FACTS)
        assert ok.passed and ok.attempts == 1, ok
        assert ok.check == f"tcp 127.0.0.1:{port}"
        await asyncio.wait_for(accepted.wait(), 5)

    bad = await run_check(one(kind="tcp", port=closed_port(), retries=2), FACTS)
    assert not bad.passed and bad.attempts == 3
    assert "after 3 attempts" in bad.detail and "Error" in bad.detail
    assert bad.as_dict()["passed"] is False


async def test_missing_fact_fails_the_check():
    result = await run_check(one(kind="tcp", port=22), {"workload": "w", "address": ""})
    assert not result.passed and result.attempts == 0
    assert "no address" in result.detail


# --- http -----------------------------------------------------------------------------


@pytest.fixture
async def web_server():
    """An aiohttp server on loopback: /health answers 200 "status: ok", /down 503,
    /big 2 MiB, /moved a redirect to /health. Yields its base URL."""
    async def health(_):
        return web.Response(text="status: ok\n")

    async def down(_):
        return web.Response(status=503, text="starting")

    async def big(_):
        return web.Response(body=b"x" * (2 << 20) + b"needle")

    async def moved(_):
        raise web.HTTPFound("/health")

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/down", down)
    app.router.add_get("/big", big)
    app.router.add_get("/moved", moved)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield port
    await runner.cleanup()


async def test_http_status_and_body(web_server):
    port = web_server
    ok = await run_check(one(kind="http", url=f"http://{{address}}:{port}/health",
                             body_contains="status: ok"), FACTS)
    assert ok.passed, ok
    assert ok.check == (f"http http://127.0.0.1:{port}/health status 200 "
                        "body contains 'status: ok'")
    assert "status 200" in ok.detail and "status: ok" in ok.detail

    wrong = await run_check(one(kind="http", url=f"http://{{address}}:{port}/down"), FACTS)
    assert not wrong.passed
    assert "expected status 200, got status 503" in wrong.detail and "starting" in wrong.detail
    assert (await run_check(one(kind="http", url=f"http://{{address}}:{port}/down",
                                status=503), FACTS)).passed

    mismatch = await run_check(one(kind="http", url=f"http://{{address}}:{port}/health",
                                   body_contains="status: degraded"), FACTS)
    assert not mismatch.passed and "does not contain 'status: degraded'" in mismatch.detail

    # Only the first MiB is read: a needle past it is not seen; the excerpt is short.
    big = await run_check(one(kind="http", url=f"http://{{address}}:{port}/big",
                              body_contains="needle"), FACTS)
    assert not big.passed and f"first {1 << 20} bytes" in big.detail
    assert len(big.detail) < 400

    # Redirects are not followed: the redirect's own status is what is checked.
    moved = await run_check(one(kind="http", url=f"http://{{address}}:{port}/moved"), FACTS)
    assert not moved.passed and "got status 302" in moved.detail
    assert (await run_check(one(kind="http", url=f"http://{{address}}:{port}/moved",
                                status=302), FACTS)).passed


async def test_http_retried_until_the_server_comes_up():
    # The port first has a listener that drops every connection (a workload whose
    # service is not up yet); the check's first attempt, failing there, is what sets
    # `failed_once`; only then is the real server started on that port.
    failed_once = asyncio.Event()

    async def drop(_reader, writer):
        failed_once.set()
        writer.close()

    early = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = early.sockets[0].getsockname()[1]
    check = one(kind="http", url=f"http://{{address}}:{port}/health", retries=5,
                interval_seconds=1, timeout_seconds=2)
    task = asyncio.create_task(run_check(check, FACTS))
    await asyncio.wait_for(failed_once.wait(), 5)
    early.close()
    await early.wait_closed()

    async def health(_):
        return web.Response(text="up")

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        result = await asyncio.wait_for(task, 10)
        assert result.passed and result.attempts >= 2, result
        assert "up" in result.detail
    finally:
        task.cancel()
        await runner.cleanup()


# --- command --------------------------------------------------------------------------


async def test_command_exit_status_placeholders_and_env(tmp_path):
    out = tmp_path / "seen"
    ok = await run_check(one(kind="command", command=(
        f"printf '%s|%s|%s|' {{address}} {{name}} \"$DR_INSTANCE_ID\" > {out}; "
        f"printf '%s' \"$DR_WORKLOAD\" >> {out}; echo fine")), FACTS)
    assert ok.passed, ok
    assert ok.detail == "exit 0; output: fine"
    # {name} was quoted for the shell: "web 1" is one argument.
    assert out.read_text() == "127.0.0.1|web 1|i-0abc|sites/s/workloads/web 1"

    bad = await run_check(one(kind="command", command="echo broken >&2; exit 1", retries=1),
                          FACTS)
    assert not bad.passed and bad.attempts == 2
    assert bad.detail.startswith("exit 1; output: broken")

    # A hostile fact is an argument, never more commands.
    hostile = {**FACTS, "name": f"x; touch {tmp_path}/pwned"}
    await run_check(one(kind="command", command="echo {name}"), hostile)
    assert not (tmp_path / "pwned").exists()


async def test_command_timeout_kills_its_process_group(tmp_path):
    pidfile = tmp_path / "pid"
    # The sleep is a grandchild of the check (a child of the shell, in its group).
    check = one(kind="command", timeout_seconds=1,
                command=f"sleep 30 & echo $! > {pidfile}; wait")
    result = await asyncio.wait_for(run_check(check, FACTS), 10)
    assert not result.passed and result.detail.startswith("timed out after 1 s")
    assert result.seconds < 5
    assert await gone(int(pidfile.read_text()))


async def test_cancelled_check_kills_its_command(tmp_path):
    pidfile = tmp_path / "pid"
    check = one(kind="command", timeout_seconds=60,
                command=f"sleep 30 & echo $! > {pidfile}; wait")
    task = asyncio.create_task(run_check(check, FACTS))
    while not pidfile.exists() or not pidfile.read_text().strip():
        await asyncio.sleep(0.01)  # waits for the command to have started its sleep
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await gone(int(pidfile.read_text()))


async def test_run_checks_runs_each(tmp_path):
    results = await run_checks([one(kind="command", command="exit 1"),
                                one(kind="command", command="true")], FACTS)
    assert [r.passed for r in results] == [False, True]


# --- scripts --------------------------------------------------------------------------


def test_scripts_normalized_and_refused():
    assert check_scripts("pre_scripts", [{"command": "true"}]) == [
        {"command": "true", "timeout_seconds": 300}]
    assert check_scripts("s", None) == []
    for given, field in [({}, "s[0].command"), ({"command": ""}, "s[0].command"),
                         ({"command": 5}, "s[0].command"),
                         ({"command": "true", "timeout_seconds": 0}, "s[0].timeout_seconds"),
                         ({"command": "true", "timeout_seconds": 86401},
                          "s[0].timeout_seconds"),
                         ({"command": "true", "timeout": 5}, "s[0].timeout")]:
        with pytest.raises(InvalidArgument) as e:
            check_scripts("s", [given])
        assert e.value.field == field, (given, e.value.message)
    with pytest.raises(InvalidArgument) as e:
        check_scripts("s", "true")
    assert e.value.field == "s"


async def test_script_gets_the_payload_and_env(tmp_path):
    seen = tmp_path / "payload.json"
    payload = {"execution": "executions/e1", "workloads": [
        {"workload": "sites/s/workloads/w", "name": "w", "instance_id": "i-1",
         "address": "10.0.0.5"}]}
    script = check_scripts("s", [{"command": f"cat > {seen}; echo \"phase=$DR_PHASE\""}])[0]
    result = await run_script(script, payload, env={"DR_PHASE": "post"})
    assert result.passed and result.exit_code == 0 and result.reason == "", result
    assert result.output == "phase=post\n"
    assert json.loads(seen.read_text()) == payload
    assert result.as_dict()["command"] == script["command"]


async def test_script_failure_output_tail_and_ignored_stdin():
    result = await run_script({"command": "head -c 10000 /dev/zero | tr '\\0' a; "
                                          "echo; echo last words >&2; exit 3",
                               "timeout_seconds": 10}, {"big": "x" * (1 << 20)})
    assert not result.passed and result.exit_code == 3 and result.reason == "exit 3"
    assert len(result.output.encode()) <= 4096
    assert result.output.endswith("last words\n")


async def test_script_timeout_kills_the_group(tmp_path):
    pidfile = tmp_path / "pid"
    result = await asyncio.wait_for(run_script(
        {"command": f"sleep 30 & echo $! > {pidfile}; echo started; wait",
         "timeout_seconds": 1}, {}), 10)
    assert not result.passed and result.exit_code is None
    assert result.reason == "timed out after 1 s" and "started" in result.output
    assert await gone(int(pidfile.read_text()))


async def test_script_that_cannot_start():
    result = await run_script({"command": "true", "timeout_seconds": 5}, {},
                              env={"DR_BAD": "nul\0byte"})
    assert not result.passed and result.exit_code is None
    assert result.reason.startswith("could not start:"), result


async def test_script_killed_by_a_signal():
    result = await run_script({"command": "kill -9 $$", "timeout_seconds": 5}, {})
    assert not result.passed and result.exit_code == -9 and result.reason == "killed by SIGKILL"


@pytest.mark.parametrize("command", ["true", "exit 0", "exec 0<&-; sleep 0.1"])
def test_a_script_that_ignores_its_stdin_still_passes_under_uvloop(command):
    """Under uvloop (dr-control's loop) a write to a pipe the script already closed may
    be reported as a RuntimeError, not a BrokenPipeError (seen in a daemon, about one run
    in six; not reproduced on its own here): the script's result stands either way."""
    import uvloop

    async def many():
        return [await run_script({"command": command, "timeout_seconds": 10},
                                 {"pad": "x" * 200_000}) for _ in range(10)]

    results = uvloop.run(many())
    assert all(r.passed and r.exit_code == 0 for r in results), results
