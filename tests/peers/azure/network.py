"""Microsoft.Network as the harness ARM serves it: virtual networks with their subnets
(inline in the network, and as the child resource virtualNetworks/subnets), network
security groups and network interfaces, from the REST reference (Virtual Networks,
Subnets, Network Security Groups, Network Interfaces - Create Or Update, Get, List,
Delete) and its published examples (examples/ beside this file).

What the product relies on is modelled: references are checked (a subnet or NSG that does
not exist is 400 InvalidResourceReference), a NIC's private addresses are allocated from
its subnet (Dynamic: the lowest free one; Static: refused with PrivateIPAddressInUse if
taken), a NIC used by a VM (vms.py sets NIC.virtualMachine) cannot be deleted (NicInUse),
nor can a subnet or NSG in use. Subnets are stored as the child resources; a network's
`subnets` is composed from them when it is shown, so both paths see one truth.
Knowingly differs: nothing is routed or filtered (security rules are stored, not applied);
no IPv6, public IPs, peerings, service endpoints or delegations (echoed if sent, never
checked); addresses are allocated when the NIC is created, not when its VM starts; every
operation finishes at once."""

from __future__ import annotations

import ipaddress
import uuid
from typing import Any

from tests.peers.azure.arm import ArmError, Context, Kind, base_resource, invalid

SUBNET = "Microsoft.Network/virtualNetworks/subnets"
NIC = "Microsoft.Network/networkInterfaces"
NSG = "Microsoft.Network/networkSecurityGroups"
# Azure keeps a subnet's network address, the next three (gateway, two for DNS) and its
# broadcast address: the first address a NIC gets is .4.
RESERVED_AT_START = 4

# The rules every NSG has before its own (name, direction, priority, access, source,
# destination); Azure shows them as defaultSecurityRules.
DEFAULT_RULES = (
    ("AllowVnetInBound", "Inbound", 65000, "Allow", "VirtualNetwork", "VirtualNetwork"),
    ("AllowAzureLoadBalancerInBound", "Inbound", 65001, "Allow", "AzureLoadBalancer", "*"),
    ("DenyAllInBound", "Inbound", 65500, "Deny", "*", "*"),
    ("AllowVnetOutBound", "Outbound", 65000, "Allow", "VirtualNetwork", "VirtualNetwork"),
    ("AllowInternetOutBound", "Outbound", 65001, "Allow", "*", "Internet"),
    ("DenyAllOutBound", "Outbound", 65500, "Deny", "*", "*"),
)


def _succeeded(props: dict[str, Any]) -> dict[str, Any]:
    return {**props, "provisioningState": "Succeeded"}


