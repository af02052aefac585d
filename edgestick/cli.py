"""The `edgestick` command: one entry point, one subcommand per component.

Each subcommand lives in its component as `main(argv) -> int`; this module only routes,
so `edgestick proxy` never imports the control plane and the other way round.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys

SUBCOMMANDS = {
    "proxy": ("edgestick.proxy.main", "HTTP proxy running a HAProxy configuration"),
    "shield": ("edgestick.control.shield", "XDP shield: attach, detach, serve its runtime API"),
    "run": ("edgestick.control.run", "proxy and shield together from one configuration"),
    "ctl": ("edgestick.control.ctl", "send a runtime command to a proxy or shield socket"),
    "top": ("edgestick.control.top", "live view of the top sources"),
    "lab": ("edgestick.lab.cli", "build or remove the network-namespace lab"),
}


def usage() -> str:
    lines = ["usage: edgestick COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<8} {text}" for name, (_, text) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-v", "--version"):
        from edgestick import __version__
        print(f"edgestick {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"edgestick: unknown command '{name}'\n\n{usage()}", file=sys.stderr)
        return 2
    module_name = SUBCOMMANDS[name][0]
    if importlib.util.find_spec(module_name) is None:
        print(f"edgestick: '{name}' is not built yet", file=sys.stderr)
        return 2
    return importlib.import_module(module_name).main(rest)
