"""`drctl site ...` and `drctl workload ...`: the inventory of sites and what they hold."""

from __future__ import annotations

import argparse
import os

from dr_common.proto.dr.v1 import common_pb2, inventory_pb2

from .. import argtypes, names
from ..context import Context
from ..errors import EXIT_OK, CliError
from ..table import format_fields, format_table
from ..units import format_size, format_time


def register(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    site = sub.add_parser("site", help="sites: places with an API holding workloads")
    site_sub = site.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = site_sub.add_parser("add", parents=parents, help="add a site and discover its workloads")
    p.add_argument("id", metavar="ID", type=argtypes.resource_id(names.SITE))
    p.add_argument("--kind", required=True,
                   help='site kind: "file", "kvm", "aws", "vsphere" or "azure"')
    p.add_argument(
        "--path", default="",
        help="file and kvm sites: the directory of disk images or the repository; aws sites "
             "used as an s3 target: s3://bucket/prefix; azure sites used as an azblob "
             "target: azblob://container/prefix",
    )
    aws = p.add_argument_group(
        "aws sites", "Without keys the control plane's own AWS credential chain is used "
        "(environment, profile, instance role). With --access-key-id, the secret key is "
        "read from the AWS_SECRET_ACCESS_KEY environment variable (never from the command "
        "line, where other users could see it) and stored encrypted.")
    aws.add_argument("--region", default="", help="e.g. us-east-1")
    aws.add_argument("--endpoint-url", default="", help="another endpoint than AWS's")
    aws.add_argument("--profile", default="", help="a profile of the control plane's AWS config")
    aws.add_argument("--access-key-id", default="")
    vsphere = p.add_argument_group(
        "vsphere sites", "The password is read from the VSPHERE_PASSWORD environment "
        "variable (never from the command line) and stored encrypted. The server's "
        "certificate is verified: against the system's CAs, or --vsphere-ca-file, or a "
        "pinned --thumbprint.")
    vsphere.add_argument("--url", default="", help="the SDK URL, https://vcenter/sdk")
    vsphere.add_argument("--user", default="", help="e.g. dr@vsphere.local")
    vsphere.add_argument("--vsphere-ca-file", default="", help="the CA bundle that signed vCenter's "
                         "certificate (a path on the control plane's host)")
    vsphere.add_argument("--thumbprint", default="",
                         help="the certificate's SHA-256 fingerprint, instead of a CA")
    vsphere.add_argument("--datacenter", default="", help="only this datacenter's VMs")
    azure = p.add_argument_group(
        "azure sites", "A service principal's client secret is read from the "
        "AZURE_CLIENT_SECRET environment variable, a storage account key from "
        "AZURE_STORAGE_KEY (never from the command line); both are stored encrypted. "
        "Without a secret or certificate the control plane's default Azure credential "
        "chain is used (environment, managed identity, Azure CLI).")
    azure.add_argument("--subscription", default="", help="the subscription id (a GUID)")
    azure.add_argument("--resource-group", action="append", default=[],
                       help="a resource group of the site (repeat for several; recovery "
                            "creates in the first)")
    azure.add_argument("--location", default="", help="the region, e.g. westeurope")
    azure.add_argument("--tenant-id", default="")
    azure.add_argument("--client-id", default="", help="the service principal's application id")
    azure.add_argument("--client-certificate-file", default="",
                       help="a PEM file with the principal's certificate and private key, "
                            "instead of a secret")
    azure.add_argument("--arm-endpoint", default="",
                       help="another cloud's Resource Manager (default management.azure.com)")
    azure.add_argument("--authority-host", default="",
                       help="another cloud's Entra ID authority (default "
                            "login.microsoftonline.com)")
    azure.add_argument("--azure-ca-file", default="",
                       help="a CA bundle for that cloud's endpoints")
    azure.add_argument("--storage-account-url", default="",
                       help="azblob targets: https://ACCOUNT.blob.core.windows.net")
    p.add_argument(
        "--paired", action="store_true",
        help="the site's storage is reachable only from nodes inside it: plans targeting "
             "it replicate through a paired target node there (a dr-node with this site "
             "and [transfer] listen set); see docs/PAIRED.md")
    p.add_argument("--description", default="")
    p.set_defaults(handler=site_add)

    p = site_sub.add_parser("list", parents=parents, help="list sites")
    p.set_defaults(handler=site_list)

    workload = sub.add_parser("workload", help="workloads found at sites, with their disks")
    workload_sub = workload.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = workload_sub.add_parser("list", parents=parents, help="list workloads")
    p.add_argument("--site", type=argtypes.name(names.SITE), help="only this site's workloads")
    p.set_defaults(handler=workload_list)


def site_add(ctx: Context, args: argparse.Namespace) -> int:
    site = inventory_pb2.Site(kind=args.kind, path=args.path, description=args.description,
                              paired=args.paired)
    if args.kind == "aws":
        site.aws.CopyFrom(common_pb2.AwsSettings(
            region=args.region, endpoint_url=args.endpoint_url, profile=args.profile,
            access_key_id=args.access_key_id))
        if args.access_key_id:
            secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
            if not secret:
                raise CliError("--access-key-id needs the secret key in the "
                               "AWS_SECRET_ACCESS_KEY environment variable")
            site.aws.secret_access_key = secret
            site.aws.session_token = os.environ.get("AWS_SESSION_TOKEN", "")
    if args.kind == "vsphere":
        site.vsphere.CopyFrom(common_pb2.VsphereSettings(
            url=args.url, user=args.user, ca_file=args.vsphere_ca_file, thumbprint=args.thumbprint,
            datacenter=args.datacenter, password=os.environ.get("VSPHERE_PASSWORD", "")))
        if not site.vsphere.password:
            raise CliError("a vsphere site needs the account's password in the "
                           "VSPHERE_PASSWORD environment variable")
    if args.kind == "azure":
        site.azure.CopyFrom(_azure_settings(args))
    request = inventory_pb2.CreateSiteRequest(site_id=args.id, site=site)
    site = ctx.client.call(ctx.client.inventory.CreateSite, request)
    ctx.out.resource(site, render_site)
    return EXIT_OK


def _azure_settings(args: argparse.Namespace) -> common_pb2.AzureSettings:
    certificate = ""
    if args.client_certificate_file:
        try:
            with open(args.client_certificate_file, encoding="utf-8") as f:
                certificate = f.read()
        except OSError as e:
            raise CliError(f"cannot read {args.client_certificate_file}: {e.strerror}") from None
    return common_pb2.AzureSettings(
        subscription_id=args.subscription, resource_groups=args.resource_group,
        location=args.location, tenant_id=args.tenant_id, client_id=args.client_id,
        client_secret=os.environ.get("AZURE_CLIENT_SECRET", ""),
        client_certificate=certificate, arm_endpoint=args.arm_endpoint,
        authority_host=args.authority_host, ca_file=args.azure_ca_file,
        storage_account_url=args.storage_account_url,
        storage_account_key=os.environ.get("AZURE_STORAGE_KEY", ""))


def site_list(ctx: Context, args: argparse.Namespace) -> int:
    sites = ctx.client.list_all(
        ctx.client.inventory.ListSites, inventory_pb2.ListSitesRequest(), "sites"
    )
    ctx.out.resources(sites, render_sites)
    return EXIT_OK


def workload_list(ctx: Context, args: argparse.Namespace) -> int:
    workloads = ctx.client.list_all(
        ctx.client.inventory.ListWorkloads,
        inventory_pb2.ListWorkloadsRequest(parent=args.site or ""),
        "workloads",
    )
    ctx.out.resources(workloads, render_workloads)
    return EXIT_OK


def render_site(site: inventory_pb2.Site) -> str:
    return format_fields(
        [
            ("site", site.name),
            ("kind", site.kind),
            ("path", site.path),
            ("paired", "yes" if site.paired else "no"),
            *([("region", site.aws.region), ("endpoint", site.aws.endpoint_url),
               ("access key id", site.aws.access_key_id)] if site.kind == "aws" else []),
            *([("url", site.vsphere.url), ("user", site.vsphere.user),
               ("datacenter", site.vsphere.datacenter or "all")]
              if site.kind == "vsphere" else []),
            *([("subscription", site.azure.subscription_id),
               ("resource groups", ", ".join(site.azure.resource_groups)),
               ("location", site.azure.location), ("client id", site.azure.client_id),
               ("arm endpoint", site.azure.arm_endpoint or "management.azure.com")]
              if site.kind == "azure" else []),
            ("description", site.description),
            ("workloads", site.workload_count),
            ("created", format_time(site.create_time)),
        ]
    )


def render_sites(sites: list[inventory_pb2.Site]) -> str:
    return format_table(
        ["SITE", "KIND", "PATH", "PAIRED", "WORKLOADS", "CREATED", "DESCRIPTION"],
        [
            [
                names.short_name(s.name),
                s.kind,
                s.path,
                "yes" if s.paired else "no",
                s.workload_count,
                format_time(s.create_time),
                s.description,
            ]
            for s in sites
        ],
        right=["WORKLOADS"],
    )


def render_workloads(workloads: list[inventory_pb2.Workload]) -> str:
    rows = []
    for w in workloads:
        # Disks of one workload may differ in tracking; show each kind once.
        cbt = ",".join(sorted({d.cbt for d in w.disks if d.cbt})) or "-"
        rows.append(
            [
                names.short_name(w.name),
                len(w.disks),
                format_size(sum(d.size_bytes for d in w.disks)),
                cbt,
            ]
        )
    return format_table(["WORKLOAD", "DISKS", "SIZE", "CBT"], rows, right=["DISKS", "SIZE"])
