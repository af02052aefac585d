#!/usr/bin/env bash
# Idempotent host set-up for edgestick: Debian packages, bpffs, the kernel-header
# fallback for bcc, and the project venv. Run as root. A second run takes seconds.
#   usage: scripts/setup-host.sh [VENV_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
KH=${BCC_KHEADERS_DIR:-/usr/local/lib/bcc-kheaders}
STAMP=$VENV/.edgestick-setup
export DEBIAN_FRONTEND=noninteractive

# vagrant: CI runs `vagrant validate --ignore-provider` on vagrant/Vagrantfile (no provider needed).
# wrk: the load generator of bench/proxy.py (C, so the client is not the bottleneck).
# openssl: tests make throw-away certificates for `bind ... ssl crt` with the openssl CLI.
# pypy3, pypy3-dev, gcc, libc6-dev: the proxy's faster runtime (proxy/runtime.py); httptools
# has no PyPy wheel, so pip compiles it against pypy3-dev's headers.
APT_PACKAGES="python3-bpfcc linux-headers-amd64 bpftool iproute2 ethtool python3-venv
    tcpreplay haproxy socat iptables nftables procps psmisc util-linux iputils-ping vagrant wrk
    openssl pypy3 pypy3-dev gcc libc6-dev"

missing=""
for p in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "setup: installing Debian packages:$missing"
    apt-get update -q >/dev/null
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing >/dev/null
fi

mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf

# bcc needs a kernel source tree. A distro kernel has /lib/modules/<rel>/{build,source};
# elsewhere merge Debian's split header packages into one tree (never write /lib/modules).
KREL=$(uname -r)
if [ -e "/lib/modules/$KREL/source/include/linux/kconfig.h" ] ||
   [ -e "/lib/modules/$KREL/build/include/linux/kconfig.h" ]; then
    :
elif [ ! -e "$KH/include/linux/kconfig.h" ]; then
    A=$(ls -d /usr/src/linux-headers-*-amd64 | sort -V | tail -n1); C=${A%-amd64}-common
    rm -rf "$KH"; mkdir -p "$KH/include" "$KH/arch/x86/include"
    ln -s "$C"/include/* "$KH/include/"
    ln -s "$A/include/generated" "$A/include/config" "$KH/include/"
    ln -s "$C"/arch/x86/include/* "$KH/arch/x86/include/"
    ln -s "$A/arch/x86/include/generated" "$KH/arch/x86/include/"
    echo "setup: merged kernel headers $C + $A into $KH"
fi

# The venv is built from Debian's python (bcc is Debian's pure-Python binding over libbcc).
if [ ! -x "$VENV/bin/python" ]; then
    /usr/bin/python3 -m venv "$VENV"
fi
SP=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
ln -sfn /usr/lib/python3/dist-packages/bcc "$SP/bcc"

# Re-install only when the project's dependency list changed.
WANT=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    "$VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip setuptools >/dev/null
    "$VENV/bin/pip" install -q --disable-pip-version-check -e '.[test]'
    echo "$WANT" > "$STAMP"
fi

# The proxy's PyPy environment (`edgestick proxy` moves onto it: proxy/runtime.py).
PYPY_VENV=.venv-pypy
if [ ! -x "$PYPY_VENV/bin/python" ]; then
    pypy3 -m venv "$PYPY_VENV"
fi
if [ "$(cat "$PYPY_VENV/.edgestick-setup" 2>/dev/null)" != "$WANT" ]; then
    "$PYPY_VENV/bin/pip" install -q --disable-pip-version-check -e .
    echo "$WANT" > "$PYPY_VENV/.edgestick-setup"
fi
