"""A table of plug-ins by kind: what the sources and targets registries share.

Each entry names its kind and the module that implements it; modules are imported on
first use (the aws and s3 ones load botocore, kvm needs libnbd), and an unknown kind is a
clear error naming the field that gave it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from types import ModuleType
from typing import Generic, Protocol, TypeVar

from dr_common.errors import InvalidArgument


class Entry(Protocol):
    name: str
    module: str


E = TypeVar("E", bound=Entry)


class Registry(Generic[E]):
    def __init__(self, what: str, entries: Iterable[E]):
        self.what = what
        self.entries: dict[str, E] = {e.name: e for e in entries}

    def get(self, name: str, *, field: str) -> E:
        found = self.entries.get(name)
        if found is None:
            raise InvalidArgument(f"{self.what} kind {name!r} is not supported; supported: "
                                  f"{', '.join(self.entries)}", field=field)
        return found

    def module(self, name: str, *, field: str) -> ModuleType:
        return importlib.import_module(self.get(name, field=field).module)
