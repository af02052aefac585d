/* edgestick.h — the contract between the XDP program (edgestick.c) and its loader
 * (control/xdp.py). control/xdp.py PARSES this file to build its ctypes structs and
 * constants, so keep to the subset it understands:
 *   - "#define ES_NAME <integer>" lines (#ifndef/#endif around them are allowed);
 *   - "enum es_x { ES_A = 0, ES_B, ... };" with optional explicit integer values;
 *   - "struct es_x { <type> <field>; <type> <field>[<N>]; ... };" where <type> is one of
 *     __u8 __u16 __u32 __u64 or "struct es_y" defined earlier; N is an integer or an ES_ define.
 * Every struct is laid out without implicit padding (pad fields are explicit), and a kernel
 * test checks the parsed layout against clang's (bcc's map Key/Leaf types). */
#ifndef EDGESTICK_H
#define EDGESTICK_H

/* Map capacities (defaults; the loader may override them with -D at compile time). */
#ifndef ES_SOURCES_MAX
#define ES_SOURCES_MAX 262144
#endif
#ifndef ES_BANS_MAX
#define ES_BANS_MAX 65536
#endif
#ifndef ES_LIST_MAX
#define ES_LIST_MAX 16384
#endif

/* Parser bounds: VLAN tags (802.1Q / 802.1ad) and IPv6 extension headers walked. */
#define ES_MAX_VLAN_TAGS 2
#define ES_MAX_EXT_HDRS 6

/* Ban expiry meaning "never". */
#define ES_BAN_FOREVER 18446744073709551615ULL

/* es_config.limits_enabled bits: a limit is enforced only when its bit is set, so a zeroed
 * config (fresh map, before the loader writes it) passes everything. */
#define ES_LIM_CONN_RATE 1
#define ES_LIM_PKT_RATE 2
#define ES_LIM_BYTE_RATE 4
#define ES_LIM_BAN_CONN_RATE 8
#define ES_LIM_BAN_PKT_RATE 16
#define ES_LIM_BAN_BYTE_RATE 32
#define ES_LIM_NEW_SOURCES 64

enum es_mode {
    ES_MODE_ENFORCE = 0,
    ES_MODE_DRY_RUN = 1,
};

enum es_malformed_policy {
    ES_MALFORMED_PASS = 0,
    ES_MALFORMED_DROP = 1,
};

/* Why a packet got its verdict. Counters are indexed by verdict * ES_REASON_COUNT + reason. */
enum es_reason {
    ES_R_NONE = 0,        /* passed all checks */
    ES_R_ALLOW = 1,       /* allow-list hit */
    ES_R_DENY = 2,        /* deny-list hit */
    ES_R_BAN = 3,         /* source is banned */
    ES_R_CONN_RATE = 4,   /* new connection above the conn-rate limit */
    ES_R_PKT_RATE = 5,    /* packet above the packet-rate limit */
    ES_R_BYTE_RATE = 6,   /* packet above the byte-rate limit */
    ES_R_FLOOD = 7,       /* untracked source while new sources arrive above their limit */
    ES_R_MALFORMED = 8,   /* truncated or invalid headers */
    ES_R_NON_IP = 9,      /* neither IPv4 nor IPv6 (ARP...): always passed */
    ES_REASON_COUNT = 10,
};

enum es_verdict {
    ES_V_PASS = 0,
    ES_V_DROP = 1,
    ES_V_WOULD_DROP = 2,  /* dry-run: would have been dropped, was passed */
    ES_VERDICT_COUNT = 3,
};

/* IPv4 sources are stored v4-mapped (::ffff:a.b.c.d); IPv6 sources masked to the prefix. */
struct es_addr {
    __u8 a[16];
};

/* LPM trie key (allow / deny lists). IPv4 a.b.c.d/n is ::ffff:a.b.c.d/(96+n). */
struct es_lpm_key {
    __u32 prefixlen;
    __u8 addr[16];
};

/* HAProxy's two-period rate counter (freq_ctr). curr_tick is a ms tick (CLOCK_MONOTONIC_COARSE
 * in ms, wrapping u32) with its lowest bit
 * forced to 0; curr_tick and curr_ctr share one 64-bit word so a rotation is one CAS. */
struct es_freq {
    __u32 curr_tick;
    __u32 curr_ctr;
    __u32 prev_ctr;
    __u32 pad;
};

/* Per-source state (LRU hash, key struct es_addr). */
struct es_source {
    struct es_freq conn;      /* TCP SYN without ACK */
    struct es_freq pkt;       /* packets */
    struct es_freq bytes;     /* frame bytes */
    __u64 drops;              /* packets dropped (or would-drop in dry-run) */
    __u64 last_seen_ns;       /* bpf_ktime_get_coarse_ns(), CLOCK_MONOTONIC_COARSE */
};

/* Who made a ban. The program only ever writes ES_BO_RULE (0); the others are written by
 * the control plane, so a ban made before origins existed (0, reason none) reads as manual. */
enum es_ban_origin {
    ES_BO_RULE = 0,       /* the program: a ban limit was crossed (reason says which) */
    ES_BO_MANUAL = 1,     /* `add ban` on the runtime socket */
    ES_BO_ESCALATE = 2,   /* the bridge: an `escalate` rule on a proxy table */
    ES_BO_FLEET = 3,      /* the bridge: learned from another edge (`share-bans`) */
    ES_BO_COUNT = 4,
};

/* Ban entry (hash, key struct es_addr). */
struct es_ban {
    __u64 expires_ns;         /* CLOCK_MONOTONIC(_COARSE) ns; ES_BAN_FOREVER = never */
    __u32 reason;             /* es_reason of a rule ban; ES_R_NONE for the other origins */
    __u32 origin;             /* es_ban_origin */
};

/* List entry value (allow / deny tries). */
struct es_list_value {
    __u32 added_s;            /* wall-clock seconds when added, informational */
    __u32 pad;
};

/* Per-CPU packet/byte counter (array indexed by verdict * ES_REASON_COUNT + reason). */
struct es_counter {
    __u64 packets;
    __u64 bytes;
};

/* The single config entry (array, key 0). Rates are events per period_ms, like HAProxy. */
struct es_config {
    __u32 period_ms;          /* rate period; 0 behaves as 1000 */
    __u32 mode;               /* es_mode */
    __u32 malformed;          /* es_malformed_policy */
    __u32 ipv6_prefix;        /* IPv6 source grouping, 0..128 (0 behaves as 64) */
    __u32 limits_enabled;     /* ES_LIM_* bits */
    __u32 conn_rate_limit;    /* drop new connections when conn_rate > this */
    __u32 pkt_rate_limit;     /* drop packets when pkt_rate > this */
    __u32 byte_rate_limit;    /* drop packets when byte_rate > this */
    __u32 ban_conn_rate;      /* ban when conn_rate > this */
    __u32 ban_pkt_rate;       /* ban when pkt_rate > this */
    __u32 ban_byte_rate;      /* ban when byte_rate > this */
    __u32 new_sources_limit;  /* per CPU: above this rate of new sources, untracked ones drop */
    __u64 ban_ttl_ns;         /* length of an automatic ban */
};

#endif
