/* edgestick XDP shield: per-source HAProxy-style rates at the NIC, drops floods.
 *
 * Decision order: parse → allow-list → deny-list → ban map → thresholds → pass.
 * A packet that does not parse is judged by the malformed policy before any list (it may
 * have no usable source). Listed and banned packets cost no per-source state; only the
 * threshold stage looks up (or creates) the source, and the flood guard decides whether
 * an unknown source gets state at all.
 * Built by control/xdp.py with bcc; it defines ES_PIN_DIR (bpffs folder for the pinned
 * maps) and may override the capacities of edgestick.h and ES_SOURCES_FLAGS. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/tcp.h>
#include "edgestick.h"

#ifndef ES_PIN_DIR
#error "ES_PIN_DIR must name the bpffs folder of the pinned maps"
#endif
#ifndef ES_SOURCES_FLAGS
#define ES_SOURCES_FLAGS 0
#endif
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "es_freq packs curr_tick (low) and curr_ctr (high) into one little-endian word"
#endif

#define ES_COUNTERS (ES_VERDICT_COUNT * ES_REASON_COUNT)

BPF_TABLE_PINNED("array", u32, struct es_config, config, 1, ES_PIN_DIR "/config");
BPF_TABLE_PINNED("lpm_trie", struct es_lpm_key, struct es_list_value, allow, ES_LIST_MAX,
                 ES_PIN_DIR "/allow", BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("lpm_trie", struct es_lpm_key, struct es_list_value, deny, ES_LIST_MAX,
                 ES_PIN_DIR "/deny", BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("hash", struct es_addr, struct es_ban, bans, ES_BANS_MAX, ES_PIN_DIR "/bans");
BPF_TABLE_PINNED("lru_hash", struct es_addr, struct es_source, sources, ES_SOURCES_MAX,
                 ES_PIN_DIR "/sources", ES_SOURCES_FLAGS);
BPF_TABLE_PINNED("percpu_array", u32, struct es_counter, counters, ES_COUNTERS,
                 ES_PIN_DIR "/counters");
BPF_TABLE_PINNED("percpu_array", u32, struct es_freq, new_sources, 1, ES_PIN_DIR "/new_sources");

#define PARSE_OK 0
#define PARSE_NON_IP 1
#define PARSE_BAD 2

struct es_pkt {
    struct es_lpm_key full;   /* full source address, prefixlen 128, for the lists */
    struct es_addr key;       /* per-source key: IPv4 as is, IPv6 masked to the prefix */
    __u8 syn;                 /* TCP SYN without ACK: a new connection */
};

/* Mask of the first bits (0..64) of a big-endian 8-byte half, as loaded on little-endian. */
static __always_inline __u64 prefix_mask(__u32 bits)
{
    if (bits == 0)
        return 0;
    if (bits >= 64)
        return ~0ULL;
    return __builtin_bswap64(~0ULL << (64 - bits));
}

/* l4: start of the transport header; room: bytes the IP header says it has. */
static __always_inline int parse_l4(void *l4, void *end, __u32 room, __u8 proto, struct es_pkt *p)
{
    if (proto == IPPROTO_TCP) {
        struct tcphdr *th = l4;
        if ((void *)(th + 1) > end || room < sizeof(*th))
            return PARSE_BAD;
        __u32 doff = th->doff * 4;
        if (doff < sizeof(*th) || doff > room || l4 + doff > end)
            return PARSE_BAD;
        p->syn = th->syn && !th->ack;
    } else if (proto == IPPROTO_UDP || proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6) {
        /* UDP header, or ICMP type/code/checksum + 4 bytes of rest-of-header: 8 bytes each. */
        if (l4 + 8 > end || room < 8)
            return PARSE_BAD;
    }
    return PARSE_OK;
}

