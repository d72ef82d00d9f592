"""`drctl report rpo`: RPO compliance of every plan (GetRpoReport), one row per plan."""

from __future__ import annotations

import argparse

from dr_common.proto.dr.v1 import protection_pb2

from .. import names
from ..context import Context
from ..errors import EXIT_OK
from ..table import format_table
from ..units import format_duration, format_time, is_set


def register(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    report = sub.add_parser("report", help="compliance reports")
    report_sub = report.add_subparsers(dest="action", required=True, metavar="REPORT")
    p = report_sub.add_parser(
        "rpo", parents=parents,
        help="per plan: RPO, newest recovery point, its age, the lag, met or breached")
    p.set_defaults(handler=report_rpo)


def report_rpo(ctx: Context, args: argparse.Namespace) -> int:
    report = ctx.client.call(ctx.client.protection.GetRpoReport,
                             protection_pb2.GetRpoReportRequest())
    ctx.out.resource(report, render_rpo_report)
    return EXIT_OK


def render_rpo_report(report: protection_pb2.RpoReport) -> str:
    if not report.plans:
        return "no plans"
    table = format_table(
        ["PLAN", "RPO", "LAST POINT", "AGE", "LAG", "COMPLIANCE", "IN SYNC", "STATE"],
        [
            [
                names.short_name(p.plan),
                format_duration(p.rpo_seconds),
                format_time(p.last_recovery_point_time)
                if is_set(p.last_recovery_point_time) else "none",
                format_duration(p.recovery_point_age_seconds)
                if p.last_recovery_point else "-",
                format_duration(p.rpo_lag_seconds),
                "met" if p.rpo_met else "breached",
                f"{p.in_sync_count}/{p.disk_count}",
                p.state,
            ]
            for p in report.plans
        ],
        right=["AGE", "LAG", "IN SYNC"],
    )
    return f"{table}\n\n{report.met_count} met, {report.breached_count} breached"
