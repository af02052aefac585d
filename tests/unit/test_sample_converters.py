"""proxy/sample.py: the string, encoding, hash and time converters and the rand/date
fetches, with HAProxy 2.6's semantics (src/sample.c, src/hash.c); values that the
differential test does not reach (regsub groups, count 0, padding per group)."""
import time

import pytest

from edgestick.proxy.sample import Context, SampleError, compile_expr


def val(expr: str, path: str = "/a/b//c/d", x: str | None = None):
    headers = [("x", x)] if x is not None else []
    return compile_expr(expr)(Context(path=path, headers=headers, method="GET"))


@pytest.mark.parametrize("expr,expected", [
    ("path,field(1,/)", ""), ("path,field(2,/)", "a"), ("path,field(4,/)", ""),
    ("path,field(-1,/)", "d"), ("path,field(-3,/)", ""), ("path,field(2,/,2)", "a/b"),
    ("path,field(2,/,0)", "a/b//c/d"), ("path,field(-2,/,0)", "/a/b//c"),
    ("path,field(7,/)", None), ("path,field(-7,/)", None), ("path,field(6,/)", "d"),
    ("path,word(1,/)", "a"), ("path,word(3,/)", "c"), ("path,word(-1,/)", "d"),
    ("path,word(1,/,2)", "a/b"), ("path,word(-2,/,2)", "b//c"), ("path,word(2,/,0)", "b//c/d"),
    ("path,word(9,/)", ""), ("path,word(-9,/)", ""),
])
def test_field_and_word(expr, expected):
    assert val(expr) == expected


@pytest.mark.parametrize("x,form,expected", [
    ("a%20b", 0, "a b"), ("a+b?c+d", 0, "a+b?c d"), ("a+b", 1, "a b"),
    ("%41%4a%4A", 0, "AJJ"), ("bad%zz", 0, None), ("cut%2", 0, None),
    ("nul%00rest", 0, "nul"),
])
def test_url_dec(x, form, expected):
    assert val(f"req.hdr(x),url_dec({form})", x=x) == expected


@pytest.mark.parametrize("expr,expected", [
    ("path,regsub(/,_)", "_a/b//c/d"), ("path,regsub(/,_,g)", "_a_b__c_d"),
    ("path,regsub(/+,_,g)", "_a_b_c_d"), ("path,regsub(A,X,gi)", "/X/b//c/d"),
    ("path,regsub(A,X,g)", "/a/b//c/d"), ("path,regsub(^/(.)/(.),\\2-\\1)", "b-a//c/d"),
    ("path,regsub(z*,-,g)", "-/-a-/-b-/-/-c-/-d-"),
])
def test_regsub(expr, expected):
    assert val(expr) == expected


@pytest.mark.parametrize("x,expected", [
    ("QQ==", b"A"), ("QUI=", b"AB"), ("QUJD", b"ABC"), ("", b""),
    ("QQ==QQ==", b"AA"),          # HAProxy pads each group of 4 on its own
    ("QQ=", None), ("Q===", b""), ("====", None), ("QQ=A", None), ("Q!==", None),
])
def test_b64dec(x, expected):
    assert val("req.hdr(x),b64dec", x=x) == expected


def test_base64_bytes_hex():
    assert val("req.hdr(x),base64", x="AB") == "QUI="
    assert val("req.hdr(x),bytes(1),hex", x="ABCD") == "424344"
    assert val("req.hdr(x),bytes(1,2),hex", x="ABCD") == "4243"
    assert val("req.hdr(x),bytes(4)", x="ABCD") == b""
    assert val("req.hdr(x),bytes(-1)", x="ABCD") == b""      # unsigned in HAProxy: past the end
    assert val("req.hdr(x),bytes(0,-1)", x="ABCD") == b"ABCD"


def test_hashes_as_haproxy():
    # values given by haproxy 2.6.12 for the header x: 123456789
    x = "123456789"
    assert val("req.hdr(x),sdbm", x=x) == 1755344949
    assert val("req.hdr(x),djb2", x=x) == 902675330
    assert val("req.hdr(x),wt6", x=x) == 2225171485
    assert val("req.hdr(x),crc32", x=x) == 3421780262
    assert val("req.hdr(x),wt6(1)", x=x) == 4053691039
    assert val("req.hdr(x),crc32c", x=x) == 0xE3069283        # the CRC-32C check value
    assert val("req.hdr(x),xxh32", x="") == 0x02CC5D05
    assert val("req.hdr(x),xxh64", x="") == 0xEF46DB3751D8E999 - 2**64     # signed, as HAProxy
    assert val("req.hdr(x),sha2(224),hex", x="abc").startswith("23097D22")
    assert val("req.hdr(x),sha1,hex", x="abc") == "A9993E364706816ABA3E25717850C26C9CD0D89D"


