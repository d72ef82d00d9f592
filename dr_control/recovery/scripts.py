"""Pre and post scripts of a recovery: shell command lines the control plane runs around an
execution, and the one way this package runs a shell command (validation checks of kind
`command` use it too, dr_control.recovery.checks).

DESIGN.md 3 and 6: a recovery plan has pre/post scripts at plan and workload level; the
post script receives JSON (on its stdin) with the recovered workloads' ids, names and
addresses, so it can repoint DNS, a load balancer or a monitoring system at them. A
script that fails (a non-zero exit, a timeout, a shell that could not start) makes the
execution `partially-completed`, never silently `completed`: the recovered workloads may
be up, but what the script was there to do was not done, and the operator must see it.
That is why running a script never raises for the script's own failure: it returns a
ScriptResult saying what happened, and the caller decides the execution's state.

A script runs as `/bin/sh -c COMMAND` in a process group of its own, so that stopping
it (at its timeout, or when the execution is cancelled) stops everything it started, not
only the shell; whatever of the group is still running when the shell exits is stopped
too (a script that must leave something running starts it in a session of its own, with
setsid). Its output is kept as a bounded tail: a chatty script cannot grow the control
plane's memory or the execution record.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from dr_common.errors import InvalidArgument

SHELL = "/bin/sh"
# What is kept of a command's merged stdout and stderr: the end, where errors are, and
# small enough for the execution record and an API response.
OUTPUT_TAIL_BYTES = 4096
# How long a stopped command's group has between SIGTERM and SIGKILL: long enough for a
# script to clean up after itself, short enough that a cancel is still prompt.
KILL_GRACE_SECONDS = 5.0
# After the shell exited, how long its output pipe may stay open (held by something it
# left running) before reading stops.
DRAIN_GRACE_SECONDS = 0.5

SCRIPT_KEYS = ("command", "timeout_seconds")
SCRIPT_TIMEOUT_DEFAULT = 300
SCRIPT_TIMEOUT_MAX = 86400


# --- checking a plan's scripts --------------------------------------------------------


def whole(field: str, key: str, value: Any, default: int, low: int, high: int) -> int:
    """Setting `key` of `field` as a whole number in [low, high], its default when not
    given (None); InvalidArgument naming `field` otherwise. Unlike base.whole_number, 0
    is a value here (no retries, no interval), not "the default". Integral floats are
    taken: JSON through a protobuf Struct has only doubles."""
    if value is None:
        return default
    n: int | None = None
    if isinstance(value, bool):
        n = None
    elif isinstance(value, int):
        n = value
    elif isinstance(value, float) and value.is_integer():
        n = int(value)
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        n = int(value.strip())
    if n is None or not low <= n <= high:
        raise InvalidArgument(f"{field}: {key} must be a whole number from {low} to {high}, "
                              f"got {value!r}", field=field)
    return n


def refuse_unknown(where: str, given: Mapping[str, Any], known: tuple[str, ...],
                   what: str) -> None:
    """InvalidArgument naming the first of `given`'s keys that is not in `known` (and all
    of them in the message): a misspelt key would otherwise silently do nothing."""
    unknown = sorted(str(k) for k in given if k not in known)
    if unknown:
        verb = "is not a key" if len(unknown) == 1 else "are not keys"
        raise InvalidArgument(
            f"{where}: {', '.join(unknown)} {verb} of {what} (its keys: {', '.join(known)})",
            field=f"{where}.{unknown[0]}")


def check_list(where: str, given: Any) -> list[Mapping[str, Any]]:
    """`given` as a list of dicts (None as none); InvalidArgument naming the item."""
    if given is None:
        return []
    if not isinstance(given, (list, tuple)):
        raise InvalidArgument(f"{where} must be a list, got {type(given).__name__}",
                              field=where)
    for i, item in enumerate(given):
        if not isinstance(item, Mapping):
            raise InvalidArgument(f"{where}[{i}] must be an object with its keys, got "
                                  f"{type(item).__name__}", field=f"{where}[{i}]")
    return list(given)


def check_scripts(where: str, given: list[dict]) -> list[dict]:
    """A recovery plan's (or one of its workloads') scripts as the plan gives them,
    checked and normalized for storing: each {"command": a shell command line,
    "timeout_seconds": 1..86400, 300 when not given}. InvalidArgument naming the field
    (`where[i].key`) for anything wrong, unknown keys included."""
    out = []
    for i, script in enumerate(check_list(where, given)):
        at = f"{where}[{i}]"
        refuse_unknown(at, script, SCRIPT_KEYS, "a script")
        command = script.get("command")
        if not isinstance(command, str) or not command.strip():
            raise InvalidArgument(f"{at}: command must be a shell command line, got "
                                  f"{command!r}", field=f"{at}.command")
        timeout = whole(f"{at}.timeout_seconds", "timeout_seconds",
                        script.get("timeout_seconds"), SCRIPT_TIMEOUT_DEFAULT, 1,
                        SCRIPT_TIMEOUT_MAX)
        out.append({"command": command, "timeout_seconds": timeout})
    return out


# --- running a shell command ----------------------------------------------------------


@dataclass(frozen=True)
class Ran:
    """What became of one shell command: its exit code (negative: the signal that ended
    it, as subprocess says; None: it timed out, or did not start), the tail of its
    output, and why it did not start ("" when it did)."""

    exit_code: int | None
    output: str
    seconds: float
    timed_out: bool = False
    start_error: str = ""


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone (PermissionError: macOS says so for a zombie group)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM to the command's whole group; SIGKILL to whatever is left of it once the
    shell has exited or KILL_GRACE_SECONDS have passed. Interrupted itself (a second
    cancel), it still sends the SIGKILL: nothing of the group outlives a stop."""
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        async with asyncio.timeout(KILL_GRACE_SECONDS):
            await proc.wait()
    except TimeoutError:
        pass
    finally:
        _signal_group(proc.pid, signal.SIGKILL)
        # Reaping the shell here (it dies of the SIGKILL at once) keeps no zombie and no
        # transport behind; shielded so that a second cancel cannot leave it unreaped.
        if proc.returncode is None:
            await asyncio.shield(proc.wait())