static __always_inline int parse_ipv4(void *l3, void *end, struct es_pkt *p)
{
    struct iphdr *ip = l3;
    if ((void *)(ip + 1) > end)
        return PARSE_BAD;
    __u32 hlen = ip->ihl * 4;
    __u32 total = bpf_ntohs(ip->tot_len);
    if (ip->version != 4 || hlen < sizeof(*ip) || total < hlen || l3 + total > end)
        return PARSE_BAD;
    p->full.prefixlen = 128;
    p->full.addr[10] = 0xff;
    p->full.addr[11] = 0xff;
    __builtin_memcpy(&p->full.addr[12], &ip->saddr, 4);
    __builtin_memcpy(p->key.a, p->full.addr, 16);
    if (bpf_ntohs(ip->frag_off) & 0x1fff)   /* not the first fragment: no transport header */
        return PARSE_OK;
    return parse_l4(l3 + hlen, end, total - hlen, ip->protocol, p);
}

static __always_inline int parse_ipv6(void *l3, void *end, struct es_pkt *p, __u32 prefix)
{
    struct ipv6hdr *ip6 = l3;
    if ((void *)(ip6 + 1) > end)
        return PARSE_BAD;
    __u32 room = bpf_ntohs(ip6->payload_len);
    if (ip6->version != 6 || l3 + sizeof(*ip6) + room > end)
        return PARSE_BAD;
    p->full.prefixlen = 128;
    __builtin_memcpy(p->full.addr, &ip6->saddr, 16);
    __u64 hi, lo;
    __builtin_memcpy(&hi, &ip6->saddr, 8);
    __builtin_memcpy(&lo, (void *)&ip6->saddr + 8, 8);
    if (prefix == 0)
        prefix = 64;
    hi &= prefix_mask(prefix);
    lo &= prefix > 64 ? prefix_mask(prefix - 64) : 0;
    __builtin_memcpy(p->key.a, &hi, 8);
    __builtin_memcpy(&p->key.a[8], &lo, 8);

    void *cur = l3 + sizeof(*ip6);
    __u8 next = ip6->nexthdr;
    #pragma unroll
    for (int i = 0; i < ES_MAX_EXT_HDRS; i++) {
        __u32 len;
        if (next == IPPROTO_HOPOPTS || next == IPPROTO_ROUTING || next == IPPROTO_DSTOPTS ||
            next == IPPROTO_AH) {
            __u8 *opt = cur;
            if ((void *)(opt + 2) > end)
                return PARSE_BAD;
            len = next == IPPROTO_AH ? (opt[1] + 2) * 4 : (opt[1] + 1) * 8;
            next = opt[0];
        } else if (next == IPPROTO_FRAGMENT) {
            struct frag_hdr { __u8 nexthdr; __u8 reserved; __be16 frag_off; __be32 id; } *fh = cur;
            if ((void *)(fh + 1) > end || room < sizeof(*fh))
                return PARSE_BAD;
            if (bpf_ntohs(fh->frag_off) & 0xfff8)   /* not the first fragment */
                return PARSE_OK;
            len = sizeof(*fh);
            next = fh->nexthdr;
        } else if (next == IPPROTO_ESP || next == IPPROTO_NONE) {
            return PARSE_OK;                       /* nothing we can read further */
        } else {
            return parse_l4(cur, end, room, next, p);
        }
        if (len > room || cur + len > end)
            return PARSE_BAD;
        cur += len;
        room -= len;
    }
    return PARSE_BAD;   /* more extension headers than we walk */
}

static __always_inline int parse(void *data, void *end, struct es_pkt *p, __u32 prefix)
{
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return PARSE_BAD;
    void *cur = eth + 1;
    __u16 proto = eth->h_proto;
    #pragma unroll
    for (int i = 0; i < ES_MAX_VLAN_TAGS; i++) {
        if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
            break;
        struct { __be16 tci; __be16 proto; } *tag = cur;
        if ((void *)(tag + 1) > end)
            return PARSE_BAD;
        proto = tag->proto;
        cur = tag + 1;
    }
    if (proto == bpf_htons(ETH_P_IP))
        return parse_ipv4(cur, end, p);
    if (proto == bpf_htons(ETH_P_IPV6))
        return parse_ipv6(cur, end, p, prefix);
    if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD))
        return PARSE_BAD;   /* a third tag */
    return PARSE_NON_IP;
}

