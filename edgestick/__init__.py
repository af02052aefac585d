"""edgestick: HAProxy-style stick tables for Linux edge hosts.

Packages: edgestick.proxy (HTTP proxy, unprivileged), edgestick.control (XDP control
plane, root), edgestick.lab (network-namespace lab), edgestick.bpf (the XDP C source).
"""

__version__ = "0.1.0"
