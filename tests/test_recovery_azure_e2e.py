"""Recovery into Azure end to end: real dr-control and dr-node daemons, drctl, and the
Azure peer. A file source protected into an `fs` repository by a real cycle is
recovered into an azure site as a test drill: the recovery service's prepare step has
the node upload the disk into a managed disk (the `azure` restore destination, the
site's settings handed over at lease), the provider makes the NIC in the isolated
subnet and the VM on that disk; the disk holds the point's bytes; cleanup leaves
nothing tagged with the execution."""

from __future__ import annotations

import json

import pytest
from azure.mgmt.network import NetworkManagementClient

from dr_control.recovery.azure import disk_name
from tests.helpers.cluster import completed_execution, protect_file_source
from tests.helpers.azure import mgmt
from tests.test_recovery_azure import Net
from tools.localcluster import Cluster

WORKLOAD = "sites/src/workloads/vm1"


@pytest.mark.e2e
def test_a_drill_recovers_a_file_point_into_azure_and_cleans_up(
        cluster: Cluster, azure_peer, monkeypatch, tmp_path):
    c = cluster
    _, content, point = protect_file_source(c)
    net = Net(azure_peer, mgmt(NetworkManagementClient, azure_peer))
    monkeypatch.setenv("AZURE_CLIENT_SECRET", azure_peer.client_secret)
    code, _, err = c.drctl(
        "site", "add", "az", "--kind", "azure", "--subscription", azure_peer.subscription_id,
        "--resource-group", azure_peer.recovery_group, "--location", azure_peer.location,
        "--tenant-id", azure_peer.tenant_id, "--client-id", azure_peer.client_id,
        "--arm-endpoint", azure_peer.arm_endpoint, "--authority-host",
        azure_peer.authority_host, "--azure-ca-file", str(azure_peer.ca_file))
    assert code == 0, err
    plan = {"protection_plan": "plans/p1", "recovery_site": "sites/az", "boot_groups": [{
        "name": "apps", "workloads": [{
            "workload": WORKLOAD, "tags": {"team": "storefront"},
            "azure": {"vm_size": "Standard_B2s", "subnet_id": net.prod,
                      "test_subnet_id": net.test, "network_security_group_id": net.nsg,
                      "private_ip": "10.99.0.30"}}]}]}
    (tmp_path / "rp.json").write_text(json.dumps(plan))
    code, _, err = c.drctl("recovery-plan", "create", "rp1", "--from-file",
                           str(tmp_path / "rp.json"))
    assert code == 0, err
    shown = c.drctl_json("recovery-plan", "get", "rp1")
    assert shown["boot_groups"][0]["workloads"][0]["azure"]["os_type"] == "Linux"

    name = c.drctl_json("recovery", "run", "rp1", "--test")["name"]
    short = name.split("/", 1)[1].replace("executions/", "")
    execution = completed_execution(c, short, point)
    prepared = next(e for e in execution["events"] if e["step"] == "disk-prepared")
    assert "uploaded by a node" in prepared["detail"], prepared
    (recovered,) = execution["instances"]
    assert recovered["private_ip"] == "10.99.0.30"
    # The managed disk holds what the source held at the point, byte for byte.
    disk = disk_name(name, WORKLOAD, 0)
    assert recovered["volume_ids"][0].lower().endswith(f"/disks/{disk}".lower())
    assert azure_peer.read(disk, 0, len(content), group=azure_peer.recovery_group) == content
    tagged = [r for r in azure_peer.resources()
              if (r.get("tags") or {}).get("hybrid-dr:execution") == name]
    assert sorted(r["type"] for r in tagged) == ["Microsoft.Compute/disks",
                                                 "Microsoft.Compute/virtualMachines",
                                                 "Microsoft.Network/networkInterfaces"]
    vm = next(r for r in tagged if r["type"].endswith("virtualMachines"))
    assert vm["tags"]["team"] == "storefront" and vm["tags"]["hybrid-dr:test"] == "true"

    code, out, err = c.drctl("recovery", "cleanup", short, "--wait", "--output", "json")
    assert code == 0, err
    assert json.loads(out)["state"] == "cleaned-up"
    assert not [r for r in azure_peer.resources()
                if (r.get("tags") or {}).get("hybrid-dr:execution") == name]
