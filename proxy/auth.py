"""`userlist` sections and HTTP basic authentication, as HAProxy 2.6 does them.

A userlist holds users (a crypt(3) hash with `password`, clear text with
`insecure-password`) and groups (`group G users a,b` or `user U groups g,h`). Requests
bring credentials in their first Authorization value; the fetches `http_auth(L)`,
`http_auth_group(L) G...`, `http_auth_type`, `http_auth_user`, `http_auth_pass` and
`http_auth_bearer([hdr])` read them, and `http-request auth [realm R]` answers HAProxy's
401 (`unauthorized`). The stats page's `stats auth` lines make a userlist of their own
(proxy/stats_page.py).

Userlist names in fetches are resolved once the whole configuration is read (a userlist
may come after the proxy using it): `finish(cfg)`, called by the configuration parser.
"""
from __future__ import annotations

import functools
import hashlib
import warnings
from typing import Optional

from edgestick.cfgsyntax import ConfigError, Line

from . import http1
from . import sample
from .sample import FetchDef, SampleError

with warnings.catch_warnings():
    # `crypt` is deprecated (PEP 594) but it is the standard library's only way to the
    # system's crypt(3): the very libcrypt HAProxy checks passwords with, so every hash
    # scheme it takes ($5$, $6$, $y$, $2b$, DES...) is taken, or refused, the same way.
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt as _crypt

STATS_REALM = "HAProxy Statistics"       # `stats auth` without `stats realm`


class User:
    __slots__ = ("name", "password", "insecure", "groups", "group_names", "where")

    def __init__(self, name: str, where):
        self.name, self.where = name, where
        self.password: Optional[str] = None
        self.insecure = False
        self.groups: set[str] = set()
        self.group_names: list[str] = []     # from `groups a,b`, checked at the end


class Userlist:
    def __init__(self, name: str, where=None):
        self.name, self.where = name, where
        self.users: dict[str, User] = {}
        self.groups: dict[str, list] = {}     # group -> (users named by `users`, where)

    def check(self, user: Optional[str], password: Optional[str]) -> bool:
        """HAProxy's check_user: the user exists and the password matches (a hash through
        crypt(3), or the clear text of an insecure-password)."""
        u = self.users.get(user) if user is not None else None
        if u is None or u.password is None or password is None:
            return False
        if u.insecure:
            return password == u.password
        # crypt(3) costs 2-20 ms a call ($5$ to $y$) and would hold the event loop each
        # request: its verdicts are kept, under a digest of hash and password
        key = hashlib.blake2b(f"{u.password}\0{password}".encode("utf-8", "surrogatepass"),
                              digest_size=16).digest()
        verdict = _VERDICTS.get(key)
        if verdict is None:
            try:
                verdict = _crypt.crypt(password, u.password) == u.password
            except (OSError, ValueError):    # an unusable hash, a NUL in the password
                verdict = False
            if len(_VERDICTS) >= 4096:
                _VERDICTS.clear()
            _VERDICTS[key] = verdict
        return verdict

    def finish(self) -> None:
        """Group memberships from both sides (HAProxy's userlist_postinit)."""
        for u in self.users.values():
            for g in u.group_names:
                if g not in self.groups:
                    raise _error(u.where, "user", f"userlist '{self.name}': no such group "
                                                  f"'{g}' specified in user '{u.name}'")
                u.groups.add(g)
        for g, (names, where) in self.groups.items():
            for n in names:
                if n not in self.users:
                    raise _error(where, "group", f"userlist '{self.name}': no such user "
                                                 f"'{n}' specified in group '{g}'")
                self.users[n].groups.add(g)


_VERDICTS: dict[bytes, bool] = {}


def _error(where, keyword: str, message: str) -> ConfigError:
    return ConfigError(message, where.file if where else None, where.line if where else None,
                       keyword)


def _name_error(text: str) -> Optional[str]:
    """HAProxy's invalid_char: the first character outside [A-Za-z0-9_.:-]."""
    return next((c for c in text if not (c.isalnum() or c in "-_.:")), None)


