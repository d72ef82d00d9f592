"""The REST/JSON API against a real dr-control (and node): the same resources, names
and errors as gRPC, token roles enforced, and a valid OpenAPI document."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from tests.helpers.cluster import rest_call, setup_plan, wait_points, wait_rest
from tests.helpers.disks import MiB, make_disk
from tools.localcluster import Cluster, wait_for

pytestmark = pytest.mark.e2e


def test_rest_reads_run_and_errors(cluster: Cluster):
    c = cluster
    make_disk(c.src / "vm1.img", 8 * MiB, [(0, 2 * MiB)])
    plan = setup_plan(c)
    wait_points(c, plan, 1)
    wait_rest(c)

    assert rest_call(c, "/v1/me") == (200, {"role": "admin", "auth": False})
    status, sites = rest_call(c, "/v1/sites")
    assert status == 200
    assert sorted(s["name"] for s in sites["sites"]) == ["sites/dst", "sites/src"]
    status, plans = rest_call(c, "/v1/plans")
    assert status == 200 and [p["name"] for p in plans["plans"]] == ["plans/p1"]
    status, got = rest_call(c, "/v1/plans/p1")
    # The same message, field for field, as drctl (gRPC) shows.
    assert status == 200 and got["name"] == "plans/p1"
    assert got["source_site"] == "sites/src" and int(got["rpo_seconds"]) == 3600
    status, st = rest_call(c, "/v1/plans/p1/status")
    assert status == 200 and st["rpo_met"] is True and "rpo_lag_seconds" in st
    assert st["last_recovery_point"].startswith("plans/p1/recoveryPoints/")
    status, points = rest_call(c, "/v1/plans/p1/recoveryPoints")
    assert status == 200 and len(points["recovery_points"]) == 1
    assert points["recovery_points"][0]["name"] == c.points(plan)[0]["name"]
    status, nodes = rest_call(c, "/v1/nodes")
    assert status == 200 and nodes["nodes"][0]["name"] == "nodes/n1"

    status, cycle = rest_call(c, "/v1/plans/p1:run", "POST")
    assert status == 200 and cycle["name"].startswith("plans/p1/cycles/")
    wait_points(c, plan, 2)
    status, cycles = rest_call(c, "/v1/plans/p1/cycles")
    assert status == 200 and cycle["name"] in [cy["name"] for cy in cycles["cycles"]]
    status, paused = rest_call(c, "/v1/plans/p1:pause", "POST")
    assert status == 200 and paused["paused"] is True
    status, resumed = rest_call(c, "/v1/plans/p1:resume", "POST")
    assert status == 200 and resumed["paused"] is False

    # Restore through REST, then follow the operation.
    point = points["recovery_points"][0]["name"]
    dest = c.out / "rest.raw"
    status, op = rest_call(c, f"/v1/{point}:restore", "POST", {"destination_path": str(dest)})
    assert status == 200 and op["name"].startswith("operations/"), op
    done = wait_for(lambda: (lambda r: r[1] if r[1].get("done") else None)(
        rest_call(c, "/v1/" + op["name"])), what="the restore operation")
    assert done["state"] == "completed", done
    assert dest.stat().st_size == 8 * MiB

    # Errors: the service layer's, with the canonical code, HTTP status and field.
    status, err = rest_call(c, "/v1/plans/p1/recoveryPoints?page_size=-1")
    assert status == 400
    assert err["error"]["code"] == "INVALID_ARGUMENT" and err["error"]["field"] == "page_size"
    status, err = rest_call(c, f"/v1/{point}:restore", "POST", {"destination_path": "/etc/x"})
    assert status == 400 and err["error"]["code"] == "INVALID_ARGUMENT"
    assert err["error"]["field"], err
    status, err = rest_call(c, f"/v1/{point}:restore", "POST", {"no_such_field": 1})
    assert status == 400 and err["error"]["field"] == "body"
    status, err = rest_call(c, "/v1/plans/nope")
    assert status == 404 and err["error"]["code"] == "NOT_FOUND"
    assert "nope" in err["error"]["message"]
    status, err = rest_call(c, "/v1/no/such/route")
    assert status == 404 and err["error"]["code"] == "NOT_FOUND"


def test_rest_tokens_and_roles(tmp_path: Path):
    with Cluster(tmp_path, auth=True) as c:
        make_disk(c.src / "vm1.img", 4 * MiB, [(0, MiB)])
        setup_plan(c)
        viewer = c.create_token("watcher", "viewer")
        operator = c.create_token("oncall", "operator")
        wait_rest(c, c.admin_token_file)

        status, err = rest_call(c, "/v1/plans")
        assert status == 401 and err["error"]["code"] == "UNAUTHENTICATED"
        bad = tmp_path / "bad.token"
        bad.write_text("hdr_not-a-token\n")
        assert rest_call(c, "/v1/plans", token_file=bad)[0] == 401
        assert rest_call(c, "/v1/me", token_file=viewer) == (
            200, {"role": "viewer", "name": "watcher", "auth": True})
        status, plans = rest_call(c, "/v1/plans", token_file=viewer)
        assert status == 200 and plans["plans"][0]["name"] == "plans/p1"
        status, err = rest_call(c, "/v1/plans/p1:pause", "POST", token_file=viewer)
        assert status == 403 and err["error"]["code"] == "PERMISSION_DENIED"
        assert "operator" in err["error"]["message"]
        status, paused = rest_call(c, "/v1/plans/p1:pause", "POST", token_file=operator)
        assert status == 200 and paused["paused"] is True
        # The UI is public; the data behind it is not.
        with urllib.request.urlopen(c.rest_url + "/", timeout=10) as resp:
            assert b"app.js" in resp.read()


def test_openapi_document_is_valid_and_matches_the_router(cluster: Cluster):
    from openapi_spec_validator import validate

    from dr_control import rest
    wait_rest(cluster)
    status, doc = rest_call(cluster, "/v1/openapi.json")
    assert status == 200
    validate(doc)
    assert doc == rest.openapi_document()
    served = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert served == {(r.method.lower(), r.path) for r in rest.ROUTES} | {("get", "/v1/me")}
    assert doc["paths"]["/v1/plans/{plan}:run"]["post"]["operationId"] == "RunPlan"
