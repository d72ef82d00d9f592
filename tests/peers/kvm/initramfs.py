"""The tiny guest's boot files: the installed Debian kernel, and an initramfs (cpio newc,
gzip) of busybox-static, that kernel's virtio modules and init.sh as /init.

The initramfs is built once per machine and cached under .venv/kvm-guest/, named by a hash
of what goes into it (init.sh, the kernel version); a file lock keeps parallel test
sessions from building it twice. The archive is written here rather than by `cpio` so
that building needs no root (its entries are owned by root, /dev/console is a device
node) and no network. Standard library only."""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import lzma
import os
import shutil
import subprocess
from pathlib import Path

from tests.helpers import ROOT

INIT = Path(__file__).resolve().parent / "init.sh"
CACHE = ROOT / ".venv" / "kvm-guest"
HOW = "run `make test`, which installs linux-image-cloud-amd64 and busybox-static"
# Dependency order (modules.dep): /init insmods them in this order, as busybox's insmod
# resolves no dependencies.
MODULES = ("virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev",
           "virtio_pci", "failover", "net_failover", "virtio_net", "virtio_blk")


class BuildError(RuntimeError):
    pass


def kernel_version() -> str:
    """The installed kernel that has a vmlinuz in /boot and the virtio modules."""
    for vmlinuz in sorted(Path("/boot").glob("vmlinuz-*"), reverse=True):
        version = vmlinuz.name.removeprefix("vmlinuz-")
        if list((Path("/lib/modules") / version / "kernel").glob("drivers/block/virtio_blk.ko*")):
            return version
    raise BuildError(f"no kernel with /boot/vmlinuz-* and its virtio modules: {HOW}")


def kernel() -> Path:
    return Path("/boot") / f"vmlinuz-{kernel_version()}"


def initrd(cache: Path = CACHE) -> Path:
    """The path of the built initramfs; builds it when these inputs have not been built."""
    version = kernel_version()
    digest = hashlib.sha256(INIT.read_bytes() + f"{version} {MODULES}".encode()).hexdigest()[:16]
    image = cache / f"initrd-{digest}.gz"
    if image.exists():
        return image
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if image.exists():  # another session built it while this one waited
            return image
        tmp = image.with_suffix(".tmp")
        tmp.write_bytes(gzip.compress(_archive(version), compresslevel=6))
        tmp.rename(image)
    return image


def _archive(version: str) -> bytes:
    busybox = shutil.which("busybox")
    if busybox is None:
        raise BuildError(f"busybox is missing: {HOW}")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    out = _Cpio()
    for directory in ("bin", "dev", "proc", "sys", "run", "data", "lib", "lib/modules"):
        out.add(directory, 0o040755)
    out.add("dev/console", 0o020600, rdev=(5, 1))  # the kernel opens it before /init runs
    out.add("bin/busybox", 0o100755, Path(busybox).read_bytes())
    for applet in applets:  # what `busybox --install -s /bin` makes
        if applet != "busybox":
            out.add(f"bin/{applet}", 0o120777, b"busybox")
    for name in MODULES:
        out.add(f"lib/modules/{name}.ko", 0o100644, _module(version, name))
    out.add("init", 0o100755, INIT.read_bytes())
    return out.finish()


def _module(version: str, name: str) -> bytes:
    """The module's .ko, decompressed: busybox's insmod loads plain ELF only."""
    found = sorted((Path("/lib/modules") / version / "kernel").rglob(f"{name}.ko*"))
    if not found:
        raise BuildError(f"kernel {version} has no module {name}: {HOW}")
    path = found[0]
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if path.suffix == ".ko":
        return data
    raise BuildError(f"{path}: a compression this builder does not read")


class _Cpio:
    """A cpio archive in the newc format the kernel unpacks (every entry root's)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._ino = 0

    def add(self, name: str, mode: int, data: bytes = b"",
            rdev: tuple[int, int] = (0, 0)) -> None:
        self._ino += 1
        nlink = 2 if mode & 0o170000 == 0o040000 else 1
        fields = (self._ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(name) + 1, 0)
        header = b"070701" + b"".join(b"%08x" % f for f in fields) + name.encode() + b"\0"
        self._parts += [header, _pad(len(header)), data, _pad(len(data))]

    def finish(self) -> bytes:
        self.add("TRAILER!!!", 0)
        return b"".join(self._parts)


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


if __name__ == "__main__":
    print(kernel(), initrd(), sep="\n")
