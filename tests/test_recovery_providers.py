"""The recovery provider registry (dr_control.recovery): a site kind finds its provider,
an unknown kind is refused with the field to fix, and a provider refuses the points it
cannot launch with the message StartRecovery's callers know."""

from __future__ import annotations

import pytest

from dr_common.errors import InvalidArgument
from dr_control.recovery import PROVIDERS, provider_class
from dr_control.recovery.base import RecoveryProvider


def test_every_registered_kind_finds_a_provider_of_that_kind():
    for kind in PROVIDERS:
        cls = provider_class(kind)
        assert issubclass(cls, RecoveryProvider) and cls.kind == kind


def test_an_unknown_kind_is_an_invalid_argument_naming_the_field():
    with pytest.raises(InvalidArgument, match="cannot be recovered to a file site") as e:
        provider_class("file", field="recovery_plan.protection_plan")
    assert e.value.field == "recovery_plan.protection_plan"


def test_aws_launches_ebs_points_only():
    aws = provider_class("aws")
    aws.check_points("plans/p", "ebs")
    with pytest.raises(InvalidArgument) as e:
        aws.check_points("plans/p", "s3")
    assert e.value.message == ("plans/p stores its recovery points as s3; EC2 recovery "
                               "launches EBS snapshots: use a plan with an ebs target")
    assert e.value.field == "recovery_plan.protection_plan"
