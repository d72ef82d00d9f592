#!/usr/bin/env bash
# Installs the Debian packages the tests and the kvm source need, and makes libnbd's and
# libvirt's Python bindings importable from our virtualenv. Idempotent; needs root for
# apt-get.
#
# Only the bindings' own modules (nbd.py, libnbdmod*.so; libvirt*.py, libvirtmod*.so) are
# linked into the venv, not the whole of Debian's dist-packages: Debian's other modules
# would shadow our pinned ones.
set -euo pipefail
VENV=${1:-.venv}
# postgresql: the server the HA tests start (initdb/pg_ctl under
# /usr/lib/postgresql/15/bin, run as a non-root user; tests/conftest.py `postgres`).
# chromium, chromium-driver: the browser tests/test_ui.py drives headless (Selenium with
# explicit paths /usr/bin/chromium and /usr/bin/chromedriver; nothing is downloaded).
# golang-go, golang-github-vmware-govmomi-dev: the vSphere peer (tests/peers/vsphere) builds
# vcsim, govmomi's simulator, from Debian's source of it (offline, GO111MODULE=off).
# qemu-system-x86, busybox-static, linux-image-cloud-amd64: running VMs (the live kvm
# source, the kvm recovery site) and the tiny guest they run in tests (tests/peers/kvm:
# Debian's kernel and a busybox initramfs, booted under TCG); e2fsprogs checks the
# filesystems recovered from it.
# libvirt-daemon-system, libvirt-daemon-driver-qemu, libvirt-clients, python3-libvirt: the
# libvirt flavour of the live kvm source (virDomainBackupBegin with checkpoints, libvirt
# 9.0); tests/test_kvm_libvirt.py starts its own libvirtd (session mode, private dirs).
PACKAGES=(qemu-utils libnbd-bin python3-libnbd postgresql chromium chromium-driver
          golang-go golang-github-vmware-govmomi-dev
          qemu-system-x86 busybox-static linux-image-cloud-amd64 e2fsprogs
          libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients python3-libvirt)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-system-deps: need root to install ${missing[*]} (or install them yourself)" >&2
        exit 1
    fi
    echo "install-system-deps: apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
dist=/usr/lib/python3/dist-packages
ln -sf "$dist/nbd.py" "$site/nbd.py"
for so in "$dist"/libnbdmod.cpython-*.so; do
    ln -sf "$so" "$site/$(basename "$so")"
done
for py in "$dist"/libvirt.py "$dist"/libvirt_qemu.py "$dist"/libvirtaio.py \
          "$dist"/libvirtmod.cpython-*.so "$dist"/libvirtmod_qemu.cpython-*.so; do
    ln -sf "$py" "$site/$(basename "$py")"
done
"$VENV/bin/python" -c 'import libvirt, libvirt_qemu' || {
    echo "install-system-deps: libvirt's binding does not load in $VENV (is it CPython 3.11?)" >&2
    exit 1
}
"$VENV/bin/python" -c 'import nbd; nbd.NBD()' || {
    echo "install-system-deps: libnbd's binding does not load in $VENV (is it CPython 3.11?)" >&2
    exit 1
}
