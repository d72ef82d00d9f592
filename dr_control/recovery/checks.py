"""Validation checks of a recovered workload: is what came up actually serving?

DESIGN.md 6: each workload of a recovery plan may have checks (a TCP port that accepts
connections, an HTTP answer with a status and a body, a command that exits 0), run once
its boot group is running; they decide whether an execution is `completed` or
`partially-completed`. A workload whose VM is running but whose service does not answer
is not recovered, and the execution must not say it is. So a check that fails is a
result (CheckResult, with what it saw), never an exception: only cancellation propagates.

`check_checks` checks and normalizes a plan's checks when the plan is created, so a
misspelt key or a URL without a scheme fails CreateRecoveryPlan naming the field rather
than a recovery hours later. `run_check` runs one against the workload's facts (its
address, name, ids: the placeholders of host, url and command), each attempt bounded,
retried while the workload boots. Nothing here knows a platform.
"""

from __future__ import annotations

import asyncio
import shlex
import string
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from dr_common.errors import InvalidArgument
from dr_control.recovery.scripts import check_list, refuse_unknown, run_shell, whole

KINDS = ("tcp", "http", "command")
# Facts of a recovered workload that host, url and command may name as {placeholder}.
PLACEHOLDERS = ("address", "workload", "instance_id", "name")
# The keys of each kind; every normalized check carries all of KEYS, those not of its
# kind empty ("" or 0), so that checks store as one shape (JSON, a proto message) and a
# stored check passes check_checks again unchanged.
COMMON_KEYS = ("kind", "timeout_seconds", "retries", "interval_seconds")
KIND_KEYS = {
    "tcp": ("host", "port"),
    "http": ("url", "status", "body_contains"),
    "command": ("command",),
}
KEYS = ("kind", "host", "port", "url", "status", "body_contains", "command",
        "timeout_seconds", "retries", "interval_seconds")
EMPTY = {"host": "", "port": 0, "url": "", "status": 0, "body_contains": "", "command": ""}
# Defaults: a workload takes a while after "running" to serve (a guest boots, a service
# starts), so a check tries for about a minute (6 attempts 2 s apart, 10 s each at most)
# before it says the workload does not serve.
TIMEOUT_DEFAULT, TIMEOUT_MAX = 10, 3600
RETRIES_DEFAULT, RETRIES_MAX = 5, 1000
INTERVAL_DEFAULT, INTERVAL_MAX = 2, 3600
# What an http check reads of a body (enough for any health page; a recovered workload
# serving a large file must not grow the control plane's memory) and shows of it.
BODY_READ_BYTES = 1 << 20
BODY_EXCERPT_CHARS = 200
# Sample facts a url is tried with when it is checked, to see that it parses.
_SAMPLE = {"address": "192.0.2.10", "workload": "sites/s/workloads/w", "instance_id": "i-1",
           "name": "w"}


# --- checking a plan's checks ---------------------------------------------------------


def _text(at: str, key: str, value: Any, default: str | None) -> str:
    """A string setting with placeholders; its default when not given (None: required)."""
    if value in (None, "") and default is not None:
        value = default
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(f"{at}: {key} is required, a non-empty string (got {value!r})",
                              field=f"{at}.{key}")
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(value)
                  if name is not None]
    except ValueError as e:
        fields, bad = [], str(e)
    else:
        bad = ""
    for name, spec, conv in fields:
        if name not in PLACEHOLDERS or spec or conv:
            shown = name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "")
            bad = f"{{{shown}}} is not a placeholder"
            break
    if bad:
        raise InvalidArgument(
            f"{at}: {key} {value!r}: {bad}; its placeholders are "
            f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)}, and a literal brace is "
            f"written {{{{ or }}}} (in a command, the environment has $DR_ADDRESS, "
            f"$DR_WORKLOAD, $DR_INSTANCE_ID and $DR_NAME too)", field=f"{at}.{key}")
    return value