/* HAProxy's update_freq_ctr_period(). curr_tick and curr_ctr form one 64-bit word: a CPU
 * that sees the period over rotates with a compare-and-swap of that word, so exactly one
 * CPU rotates and no concurrent add is lost between reading curr_ctr and resetting it (the
 * add would change the word and fail the CAS). prev_ctr is written just after the CAS won;
 * a reader in that instant sees the old prev_ctr: a benign, one-read glitch. If the CAS
 * loses twice, the event is added to whatever period is current (off by one at a boundary). */
static __always_inline void freq_update(struct es_freq *f, __u32 now, __u32 period, __u32 inc)
{
    __u64 *word = (__u64 *)&f->curr_tick;
    #pragma unroll
    for (int i = 0; i < 2; i++) {
        __u64 old = *(volatile __u64 *)word;
        __u32 tick = (__u32)old;
        if (now - tick < period)
            break;
        __u32 prev = old >> 32;
        tick += period;
        if (now - tick >= period) {   /* missed two periods or more: restart the grid */
            prev = 0;
            tick = now;
        }
        __u64 new = ((__u64)inc << 32) | (tick & ~1U);
        if (__sync_val_compare_and_swap(word, old, new) == old) {
            f->prev_ctr = prev;
            return;
        }
    }
    __sync_fetch_and_add(&f->curr_ctr, inc);
}

/* read_freq_ctr_period(f) > limit, without a division:
 * floor((past*remain + curr*P) / P) > limit  <=>  past*remain + curr*P >= (limit+1)*P. */
static __always_inline int freq_above(struct es_freq *f, __u32 now, __u32 period, __u32 limit)
{
    __u32 curr = f->curr_ctr, past = f->prev_ctr;
    __s32 remain = (__s32)(f->curr_tick + period - now);
    if (remain < 0) {
        remain += period;
        past = remain >= 0 ? curr : 0;
        curr = 0;
    }
    if (curr == 0 && past <= 1)
        return past > limit;
    if (remain < 0)
        remain = 0;
    return (__u64)past * (__u32)remain + (__u64)curr * period >= ((__u64)limit + 1) * period;
}

static __always_inline int finish(struct es_config *cfg, int drop, __u32 reason, __u64 bytes)
{
    __u32 verdict = ES_V_PASS;
    if (drop)
        verdict = cfg->mode == ES_MODE_DRY_RUN ? ES_V_WOULD_DROP : ES_V_DROP;
    __u32 idx = verdict * ES_REASON_COUNT + reason;
    struct es_counter *c = counters.lookup(&idx);
    if (c) {   /* per-CPU slot: plain adds are safe */
        c->packets += 1;
        c->bytes += bytes;
    }
    return verdict == ES_V_DROP ? XDP_DROP : XDP_PASS;
}

