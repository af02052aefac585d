"""`option abortonclose` (HAProxy 2.6): a request waiting in a backend's queue, or for a
connection to its server that failed, is dropped when its client closes its side: the
server never sees it, the client hears nothing, the log says `CQ` / `CC` (given up at the
first failed attempt, before any retry).

In 2.6.12 this takes the option on both sides: the frontend's makes its H1 layer watch
the client while the request is processed (without it a close goes unnoticed until the
answer is written), the backend's lets the close abort a queued request. A backend's
option alone (or a frontend's alone, e.g. from `defaults`) changes nothing: compared in
tests/e2e/test_proxy_request_body.py.
"""
from __future__ import annotations

import asyncio
import time

ABORTED = object()      # wait_slot's verdict for a request its client abandoned


def applies(fe, backend) -> bool:
    return fe.model.options.abortonclose and backend.model.options.abortonclose


async def wait_slot(fe, c, stream, backend, srv, timeout_s):
    """backend.wait_slot, given up when the client closes its side: the slot (a server,
    None after `timeout queue`), or ABORTED (the stream is then ended: nothing answered)."""
    slot = asyncio.ensure_future(backend.wait_slot(srv, timeout_s))
    while not c.eof:
        watch = asyncio.ensure_future(c.wait_data(None))
        await asyncio.wait((slot, watch), return_when=asyncio.FIRST_COMPLETED)
        if slot.done():
            watch.cancel()
            return slot.result()
    slot.cancel()
    try:
        got = await slot                # (handed a slot as it was cancelled: give it back)
    except asyncio.CancelledError:
        got = None
    if got is not None:
        backend.release_slot(got)
    if stream.log is not None:
        stream.log.t_queue = time.time()
    dropped(c, stream, "CQ")
    return ABORTED


def dropped(c, stream, term: str) -> bool:
    """The stream ends unanswered: `term` (CQ in the queue, CC connecting) in the log."""
    if stream.log is not None:
        stream.log.term = term
    c.close()
    return False