def test_url_safe_base64_trim_http_date():
    assert val("req.hdr(x),ub64enc", x="\xfb\xff") == "-_8"
    assert val("req.hdr(x),ub64dec,hex", x="-_8") == "FBFF"
    assert val("req.hdr(x),ub64dec", x="YWJjZ") is None              # 5 characters
    assert val("req.hdr(x),ub64dec", x="a/b+") is None
    assert val("path,ltrim(/a),rtrim(/d)") == "b//c"
    assert val("int(1),http_date") == "Thu, 01 Jan 1970 00:00:01 GMT"
    assert val("int(1500),http_date(0,ms)") == "Thu, 01 Jan 1970 00:00:01.500 GMT"
    assert val("int(5),http_date(0,s)") == "Thu, 01 Jan 1970 00:00:05 GMT"
    assert val("int(1),http_date(86400)") == "Fri, 02 Jan 1970 00:00:01 GMT"


def test_bit_operators_and_time():
    assert val("int(12),or(3)") == 15
    assert val("int(12),xor(4)") == 8
    assert val("int(0),cpl") == -1
    assert val("int(86400),utime(%Y-%m-%d)") == "1970-01-02"
    assert val("int(0),utime(%H,3600)") == "01"
    assert val("int(0),ltime(%Y)") == time.strftime("%Y", time.localtime(0))


def test_rand_range_and_date():
    assert all(0 <= val("rand(3)") < 3 for _ in range(200))
    assert {val("rand(2)") for _ in range(200)} == {0, 1}
    assert val("rand(0)") == 0
    assert 0 <= val("rand") < 2**32
    now = time.time()
    assert abs(val("date") - now) <= 1
    assert abs(val("date(3600)") - now - 3600) <= 1
    assert abs(val("date(0,ms)") - now * 1000) <= 1000
    assert abs(val("date(1000,ms)") - now * 1000 - 1000) <= 1000     # offset in the unit


@pytest.mark.parametrize("expr,message", [
    ("path,field(0,/)", "invalid args in converter 'field' : Unexpected value 0 for index."),
    ("path,word(1,)", "invalid args in converter 'word' : Empty separators list."),
    ("path,field(1)", "invalid arg 2 in converter 'field' : missing arguments (got 1/2)"),
    ("path,regsub(a,b,x)", "invalid regex flag 'x'"),
    ("path,regsub(*,b)", "error in regex '*' in arg 1 of conversion keyword 'regsub'"),
    ("path,sdbm(1,2)", "invalid arg 2 in converter 'sdbm' : expected ')' before ',2)'"),
    ("path,base64(1)", "invalid arg 1 in converter 'base64' : expected ')' before '1)'"),
    ("rand(1,2)", "fetch method 'rand' : expected ')' before ',2)'"),
    ("date(0,h)", "expects 's', 'ms' or 'us', got 'h'"),
    ("path,sha2(100)", "Unsupported number of bits: '100'."),
    ("int(1),http_date(0,h)", "expects 's', 'ms' or 'us', got 'h'"),
    ("int(1),utime", "invalid arg 1 in converter 'utime' : missing arguments (got 0/1)"),
])
def test_errors(expr, message):
    with pytest.raises(SampleError) as e:
        compile_expr(expr)
    assert message in str(e.value)


def test_header_values_split_outside_quoted_strings():
    # HAProxy's http_find_hdr_value_end: a comma in a quoted string does not separate
    x = 'a, "b,c", "d\\",e", f'
    assert val("req.hdr(x,1)", x=x) == "a"
    assert val("req.hdr(x,2)", x=x) == '"b,c"'
    assert val("req.hdr(x,3)", x=x) == '"d\\",e"'
    assert val("req.hdr(x)", x=x) == "f"
    assert val("req.hdr_cnt(x)", x=x) == 4
    assert val("req.hdr(x)", x='"open, x') == '"open, x'


@pytest.mark.parametrize("x,host,port", [
    ("a.b:80", "a.b", 80), ("[::1]:8080", "[::1]", 8080), ("[::1]", "[::1]", 0),
    ("A.B:0080", "a.b", 80), ("a:80:90", "a:80", 90), ("a:", "a", 0), ("::1", ":", 1),
    ("a:x", "a", 72), ("a:-1", "a", 4294967267),      # HAProxy does not check the digits
])
def test_host_only_port_only(x, host, port):
    assert val("req.hdr(x),host_only", x=x) == host
    assert val("req.hdr(x),port_only", x=x) == port


def test_case_converters_are_ascii_only():
    # C tolower/toupper: a byte above 0x7f (here latin-1 text) stays as it is
    assert val("req.hdr(x),lower", x="AbC\xc9") == "abc\xc9"
    assert val("req.hdr(x),upper", x="aBc\xe9") == "ABC\xe9"
