"""Test tiers: tests/unit (no privileges), tests/e2e (loopback, real processes),
tests/kernel (root: namespaces, veth, XDP). The kernel tier is skipped, with the reason
shown, only where this host cannot load BPF programs."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _kernel_tier_problem() -> str | None:
    if os.geteuid() != 0:
        return "kernel tests need root (CAP_BPF, CAP_NET_ADMIN)"
    if not os.path.ismount("/sys/fs/bpf"):
        return "bpffs is not mounted on /sys/fs/bpf (scripts/setup-host.sh mounts it)"
    try:
        import bcc  # noqa: F401
    except ImportError as e:
        return f"bcc is not importable: {e}"
    if shutil.which("ip") is None:
        return "iproute2 is missing"
    return None


KERNEL_PROBLEM = _kernel_tier_problem()


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(str(item.fspath))
        if "kernel" in path.parts:
            item.add_marker(pytest.mark.kernel)
            if KERNEL_PROBLEM:
                item.add_marker(pytest.mark.skip(reason=KERNEL_PROBLEM))


@pytest.fixture(scope="session")
def haproxy_bin() -> str:
    """Debian's haproxy 2.6, the reference in differential tests."""
    path = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.path.exists(path):
        pytest.fail("haproxy is not installed: scripts/setup-host.sh installs it")
    out = subprocess.run([path, "-v"], capture_output=True, text=True).stdout
    assert "version 2.6." in out, f"expected HAProxy 2.6, got: {out.splitlines()[:1]}"
    return path
