"""The Azure adapters' pure parts, without a peer: settings, error mapping, extents from
page ranges, resource names, the VHD footer. The adapters themselves are tested against
the Azure peer (tests/test_azure_*.py)."""

from __future__ import annotations

import pytest

from dr_common import vhd
from dr_common.azure import AzureSettings, azure_error, redact
from dr_common.errors import InvalidArgument, NotFound, PermissionDenied, Throttled
from dr_common.sources.azure.disk import to_extents
from dr_common.sources.azure.snapshots import snapshot_name
from dr_common.targets.azure_disk import azure_name

SUB = "00000000-0000-0000-0000-000000000001"


def test_settings_check_names_the_field():
    ok = AzureSettings.from_dict({"subscription_id": SUB, "resource_groups": ["a", "b"]})
    assert ok.resource_group == "a" and ok.secrets() == {}
    cases = [({"subscription_id": "nope", "resource_groups": ["a"]}, "subscription_id"),
             ({"subscription_id": SUB}, "resource_groups"),
             ({"subscription_id": SUB, "resource_groups": ["bad/name"]}, "resource_groups"),
             ({"subscription_id": SUB, "resource_groups": ["a"], "client_secret": "s"},
              "client_id"),
             ({"subscription_id": SUB, "resource_groups": ["a"], "colour": "red"}, "colour")]
    for values, field in cases:
        with pytest.raises(InvalidArgument) as e:
            AzureSettings.from_dict(values, field_prefix="site.azure")
        assert e.value.field == f"site.azure.{field}", values


def test_secrets_stay_out_of_repr_and_public():
    s = AzureSettings.from_dict({"subscription_id": SUB, "resource_groups": ["a"],
                                 "tenant_id": "t", "client_id": "c",
                                 "client_secret": "hunter2", "storage_account_key": "k3y"})
    assert "hunter2" not in repr(s) and "k3y" not in repr(s)
    assert s.secrets() == {"client_secret": "hunter2", "storage_account_key": "k3y"}
    assert "hunter2" not in str(s.public().as_dict())


def _http_error(status: int, code: str, message: str = "no", headers=None):
    from azure.core.exceptions import HttpResponseError

    class Response:
        def __init__(self):
            self.status_code, self.headers, self.reason = status, headers or {}, "x"

        def text(self):
            return ""

    err = HttpResponseError(message=message, response=Response())
    err.error_code = code
    return err


def test_error_mapping_keeps_azure_code_and_hides_signatures():
    throttled = azure_error(_http_error(429, "TooManyRequests", headers={"Retry-After": "7"}),
                            "list VMs")
    assert isinstance(throttled, Throttled) and throttled.retry_after == 7.0
    assert isinstance(azure_error(_http_error(503, "ServerBusy"), "read"), Throttled)
    denied = azure_error(_http_error(403, "AuthorizationFailed", "may not"), "snapshot d1")
    assert isinstance(denied, PermissionDenied) and "AuthorizationFailed" in denied.message
    gone = azure_error(_http_error(404, "ResourceGroupNotFound"), "list VMs")
    assert isinstance(gone, NotFound) and "ResourceGroupNotFound" in gone.message
    leaky = azure_error(_http_error(400, "InvalidParameter",
                                    "bad url https://x/y?sv=1&sig=SECRETSIG&se=2"), "grant")
    assert "SECRETSIG" not in leaky.message
    assert redact("a?sig=abc&sp=r") == "a?sig=REDACTED&sp=r"


def test_extents_from_page_ranges():
    # Incremental: changed pages are data, cleared pages zero, the rest clean.
    ext = to_extents([(0, 512), (4096, 8192)], 16384, cleared=[(1024, 2048)],
                     incremental=True)
    assert [(e.start, e.length, e.zero, e.clean) for e in ext] == [
        (0, 512, False, False), (512, 512, False, True), (1024, 1024, True, False),
        (2048, 2048, False, True), (4096, 4096, False, False), (8192, 8192, False, True)]
    # Full sync: the valid pages are data, the rest never written (zero).
    ext = to_extents([(0, 512)], 4096, cleared=[], incremental=False)
    assert [(e.start, e.length, e.zero, e.clean) for e in ext] == [
        (0, 512, False, False), (512, 3584, True, False)]
    # Ranges past the disk's end are cut; the extents always cover the disk.
    ext = to_extents([(3584, 8192)], 4096, cleared=[], incremental=True)
    assert sum(e.length for e in ext) == 4096 and ext[-1].end == 4096


def test_names_fit_azure_and_stay_unique():
    long_disk = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/disks/" + "d" * 79
    a = snapshot_name(long_disk, "plans/p/cycles/c-1")
    b = snapshot_name(long_disk, "plans/p/cycles/c-2")
    assert len(a) <= 80 and len(b) <= 80 and a != b
    assert azure_name("hdr", "plan", "disk/with:odd chars") == azure_name(
        "hdr", "plan", "disk/with:odd chars")
    assert all(c.isalnum() or c == "-" for c in azure_name("hdr", "x" * 100, "a/b"))
    assert len(azure_name("hdr", "x" * 100)) <= 80


def test_vhd_footer_is_a_fixed_vhd_for_its_size():
    size = 64 << 20
    footer = vhd.footer(size)
    assert len(footer) == 512 and vhd.check(footer, size) == ""
    assert "says" in vhd.check(footer, size * 2)
    damaged = bytearray(footer)
    damaged[100] ^= 1  # the reserved area is covered by the checksum too
    assert "checksum" in vhd.check(bytes(damaged), size)
    # The spec's CHS geometry never claims more sectors than the disk has.
    cylinders, heads, spt = vhd.geometry(size)
    assert cylinders * heads * spt <= size // 512 and heads <= 16
    with pytest.raises(ValueError):
        vhd.footer(1000)