# ------------------------------------------------------------------ the section

class SectionParser:
    """Lines of `userlist` sections into `userlists` (name -> Userlist)."""

    def __init__(self, userlists: dict, warnings_out: list, where_of):
        self.userlists, self.warnings, self.where_of = userlists, warnings_out, where_of
        self.current: Optional[Userlist] = None

    def open(self, line: Line) -> None:
        w = line.words
        if len(w) < 2 or not w[1]:
            raise line.error("'userlist' expects <name> as arguments.")
        if len(w) > 2:
            raise line.error(f"'userlist' cannot handle unexpected argument '{w[2]}'.")
        bad = _name_error(w[1])
        if bad:
            raise line.error(f"character '{bad}' is not permitted in 'userlist' name '{w[1]}'.")
        if w[1] in self.userlists:
            # HAProxy warns and goes on filling the first one
            self.warnings.append(str(line.error(f"ignoring duplicated userlist '{w[1]}'.")))
            self.current = self.userlists[w[1]]
            return
        self.current = self.userlists[w[1]] = Userlist(w[1], self.where_of(line))

    def line(self, line: Line) -> None:
        ul, kw, w = self.current, line.keyword, line.words
        if kw not in ("group", "user"):
            raise line.error(f"unknown keyword '{kw}' in 'users' section")
        if len(w) < 2 or not w[1]:
            raise line.error(f"'{kw}' expects <name> as arguments.")
        name = w[1]
        if kw == "group":
            bad = _name_error(name)
            if bad:
                raise line.error(f"character '{bad}' is not permitted in 'group' name "
                                 f"'{name}'.")
            if name in ul.groups:
                self.warnings.append(str(line.error(f"ignoring duplicated group '{name}' in "
                                                    f"userlist '{ul.name}'.")))
                return
            users: list[str] = []
            for i in range(2, len(w), 2):
                if w[i] != "users":
                    raise line.error("'group' only supports 'users' option.")
                users = _names(w[i + 1] if i + 1 < len(w) else "")
            ul.groups[name] = (users, self.where_of(line))
            return
        if name in ul.users:
            self.warnings.append(str(line.error(f"ignoring duplicated user '{name}' in "
                                                f"userlist '{ul.name}'.")))
            return
        u = User(name, self.where_of(line))
        for i in range(2, len(w), 2):
            value = w[i + 1] if i + 1 < len(w) else ""
            if w[i] in ("password", "insecure-password"):
                # (a hash crypt(3) cannot use is accepted: this libcrypt returns a failure
                # token rather than NULL, so HAProxy's check never fires; it never matches)
                u.password, u.insecure = value, w[i] == "insecure-password"
            elif w[i] == "groups":
                u.group_names = _names(value)
            else:
                raise line.error("'user' only supports 'password', 'insecure-password' and "
                                 "'groups' options.")
        ul.users[name] = u


def _names(text: str) -> list[str]:
    return [n for n in text.split(",") if n]


# ------------------------------------------------------------------ credentials

def credentials(headers) -> Optional[tuple[str, Optional[str], Optional[str]]]:
    """("Basic", user, password) or ("Bearer", None, None) from the first Authorization
    value, as HAProxy's get_http_auth reads it; None when absent or unusable. The scheme
    compares on its own length ('B', 'bas' are Basic), blanks after it are skipped, the
    base64 is decoded in groups of four, and the text ends at a NUL as a C string."""
    values = sample._header_values(headers, "authorization", True)
    if not values:
        return None
    value = values[0]
    sp = value.find(" ")
    if sp <= 0:
        return None
    scheme = value[:sp].lower()
    data = value[sp:].lstrip(" ")
    if "basic".startswith(scheme):
        raw = sample._b64dec(data)
        if raw is None:
            return None
        raw = raw.split(b"\0", 1)[0]
        user, colon, password = raw.partition(b":")
        if not colon:
            return None
        return "Basic", user.decode("latin-1"), password.decode("latin-1")
    if "bearer".startswith(scheme):
        return "Bearer", None, None
    return None


