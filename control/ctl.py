"""`edgestick ctl [-S SOCKET] [COMMAND...]`: send runtime commands, print replies verbatim.

With words on the command line they form one command. Without, commands are read from
stdin one a line, each sent on its own connection like `socat stdio` in HAProxy's
non-interactive mode; on a terminal, a `> ` prompt on one interactive connection
(`quit` or end of input leaves). Exit status: 0 when every reply arrived (an error line from the
server is a reply, printed as is), 1 on a transport error (cannot connect, timeout),
2 on bad usage.
"""
from __future__ import annotations

import argparse
import os
import sys

from edgestick.control.runtime_client import DEFAULT_TIMEOUT, RuntimeApiError, RuntimeClient

# Where to look when -S is not given: the environment, then the packaged units' paths.
DEFAULT_SOCKETS = ("/run/edgestick/proxy.sock", "/run/edgestick/shield.sock")


def _default_socket() -> str | None:
    env = os.environ.get("EDGESTICK_SOCKET")
    if env:
        return env
    for path in DEFAULT_SOCKETS:
        if os.path.exists(path):
            return path
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="edgestick ctl",
        description="Send a runtime API command to an edgestick proxy or shield, or to HAProxy.")
    parser.add_argument("-S", "--socket", help="socket: /path, unix@/path, ipv4@host:port or host:port "
                        f"(default: $EDGESTICK_SOCKET, else the first of {', '.join(DEFAULT_SOCKETS)} that exists)")
    parser.add_argument("-t", "--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help="seconds to wait for a connection or a reply (default %(default)s)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command; none: read commands from stdin")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    address = args.socket or _default_socket()
    if not address:
        print("edgestick ctl: no socket given (-S) and none found at the default paths", file=sys.stderr)
        return 2
    try:
        client = RuntimeClient(address, timeout=args.timeout)
    except ValueError as e:
        print(f"edgestick ctl: {e}", file=sys.stderr)
        return 2

    if not args.command and sys.stdin.isatty():
        return _interactive(client)
    commands = [" ".join(args.command)] if args.command else \
        [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
    out = sys.stdout
    for cmd in commands:
        try:
            reply = client.raw(cmd.encode() + b"\n")
        except RuntimeApiError as e:
            out.flush()
            print(f"edgestick ctl: {e}", file=sys.stderr)
            return 1
        if hasattr(out, "buffer"):
            out.flush()
            out.buffer.write(reply)     # verbatim bytes
        else:
            out.write(reply.decode("utf-8", "replace"))
        out.flush()
    return 0


def _interactive(client: RuntimeClient) -> int:
    """A terminal: one `prompt`-mode connection, a line read per command, `quit` to leave."""
    try:
        with client.session() as session:
            while True:
                try:
                    line = input("> ").strip()
                except EOFError:
                    print()
                    return 0
                if line in ("quit", "exit"):
                    return 0
                if line:
                    sys.stdout.write(session.command(line))
                    sys.stdout.flush()
    except RuntimeApiError as e:
        print(f"edgestick ctl: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print()
        return 0


if __name__ == "__main__":
    sys.exit(main())
