"""Differential check of the configuration parser: each small configuration goes through
the real `haproxy -c -f` and through `load_config`; both must call it valid or invalid.

The expected verdict is written next to each case too, so a change in either side shows
up as a failure naming the case."""
import subprocess

import pytest

from edgestick.cfgsyntax import ConfigError
from edgestick.proxy.config import load_config

pytestmark = pytest.mark.haproxy

D = """defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
"""
FE = "frontend f\n    bind 127.0.0.1:20999\n"
BE = "backend b\n    server s1 127.0.0.1:20998\n"

VALID, INVALID = True, False

CASES = [
    # --- listeners and addresses
    ("bind forms", VALID, D + "frontend f\n    bind *:20990\n    bind :::20991\n"
     "    bind ipv6@:20992\n    bind 127.0.0.1:20993-20994\n    bind :20995,:20996\n"),
    ("bind without port", INVALID, D + "frontend f\n    bind 127.0.0.1\n"),
    ("bind bad port", INVALID, D + "frontend f\n    bind :99999\n"),
    ("bind unknown option", INVALID, D + "frontend f\n    bind :20990 frob\n"),
    ("bind ssl missing cert", INVALID, D + "frontend f\n    bind :20990 ssl crt /nonexistent/x.pem\n"),
    ("bind ssl crt", VALID, D + "frontend f\n    bind :20990 ssl crt {cert}\n"),
    ("bind ssl options", VALID, D + "frontend f\n    bind :20990 ssl crt {cert} ssl-min-ver TLSv1.2 "
     "ciphers ECDHE-ECDSA-AES128-GCM-SHA256 alpn http/1.1 verify required ca-file {ca}\n"),
    ("bind ssl bad version", INVALID, D + "frontend f\n    bind :20990 ssl crt {cert} ssl-min-ver TLSv9\n"),
    ("bind ssl bad ciphers", INVALID, D + "frontend f\n    bind :20990 ssl crt {cert} ciphers NOPE-NOTHING\n"),
    ("bind ssl verify without ca", INVALID, D + "frontend f\n    bind :20990 ssl crt {cert} verify required\n"),
    ("bind ssl crt not a cert", INVALID, D + "frontend f\n    bind :20990 ssl crt {garbage}\n"),
    # --- sections and keywords
    ("unknown keyword", INVALID, D + FE + "    frobnicate 1\n"),
    ("unknown global keyword", INVALID, "global\n    frobnicate\n" + D + FE),
    ("keyword out of section", INVALID, "maxconn 10\n" + D + FE),
    ("server in frontend", INVALID, D + FE + "    server s1 127.0.0.1:1\n"),
    ("bind in backend with a bad option", INVALID, D + BE + "    bind :20990 table\n"),
    ("bind in backend warns", VALID, D + FE + "    default_backend b\n" + BE + "    bind :20990\n"),
    ("balance in frontend warns", VALID, D + FE + "    balance roundrobin\n"),
    ("duplicate backend", INVALID, D + BE + BE + FE),
    ("frontend and backend same name", VALID, D + "frontend b\n    bind :20990\n"
     "    default_backend b\n" + BE),
    ("duplicate server", INVALID, D + FE + "    default_backend b\n" + BE
     + "    server s1 127.0.0.1:2\n"),
    ("timeouts", VALID, D + FE + "    timeout http-request 10s\n    timeout http-keep-alive 1m\n"
     "    timeout client 1h\n" + BE + "    timeout check 2s\n    timeout tarpit 1s\n"),
    ("timeout bad unit", INVALID, D + FE + "    timeout client 10x\n"),
    ("timeout unknown", INVALID, D + FE + "    timeout frob 10s\n"),
    ("mode bad", INVALID, D + FE + "    mode ftp\n"),
    ("stats socket", VALID, "global\n    stats socket /tmp/edgestick-never.sock mode 600 level admin\n"
     "    stats timeout 2m\n    maxconn 1000\n" + D + FE),
    ("stats socket bad level", INVALID, "global\n    stats socket /tmp/x.sock level root\n" + D + FE),
    ("nbproc gone", INVALID, "global\n    nbproc 2\n" + D + FE),
    # --- backends and servers
    ("server options", VALID, D + FE + "    default_backend b\nbackend b\n    balance leastconn\n"
     "    option redispatch\n    retries 2\n    option httpchk GET /health HTTP/1.1\n"
     "    http-check send hdr Host example.com\n"
     "    server s1 127.0.0.1:1 check inter 1s rise 1 fall 2 weight 10 maxconn 5 id 7\n"
     "    server s2 127.0.0.1:2 backup disabled cookie c2\n"),
    ("server unknown option", INVALID, D + BE + "    server s2 127.0.0.1:2 frob\n"),
    ("server weight too big", INVALID, D + BE + "    server s2 127.0.0.1:2 weight 257\n"),
    ("server no port", VALID, D + FE + "    default_backend b\n" + BE
     + "    server s2 127.0.0.1\n"),
    ("balance algorithms", VALID, D + FE + "    default_backend b\n" + BE + "    balance source\n"
     + "backend c\n    balance static-rr\nbackend e\n    balance first\n"),
    ("balance without algorithm", VALID, D + FE + "    default_backend b\n" + BE + "    balance\n"),
    ("resolvers", VALID, "resolvers dns\n    nameserver ns1 127.0.0.1:53\n"
     "    resolve_retries 3\n    timeout resolve 1s\n    timeout retry 1s\n"
     "    hold valid 10s\n    accepted_payload_size 8192\n" + D + FE
     + "    default_backend b\n" + BE + "    server r localhost:80 resolvers dns\n"),
    ("resolvers without name", INVALID, "resolvers\n" + D + FE),
    ("resolvers bad nameserver", INVALID, "resolvers d\n    nameserver\n" + D + FE),
    ("resolvers unknown keyword", INVALID, "resolvers d\n    frob 1\n" + D + FE),
    ("server unknown resolvers", INVALID, D + BE + "    server r localhost:80 resolvers x\n"),
    ("http-errors", VALID, "http-errors site\n    errorfile 503 {errorfile}\n" + D + FE
     + "    errorfiles site\n    errorloc302 403 /x\n    errorloc303 404 /y\n"
     + "    http-request return status 503 errorfiles site\n"),
    ("http-errors without name", INVALID, "http-errors\n" + D + FE),
    ("http-errors bad status", INVALID, "http-errors s\n    errorfile 999 {errorfile}\n" + D),
    ("http-errors missing file", INVALID, "http-errors s\n    errorfile 503 /nonexistent\n"),
    ("http-errors unknown keyword", INVALID, "http-errors s\n    frob\n" + D),
    ("http-errors twice", INVALID, "http-errors s\nhttp-errors s\n" + D),
    ("errorfiles unknown section", INVALID, D + FE + "    errorfiles nope\n"),
    ("errorfiles without name", INVALID, D + FE + "    errorfiles\n"),
    ("errorloc without url", INVALID, D + FE + "    errorloc 503\n"),
    ("errorloc bad status", INVALID, D + FE + "    errorloc 999 /x\n"),
    ("server tls", VALID, D + FE + "    default_backend b\n" + BE
     + "    server t1 127.0.0.1:443 ssl verify none sni req.hdr(host) check-ssl check\n"
     + "    server t2 127.0.0.1:443 ssl verify required ca-file {ca} verifyhost www.x\n"
     + "    server p1 127.0.0.1:80 send-proxy\n    server p2 127.0.0.1:81 send-proxy-v2\n"),
    ("server ssl without ca-file", INVALID, D + BE + "    server t 127.0.0.1:443 ssl\n"),
    ("server ssl verify off globally", VALID, "global\n    ssl-server-verify none\n" + D + FE
     + "    default_backend b\n" + BE + "    server t 127.0.0.1:443 ssl\n"),
    ("server ca-file missing", INVALID, D + BE
     + "    server t 127.0.0.1:443 ssl verify required ca-file /nonexistent.pem\n"),
    ("server verify bad", INVALID, D + BE + "    server t 127.0.0.1:443 ssl verify maybe\n"),
    ("server ciphers bad", INVALID, D + BE + "    server t 127.0.0.1:443 ssl verify none "
     "ciphers NOPE\n"),
    ("balance hashes", VALID, D + FE + "    default_backend b\n" + BE
     + "    balance uri whole len 5 depth 2 path-only\n    hash-type consistent djb2 avalanche\n"
     + "backend c\n    balance url_param id check_post\n    hash-type map-based wt6\n"
     + "backend e\n    balance hdr(Host) use_domain_only\n    hash-type consistent\n"
     + "backend f\n    balance random(3)\nbackend g\n    balance random\n"),
    ("balance uri len zero", INVALID, D + BE + "    balance uri len 0\n"),
    ("balance uri unknown option", INVALID, D + BE + "    balance uri foo\n"),
    ("balance url_param without name", INVALID, D + BE + "    balance url_param\n"),
    ("balance url_param modifier", INVALID, D + BE + "    balance url_param id foo\n"),
    ("balance hdr without name", INVALID, D + BE + "    balance hdr()\n"),
    ("balance hdr bare", INVALID, D + BE + "    balance hdr\n"),
    ("balance hdr modifier", INVALID, D + BE + "    balance hdr(host) foo\n"),
    ("balance random zero draws", INVALID, D + BE + "    balance random(0)\n"),
    ("balance random bad draws", INVALID, D + BE + "    balance random(x)\n"),
    ("hash-type unknown", INVALID, D + BE + "    hash-type foo\n"),
    ("hash-type unknown function", INVALID, D + BE + "    hash-type consistent none\n"),
    ("hash-type unknown modifier", INVALID, D + BE + "    hash-type consistent crc32 x\n"),
    ("httpchk four arguments", INVALID, D + BE + "    option httpchk GET /health if HTTP/1.1\n"),
    ("timeout trailing characters", VALID, D + FE + "    timeout client 30sq\n"),
    ("acl without pattern", VALID, D + FE + "    acl p path\n    http-request deny if p\n"),
    ("mode with extra argument", INVALID, D + FE + "    mode http check\n"),
    ("bare if and unless", VALID, D + FE + "    http-request deny if\n    http-request deny unless\n"),
    ("server bad host", INVALID, D + BE + "    server s2 127..0.1:2\n"),
    ("operator without value", VALID, D + FE + "    acl a src_port gt\n    acl b src_port gt 5 lt\n"
     "    http-request deny if a || b\n"),
    ("http-check two sends", INVALID, D + BE + "    option httpchk\n    http-check send meth GET\n"
     "    http-check send meth HEAD\n"),
    ("http-check connect not first", INVALID, D + BE + "    option httpchk\n    http-check send meth GET\n"
     "    http-check connect\n"),
    ("http-check connect send expect", VALID, D + FE + "    default_backend b\n" + BE
     + "    option httpchk\n    http-check connect\n    http-check send meth GET uri /h\n"
     "    http-check expect status 200\n    http-check connect port 80\n    http-check send meth HEAD\n"),
    ("http-check two connects", INVALID, D + BE + "    option httpchk\n    http-check connect\n"
     "    http-check connect\n"),
    ("http-check connect after send", INVALID, D + BE + "    option httpchk\n    http-check connect\n"
     "    http-check send meth GET\n    http-check connect\n"),
    ("http-check connect bad argument", INVALID, D + BE + "    option httpchk\n    http-check connect if\n"),
    ("http-check expect bad status", INVALID, D + BE + "    option httpchk\n    http-check expect status 2x\n"),
    ("http-check expect status list", VALID, D + FE + "    default_backend b\n" + BE
     + "    option httpchk\n    http-check expect status 200-399,404\n"),
    ("bind without address in backend", INVALID, D + BE + "    bind\n"),
    ("http-check expect right after connect", INVALID, D + BE + "    option httpchk\n"
     "    http-check connect\n    http-check expect status 200\n"),
    ("peer without address", VALID, "peers p\n    peer a\n    peer b 127.0.0.1:20902\n" + D + FE),
    ("ambiguous named defaults", INVALID, "defaults d\n    mode http\ndefaults d\n    mode http\n"
     "frontend f from d\n    bind :20990\n"),
    ("stick store-response cookie", VALID, D + FE + "    default_backend b\n" + BE
     + "    stick-table type string len 32 size 1k\n    stick store-response res.cook(JSESSIONID)\n"
     "    stick match req.cook(JSESSIONID)\n"),
    ("stick match on a response cookie", INVALID, D + BE + "    stick-table type string len 32 size 1k\n"
     "    stick match res.cook(JSESSIONID)\n"),
    ("response acl in a request rule warns", VALID, D + FE + "    http-request deny if { res.hdr(x) foo }\n"),
    ("track a response header in a request", INVALID, D + FE + "    stick-table type string size 1k\n"
     "    http-request track-sc0 res.hdr(x)\n"),
    ("response rules on response data", VALID, D + FE + "    stick-table type string size 1k\n"
     "    http-response track-sc0 res.hdr(x)\n    http-response deny if { res.hdr(x) foo } || { status 500 }\n"),
    ("captures", VALID, D + FE + "    capture request header Host len 64\n"
     "    capture response header Server len 20\n    capture cookie SERVERID len 32\n"
     "    http-request capture req.hdr(User-Agent) len 100\n    declare capture request len 50\n"
     "    http-request capture path id 0\n"),
    ("capture without len", INVALID, D + FE + "    capture request header Host\n"),
    ("capture in backend warns", VALID, D + FE + "    default_backend b\n" + BE
     + "    capture request header Host len 4\n"),
    ("http-request capture bad fetch", INVALID, D + FE + "    http-request capture frob len 10\n"),
    ("errorfile", VALID, D + "    errorfile 503 {errorfile}\n" + FE),
    ("errorfile not a response", INVALID, D + "    errorfile 503 {garbage}\n" + FE),
    ("deny errorfile", VALID, D + FE + "    http-request deny errorfile {errorfile}\n"),
    ("deny errorfile not a response", INVALID, D + FE + "    http-request deny errorfile {garbage}\n"),
    ("errorfile status 418", INVALID, D + "    errorfile 418 {errorfile}\n" + FE),
    ("log lines", VALID, "global\n    log /dev/log local0\n    log 127.0.0.1:514 len 1024 local1 notice info\n"
     "    log stdout format raw daemon\n" + D + "    log global\n" + FE + "    log /dev/log local2 err\n"),
    ("log unknown facility", INVALID, "global\n    log /dev/log notice\n" + D + FE),
    ("log unknown level", INVALID, D + FE + "    log /dev/log local0 loud\n"),
    ("peers two binds", INVALID, "peers p\n    bind 127.0.0.1:20901\n    bind 127.0.0.1:20902\n"
     "    server a\n" + D + FE),
    ("log-format unknown fetch", INVALID, D + FE + "    http-request set-header X-A %[nosuch]\n"),
    ("log-format unclosed", INVALID, D + FE + "    http-request return status 200 content-type text/plain "
     "lf-string \"%[src] %ci %[path,lower\"\n"),
    ("log-format ok", VALID, D + FE + "    http-request set-header X-A \"%[src] %{+Q}[path] %ci %%\"\n"
     "    http-request redirect location /x?src=%[src]\n"),
    ("balance unknown", INVALID, D + BE + "    balance frob\n"),
    ("cookie full", VALID, D + FE + "    default_backend b\n" + BE + "    cookie SRV insert indirect "
     "nocache httponly secure maxidle 30m maxlife 8h domain .example.com attr \"SameSite=Lax\"\n"),
    ("cookie modes", VALID, D + BE + "    cookie J rewrite\nbackend c\n    cookie J prefix\n"),
    ("cookie unknown option", INVALID, D + BE + "    cookie S insert frob\n"),
    ("cookie no name", INVALID, D + BE + "    cookie\n"),
    ("default_backend missing", INVALID, D + FE + "    default_backend nope\n"),
    ("use_backend missing", INVALID, D + FE + "    use_backend nope if TRUE\n"),
    ("use_backend dynamic", VALID, D + FE + "    use_backend bk_%[req.hdr(host),lower]\n"
     "backend bk_a\n    server s 127.0.0.1:1\n"),
    ("use_backend dynamic bad fetch", INVALID, D + FE + "    use_backend bk_%[frob]\n"),
    ("use_backend ok", VALID, D + FE + "    use_backend b if { path_beg /api }\n" + BE),
    ("http frontend to tcp backend", INVALID, D + FE + "    default_backend b\n" + BE
     + "    mode tcp\n"),
    # --- stick tables and rules
    ("stick on src", VALID, D + FE + "    default_backend b\n" + BE
     + "    stick-table type ip size 200k expire 30m\n    stick on src\n"),
    ("stick without table", INVALID, D + BE + "    stick on src\n"),
    ("stick match other table", VALID, D + BE + "    stick match src table t\n"
     "backend t\n    stick-table type ip size 1k\n"),
    ("stick-table in defaults", INVALID, D + "    stick-table type ip size 1k\n" + FE),
    ("track-sc0..2", VALID, D + FE + "    stick-table type ip size 1k store http_req_rate(10s)\n"
     "    http-request track-sc0 src\n    http-request track-sc1 src table t\n"
     "    tcp-request connection track-sc2 src table t\nbackend t\n"
     "    stick-table type ip size 1k store conn_cur\n"),
    ("track-sc3", INVALID, D + FE + "    stick-table type ip size 1k\n    http-request track-sc3 src\n"),
    ("track unknown table", INVALID, D + FE + "    http-request track-sc0 src table nope\n"),
    ("tcp connection track header", INVALID, D + FE + "    stick-table type ip size 1k\n"
     "    tcp-request connection track-sc0 hdr(host)\n"),
    ("http track header", VALID, D + FE + "    stick-table type string size 1k\n"
     "    http-request track-sc0 hdr(host)\n"),
    ("peers table", VALID, "peers p\n    peer a 127.0.0.1:20901\n    peer b 127.0.0.1:20902\n"
     "    table t type ip size 10 store gpc0\n" + D + FE
     + "    http-request track-sc0 src table p/t\n"),
    ("stick-table peers missing", INVALID, D + BE + "    stick-table type ip size 1k peers nope\n"),
    ("stick-table peers", VALID, "peers p\n    peer a 127.0.0.1:20901\n" + D + FE
     + "    default_backend b\n" + BE + "    stick-table type ip size 1k peers p\n    stick on src\n"),
    ("stick-table missing size", INVALID, D + BE + "    stick-table type ip\n"),
    ("stick-table unknown store", INVALID, D + BE + "    stick-table type ip size 1 store frob\n"),
    ("stick-table gpc and gpc0", INVALID, D + BE + "    stick-table type ip size 1 store gpc(2),gpc0\n"),
    ("stick-table twice the same store", VALID, D + BE + "    stick-table type ip size 1 store gpc0,gpc0\n"),
    ("stick-table every type", VALID, D + BE + "    stick-table type string len 8 size 1m expire 1h "
     "nopurge srvkey addr store gpc(3),gpc_rate(2,1m),gpt(2),conn_cnt,conn_rate(10s),"
     "http_req_rate(10s),http_err_cnt,bytes_in_cnt,bytes_out_rate(1m),server_id\n"
     "backend c\n    stick-table type binary len 4 size 10\n"
     "backend e\n    stick-table type integer size 10\nbackend g\n    stick-table type ipv6 size 10\n"),
    ("stick-table string len 0", INVALID, D + BE + "    stick-table type string len 0 size 1\n"),
    ("peers table missing type", INVALID, "peers p\n    peer a 127.0.0.1:20901\n"
     "    table t size 10\n" + D + FE),
    # --- deny / return / tarpit
    ("deny statuses", VALID, D + FE + "    http-request deny\n    http-request deny deny_status 429\n"
     "    http-request deny status 403\n    http-request tarpit deny_status 503\n"),
    ("deny 418", INVALID, D + FE + "    http-request deny deny_status 418\n"),
    ("deny 418 with payload", VALID, D + FE + "    http-request deny status 418 content-type "
     "text/plain string teapot\n"),
    ("deny payload without content-type", INVALID, D + FE
     + "    http-request deny status 429 string x\n"),
    ("deny hdr missing value", INVALID, D + FE + "    http-request deny status 429 content-type "
     "text/plain string x hdr A\n"),
    ("deny custom", VALID, D + FE + "    http-request deny status 429 content-type text/plain "
     "string \"slow down\" hdr Retry-After 10\n"),
    ("return statuses", VALID, D + FE + "    http-request return status 418 if { path /t }\n"
     "    http-request return status 200 content-type text/plain string ok\n"),
    ("deny hdr without payload", VALID, D + FE + "    http-request deny deny_status 429 hdr Retry-After 10\n"),
    ("deny content-type without payload", VALID, D + FE + "    http-request deny deny_status 429 "
     "content-type text/plain\n"),
    ("return empty string", INVALID, D + FE + "    http-request return status 204 content-type "
     "text/plain string \"\"\n"),
    ("return lf-string without content-type", INVALID, D + FE + "    http-request return status 200 "
     "lf-string \"%[src]\"\n"),
    ("return lf-string", VALID, D + FE + "    http-request return status 200 content-type text/plain "
     "lf-string \"%[src]\"\n"),
    ("rule after final rule", VALID, D + FE + "    http-request deny\n    http-request return status 200\n"),
    ("return status 700", INVALID, D + FE + "    http-request return status 700\n"),
    ("unknown http action", INVALID, D + FE + "    http-request frobnicate\n"),
    ("gpc actions", VALID, D + FE + "    stick-table type ip size 1k store gpc0,gpc1,gpt0\n"
     "    http-request track-sc0 src\n    http-request sc-inc-gpc0(0)\n"
     "    http-request sc-inc-gpc1(0)\n    http-request sc-set-gpt0(0) 5\n"),
    ("gpc action slot 3", INVALID, D + FE + "    http-request sc-inc-gpc0(3)\n"),
    ("header actions", VALID, D + FE + "    http-request set-header X-A 1\n"
     "    http-request add-header X-B %[src]\n    http-request del-header X-C\n"
     "    http-response set-header X-D 2\n"),
    ("tcp reject", VALID, D + FE + "    tcp-request connection reject if { src 10.0.0.0/8 }\n"
     "    tcp-request connection accept\n"),
    # --- ACLs
    ("acl forms", VALID, D + FE + "    acl a path /x /y\n    acl a path_beg /z\n"
     "    acl b src 10.0.0.0/8 fd00::/8\n    acl c hdr(host) -i -m end .example.com\n"
     "    acl d src_port 1024:65535\n    acl e method GET HEAD\n"
     "    http-request deny if a b || !c d or { path_len gt 100 }\n"
     "    http-request deny unless e\n"),
    ("acl unknown", INVALID, D + FE + "    http-request deny if nope\n"),
    ("acl used before declared", INVALID, D + FE + "    http-request deny if a\n    acl a path /x\n"),
    ("acl unknown fetch", INVALID, D + FE + "    acl a frob /x\n"),
    ("acl unknown match", INVALID, D + FE + "    acl a path -m frob /x\n"),
    ("acl in anonymous defaults", INVALID, D + "    acl a path /x\n" + FE),
    ("acl bad ip", INVALID, D + FE + "    acl a src 10.0.0.0/33\n"),
    ("anonymous acl sc fetch", VALID, D + FE + "    stick-table type ip size 1k store http_req_rate(10s)\n"
     "    http-request track-sc0 src\n"
     "    http-request deny deny_status 429 if { sc_http_req_rate(0) gt 100 }\n"
     "    http-request deny if { sc0_http_req_rate gt 5 } || { src_http_req_rate(f) ge 9 }\n"),
    ("acl pattern file", VALID, D + FE + "    acl bad src -f {patterns}\n    http-request deny if bad\n"),
    ("acl pattern file missing", INVALID, D + FE + "    acl bad src -f /nonexistent/edgestick.lst\n"),
    ("src_ fetch without table in a proxy without one", INVALID, D + FE
     + "    http-request deny if { src_conn_cnt gt 1 }\n"),
    ("table_ converter without table", INVALID, D + FE + "    http-request deny if { src,table_conn_cnt gt 1 }\n"),
    ("table_ converter on own table", VALID, D + FE + "    stick-table type ip size 1k store conn_cnt\n"
     "    http-request deny if { src,table_conn_cnt gt 1 } || { src_conn_cnt ge 5 } { table_cnt lt 2 }\n"),
    ("converter chain in acl", VALID, D + FE + "    acl h hdr(host),lower -m end .example.com\n"
     "    acl n src,ipmask(24) 198.18.0.0\n    http-request deny if h n\n"),
    ("string table tracked by integer key", VALID, D + FE + "    stick-table type string size 10\n"
     "    http-request track-sc0 src_port\n"),
    ("acl src_ table missing", INVALID, D + FE + "    http-request deny if { src_conn_cnt(nope) gt 1 }\n"),
    # --- real-world shapes
    ("debian default global/defaults", VALID, """global
	log /dev/log	local0
	log /dev/log	local1 notice
	stats socket /tmp/edgestick-never-admin.sock mode 660 level admin expose-fd listeners
	stats timeout 30s
	daemon
	ca-base /etc/ssl/certs
	crt-base /etc/ssl/private
	ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384
	ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets
defaults
	log	global
	mode	http
	option	httplog
	option	dontlognull
        timeout connect 5000
        timeout client  50000
        timeout server  50000
""" + FE + "    default_backend b\n" + BE),
    ("peers bind/server form", VALID, "global\n    localpeer me\npeers p\n    bind 127.0.0.1:20901\n"
     "    server me\n    server other 127.0.0.1:20902\n    table t type ip size 10 store gpc0\n"
     + D + FE + "    http-request track-sc0 src table p/t\n"),
    ("ipv6 servers and stats on tcp", VALID, "global\n    stats socket ipv4@127.0.0.1:20980 level operator\n"
     + D + "frontend f\n    bind :::20990 v4v6\n    default_backend b\n"
     "backend b\n    server s1 ::1:20998 check\n    server s2 [::1]:20997\n    server s3 ipv6@::1:20996\n"),
    ("httpchk expect and redirect", VALID, D + FE + "    http-request redirect location /new code 301 if { path /old }\n"
     "    http-request redirect scheme https drop-query if !{ ssl_fc }\n    default_backend b\n" + BE
     + "    option httpchk\n    http-check send meth GET uri /health ver HTTP/1.1 hdr Host x\n    http-check expect status 200\n"),
    ("http-check send after expect", INVALID, D + BE + "    option httpchk\n    http-check expect status 200\n"
     "    http-check send meth GET\n"),
    ("monitor-uri and monitor fail", VALID, D + FE + "    monitor-uri /health\n"
     "    monitor fail if { path /never }\n    monitor fail unless { method GET }\n"),
    ("monitor-uri without a uri", INVALID, D + FE + "    monitor-uri\n"),
    ("monitor-uri with two", INVALID, D + FE + "    monitor-uri /a /b\n"),
    ("monitor without fail", INVALID, D + FE + "    monitor foo if { path /x }\n"),
    ("monitor fail without a condition", INVALID, D + FE + "    monitor fail\n"),
    ("monitor-uri in a backend", VALID, D + BE + "    monitor-uri /h\n"),
    ("legacy redirect", VALID, D + FE + "    redirect location /x code 301 if { path /a }\n"
     "    redirect prefix /p drop-query\n    default_backend b\n"
     + BE + "    redirect scheme https if { path /s }\n"),
    ("legacy redirect in defaults", INVALID, D + "    redirect location /x\n" + FE),
    ("legacy redirect without a type", INVALID, D + FE + "    redirect code 301\n"),
    ("redirect options in any order", VALID, D + FE + "    http-request redirect code 301 drop-query "
     "location /x if { path /a }\n    http-request redirect prefix /p code 308 append-slash\n"),
    ("redirect without a type", INVALID, D + FE + "    http-request redirect code 301\n"),
    ("redirect without a code value", INVALID, D + FE + "    http-request redirect location /x code\n"),
    ("redirect with an unknown word", INVALID, D + FE + "    http-request redirect location /x foo\n"),
    ("prometheus service", VALID, D + FE + "    http-request use-service prometheus-exporter if { path /metrics }\n"),
    ("more options", VALID, D + "listen l\n    bind :20990\n    option httplog clf\n"
     "    option http-restrict-req-hdr-names delete\n    option tcp-smart-accept\n"
     "    option tcp-smart-connect\n    option tcp-check\n    option abortonclose\n"),
    ("no option forwardfor", INVALID, D + FE + "    no option forwardfor\n"),
    ("forwardfor options", VALID, D + FE + "    option forwardfor except 127.0.0.0/8 header X-Real-IP if-none\n"
     "    option http-ignore-probes\n    option http-server-close\n    no option http-keep-alive\n"),
    ("listen everything", VALID, D + "listen l\n    bind :20990\n    balance source\n"
     "    stick-table type ip size 1k expire 1m store conn_cur,http_req_rate(10s)\n"
     "    tcp-request connection track-sc1 src\n    http-request track-sc0 src\n"
     "    http-request deny if { sc1_conn_cur gt 10 }\n    stick on src\n"
     "    cookie S insert indirect nocache\n    server a 127.0.0.1:1 cookie a check\n"),
    ("response rules", VALID, D + FE + "    stick-table type ip size 1k store http_err_rate(10s)\n"
     "    http-response track-sc0 src\n    http-response deny if { status 500 }\n"
     "    http-response set-header X-Served-By edge\n    default_backend b\n" + BE),
    ("tcp content in backend", VALID, D + FE + "    default_backend b\n" + BE
     + "    stick-table type ip size 1k\n    tcp-request content track-sc0 src\n"),
    ("maxconn everywhere", VALID, "global\n    maxconn 1000\n" + D + "    maxconn 500\n" + FE
     + "    maxconn 100\n    default_backend b\n" + BE + "    fullconn 50\n"),
    ("server ids duplicate", INVALID, D + BE + "    server s2 127.0.0.1:2 id 1\n    server s3 127.0.0.1:3 id 1\n"),
    ("unknown section", INVALID, D + FE + "frobsection x\n"),
    # --- stick-table patterns users bring
    ("per url and source rates", VALID, D + "frontend f\n    bind :20990\n"
     "    http-request track-sc0 src table per_ip_rates\n"
     "    http-request track-sc1 url32+src table per_ip_and_url_rates unless { path_end .css .js .png .jpeg .gif }\n"
     "    http-request deny deny_status 429 if { sc_http_req_rate(0) gt 100 }\n"
     "    http-request deny deny_status 429 if { sc_http_req_rate(1) gt 10 }\n"
     "    http-request track-sc2 req.hdr(User-Agent) table per_user_agent\n"
     "    acl too_many_errors src_http_err_rate(per_ip_rates) gt 10\n"
     "    tcp-request content reject if too_many_errors\n"
     "    default_backend b\n" + BE
     + "backend per_ip_rates\n    stick-table type ip size 1m expire 10m store http_req_rate(10s),http_err_rate(10s)\n"
     "backend per_ip_and_url_rates\n    stick-table type binary len 8 size 1m expire 24h store http_req_rate(24h)\n"
     "backend per_user_agent\n    stick-table type string len 128 size 100k expire 1h store http_req_rate(1m)\n"),
    ("connection limits and abuse flag", VALID, D + "frontend f\n    bind :20990\n"
     "    stick-table type ip size 100k expire 30s store conn_cur,conn_rate(3s),gpc0,gpc0_rate(30s),http_req_rate(10s)\n"
     "    tcp-request connection track-sc0 src\n"
     "    tcp-request connection reject if { sc_conn_rate(0) gt 20 }\n"
     "    tcp-request connection reject if { sc_conn_cur(0) gt 10 }\n"
     "    acl abuse sc0_http_req_rate gt 50\n    acl flag_abuser sc0_inc_gpc0 gt 0\n"
     "    http-request deny if abuse flag_abuser\n    http-request deny if { sc0_gpc0_rate gt 100 }\n"
     "    http-request sc-inc-gpc0(0) if { path_beg /login } METH_POST\n"
     "    default_backend b\n" + BE),
    ("shared table across backends", VALID, D + FE + "    use_backend b2 if { path_beg /b2 }\n"
     "    default_backend b\n" + BE + "    stick-table type ip size 1m expire 30m\n    stick on src\n"
     "backend b2\n    stick on src table b\n    server s1 127.0.0.1:20998 id 1\n"),
    # --- conditional blocks
    ("if blocks", VALID, ".if defined(HOME)\n.notice \"home is set\"\n.endif\n"
     ".if !defined(EDGESTICK_NEVER_SET)\n.warning \"not set\"\n.endif\n"
     ".if version_atleast(2.6)\n" + D + ".elif 1\n    frob\n.else\n    frob2\n.endif\n"
     ".if streq(a,b)\n    frob\n.endif\n.if strneq(a,b)\n" + FE + ".endif\n"
     ".if 0\n    anything\n.endif\n.if version_before(2.5)\n    frob\n.endif\n"),
    ("lone endif", INVALID, D + FE + ".endif\n"),
    ("unterminated if", INVALID, D + FE + ".if 1\n"),
    ("unknown directive", INVALID, D + FE + ".frob\n"),
    ("alert directive", INVALID, D + FE + ".alert \"stop here\"\n"),
    ("alert in a false block", VALID, D + FE + ".if 0\n.alert \"not reached\"\n.endif\n"),
    # --- defaults
    ("named defaults with rules", VALID, "defaults d\n    mode http\n    timeout client 5s\n"
     "    timeout connect 5s\n    timeout server 5s\n    http-request deny if { path /x }\n"
     "frontend f from d\n    bind :20990\n"),
    ("defaults with rules used by fe and be", INVALID, "defaults d\n    mode http\n"
     "    timeout client 5s\n    http-request deny\nfrontend f\n    bind :20990\n"
     "    default_backend b\n" + BE),
    ("listen from defaults with rules", INVALID, "defaults d\n    mode http\n"
     "    http-request deny\nlisten l\n    bind :20990\n"),
    ("defaults used explicitly and implicitly", VALID, "defaults d\n    mode http\n"
     "    timeout client 5s\nfrontend f\n    bind :20990\nfrontend g from d\n    bind :20991\n"),
    ("later anonymous defaults for the backend", VALID, "defaults d\n    mode http\n"
     "    http-request deny if { path /x }\nfrontend f\n    bind :20990\n    default_backend b\n"
     "defaults\n    mode http\n" + BE),
    ("defaults from missing", INVALID, D + "frontend f from nope\n    bind :20990\n"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cfg")
    key, crt = d / "key.pem", d / "crt.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(crt), "-days", "2", "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    cert = d / "cert.pem"
    cert.write_text(crt.read_text() + key.read_text())
    garbage = d / "garbage.pem"
    garbage.write_text("not a certificate\n")
    errorfile = d / "503.http"
    errorfile.write_bytes(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n"
                          b"\r\nsorry\n")
    patterns = d / "patterns.lst"
    patterns.write_text("# blocked\n198.18.0.0/24\nfd00::/8\n")
    return d, {"cert": str(cert), "garbage": str(garbage), "patterns": str(patterns),
               "ca": str(crt), "errorfile": str(errorfile)}


@pytest.mark.parametrize("name,expected,text", CASES, ids=[c[0] for c in CASES])
def test_valid_and_invalid_as_haproxy(haproxy_bin, files, name, expected, text):
    d, subst = files
    path = d / (name.replace(" ", "_").replace("/", "_") + ".cfg")
    for k, v in subst.items():
        text = text.replace("{" + k + "}", v)
    path.write_text(text)
    r = subprocess.run([haproxy_bin, "-c", "-f", str(path)], capture_output=True, text=True,
                       timeout=20)
    haproxy_valid = r.returncode in (0, 2)      # 2: valid but nothing to listen on
    try:
        load_config([str(path)])
        ours_valid, ours_msg = True, ""
    except ConfigError as e:
        ours_valid, ours_msg = False, str(e)
        assert str(path) in ours_msg, f"error without the file name: {ours_msg}"
    assert haproxy_valid == expected, f"haproxy says {haproxy_valid}: {r.stdout}{r.stderr}"
    assert ours_valid == expected, f"edgestick says {ours_valid}: {ours_msg}"
