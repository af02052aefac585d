"""The lab: attacker, client, edge and backend hosts in network namespaces.

Used by the kernel tests, the demo and the benchmarks; `edgestick lab` drives it by hand.
"""
from .topology import EDGE_IF, EDGE_INNER_IF, HOSTS, Lab

__all__ = ["EDGE_IF", "EDGE_INNER_IF", "HOSTS", "Lab"]
