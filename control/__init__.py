"""XDP control plane: builds and attaches bpf/, manages its maps, rules, bans and metrics."""
