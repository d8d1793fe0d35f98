#!/usr/bin/env bash
# Set up everything sm and its tests need on a fresh Debian 12 machine (as root):
# the Debian packages the tests drive for real, and a virtual environment in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: independent checkers and real components the tests use.
DEBS=(
    qemu-utils libvhdi-utils python3-libvhdi      # VHD oracles
    nbdkit nbdkit-plugin-python libnbd-bin        # NBD data path
    lvm2 xfsprogs btrfs-progs util-linux          # LVM on loop devices, reflink file systems
    nfs-ganesha nfs-ganesha-vfs rpcbind nfs-common libnfs-utils libnfs-dev  # NFS server + userspace client
    ceph-mon ceph-osd ceph-common python3-rbd python3-rados qemu-block-extra  # RBD SR: test cluster, librbd, qemu rbd:
    python3-venv python3-pip
)
if [ "${SM_SKIP_APT:-0}" != 1 ]; then
    missing=()
    for p in "${DEBS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "setup: missing Debian packages (run as root to install): ${missing[*]}" >&2
        else
            echo "setup: installing ${missing[*]}" >&2
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq
            apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        fi
    fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.sm-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e ".[test]"
    touch "$stamp"
fi
