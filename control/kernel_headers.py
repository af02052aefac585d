"""Point bcc at kernel headers before the first compile.

A distro kernel ships /lib/modules/<release>/{build,source}; a custom kernel without
modules does not, and scripts/setup-host.sh then merges Debian's split header packages
into one tree. bcc reads BCC_KERNEL_SOURCE through getenv() at compile time, so setting
it in os.environ before BPF() is enough.
"""
import os

MERGED_TREE = os.environ.get("BCC_KHEADERS_DIR", "/usr/local/lib/bcc-kheaders")


def ensure_bcc_kernel_source() -> str | None:
    """Set BCC_KERNEL_SOURCE when the running kernel has no headers of its own.

    Returns the tree bcc will use, or None when it uses /lib/modules."""
    if "BCC_KERNEL_SOURCE" in os.environ:
        return os.environ["BCC_KERNEL_SOURCE"]
    release = os.uname().release
    if any(os.path.exists(f"/lib/modules/{release}/{d}/include/linux/kconfig.h")
           for d in ("source", "build")):
        return None
    if not os.path.exists(os.path.join(MERGED_TREE, "include/linux/kconfig.h")):
        raise RuntimeError(
            f"no kernel headers for {release}: run scripts/setup-host.sh (it builds {MERGED_TREE})")
    os.environ["BCC_KERNEL_SOURCE"] = MERGED_TREE
    return MERGED_TREE