@functools.lru_cache(maxsize=256)
def unauthorized(realm: str, close: bool, http10: bool, page=None) -> tuple[bytes, bool]:
    """HAProxy's 401 and whether it ends the connection: the proxy's `errorfile 401`
    (`page`, an http1.ErrorPage) or the built-in page, with `www-authenticate: Basic
    realm="R"` after its headers (and `connection: close|keep-alive` after that when
    needed; an errorfile without Content-Length closes)."""
    ends = page is not None and page.closes
    raw = page.response(False) if page is not None and not ends else (
        http1.error_response(401, False) if page is None else page.response(True))
    head, _, body = raw.partition(b"\r\n\r\n")
    if ends:                            # its `connection: close` goes last again
        head = head[:head.rindex(b"\r\n")]
    extra = b'\r\nwww-authenticate: Basic realm="%s"' % realm.encode("latin-1", "replace")
    if close or ends:
        extra += b"\r\nconnection: close"
    elif http10:
        extra += b"\r\nconnection: keep-alive"
    return head + extra + b"\r\n\r\n" + body, ends


# ------------------------------------------------------------------ fetches

class UserlistRef:
    """A userlist named by a fetch, bound by `finish` (or, for an expression compiled at
    run time, looked up among the running configuration's userlists)."""
    __slots__ = ("name", "fetch", "where", "used_by", "userlist", "groups")

    def __init__(self, name: Optional[str], fetch: str, refs):
        self.name, self.fetch = name, fetch
        self.where = getattr(refs, "where", None)
        rl = getattr(refs, "table_refs", None)
        holder = getattr(getattr(rl, "proxy", None), "name", "?")
        if getattr(refs, "in_acl", False):
            self.used_by = f"ACL keyword '{fetch}' in proxy '{holder}'"
        else:
            keyword = getattr(getattr(rl, "line", None), "keyword", None)
            self.used_by = (f"sample fetch keyword '{fetch}' in {keyword} expression in proxy "
                            f"'{holder}'")
        self.userlist: Optional[Userlist] = None
        self.groups: Optional[list] = None    # http_auth_group's patterns (ACLs)
        if refs is not None:
            PENDING.append(self)

    def get(self) -> Optional[Userlist]:
        ul = self.userlist
        if ul is None:
            ul = ACTIVE.get(self.name)
        return ul


PENDING: list[UserlistRef] = []       # made while a configuration is read
ACTIVE: dict[str, Userlist] = {}      # the userlists of the last configuration read


def start() -> None:
    """A configuration starts being read."""
    PENDING.clear()


def finish(cfg, userlists: dict) -> None:
    """End of a configuration: group memberships, then every userlist reference bound
    (HAProxy's -c messages for unknown ones and for unknown groups in ACLs)."""
    for ul in userlists.values():
        ul.finish()
    refs = list(PENDING)
    PENDING.clear()
    for ref in refs:
        file, line = ref.where if ref.where else (None, None)
        if not ref.name:
            raise ConfigError(f"missing userlist name in arg 1 of {ref.used_by}.", file, line)
        ul = userlists.get(ref.name)
        if ul is None:
            raise ConfigError(f"unable to find userlist '{ref.name}' referenced in arg 1 of "
                              f"{ref.used_by}.", file, line)
        ref.userlist = ul
        if ref.groups is not None:
            proxy = ref.used_by.rsplit("'", 2)[-2]
            if not ref.groups:
                raise ConfigError(f"proxy {proxy}: acl  {ref.fetch}(): no groups specified.",
                                  file, line)
            for g in ref.groups:
                if g not in ul.groups:
                    raise ConfigError(f"proxy {proxy}: acl  {ref.fetch}(): invalid group "
                                      f"'{g}'.", file, line)
    ACTIVE.clear()
    ACTIVE.update(userlists)


