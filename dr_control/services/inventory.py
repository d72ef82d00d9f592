"""Inventory: sites and the workloads and disks discovered at them.

`file` and `kvm` sites are directories on the control plane's host (and its nodes');
`aws` sites are a region and credentials: their instances and volumes are found with
EC2 calls; `vsphere` sites a vCenter's URL, account and trust: their VMs and virtual
disks are found through the vSphere API; `azure` sites a subscription, resource groups
and a service principal: their VMs and managed disks are found through Resource
Manager. Secrets given for a site (an AWS secret key, a vSphere password, an Azure
client secret or certificate) are kept sealed (dr_common.secretbox)."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from dr_common import names
from dr_common.aws import AwsSettings
from dr_common.azure import AzureSettings
from dr_common.errors import AlreadyExists, InvalidArgument, NotFound
from dr_common.paths import check_within_roots
from dr_common.proto.dr.v1 import common_pb2
from dr_common.sources import aws as aws_source
from dr_common.sources import azure as azure_source
from dr_common.sources import file as file_source
from dr_common.sources import kvm as kvm_source
from dr_common.sources import vsphere as vsphere_source
from dr_common.vsphere import VsphereSettings
from dr_control.db.models import Disk, Site, Workload
from dr_control.services.context import ServiceContext

S3_SCHEME = "s3://"
AZBLOB_SCHEME = "azblob://"
# Site.settings holds the kind's own settings (aws: region, endpoint...) and these,
# which every kind has: "paired" (the site's storage is reachable only from nodes
# inside it; see dr_control/services/routing.py).
SITE_SETTINGS = ("paired",)


def kind_settings(site: Site) -> dict:
    """The settings of the site's kind alone (what AwsSettings takes)."""
    return {k: v for k, v in (site.settings or {}).items() if k not in SITE_SETTINGS}


def is_paired(site: Site) -> bool:
    """Whether plans targeting the site replicate through a paired target node there."""
    return bool((site.settings or {}).get("paired"))


def site_settings(ctx: ServiceContext, site: Site) -> dict:
    """A site's settings of its kind with its secrets unsealed, whatever the kind (for a
    task or a call, never for an API answer or a log): a directory site's are its path
    (where a kvm recovery site keeps its VMs)."""
    return SITE_KINDS[site.kind].settings(ctx, site)


class _DirectorySite:
    """`file` and `kvm` sites: a directory inside the file roots, its images found by
    the source kind's `discover` (blocking: run in a thread). No settings, no secret."""

    def __init__(self, kind: str, discover):
        self.kind = kind
        self._discover = discover

    async def create(self, ctx: ServiceContext, site_id: str, path: str, given: dict):
        if not path:
            raise InvalidArgument(f"a {self.kind} site needs a path", field="site.path")
        resolved = check_within_roots(path, ctx.config.file_roots, field="site.path")
        return str(resolved), {}, "", await asyncio.to_thread(self._discover, resolved)

    async def discover(self, ctx: ServiceContext, site: Site):
        return await asyncio.to_thread(self._discover, site.path)

    def settings(self, ctx: ServiceContext, site: Site) -> dict:
        return {"path": site.path}

    def task_settings(self, ctx: ServiceContext, site: Site) -> common_pb2.SiteSettings:
        return common_pb2.SiteSettings()

    def public(self, site: Site) -> dict:
        return {}


class _ApiSite:
    """Sites reached through an API with settings of their own (`aws`: a region and
    keys; `vsphere`: a vCenter's URL, account and trust; `azure`: a subscription, resource
    groups and a service principal). The secrets are sealed; inventory is the kind's
    `discover`. The path, if the kind has one (`path_scheme`), is the repository of plans
    that target the site (aws: s3://bucket/prefix, azure: azblob://container/prefix)."""

    def __init__(self, kind: str, settings, message, discover, *, path_scheme: str = "",
                 no_path: str = ""):
        self.kind, self._settings, self._message = kind, settings, message
        self._discover = discover
        self._scheme, self._no_path = path_scheme, no_path

    def _config(self, values: dict):
        # AwsSettings' region check loads botocore's endpoint data: not on the event loop.
        return asyncio.to_thread(self._settings.from_dict, values, field_prefix=f"site.{self.kind}")

    async def create(self, ctx: ServiceContext, site_id: str, path: str, given: dict):
        cfg = await self._config({k: v for k, v in given.get(self.kind, {}).items() if v})
        if path and not self._scheme:
            raise InvalidArgument(f"a {self.kind} site has no path: {self._no_path}",
                                  field="site.path")
        if path and not (path.startswith(self._scheme) and len(path) > len(self._scheme)):
            raise InvalidArgument(f"an {self.kind} site's path is the repository of plans "
                                  f"that target it, {self._scheme}...; got {path!r}",
                                  field="site.path")
        found = await self._discover(cfg)
        secret = ctx.secrets.seal(cfg.secrets(), bound_to=names.site_name(site_id))
        return path, cfg.public().as_dict(), secret, found

    async def discover(self, ctx: ServiceContext, site: Site):
        return await self._discover(await self._config(self.settings(ctx, site)))

    def settings(self, ctx: ServiceContext, site: Site) -> dict:
        secret = ctx.secrets.open(site.secret, bound_to=names.site_name(site.id))
        return {**kind_settings(site), **secret}

    def task_settings(self, ctx: ServiceContext, site: Site) -> common_pb2.SiteSettings:
        return common_pb2.SiteSettings(**{self.kind: self._message(**self.settings(ctx, site))})

    def public(self, site: Site) -> dict:
        return {self.kind: self._message(**kind_settings(site))}


