/*
 * site.h - the site registry: every server of a site, as far as this one knows, whichever
 * server it is asked on (GET /v1/nodes?all=1, `lockstep nodes --all`).
 *
 * Nothing is configured: the records travel in the PING frames of the peer protocol
 * (docs/protocol.md, "The site list"). Each server sends upstream its own record and those of
 * its subtree (its downstreams and theirs), so the primary learns the whole site; each upstream
 * sends downstream everything it knows, so any replica can answer too. A record is judged
 * first-hand where it can be: a server's direct upstream and downstreams by the link itself,
 * the rest by what the neighbour that reported it said, and by how fresh that report is.
 *
 * Not for: the per-downstream replication registry (lag, applied seq, repl_up.c's nodes).
 */
#ifndef LS_SITE_H
#define LS_SITE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define SITE_MAX 1024                         /* records in a list, sent or kept */
#define SITE_HELD_MAX (4 * SITE_MAX)          /* records kept from all downstreams together */
#define SITE_FORGET_MS (6 * 3600 * 1000LL)    /* a record not refreshed for this long goes */
#define SITE_HEARTBEAT_MS 1000                /* the PING interval (both sides) */
#define SITE_STALE_MS (2 * SITE_HEARTBEAT_MS) /* silent this long: stale */
#define SITE_PER_PING 64 /* a list of n records goes every 1 + (n-1)/64 PINGs */

enum site_state { SITE_ACTIVE, SITE_STALE, SITE_DOWN };

struct site_rec {
    char name[64], node_id[33], role[16], version[32], http[128], peer[128], upstream[64];
    int64_t seq;
    int64_t heard_ms; /* wall clock: its last heartbeat, as far as this server knows */
    int state;        /* enum site_state */
};

/* The records one neighbour sent in its last PING (its own first). */
struct site_list {
    struct site_rec *recs;
    size_t n;
    int64_t recv_mono_ms; /* when it came: a report older than 2 of its periods is stale */
    int64_t every_ms;     /* how often that neighbour sends it */
};

void site_list_release(struct site_list *l);
/*
 * Replaces l with the `site` array of a PING (at most max records; records that are not
 * well-formed are skipped). 1 when it did; 0 when the PING had no list (an older peer, or a
 * PING between two lists) or memory ran out: l is left as it was.
 */
int site_list_parse(struct site_list *l, json_t *ping, size_t max);
/* Whether the report in l is no longer fresh: older than two of its sender's periods. */
int site_list_old(const struct site_list *l, int64_t now_mono);

/* Candidates gathered from every source, then merged to one record per server. */
struct site_set {
    struct site_rec *recs;
    int *rank; /* 0: this server; 1: first-hand or from below; 2: from above */
    size_t n, cap;
};
void site_set_init(struct site_set *s);
void site_set_release(struct site_set *s);
void site_set_add(struct site_set *s, const struct site_rec *r, int rank);
/* One record per server (node_id, else name), the best of its candidates; at most SITE_MAX. */
void site_set_merge(struct site_set *s, int64_t now_ms);

/* Builds the site as this server knows it: full (for downstreams and the API) or only this
 * server and its subtree (for the upstream). Merged. */
struct server;
void site_collect(struct server *srv, int full, struct site_set *out);
/* The PING fields `site` and `site_every_ms`, every 1 + (n-1)/SITE_PER_PING calls of the same
 * counter (one per connection). */
void site_ping_fields(struct server *srv, json_t *ping, int full, unsigned *counter);
/* GET /v1/nodes?all=1's list. */
json_t *site_api_nodes(struct server *srv);
const char *site_state_name(int state);

#endif
