"""HTTP/1.1 reverse proxy that runs HAProxy configurations with HAProxy stick-table semantics."""
