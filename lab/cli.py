"""`edgestick lab up|down|status`: the namespace lab by hand."""
from __future__ import annotations

import argparse
import json

from .topology import HOSTS, Lab, known_labs, sweep_stale


def _print_lab(lab: Lab) -> None:
    st = lab.status()
    print(f"lab {st['prefix']} ({'persistent' if st['persistent'] else 'ephemeral'})")
    for host, h in HOSTS.items():
        print(f"  {host:<9} netns {lab.ns(host):<20} {h.ifname:<5} {h.addr4:<13} {h.addr6}")
    print(f"  edge outside interface: {lab.edge_if}  inside: {lab.edge_inner_if}")
    print(f"  pins: {st['pin_dir'] or '-'}  processes: {len(st['processes'])}")
    print(f"  run a command in a host: nsenter --net=/run/netns/{lab.ns('client')} -- CMD")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="edgestick lab", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("up", help="build the lab (replacing one built before)")
    sub.add_parser("down", help="remove the lab built by 'up' (and labs of crashed runs)")
    st = sub.add_parser("status", help="show the labs that exist")
    st.add_argument("--json", action="store_true")
    demo = sub.add_parser("demo", help="run the demo scenario in a fresh lab")
    demo.add_argument("--duration", type=float, default=None)
    args = parser.parse_args(argv)

    if args.action == "up":
        for old in known_labs():
            if old.persistent:
                old.destroy()
        lab = Lab.create(persistent=True)
        _print_lab(lab)
        return 0
    if args.action == "down":
        removed = sweep_stale()
        for lab in known_labs():
            if lab.persistent:
                lab.destroy()
                removed.append(lab.prefix)
        print(f"removed {len(removed)} lab(s){': ' if removed else ''}{' '.join(removed)}")
        return 0
    if args.action == "status":
        labs = known_labs()
        if args.json:
            print(json.dumps([lab.status() for lab in labs]))
        elif not labs:
            print("no lab")
        for lab in labs if not args.json else ():
            _print_lab(lab)
        return 0
    from .demo import main as demo_main
    return demo_main(args)