def _network(prefix: Any, what: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(str(prefix), strict=True)
    except ValueError:
        raise invalid(f"{what} '{prefix}' is not a valid IPv4 address prefix in CIDR "
                      "notation (such as 10.0.0.0/24).", what) from None


def referenced(ctx: Context, ref: Any, type_name: str) -> dict[str, Any]:
    """The resource a {"id": ...} in the request names, or Azure's refusal."""
    resource_id = (ref or {}).get("id") or ""
    found = ctx.state.resource(resource_id)
    if found is None or found["type"].lower() != type_name.lower():
        raise ArmError(400, "InvalidResourceReference",
                       f"Resource {resource_id} referenced by resource {ctx.ref.id} was not "
                       "found. Please make sure that the referenced resource exists, and that "
                       "both resources are in the same region.")
    return found


def _users(ctx: Context, key: str, resource_id: str) -> list[dict[str, Any]]:
    """The NICs whose `key` (subnet of an ipConfiguration, or networkSecurityGroup) is
    resource_id: what makes a subnet or an NSG "in use"."""
    wanted = resource_id.lower()
    out = []
    for r in ctx.state.resources.values():
        if r["type"] != NIC:
            continue
        props = r["properties"]
        ids = ([c["properties"]["subnet"]["id"] for c in props["ipConfigurations"]]
               if key == "subnet" else [(props.get("networkSecurityGroup") or {}).get("id", "")])
        if wanted in (i.lower() for i in ids):
            out.append(r)
    return out


def _in_use(resource: dict[str, Any], code: str, users: list[dict[str, Any]]) -> ArmError:
    return ArmError(400, code, f"{resource['type'].rsplit('/', 1)[-1]} {resource['name']} is in "
                    f"use by {', '.join(u['id'] for u in users)} and cannot be deleted or "
                    "changed. Remove the references first.")


# -- virtual networks and subnets


def _subnet(ctx: Context, vnet: dict[str, Any], name: str, props_in: dict[str, Any],
            siblings: list[dict[str, Any]]) -> dict[str, Any]:
    """A subnet resource of `vnet`, checked against its address space and its siblings."""
    if not name:
        raise invalid("Each subnet needs a name.", "subnets")
    subnet_id = f"{vnet['id']}/subnets/{name}"
    prefix = _network(props_in.get("addressPrefix"), "addressPrefix")
    space = [_network(p, "addressPrefixes") for p in vnet["properties"]["addressSpace"]
             ["addressPrefixes"]]
    if not any(prefix.subnet_of(s) for s in space):
        raise ArmError(400, "NetcfgSubnetRangeOutsideVnet",
                       f"Subnet '{name}' is not valid because its IP address range is outside "
                       f"the IP address range of virtual network '{vnet['name']}'.")
    for other in siblings:
        if other["name"].lower() != name.lower() and prefix.overlaps(
                _network(other["properties"]["addressPrefix"], "addressPrefix")):
            raise ArmError(400, "NetcfgSubnetRangesOverlap",
                           f"Subnet '{name}' is not valid because its IP address range overlaps "
                           f"with that of an existing subnet '{other['name']}' in virtual "
                           f"network '{vnet['name']}'.")
    old = ctx.state.resource(subnet_id)
    if old is not None and old["properties"]["addressPrefix"] != str(prefix):
        users = _users(ctx, "subnet", subnet_id)
        if users:
            raise _in_use(old, "InUseSubnetCannotBeUpdated", users)
    props = {k: v for k, v in props_in.items() if k not in ("ipConfigurations",)}
    props["addressPrefix"] = str(prefix)
    if props_in.get("networkSecurityGroup"):
        props["networkSecurityGroup"] = {"id": referenced(ctx, props_in["networkSecurityGroup"],
                                                          NSG)["id"]}
    return {"name": name, "id": subnet_id, "type": SUBNET, "properties": _succeeded(props)}


def _children(ctx: Context, vnet_id: str) -> list[dict[str, Any]]:
    prefix = f"{vnet_id}/subnets/".lower()
    return sorted((r for key, r in ctx.state.resources.items() if key.startswith(prefix)),
                  key=lambda r: r["id"].lower())


class VirtualNetworks(Kind):
    type_name = "Microsoft.Network/virtualNetworks"

    def create(self, ctx: Context, existing: dict[str, Any] | None) -> dict[str, Any]:
        props_in = ctx.body.get("properties") or {}
        prefixes = (props_in.get("addressSpace") or {}).get("addressPrefixes") or []
        if not prefixes:
            raise invalid("addressSpace.addressPrefixes must name at least one prefix.",
                          "addressSpace")
        space = [str(_network(p, "addressPrefixes")) for p in prefixes]
        props = {k: v for k, v in props_in.items() if k != "subnets"}
        props.update(addressSpace={"addressPrefixes": space}, virtualNetworkPeerings=[],
                     enableDdosProtection=bool(props_in.get("enableDdosProtection", False)))
        vnet = base_resource(ctx, properties=_succeeded(props))
        # A PUT's subnets replace the network's (REST: the whole resource is sent). Made
        # and checked first, then in-use ones that would go refused, then written: a
        # refused PUT changes nothing.
        made: list[dict[str, Any]] = []
        for spec in props_in.get("subnets") or []:
            made.append(_subnet(ctx, vnet, spec.get("name") or "", spec.get("properties") or {},
                                made))
        kept = {s["id"].lower() for s in made}
        gone = [s for s in _children(ctx, vnet["id"]) if s["id"].lower() not in kept]
        for subnet in gone:
            users = _users(ctx, "subnet", subnet["id"])
            if users:
                raise _in_use(subnet, "InUseSubnetCannotBeDeleted", users)
        for subnet in gone:
            ctx.state.resources.pop(subnet["id"].lower())
        for subnet in made:
            ctx.state.resources[subnet["id"].lower()] = subnet
        return vnet

    def view(self, ctx: Context, resource: dict[str, Any]) -> dict[str, Any]:
        subnets = [SUBNETS.view(ctx, s) for s in _children(ctx, resource["id"])]
        return {**resource, "properties": {**resource["properties"], "subnets": subnets}}

    def delete(self, ctx: Context, resource: dict[str, Any]) -> None:
        children = _children(ctx, resource["id"])
        for subnet in children:
            SUBNETS.delete(ctx, subnet)
        for subnet in children:
            ctx.state.resources.pop(subnet["id"].lower())


class UsedByNics(Kind):
    """Subnets and NSGs: NICs refer to them, GET lists those references (as
    `references_key`), and delete is refused while there are any."""

    user_key = ""         # what _users matches: "subnet" or "nsg"
    references_key = ""
    in_use_code = ""

    def references(self, resource: dict[str, Any], users: list[dict[str, Any]]
                   ) -> list[dict[str, str]]:
        raise NotImplementedError

    def view(self, ctx: Context, resource: dict[str, Any]) -> dict[str, Any]:
        refs = self.references(resource, _users(ctx, self.user_key, resource["id"]))
        if not refs:  # Azure leaves the key out rather than show []
            return resource
        return {**resource, "properties": {**resource["properties"], self.references_key: refs}}

    def delete(self, ctx: Context, resource: dict[str, Any]) -> None:
        users = _users(ctx, self.user_key, resource["id"])
        if users:
            raise _in_use(resource, self.in_use_code, users)


class Subnets(UsedByNics):
    type_name = SUBNET
    user_key, references_key, in_use_code = ("subnet", "ipConfigurations",
                                             "InUseSubnetCannotBeDeleted")

    def create(self, ctx: Context, existing: dict[str, Any] | None) -> dict[str, Any]:
        vnet = ctx.state.resource(ctx.ref.parent_id)
        assert vnet is not None  # the router answered 404 for a missing parent
        return _subnet(ctx, vnet, ctx.ref.names[-1], ctx.body.get("properties") or {},
                       _children(ctx, vnet["id"]))

    def references(self, resource: dict[str, Any], users: list[dict[str, Any]]
                   ) -> list[dict[str, str]]:
        return [{"id": c["id"]} for nic in users for c in nic["properties"]["ipConfigurations"]
                if c["properties"]["subnet"]["id"].lower() == resource["id"].lower()]


SUBNETS = Subnets()


# -- network security groups


def _rule(ctx_id: str, kind: str, name: str, props: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "id": f"{ctx_id}/{kind}/{name}",
            "type": f"{NSG}/{kind}", "properties": _succeeded(props)}


class NetworkSecurityGroups(UsedByNics):
    type_name = NSG
    user_key, references_key, in_use_code = ("nsg", "networkInterfaces",
                                             "InUseNetworkSecurityGroupCannotBeDeleted")

    def create(self, ctx: Context, existing: dict[str, Any] | None) -> dict[str, Any]:
        props_in = ctx.body.get("properties") or {}
        nsg_id = ctx.ref.id
        rules = [_rule(nsg_id, "securityRules", r.get("name") or "", r.get("properties") or {})
                 for r in props_in.get("securityRules") or []]
        defaults = [_rule(nsg_id, "defaultSecurityRules", name, {
            "description": name, "protocol": "*", "sourcePortRange": "*",
            "destinationPortRange": "*", "sourceAddressPrefix": source,
            "destinationAddressPrefix": destination, "access": access, "priority": priority,
            "direction": direction}) for name, direction, priority, access, source, destination
            in DEFAULT_RULES]
        return base_resource(ctx, properties=_succeeded({
            "resourceGuid": (existing or {}).get("properties", {}).get("resourceGuid")
            or str(uuid.uuid4()), "securityRules": rules, "defaultSecurityRules": defaults}))

    def references(self, resource: dict[str, Any], users: list[dict[str, Any]]
                   ) -> list[dict[str, str]]:
        return [{"id": nic["id"]} for nic in users]


# -- network interfaces


Taken = dict[ipaddress.IPv4Address, str]  # address -> the IP configuration holding it


def _taken(ctx: Context, subnet_id: str, nic_id: str) -> Taken:
    """The addresses of a subnet that other NICs hold."""
    out = {}
    for nic in _users(ctx, "subnet", subnet_id):
        if nic["id"].lower() == nic_id.lower():
            continue
        for c in nic["properties"]["ipConfigurations"]:
            if c["properties"]["subnet"]["id"].lower() == subnet_id.lower():
                out[ipaddress.IPv4Address(c["properties"]["privateIPAddress"])] = c["id"]
    return out


def _address(ctx: Context, config: str, subnet: dict[str, Any], props_in: dict[str, Any],
             taken: Taken, previous: str | None) -> str:
    network = ipaddress.IPv4Network(subnet["properties"]["addressPrefix"])
    usable = [a for i, a in enumerate(network) if RESERVED_AT_START <= i < network.num_addresses - 1]
    if props_in.get("privateIPAllocationMethod", "Dynamic") == "Static":
        raw = props_in.get("privateIPAddress")
        try:
            wanted = ipaddress.IPv4Address(str(raw))
        except ValueError:
            raise invalid(f"privateIPAddress '{raw}' of {config} is not an IPv4 address; a "
                          "Static allocation needs one.", "privateIPAddress") from None
        if wanted not in usable:
            raise ArmError(400, "PrivateIPAddressNotInSubnet",
                           f"IP configuration {config} references the private IP address "
                           f"{wanted} which is not in (or is reserved in) the range of subnet "
                           f"{subnet['id']} ({network}).")
        if wanted in taken:
            raise ArmError(400, "PrivateIPAddressInUse",
                           f"IP configuration {config} is using the same private IP address "
                           f"{wanted} as IP configuration {taken[wanted]}.")
        return str(wanted)
    if previous and ipaddress.IPv4Address(previous) in usable and \
            ipaddress.IPv4Address(previous) not in taken:
        return previous  # a Dynamic address stays with its NIC across updates
    for a in usable:
        if a not in taken:
            return str(a)
    raise ArmError(400, "SubnetIsFull", f"Subnet {subnet['id']} has no free address left "
                   f"for {config}.")


class NetworkInterfaces(Kind):
    type_name = NIC

    def create(self, ctx: Context, existing: dict[str, Any] | None) -> dict[str, Any]:
        props_in = ctx.body.get("properties") or {}
        configs_in = props_in.get("ipConfigurations") or []
        if not configs_in:
            raise invalid("A network interface needs at least one IP configuration.",
                          "ipConfigurations")
        previous = {c["name"].lower(): c["properties"]["privateIPAddress"]
                    for c in (existing or {}).get("properties", {}).get("ipConfigurations", [])}
        configs, mine = [], {}  # `mine`: addresses given out in this request already
        for i, spec in enumerate(configs_in):
            name = spec.get("name") or f"ipconfig{i + 1}"
            config_id = f"{ctx.ref.id}/ipConfigurations/{name}"
            cprops = spec.get("properties") or {}
            subnet = referenced(ctx, cprops.get("subnet"), SUBNET)
            address = _address(ctx, config_id, subnet, cprops,
                               _taken(ctx, subnet["id"], ctx.ref.id) | mine,
                               previous.get(name.lower()))
            mine[ipaddress.IPv4Address(address)] = config_id
            configs.append({"name": name, "id": config_id,
                            "type": f"{NIC}/ipConfigurations",
                            "properties": _succeeded({
                                **cprops, "privateIPAddress": address,
                                "privateIPAllocationMethod": cprops.get(
                                    "privateIPAllocationMethod", "Dynamic"),
                                "privateIPAddressVersion": "IPv4",
                                "primary": cprops.get("primary", i == 0),
                                "subnet": {"id": subnet["id"]}})})
        props = {k: v for k, v in props_in.items() if k not in ("virtualMachine",)}
        props.update(ipConfigurations=configs, dnsSettings={"dnsServers": [],
                     "appliedDnsServers": [], **(props_in.get("dnsSettings") or {})},
                     enableAcceleratedNetworking=bool(props_in.get("enableAcceleratedNetworking")),
                     enableIPForwarding=bool(props_in.get("enableIPForwarding")),
                     vnetEncryptionSupported=False, nicType="Standard")
        if props_in.get("networkSecurityGroup"):
            props["networkSecurityGroup"] = {
                "id": referenced(ctx, props_in["networkSecurityGroup"], NSG)["id"]}
        user = (existing or {}).get("properties", {}).get("virtualMachine")
        if user:  # owned by vms.py: a PUT of the NIC does not detach it
            props["virtualMachine"] = user
        return base_resource(ctx, properties=_succeeded(props))

    def delete(self, ctx: Context, resource: dict[str, Any]) -> None:
        user = (resource["properties"].get("virtualMachine") or {}).get("id")
        if user:
            raise ArmError(400, "NicInUse",
                           f"Network Interface {resource['id']} is used by existing VM "
                           f"{user}.")