int edgestick_xdp(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    __u64 bytes = end - data;
    __u32 zero = 0;
    struct es_config *cfg = config.lookup(&zero);
    if (!cfg)
        return XDP_PASS;

    struct es_pkt p = {};
    int parsed = parse(data, end, &p, cfg->ipv6_prefix);
    if (parsed == PARSE_NON_IP)
        return finish(cfg, 0, ES_R_NON_IP, bytes);
    if (parsed == PARSE_BAD)
        return finish(cfg, cfg->malformed == ES_MALFORMED_DROP, ES_R_MALFORMED, bytes);

    if (allow.lookup(&p.full))
        return finish(cfg, 0, ES_R_ALLOW, bytes);
    if (deny.lookup(&p.full))
        return finish(cfg, 1, ES_R_DENY, bytes);

    /* CLOCK_MONOTONIC_COARSE (tick resolution, like HAProxy's per-loop now_ms): the precise
     * bpf_ktime_get_ns() costs ~24 ns a packet on these VMs, a third of the whole path. */
    __u64 now_ns = bpf_ktime_get_coarse_ns();
    __u32 now = now_ns / 1000000;   /* HAProxy's ms tick, wrapping u32 */
    __u32 period = cfg->period_ms ? cfg->period_ms : 1000;
    __u32 limits = cfg->limits_enabled;

    /* Flood guard: a spoofed flood is a stream of new sources. Above the per-CPU rate of new
     * sources, untracked sources are dropped without creating state, so the LRU does not
     * churn and the sources already tracked (the real clients) keep their entries. While it
     * is above, the source is looked up first: an untracked one drops whether banned or not,
     * which spares the ban lookup (a cache miss) on every spoofed packet. */
    struct es_freq *fresh = 0;
    struct es_source *src = 0;
    if (limits & ES_LIM_NEW_SOURCES) {
        fresh = new_sources.lookup(&zero);
        if (fresh && freq_above(fresh, now, period, cfg->new_sources_limit)) {
            src = sources.lookup(&p.key);
            if (!src) {
                freq_update(fresh, now, period, 1);
                return finish(cfg, 1, ES_R_FLOOD, bytes);
            }
        }
    }

    struct es_ban *ban = bans.lookup(&p.key);
    if (ban) {
        if (now_ns < ban->expires_ns)
            return finish(cfg, 1, ES_R_BAN, bytes);
        bans.delete(&p.key);
    }

    if (!src)
        src = sources.lookup(&p.key);
    if (!src) {
        if (fresh) {
            freq_update(fresh, now, period, 1);
            if (freq_above(fresh, now, period, cfg->new_sources_limit))
                return finish(cfg, 1, ES_R_FLOOD, bytes);
        }
        struct es_source init = {};
        sources.insert(&p.key, &init);
        src = sources.lookup(&p.key);
        if (!src)
            return finish(cfg, 0, ES_R_NONE, bytes);
    }

    freq_update(&src->pkt, now, period, 1);
    freq_update(&src->bytes, now, period, bytes);
    if (p.syn)
        freq_update(&src->conn, now, period, 1);
    src->last_seen_ns = now_ns;   /* last writer wins: any CPU's value is right */

    __u32 reason = ES_R_NONE;
    if ((limits & ES_LIM_CONN_RATE) && p.syn &&
        freq_above(&src->conn, now, period, cfg->conn_rate_limit))
        reason = ES_R_CONN_RATE;
    else if ((limits & ES_LIM_PKT_RATE) && freq_above(&src->pkt, now, period, cfg->pkt_rate_limit))
        reason = ES_R_PKT_RATE;
    else if ((limits & ES_LIM_BYTE_RATE) &&
             freq_above(&src->bytes, now, period, cfg->byte_rate_limit))
        reason = ES_R_BYTE_RATE;

    __u32 ban_reason = ES_R_NONE;
    if ((limits & ES_LIM_BAN_CONN_RATE) && freq_above(&src->conn, now, period, cfg->ban_conn_rate))
        ban_reason = ES_R_CONN_RATE;
    else if ((limits & ES_LIM_BAN_PKT_RATE) && freq_above(&src->pkt, now, period, cfg->ban_pkt_rate))
        ban_reason = ES_R_PKT_RATE;
    else if ((limits & ES_LIM_BAN_BYTE_RATE) &&
             freq_above(&src->bytes, now, period, cfg->ban_byte_rate))
        ban_reason = ES_R_BYTE_RATE;
    if (ban_reason != ES_R_NONE) {
        if (cfg->mode != ES_MODE_DRY_RUN) {   /* dry-run changes nothing, bans included */
            struct es_ban b = { .expires_ns = now_ns + cfg->ban_ttl_ns, .reason = ban_reason };
            bans.update(&p.key, &b);
        }
        if (reason == ES_R_NONE)
            reason = ban_reason;
    }

    if (reason == ES_R_NONE)
        return finish(cfg, 0, ES_R_NONE, bytes);
    __sync_fetch_and_add(&src->drops, 1);
    return finish(cfg, 1, reason, bytes);
}