def _check_one(at: str, given: Mapping[str, Any]) -> dict[str, Any]:
    kind = given.get("kind")
    if kind not in KINDS:
        raise InvalidArgument(f"{at}: kind must be one of {', '.join(KINDS)}, got {kind!r}",
                              field=f"{at}.kind")
    own = COMMON_KEYS + KIND_KEYS[kind]
    refuse_unknown(at, given, KEYS, "a check")
    for key in KEYS:  # another kind's key, given: it would silently do nothing
        if key not in own and given.get(key) not in (None, "", 0):
            raise InvalidArgument(
                f"{at}: {key} is not a key of a {kind} check (its keys: {', '.join(own)})",
                field=f"{at}.{key}")
    out: dict[str, Any] = {"kind": kind, **EMPTY}
    if kind == "tcp":
        out["host"] = _text(at, "host", given.get("host"), "{address}")
        port = given.get("port")
        if port in (None, "", 0):
            raise InvalidArgument(f"{at}: port is required for a tcp check, 1 to 65535",
                                  field=f"{at}.port")
        out["port"] = whole(f"{at}.port", "port", port, 0, 1, 65535)
    elif kind == "http":
        url = _text(at, "url", given.get("url"), None)
        parts = urlsplit(url.format_map(_SAMPLE))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidArgument(
                f"{at}: url {url!r} must be an http:// or https:// URL with a host, e.g. "
                f"http://{{address}}:8080/health", field=f"{at}.url")
        out["url"] = url
        out["status"] = whole(f"{at}.status", "status", given.get("status") or None, 200,
                              100, 599)
        body = given.get("body_contains")
        if body not in (None, "") and not isinstance(body, str):
            raise InvalidArgument(f"{at}: body_contains must be a string, got {body!r}",
                                  field=f"{at}.body_contains")
        out["body_contains"] = body or ""
    else:
        out["command"] = _text(at, "command", given.get("command"), None)
    out["timeout_seconds"] = whole(f"{at}.timeout_seconds", "timeout_seconds",
                                   given.get("timeout_seconds"), TIMEOUT_DEFAULT, 1,
                                   TIMEOUT_MAX)
    out["retries"] = whole(f"{at}.retries", "retries", given.get("retries"),
                           RETRIES_DEFAULT, 0, RETRIES_MAX)
    out["interval_seconds"] = whole(f"{at}.interval_seconds", "interval_seconds",
                                    given.get("interval_seconds"), INTERVAL_DEFAULT, 0,
                                    INTERVAL_MAX)
    return out


def check_checks(where: str, given: list[dict]) -> list[dict]:
    """A recovery plan workload's `checks` as the plan gives them, checked and normalized
    for storing (every key of KEYS, defaults filled); InvalidArgument naming the field
    (`where[i].key`) for anything wrong: an unknown kind or key, a key of another kind, a
    missing port, url or command, an unknown {placeholder}, a number out of range."""
    return [_check_one(f"{where}[{i}]", c) for i, c in enumerate(check_list(where, given))]