def _tail_text(data: bytes | bytearray, truncated: bool) -> str:
    if truncated:  # cut in the middle of a UTF-8 character: start at the next one
        i = 0
        while i < len(data) and i < 4 and (data[i] & 0xC0) == 0x80:
            i += 1
        data = data[i:]
    return bytes(data).decode("utf-8", errors="replace")


async def run_shell(command: str, *, timeout: float, stdin: bytes | None = None,
                    env: Mapping[str, str] | None = None) -> Ran:
    """Runs `/bin/sh -c command` in a process group of its own, `stdin` written to it
    (then closed; nothing when None), stdout and stderr merged and their last
    OUTPUT_TAIL_BYTES kept, `env` added to os.environ. At `timeout` seconds, or when
    cancelled, the group is stopped (_stop); a cancel is re-raised once it is.
    Never raises for the command's own failure."""
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            SHELL, "-c", command,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **(env or {})}, start_new_session=True)
    except (OSError, ValueError) as e:  # ValueError: a NUL in the environment
        return Ran(None, "", time.monotonic() - started,
                   start_error=f"{SHELL}: {getattr(e, 'strerror', None) or e}")

    tail = bytearray()
    truncated = False

    async def read() -> None:
        nonlocal truncated
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(65536):
            tail.extend(chunk)
            if len(tail) > OUTPUT_TAIL_BYTES:
                del tail[:len(tail) - OUTPUT_TAIL_BYTES]
                truncated = True

    async def write() -> None:
        assert proc.stdin is not None
        try:
            if not proc.stdin.is_closing():
                proc.stdin.write(stdin or b"")
                await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError, RuntimeError):
            # The command exited, or closed its stdin, without reading it all (uvloop
            # says so with a RuntimeError about the closed transport).
            pass
        finally:
            proc.stdin.close()

    tasks = [asyncio.create_task(read())]
    if stdin is not None:
        tasks.append(asyncio.create_task(write()))
    timed_out = False
    try:
        try:
            async with asyncio.timeout(timeout):
                await proc.wait()
        except TimeoutError:
            timed_out = True
            await _stop(proc)
        else:
            # What the shell left behind in its group is stopped with it.
            _signal_group(proc.pid, signal.SIGKILL)
        try:
            async with asyncio.timeout(DRAIN_GRACE_SECONDS):
                await asyncio.gather(*tasks)
        except TimeoutError:
            pass  # the pipe is held open by something outside the group: stop reading
    except BaseException:  # cancelled: nothing of the command outlives its run
        if proc.returncode is None:
            await _stop(proc)
        raise
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()
        # Closes the pipe transports now rather than at garbage collection.
        transport = getattr(proc, "_transport", None)
        if transport is not None:
            transport.close()
    return Ran(None if timed_out else proc.returncode, _tail_text(tail, truncated),
               time.monotonic() - started, timed_out=timed_out)


# --- running a plan's scripts ---------------------------------------------------------


@dataclass(frozen=True)
class ScriptResult:
    """One script's run, as the execution records it. `exit_code` is None when it timed
    out or could not start (negative: the signal that ended it); `reason` is "" when it
    passed, else why not ("exit 3", "timed out after 5 s", "killed by SIGKILL",
    "could not start: ...")."""

    command: str
    passed: bool
    exit_code: int | None
    output: str
    seconds: float
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def failure_reason(ran: Ran, timeout: float) -> str:
    """Why a command that ran did not pass ("" when it did)."""
    if ran.start_error:
        return f"could not start: {ran.start_error}"
    if ran.timed_out:
        return f"timed out after {timeout:g} s"
    if ran.exit_code is not None and ran.exit_code < 0:
        try:
            name = signal.Signals(-ran.exit_code).name
        except ValueError:
            name = f"signal {-ran.exit_code}"
        return f"killed by {name}"
    return "" if ran.exit_code == 0 else f"exit {ran.exit_code}"


async def run_script(script: dict, payload: dict, *,
                     env: Mapping[str, str] | None = None) -> ScriptResult:
    """Runs one script as check_scripts normalized it, `payload` as JSON on its stdin,
    `env` added to its environment (the caller's DR_EXECUTION, DR_PHASE, DR_MODE...).
    Returns what happened; raises only asyncio.CancelledError (after stopping it)."""
    command = script["command"]
    timeout = script.get("timeout_seconds") or SCRIPT_TIMEOUT_DEFAULT
    data = json.dumps(payload, sort_keys=True).encode() + b"\n"
    ran = await run_shell(command, timeout=timeout, stdin=data, env=env)
    reason = failure_reason(ran, timeout)
    return ScriptResult(command=command, passed=not reason, exit_code=ran.exit_code,
                        output=ran.output, seconds=round(ran.seconds, 3), reason=reason)
