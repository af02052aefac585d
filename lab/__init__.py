"""The lab: attacker, client, edge and backend hosts in network namespaces."""
