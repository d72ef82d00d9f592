"""moto as the AWS peer needs it: lookups into moto's EC2 backends, and patches that make
EC2 keep block content (snapshots capture a volume's blocks, volumes are restored from
a snapshot's) and behave as AWS does for EBS-backed images (see `patch_images`)."""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable

from tests.peers.aws.blocks import LOCK, blocks_of


# -- lookups


def ec2_backend(account: str, region: str) -> Any:
    from moto.ec2.models import ec2_backends
    return ec2_backends[account][region]


def loaded_ec2_backends() -> Iterable[Any]:
    from moto.ec2.models import ec2_backends
    for regions in list(dict.values(ec2_backends)):
        yield from list(dict.values(regions))


def find_volume(volume_id: str) -> Any | None:
    for backend in loaded_ec2_backends():
        if volume_id in backend.volumes:
            return backend.volumes[volume_id]
    return None


def account_of(headers: Any, access_key: str) -> str:
    from moto.iam.models import get_account_id_from
    return (os.environ.get("MOTO_ACCOUNT_ID") or headers.get("x-moto-account-id")
            or get_account_id_from(access_key))


# -- EC2 patches: snapshots capture a volume's blocks, volumes restore a snapshot's


def patch_ec2() -> None:
    from moto.ec2.models.elastic_block_store import EBSBackend, Snapshot

    def wrap(name: str, after: Callable[..., None]) -> None:
        original = getattr(EBSBackend, name)

        def patched(self: Any, *args: Any, **kwargs: Any) -> Any:
            with LOCK:
                result = original(self, *args, **kwargs)
                after(self, result, *args, **kwargs)
                return result
        setattr(EBSBackend, name, patched)

    def capture(backend: Any, snapshot: Any, *args: Any, **kwargs: Any) -> None:
        blocks_of(snapshot).update(blocks_of(snapshot.volume))

    def restore(backend: Any, volume: Any, *args: Any, **kwargs: Any) -> None:
        if volume.snapshot_id:
            blocks_of(volume).update(blocks_of(backend.get_snapshot(volume.snapshot_id)))

    def copy(backend: Any, snapshot: Any, source_snapshot_id: str, source_region: str,
             *args: Any, **kwargs: Any) -> None:
        source = ec2_backend(backend.account_id, source_region).get_snapshot(source_snapshot_id)
        blocks_of(snapshot).update(blocks_of(source))

    # create_snapshots goes through create_snapshot, RunInstances through create_volume.
    wrap("create_snapshot", capture)
    wrap("create_volume", restore)
    wrap("copy_snapshot", copy)
    Snapshot.progress = property(lambda s: "100%" if s.status == "completed" else "0%")


def patch_images() -> None:
    """RegisterImage keeps its block-device mappings (moto drops them and makes its own
    15 GiB root), RunInstances makes volumes from the AMI's snapshots, honours ClientToken
    idempotency and tags ENIs, and a private IP in use is InvalidIPAddress.InUse (moto:
    HTTP 500): what AWS does for EBS-backed images."""
    import copy

    from moto.core.responses import ActionResult
    from moto.ec2.models.amis import Ami
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models.instances import InstanceBackend
    from moto.ec2.models.subnets import Subnet
    from moto.ec2.responses.amis import AmisResponse

    def register_image(self: Any) -> ActionResult:
        self.error_on_dryrun()
        image = self.ec2_backend.register_image(self._get_param("Name"),
                                                self._get_param("Description", ""))
        mappings = self._get_param("BlockDeviceMappings", [])
        if mappings:
            image.registered_mappings = mappings
            image.root_device_type = "ebs"
        image.root_device_name = self._get_param("RootDeviceName") or image.root_device_name
        image.virtualization_type = self._get_param("VirtualizationType") or "paravirtual"
        image.architecture = self._get_param("Architecture") or "x86_64"
        image.add_tags(self._parse_tag_specification().get("image", {}))
        return ActionResult({"ImageId": image.id})

    moto_mappings = Ami.block_device_mappings

    def block_device_mappings(self: Any) -> list[dict[str, Any]]:
        return getattr(self, "registered_mappings", None) or moto_mappings.fget(self)

    moto_run = InstanceBackend.run_instances

    def run_instances(self: Any, image_id: str, count: int, user_data: Any,
                      security_group_names: Any, **kwargs: Any) -> Any:
        token = kwargs.get("client_token")
        for reservation in self.reservations.values():
            if token and any(i.client_token == token for i in reservation.instances):
                return reservation  # AWS: a repeated token returns the first launch
        image = self.amis.get(image_id)
        if "block_device_mappings" not in kwargs and getattr(image, "registered_mappings", None):
            kwargs["block_device_mappings"] = copy.deepcopy(image.registered_mappings)
        nic_tags = kwargs.get("tags", {}).get("network-interface", {})
        reservation = moto_run(self, image_id, count, user_data, security_group_names, **kwargs)
        for instance in reservation.instances:
            for nic in instance.nics.values():
                nic.add_tags(nic_tags)
        return reservation

    moto_request_ip = Subnet.request_ip

    def request_ip(self: Any, ip: str, instance: Any) -> None:
        if ip in self._subnet_ips:
            raise EC2ClientError("InvalidIPAddress.InUse", f"Address {ip} is in use.")
        moto_request_ip(self, ip, instance)

    AmisResponse.register_image = register_image
    Subnet.request_ip = request_ip
    Ami.block_device_mappings = property(block_device_mappings)
    InstanceBackend.run_instances = run_instances

