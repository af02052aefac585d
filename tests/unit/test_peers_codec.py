"""The peers protocol codec against the capture of two HAProxy 2.6.12 peers
(tests/fixtures/haproxy-transcripts/peers-exchange.txt): every binary message of every
connection decodes with per-direction session state and re-encodes to the same bytes."""
import re

import pytest

from haproxy_transcripts import DIR
from edgestick.proxy.peers import (ACK, DEFINE, Ack, Control, DictRef, PeerProtocolError,
                                    StreamDecoder, TableDef, Update, decode_varint,
                                    encode, encode_varint, split_message, table_def_for)
from edgestick.proxy.stick_table import StickTable, parse_table_args

_MSG = re.compile(r"^\[ *([\d.]+)\] (c2s|s2c) (?!line )(?:message \(\d+ bytes\): |[A-Z][A-Za-z ()]*?\s+)"
                  r"((?:[0-9a-f]{2} ?)+)$")


def connections():
    """Part 2 of the capture: per connection, the binary messages in order as
    (direction, bytes)."""
    text = (DIR / "peers-exchange.txt").read_text()
    part2 = text[text.index("PART 2"):]
    conns = []
    for line in part2.splitlines():
        if line.startswith("Connection from"):
            conns.append([])
            continue
        m = _MSG.match(line)
        if m and conns:
            conns[-1].append((m.group(2), bytes.fromhex(m.group(3))))
    return [c for c in conns if c]


def test_varint_worked_examples():
    table = {14: "0e", 240: "f0 00", 1604: "f4 55", 2003: "f3 6e", 10000: "f0 e2 03",
             600000: "f0 ed a3 01", 1800000: "f0 e5 ed 05", 524289: "f1 f1 fe 00",
             4294967295: "ff f0 fe fe 7e"}
    for v, hx in table.items():
        raw = bytes.fromhex(hx)
        assert encode_varint(v) == raw
        assert decode_varint(raw, 0) == (v, len(raw))
    for v in (0, 239, 241, 2287, 2288, 264431, 264432, 33818863, 33818864, 4328786159,
              4328786160, (1 << 64) - 1):
        raw = encode_varint(v)
        assert decode_varint(raw, 0) == (v, len(raw))
    with pytest.raises(PeerProtocolError):
        decode_varint(bytes.fromhex("f0 e2"), 0)               # truncated
    with pytest.raises(PeerProtocolError):
        decode_varint(b"\xff" * 12, 0)                        # longer than 64 bits


def test_every_captured_message_round_trips():
    conns = connections()
    assert len(conns) >= 4
    kinds = set()
    total = 0
    for conn in conns:
        dec = {"c2s": StreamDecoder(), "s2c": StreamDecoder()}
        for direction, raw in conn:
            d = dec[direction]
            msgs = d.feed(raw)
            assert len(msgs) == 1, raw.hex(" ")
            msg = msgs[0]
            assert encode(msg, d.current) == raw, raw.hex(" ")
            kinds.add(type(msg).__name__ if not isinstance(msg, Update) else hex(msg.msg_type))
            total += 1
    assert total >= 140
    assert kinds >= {"Control", "TableDef", "Ack", "0x80", "0x85", "0x86"}   # no 0x81 captured


def test_decoded_values_of_the_test_vector():
    d = StreamDecoder()
    (bk,) = d.feed(bytes.fromhex("0a 82 10 01 04 62 6b 5f 65 04 04 f1 f1 fe 00 f0 e5 ed 05"))
    assert bk == TableDef(1, "bk_e", 4, 4, 0x80001, 1800000, [])
    (rate,) = d.feed(bytes.fromhex(
        "0a 82 16 02 08 74 62 6c 5f 72 61 74 65 04 04 f4 55 f0 ed a3 01 0a f0 e2 03"))
    assert (rate.name, rate.data_types, rate.expire, rate.params) == \
        ("tbl_rate", 0x644, 600000, [(10, None, 10000)])
    (u,) = d.feed(bytes.fromhex("0a 80 0e 00 00 00 02 7f 00 00 01 00 01 01 00 01 00"))
    assert u == Update(0x7F000001, {2: 0, 6: 1, 9: 1, 10: (0, 1, 0)}, update_id=2)
    d.feed(bytes.fromhex("0a 82 10 01 04 62 6b 5f 65 04 04 f1 f1 fe 00 f0 e5 ed 05"))
    (u,) = d.feed(bytes.fromhex("0a 80 0e 00 00 00 01 7f 00 00 01 01 04 01 02 73 31"))
    assert u.values == {0: 1, 19: DictRef(1, "s1", True)}
    (u,) = d.feed(bytes.fromhex("0a 85 12 00 00 00 08 00 1b 35 48 7f 00 00 02 02 04 01 02 73 32"))
    assert (u.update_id, u.expire, u.key, u.values[0], u.values[19].value) == \
        (8, 1783112, 0x7F000002, 2, "s2")
    (u,) = d.feed(bytes.fromhex("0a 86 0b 00 1b 41 0e 7f 00 00 03 01 01 02"))
    # slot 2 was never defined in this session: the value is unknown here, the bytes are kept
    assert (u.update_id, u.expire, u.values[19]) == (None, 1786126, DictRef(2, None, False))
    (u,) = d.feed(bytes.fromhex("0a 86 0b 00 1b 41 0e 7f 00 00 03 01 01 01"))
    assert u.values[19] == DictRef(1, "s2", False)          # slot 1 holds "s2" by now
    (a,) = d.feed(bytes.fromhex("0a 84 05 02 00 00 00 02"))
    assert a == Ack(2, 2)
    assert d.feed(bytes.fromhex("00 04 00")) == [Control(4)]  # partial message stays buffered
    assert d.feed(bytes.fromhex("03")) == [Control(3)]