def _one_userlist(name: str, args: list, refs) -> UserlistRef:
    if len(args) > 1:
        raise SampleError(f"fetch method '{name}' : expected ')' before "
                          f"',{','.join(args[1:])})'")
    return UserlistRef(args[0] if args else None, name, refs)


def _basic(ctx):
    got = credentials(ctx.headers)
    return got if got is not None and got[0] == "Basic" else None


def _http_auth_build(args, refs):
    ref = _one_userlist("http_auth", args, refs)

    def http_auth(ctx):
        got = credentials(ctx.headers)
        if got is None:
            return None
        ul = ref.get()
        return ul is not None and ul.check(got[1], got[2])
    return http_auth


def _valid_user(ref: UserlistRef, ctx):
    """(userlist, user name) when the request's credentials are good, else None."""
    got = _basic(ctx)
    ul = ref.get()
    if got is None or ul is None or not ul.check(got[1], got[2]):
        return None
    return ul, got[1]


def _http_auth_group_build(args, refs):
    ref = _one_userlist("http_auth_group", args, refs)

    def http_auth_group(ctx):          # as a sample: the user's name
        found = _valid_user(ref, ctx)
        return None if found is None else found[1]
    return http_auth_group


def _http_auth_group_multi(args, refs):
    """In an ACL the patterns are group names: the user's groups are matched."""
    ref = _one_userlist("http_auth_group", args, refs)

    def groups(ctx):
        found = _valid_user(ref, ctx)
        return [] if found is None else sorted(found[0].users[found[1]].groups)
    groups.patterns_hook = lambda values: setattr(ref, "groups", list(values))
    return groups


def _field_build(name: str, index: int):
    def build(args, refs):
        sample._no_args(name, args)

        def fetch(ctx):
            got = credentials(ctx.headers)
            if got is None:
                return None
            if index == 0:
                return got[0]
            return got[index] if got[0] == "Basic" else None
        return fetch
    return build


def _bearer_build(args, refs):
    if len(args) > 1:
        raise SampleError(f"fetch method 'http_auth_bearer' : expected ')' before "
                          f"',{','.join(args[1:])})'")
    header = (args[0] if args and args[0] else "authorization").lower()

    def http_auth_bearer(ctx):
        values = sample._header_values(ctx.headers, header, True)
        if not values:
            return None
        scheme, _, rest = values[0].partition(" ")
        rest = rest.lstrip(" ")
        return rest if scheme.lower() == "bearer" and rest else None
    return http_auth_bearer


sample.FETCHES["http_auth"] = FetchDef("http_auth", "bool", _http_auth_build, "bool")
sample.FETCHES["http_auth_group"] = FetchDef("http_auth_group", "str", _http_auth_group_build,
                                             "str", _http_auth_group_multi)
sample.FETCHES["http_auth_type"] = FetchDef("http_auth_type", "str",
                                            _field_build("http_auth_type", 0), "str")
sample.FETCHES["http_auth_user"] = FetchDef("http_auth_user", "str",
                                            _field_build("http_auth_user", 1), "str")
sample.FETCHES["http_auth_pass"] = FetchDef("http_auth_pass", "str",
                                            _field_build("http_auth_pass", 2), "str")
sample.FETCHES["http_auth_bearer"] = FetchDef("http_auth_bearer", "str", _bearer_build, "str")


def parse_auth_action(line: Line, p, args) -> Optional[str]:
    """`http-request auth [realm R]`: the realm (None: the proxy's name, or HAProxy's
    statistics realm for the stats page's rules)."""
    realm = None
    i = 0
    while i < len(args):
        if args[i] == "realm":
            if i + 1 >= len(args):
                raise line.error(f"error detected in {p.kind} '{p.name}' while parsing "
                                 "'http-request auth' rule : missing realm value.")
            realm = args[i + 1]
            i += 2
        else:
            raise line.error(f"'http-request auth' expects either 'if' or 'unless' followed "
                             f"by a condition but found '{args[i]}'.")
    return realm