# The site kinds (the source kinds of dr_common.sources, which sites are), one line each.
SITE_KINDS = {"file": _DirectorySite("file", file_source.discover),
              "kvm": _DirectorySite("kvm", kvm_source.discover),
              "aws": _ApiSite("aws", AwsSettings, common_pb2.AwsSettings, aws_source.discover,
                              path_scheme=S3_SCHEME),
              "vsphere": _ApiSite("vsphere", VsphereSettings, common_pb2.VsphereSettings,
                                  vsphere_source.discover,
                                  no_path="its disks are on its datastores"),
              "azure": _ApiSite("azure", AzureSettings, common_pb2.AzureSettings,
                                azure_source.discover, path_scheme=AZBLOB_SCHEME)}


def public_settings(site: Site) -> dict:
    """The fields of the API's Site message for the site's own settings (secrets stay
    sealed): aws sites show their region, endpoint and key id."""
    return SITE_KINDS[site.kind].public(site)


def task_settings(ctx: ServiceContext, site: Site) -> common_pb2.SiteSettings:
    """A site's settings, secrets unsealed, as a node's task carries them (empty for
    kinds without settings)."""
    return SITE_KINDS[site.kind].task_settings(ctx, site)


class InventoryService:
    def __init__(self, ctx: ServiceContext):
        self.ctx = ctx

    async def create_site(self, site_id: str, *, kind: str, path: str, description: str = "",
                          credential_ref: str = "", settings: dict[str, dict] | None = None,
                          paired: bool = False) -> Site:
        """`settings`: the kind's own settings by kind ({"aws": {...}}), as the API's Site
        message carries them; each site kind reads its own."""
        names.check_id(site_id, field="site_id", what="site")
        if kind not in SITE_KINDS:
            raise InvalidArgument(
                f"site kind {kind!r} is not supported; supported kinds: {', '.join(SITE_KINDS)}",
                field="site.kind")
        resolved, stored, secret, found = await SITE_KINDS[kind].create(
            self.ctx, site_id, path, settings or {})
        if paired:
            stored = {**stored, "paired": True}
        async with self.ctx.db() as s, s.begin():
            if await s.get(Site, site_id) is not None:
                raise AlreadyExists(f"site {names.site_name(site_id)} already exists")
            site = Site(id=site_id, kind=kind, path=resolved, description=description,
                        credential_ref=credential_ref, settings=stored, secret=secret)
            s.add(site)
            await s.flush()
            self._merge(s, site, found, existing={})
        return await self.get_site(names.site_name(site_id))

    async def refresh_site(self, name: str) -> Site:
        site = await self.get_site(name)
        found = await SITE_KINDS[site.kind].discover(self.ctx, site)
        async with self.ctx.db() as s, s.begin():
            site = await s.get(Site, site.id)
            existing = {d.name: d for d in
                        (await s.scalars(select(Disk).where(Disk.site_id == site.id))).all()}
            existing_wl = {w.id for w in
                           (await s.scalars(select(Workload).where(Workload.site_id == site.id)))}
            self._merge(s, site, found, existing=existing, existing_workloads=existing_wl)
        return await self.get_site(name)

    @staticmethod
    def _merge(s, site: Site, found, *, existing: dict, existing_workloads=frozenset()) -> None:
        # Disks that vanished are kept: plans may refer to them, and a cycle will report the
        # source as unavailable, which is the truthful state.
        for wl in found:
            if wl.id not in existing_workloads:
                s.add(Workload(site_id=site.id, id=wl.id, display_name=wl.display_name))
            for d in wl.disks:
                name = names.disk_name(site.id, wl.id, d.id)
                disk = existing.get(name)
                if disk is None:
                    s.add(Disk(name=name, site_id=site.id, workload_id=wl.id, id=d.id,
                               display_name=d.display_name, locator=d.locator, size=d.size,
                               sector_size=d.sector_size, cbt=d.cbt))
                else:
                    disk.size, disk.locator = d.size, d.locator

    async def get_site(self, name: str) -> Site:
        site_id = names.parse_site(name)
        async with self.ctx.db() as s:
            site = await s.get(Site, site_id)
            if site is None:
                raise NotFound(f"site {name} not found")
            site.workload_count = await s.scalar(
                select(func.count()).select_from(Workload).where(Workload.site_id == site_id))
            return site

    async def list_sites(self) -> list[Site]:
        async with self.ctx.db() as s:
            sites = (await s.scalars(select(Site).order_by(Site.id))).all()
            counts = dict((await s.execute(
                select(Workload.site_id, func.count()).group_by(Workload.site_id))).all())
        for site in sites:
            site.workload_count = counts.get(site.id, 0)
        return list(sites)

    async def list_workloads(self, parent: str = "") -> list[Workload]:
        q = select(Workload).options(selectinload(Workload.disks)).order_by(
            Workload.site_id, Workload.id)
        if parent:
            site = await self.get_site(parent)
            q = q.where(Workload.site_id == site.id)
        async with self.ctx.db() as s:
            return list((await s.scalars(q)).all())

    async def get_workload(self, name: str) -> Workload:
        site_id, wl_id = names.parse_workload(name)
        async with self.ctx.db() as s:
            wl = await s.scalar(select(Workload).options(selectinload(Workload.disks)).where(
                Workload.site_id == site_id, Workload.id == wl_id))
        if wl is None:
            raise NotFound(f"workload {name} not found")
        return wl