def test_our_definitions_match_haproxys():
    bk = StickTable("bk_e", parse_table_args("type ip size 200k expire 30m peers mypeers".split())[0])
    bk.ensure_data_types("server_id", "server_key")
    assert encode(table_def_for(bk, 1)) == bytes.fromhex(
        "0a 82 10 01 04 62 6b 5f 65 04 04 f1 f1 fe 00 f0 e5 ed 05")
    rate = StickTable("tbl_rate", parse_table_args(
        "type ip size 1k expire 10m peers mypeers store gpc0,conn_cur,http_req_cnt,"
        "http_req_rate(10s)".split())[0])
    assert encode(table_def_for(rate, 2)) == bytes.fromhex(
        "0a 82 16 02 08 74 62 6c 5f 72 61 74 65 04 04 f4 55 f0 ed a3 01 0a f0 e2 03")
    arrays = StickTable("mypeers/t", parse_table_args(
        "type string len 8 size 16 store gpc(3),gpc_rate(2,1m),gpt(2)".split())[0])
    d = table_def_for(arrays, 3)
    assert (d.name, d.key_type, d.key_len, d.data_types) == ("/t", 6, 9, (1 << 22) | (1 << 23) | (1 << 24))
    assert d.params == [(22, 2, None), (23, 3, None), (24, 2, 60000)]
    dec = StreamDecoder()
    (back,) = dec.feed(encode(d))
    assert back == d
    u = Update(b"abc", {22: [1, 2], 23: [3, 4, 5], 24: [(10, 1, 2), (0, 0, 0)]}, update_id=7)
    (back,) = dec.feed(encode(u, d))
    assert back == u


def test_hostile_input_is_refused():
    with pytest.raises(PeerProtocolError):
        split_message(bytes((10, DEFINE)) + encode_varint(1 << 20))  # oversized
    with pytest.raises(PeerProtocolError):
        split_message(b"\xff\x00")                                   # reserved class
    assert split_message(bytes((10, ACK, 5, 2))) is None             # incomplete: wait
    d = StreamDecoder()
    with pytest.raises(PeerProtocolError):
        d.feed(bytes.fromhex("0a 80 05 00 00 00 02 7f"))             # update before a define
    d = StreamDecoder()
    d.feed(bytes.fromhex("0a 82 10 01 04 62 6b 5f 65 04 04 f1 f1 fe 00 f0 e5 ed 05"))
    for bad in ("0a 80 06 00 00 00 01 7f 00",                       # truncated key
                "0a 80 09 00 00 00 01 7f 00 00 01 01",              # missing server_key
                "0a 80 0b 00 00 00 01 7f 00 00 01 01 02 00 00",     # dictionary slot 0
                "0a 80 0c 00 00 00 01 7f 00 00 01 01 01 01 09"):    # trailing byte
        with pytest.raises(PeerProtocolError):
            StreamDecoder.decode(d, 10, int(bad.split()[1], 16), bytes.fromhex(bad)[3:])


def test_handshake_of_the_capture():
    from edgestick.proxy.peers import check_hello, encode_hello
    text = (DIR / "peers-exchange.txt").read_text()
    hello = b"".join(bytes.fromhex(m.group(1)) for m in re.finditer(
        r"\[  2\.860\] c2s  '[^']*'.*\n\s+hex: ((?:[0-9a-f]{2} ?)+)", text))
    assert hello == encode_hello("hapA", "hapB", 26406)
    lines = hello.decode().split("\n")[:3]
    peers = {"hapA", "hapB"}.__contains__
    assert check_hello(lines, "hapA", peers) == (200, "hapB", False)
    assert check_hello(["HAProxyS 2.0", "hapA", "hapB 1 1"], "hapA", peers) == (200, "hapB", True)
    assert check_hello(["GET / HTTP/1.0", "hapA", "hapB 1 1"], "hapA", peers)[0] == 501
    assert check_hello(["HAProxyS 2.2", "hapA", "hapB 1 1"], "hapA", peers)[0] == 502
    assert check_hello(["HAProxyS 3.0", "hapA", "hapB 1 1"], "hapA", peers)[0] == 502
    assert check_hello(["HAProxyS x", "hapA", "hapB 1 1"], "hapA", peers)[0] == 502
    assert check_hello(["HAProxyS 2.1", "hapC", "hapB 1 1"], "hapA", peers)[0] == 503
    assert check_hello(["HAProxyS 2.1", "hapA", "hapB"], "hapA", peers)[0] == 501
    assert check_hello(["HAProxyS 2.1", "hapA", "eve 1 1"], "hapA", peers)[0] == 504


def test_random_garbage_only_raises_protocol_errors():
    """Whatever bytes arrive, the decoder yields messages or PeerProtocolError, nothing
    else (so a hostile peer can only get its own session closed)."""
    import random
    rnd = random.Random(7)
    prefix = bytes.fromhex("0a 82 16 02 08 74 62 6c 5f 72 61 74 65 04 04 f4 55 f0 ed a3 01 0a "
                           "f0 e2 03")
    for i in range(3000):
        d = StreamDecoder()
        head = prefix if i % 2 else b""
        body = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 40)))
        if i % 3 == 0:                               # well-framed table messages, random payload
            body = bytes((10, rnd.choice((0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86)),
                          len(body))) + body
        try:
            d.feed(head + body)
        except PeerProtocolError:
            pass