# --- running them ---------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    """One check of a workload: what was checked (with the facts filled in), whether it
    passed, what it saw last (why it failed: the status, a body excerpt, the exit code
    and output tail; or what it saw when it passed), after how many attempts and how long."""

    check: str
    passed: bool
    detail: str
    attempts: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _MissingFact(KeyError):
    pass


class _Facts(dict):
    """format_map's mapping: a placeholder whose fact the workload does not have (or has
    empty: no address yet) fails the check, saying which."""

    def __missing__(self, key: str) -> str:
        raise _MissingFact(key)


def _facts(facts: Mapping[str, str], quote: Any) -> _Facts:
    return _Facts({k: quote(k, str(v)) for k, v in facts.items()
                   if k in PLACEHOLDERS and v not in (None, "")})


def _as_is(_key: str, value: str) -> str:
    return value


def _for_url(key: str, value: str) -> str:
    # An IPv6 address is a URL's host only in brackets.
    return f"[{value}]" if key == "address" and ":" in value and "[" not in value else value


def _for_shell(_key: str, value: str) -> str:
    # Facts are names from a platform's inventory: quoted, so that a VM named `x; rm -rf ~`
    # is an argument to the command, not more commands.
    return shlex.quote(value)


def describe(check: Mapping[str, Any], facts: Mapping[str, str] | None = None) -> str:
    """A check in a few words, its placeholders filled from `facts` when they can be."""
    def fill(text: str, quote: Any) -> str:
        try:
            return text.format_map(_facts(facts or {}, quote))
        except (KeyError, ValueError, IndexError):
            return text

    kind = check["kind"]
    if kind == "tcp":
        return f"tcp {fill(check['host'], _as_is)}:{check['port']}"
    if kind == "http":
        said = f"http {fill(check['url'], _for_url)} status {check['status']}"
        if check.get("body_contains"):
            said += f" body contains {check['body_contains']!r}"
        return said
    command = fill(check["command"], _for_shell)
    return f"command {command if len(command) <= 80 else command[:77] + '...'}"


def _excerpt(body: bytes) -> str:
    text = " ".join(body[:BODY_EXCERPT_CHARS * 4].decode("utf-8", errors="replace").split())
    return repr(text[:BODY_EXCERPT_CHARS])


async def _tcp(check: Mapping[str, Any], facts: Mapping[str, str]) -> tuple[bool, str]:
    host = check["host"].format_map(_facts(facts, _as_is))
    _, writer = await asyncio.open_connection(host, check["port"])
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass  # reset by the peer on close: it did accept the connection
    return True, f"connected to {host}:{check['port']}"


async def _http(check: Mapping[str, Any], facts: Mapping[str, str],
                session: aiohttp.ClientSession) -> tuple[bool, str]:
    url = check["url"].format_map(_facts(facts, _for_url))
    # Redirects are not followed: the check is of what the recovered workload answers
    # itself; a redirect to its production name would check production (in a test drill,
    # the very workload that is not being recovered). A 301/302 is compared with
    # `status` like any other.
    async with session.get(url, allow_redirects=False) as resp:
        body = bytearray()
        while len(body) < BODY_READ_BYTES:
            chunk = await resp.content.read(BODY_READ_BYTES - len(body))
            if not chunk:
                break
            body.extend(chunk)
    seen = f"status {resp.status}, body {_excerpt(bytes(body))}"
    if resp.status != check["status"]:
        return False, f"expected status {check['status']}, got {seen}"
    wanted = check.get("body_contains") or ""
    if wanted and wanted.encode() not in body:
        return False, (f"the body (its first {len(body)} bytes) does not contain "
                       f"{wanted!r}: {seen}")
    return True, seen


async def _command(check: Mapping[str, Any], facts: Mapping[str, str]) -> tuple[bool, str]:
    command = check["command"].format_map(_facts(facts, _for_shell))
    env = {f"DR_{k.upper()}": str(facts.get(k) or "") for k in PLACEHOLDERS}
    timeout = check["timeout_seconds"]
    ran = await run_shell(command, timeout=timeout, env=env)
    output = ran.output.rstrip()
    if ran.start_error:
        return False, f"could not start: {ran.start_error}"
    if ran.timed_out:
        said = f"timed out after {timeout:g} s (stopped)"
    else:
        said = f"exit {ran.exit_code}"
    return ran.exit_code == 0, f"{said}; output: {output}" if output else said


async def run_check(check: dict, facts: Mapping[str, str]) -> CheckResult:
    """Runs one check as check_checks normalized it against a recovered workload's
    `facts` (address, workload, instance_id, name): up to 1 + retries attempts, each
    bounded by timeout_seconds, interval_seconds apart, until one passes. Never raises
    for the workload's failure; asyncio.CancelledError propagates (a running command's
    process group stopped first)."""
    said = describe(check, facts)
    started = time.monotonic()
    kind = check["kind"]
    attempts_max = 1 + int(check["retries"])
    timeout = check["timeout_seconds"]
    attempts, detail = 0, ""
    session = aiohttp.ClientSession(
        # No certificate check: a recovered workload is reached by its new address, which
        # its certificate does not name (and a drill's isolated network has no CA to
        # ask); the check sends nothing secret, it asks whether the service answers.
        connector=aiohttp.TCPConnector(ssl=False, force_close=True),
        timeout=aiohttp.ClientTimeout(total=timeout)) if kind == "http" else None
    try:
        while True:
            attempts += 1
            try:
                if kind == "command":
                    # run_shell has the timeout: it stops the process group itself.
                    passed, detail = await _command(check, facts)
                else:
                    async with asyncio.timeout(timeout):
                        if kind == "tcp":
                            passed, detail = await _tcp(check, facts)
                        else:
                            assert session is not None
                            passed, detail = await _http(check, facts, session)
            except _MissingFact as e:
                missing = e.args[0]
                return CheckResult(
                    said, False, f"the workload has no {missing} to check (its facts: "
                    f"{', '.join(k for k, v in facts.items() if v) or 'none'})", 0,
                    round(time.monotonic() - started, 3))
            except TimeoutError:
                passed, detail = False, f"no answer within {timeout:g} s"
            except (OSError, aiohttp.ClientError, ValueError) as e:
                passed, detail = False, f"{type(e).__name__}: {getattr(e, 'strerror', None) or e}"
            if passed or attempts >= attempts_max:
                break
            await asyncio.sleep(check["interval_seconds"])
    finally:
        if session is not None:
            await session.close()
    if not passed and attempts > 1:
        detail = f"{detail} (after {attempts} attempts)"
    return CheckResult(said, passed, detail, attempts, round(time.monotonic() - started, 3))


async def run_checks(checks: Iterable[dict], facts: Mapping[str, str]) -> list[CheckResult]:
    """A workload's checks, one after another (each passes or fails on its own; a later
    one still runs after an earlier failed, so the execution shows every failure)."""
    return [await run_check(c, facts) for c in checks]
