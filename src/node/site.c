/*
 * site.c - the site registry (site.h): every server of the site as this one knows it, built
 * from what the peer links say, with no list of servers configured anywhere.
 *
 * Where records come from, best first:
 *   - this server's own record (rank 0: never taken from anyone else);
 *   - its direct downstreams, judged by the link (repl_up.c), and the subtrees they report
 *     (rank 1: below, where each server is reported by the one it follows);
 *   - what its upstream sent (rank 2: everything the upstream knows), the upstream itself
 *     judged by the link (repl_down.c).
 * A server can be named by several sources: the server it followed before and the one it follows
 * now, or the upstream echoing this server's own subtree back. Among rank 1 the freshest wins;
 * a rank 2 record replaces a rank 1 one only when it is newer by more than SITE_MOVED_MS (the
 * server moved away from this subtree), never because of an echo a moment late.
 *
 * Times travel as ages (ms since last heard, as the sender saw it), not as clock readings: the
 * servers' clocks need not agree.
 *
 * Not for: replication state and lag (GET /v1/nodes without all, repl_up.c).
 */
#include "node/site.h"
#include "node/server.h"
#include "common/util.h"

#include <stdlib.h>
#include <string.h>

/* A record from elsewhere replaces a first-hand one only when newer by this much (it moved). */
#define SITE_MOVED_MS (5 * SITE_HEARTBEAT_MS)
#define SITE_AGE_MAX (10 * 365 * 24 * 3600 * 1000LL)

static const char *const state_names[] = {"active", "stale", "down"};

const char *
site_state_name(int state)
{
    return state >= SITE_ACTIVE && state <= SITE_DOWN ? state_names[state] : "down";
}

/* ---------------------------------------------------------------- records on the wire */

/* Copies a string field; 0 when it is absent (then ""), -1 when malformed: not a string, too
 * long, or holding control characters (it ends up in a terminal table). */
static int
take_str(json_t *o, const char *key, char *out, size_t n, int required)
{
    json_t *v = json_object_get(o, key);
    const char *s = json_string_value(v);
    out[0] = '\0';
    if (!v || json_is_null(v)) return required ? -1 : 0;
    if (!s || strlen(s) >= n) return -1;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f) return -1;
    if (required && !*s) return -1;
    memcpy(out, s, strlen(s) + 1);
    return 0;
}

static int
state_from_name(const char *s)
{
    for (int i = SITE_ACTIVE; i <= SITE_DOWN; i++)
        if (s && strcmp(s, state_names[i]) == 0) return i;
    return -1;
}

static int
rec_from_json(json_t *o, int64_t now_ms, struct site_rec *r)
{
    json_t *seq = json_object_get(o, "seq"), *age = json_object_get(o, "age_ms");
    memset(r, 0, sizeof *r);
    if (!json_is_object(o) || take_str(o, "name", r->name, sizeof r->name, 1) ||
        take_str(o, "node_id", r->node_id, sizeof r->node_id, 0) ||
        take_str(o, "role", r->role, sizeof r->role, 0) ||
        take_str(o, "version", r->version, sizeof r->version, 0) ||
        take_str(o, "http", r->http, sizeof r->http, 0) ||
        take_str(o, "peer", r->peer, sizeof r->peer, 0) ||
        take_str(o, "upstream", r->upstream, sizeof r->upstream, 0))
        return -1;
    if (r->node_id[0] && (strlen(r->node_id) != 32 || strspn(r->node_id, "0123456789abcdef") != 32))
        return -1;
    if (!json_is_integer(seq) || json_integer_value(seq) < 0 || !json_is_integer(age) ||
        json_integer_value(age) < 0)
        return -1;
    if ((r->state = state_from_name(json_string_value(json_object_get(o, "state")))) < 0) return -1;
    r->seq = json_integer_value(seq);
    r->heard_ms =
        now_ms - (json_integer_value(age) < SITE_AGE_MAX ? json_integer_value(age) : SITE_AGE_MAX);
    return 0;
}

static json_t *
rec_wire(const struct site_rec *r, int64_t now_ms)
{
    int64_t age = now_ms - r->heard_ms;
    return json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:I,s:s,s:I}", "name", r->name, "node_id",
                     r->node_id, "role", r->role, "version", r->version, "http", r->http, "peer",
                     r->peer, "upstream", r->upstream, "seq", (json_int_t)r->seq, "state",
                     site_state_name(r->state), "age_ms", (json_int_t)(age > 0 ? age : 0));
}

static json_t *
rec_api(const struct site_rec *r)
{
    char hb[40];
    json_t *o;
    ls_format_time(r->heard_ms, hb, sizeof hb);
    o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:I,s:s,s:s}", "name", r->name, "node_id", r->node_id,
                  "role", r->role, "http", r->http, "peer", r->peer, "version", r->version, "seq",
                  (json_int_t)r->seq, "state", site_state_name(r->state), "last_heartbeat", hb);
    json_object_set_new(o, "upstream", r->upstream[0] ? json_string(r->upstream) : json_null());
    return o;
}

/* ---------------------------------------------------------------- lists received */

void
site_list_release(struct site_list *l)
{
    free(l->recs);
    memset(l, 0, sizeof *l);
}

int
site_list_parse(struct site_list *l, json_t *ping, size_t max)
{
    json_t *a = json_object_get(ping, "site"), *v;
    json_int_t every = json_integer_value(json_object_get(ping, "site_every_ms"));
    int64_t now = ls_now_ms();
    struct site_rec *recs;
    size_t i, n = 0;
    if (!json_is_array(a)) return 0;
    if (max > SITE_MAX) max = SITE_MAX;
    recs = calloc(max ? max : 1, sizeof *recs);
    if (!recs) return 0; /* the previous report stays, and goes stale */
    json_array_foreach(a, i, v)
    {
        if (n >= max) break;
        if (rec_from_json(v, now, &recs[n]) == 0) n++;
    }
    free(l->recs);
    l->recs = recs;
    l->n = n;
    l->recv_mono_ms = ls_mono_ms();
    /* A sender that says nothing sends at every PING; a wild value is held to sane bounds. */
    l->every_ms = every < SITE_HEARTBEAT_MS ? SITE_HEARTBEAT_MS
                  : every > 3600 * 1000     ? 3600 * 1000
                                            : every;
    return 1;
}

int
site_list_old(const struct site_list *l, int64_t now_mono)
{
    return now_mono - l->recv_mono_ms > 2 * l->every_ms;
}

/* ---------------------------------------------------------------- merging */

void
site_set_init(struct site_set *s)
{
    memset(s, 0, sizeof *s);
}

void
site_set_release(struct site_set *s)
{
    free(s->recs);
    free(s->rank);
    memset(s, 0, sizeof *s);
}

void
site_set_add(struct site_set *s, const struct site_rec *r, int rank)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 16;
        struct site_rec *recs = realloc(s->recs, cap * sizeof *recs);
        int *ranks = recs ? realloc(s->rank, cap * sizeof *ranks) : NULL;
        if (recs) s->recs = recs;
        if (!ranks) return; /* out of memory: this candidate is left out */
        s->rank = ranks;
        s->cap = cap;
    }
    s->recs[s->n] = *r;
    s->rank[s->n] = rank;
    s->n++;
}

/* What merging sorts: a candidate by its server's key, its rank, and its order of arrival. */
struct cand {
    const struct site_rec *r;
    int rank;
    size_t order;
};

static const char *
rec_key(const struct site_rec *r, char *buf, size_t n)
{
    if (r->node_id[0]) return r->node_id;
    snprintf(buf, n, "#%s", r->name); /* a peer that sent no node_id: by name */
    return buf;
}

static int
cmp_key(const void *pa, const void *pb)
{
    const struct cand *a = pa, *b = pb;
    char ka[80], kb[80];
    int c = strcmp(rec_key(a->r, ka, sizeof ka), rec_key(b->r, kb, sizeof kb));
    if (c) return c;
    if (a->rank != b->rank) return a->rank - b->rank;
    if (a->r->heard_ms != b->r->heard_ms) return a->r->heard_ms > b->r->heard_ms ? -1 : 1;
    return a->order < b->order ? -1 : a->order > b->order;
}

/* The freshest first, this server before all: what stays when there are too many. */
static int
cmp_fresh(const void *pa, const void *pb)
{
    const struct cand *a = pa, *b = pb;
    if ((a->rank == 0) != (b->rank == 0)) return a->rank == 0 ? -1 : 1;
    if (a->r->heard_ms != b->r->heard_ms) return a->r->heard_ms > b->r->heard_ms ? -1 : 1;
    return a->order < b->order ? -1 : a->order > b->order;
}

/* This server first (the receiver of a list takes its first record for the sender), then by
 * name: a stable order for the table and the tests. */
static int
cmp_out(const void *pa, const void *pb)
{
    const struct cand *a = pa, *b = pb;
    int c;
    if ((a->rank == 0) != (b->rank == 0)) return a->rank == 0 ? -1 : 1;
    if ((c = strcmp(a->r->name, b->r->name))) return c;
    return strcmp(a->r->node_id, b->r->node_id);
}

/* Within one server's candidates (sorted by cmp_key), the one that stands. */
static const struct cand *
pick(const struct cand *c, size_t n)
{
    const struct cand *below = NULL, *above = NULL;
    for (size_t i = 0; i < n; i++) {
        if (c[i].rank == 0) return &c[i];
        if (c[i].rank == 1 && !below) below = &c[i];
        if (c[i].rank == 2 && !above) above = &c[i];
    }
    if (below && above && above->r->heard_ms > below->r->heard_ms + SITE_MOVED_MS) return above;
    return below ? below : above;
}

void
site_set_merge(struct site_set *s, int64_t now_ms)
{
    struct cand *c = calloc(s->n ? s->n : 1, sizeof *c);
    struct site_rec *recs;
    int *ranks;
    size_t n = 0, i, j;
    if (!c) return;
    for (i = 0; i < s->n; i++)
        c[i] = (struct cand){&s->recs[i], s->rank[i], i};
    qsort(c, s->n, sizeof *c, cmp_key);
    for (i = 0; i < s->n; i = j) {
        const struct cand *best;
        char ki[80], kj[80];
        for (j = i + 1; j < s->n &&
                        strcmp(rec_key(c[i].r, ki, sizeof ki), rec_key(c[j].r, kj, sizeof kj)) == 0;
             j++)
            ;
        best = pick(&c[i], j - i);
        if (best->rank != 0 && now_ms - best->r->heard_ms > SITE_FORGET_MS) continue;
        c[n++] = *best;
    }
    if (n > SITE_MAX) {
        qsort(c, n, sizeof *c, cmp_fresh);
        n = SITE_MAX;
    }
    qsort(c, n, sizeof *c, cmp_out);
    recs = malloc((n ? n : 1) * sizeof *recs);
    ranks = malloc((n ? n : 1) * sizeof *ranks);
    if (!recs || !ranks) {
        free(recs);
        free(ranks);
        free(c);
        return; /* unmerged, but every candidate is still a true report */
    }
    for (i = 0; i < n; i++) {
        recs[i] = *c[i].r;
        ranks[i] = c[i].rank;
    }
    free(c);
    free(s->recs);
    free(s->rank);
    s->recs = recs;
    s->rank = ranks;
    s->n = s->cap = n;
}

/* ---------------------------------------------------------------- this server */

static void
site_self(struct server *srv, struct site_rec *r)
{
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", srv->cfg.name);
    store_meta_get(srv->reader, "node_id", r->node_id, sizeof r->node_id);
    snprintf(r->role, sizeof r->role, "%s", srv->cfg.role);
    snprintf(r->version, sizeof r->version, "%s", LS_VERSION);
    snprintf(r->http, sizeof r->http, "%s", srv->cfg.http ? srv->cfg.http : "");
    snprintf(r->peer, sizeof r->peer, "%s", srv->up && srv->cfg.listen ? srv->cfg.listen : "");
    if (!server_is_primary(srv)) {
        const char *up = repl_down_upstream_name(srv);
        snprintf(r->upstream, sizeof r->upstream, "%s", up ? up : "");
    }
    r->seq = srv->pos.seq;
    r->heard_ms = ls_now_ms();
    r->state = SITE_ACTIVE;
}

void
site_collect(struct server *srv, int full, struct site_set *out)
{
    struct site_rec self;
    site_set_init(out);
    site_self(srv, &self);
    site_set_add(out, &self, 0);
    repl_up_site(srv, out);
    if (full) repl_down_site(srv, out);
    site_set_merge(out, ls_now_ms());
}

void
site_ping_fields(struct server *srv, json_t *ping, int full, unsigned *counter)
{
    struct site_set s;
    json_t *a;
    unsigned every;
    int64_t now = ls_now_ms();
    /* *counter counts down the PINGs left until the next list: 0 sends one now. */
    if (*counter > 0) {
        (*counter)--;
        return;
    }
    site_collect(srv, full, &s);
    /* A big site's list goes less often: at most SITE_PER_PING records a second per link. */
    every = 1 + (s.n ? (unsigned)((s.n - 1) / SITE_PER_PING) : 0);
    a = json_array();
    for (size_t i = 0; i < s.n; i++)
        json_array_append_new(a, rec_wire(&s.recs[i], now));
    json_object_set_new(ping, "site", a);
    json_object_set_new(ping, "site_every_ms", json_integer((json_int_t)every * SITE_HEARTBEAT_MS));
    *counter = every - 1;
    site_set_release(&s);
}

json_t *
site_api_nodes(struct server *srv)
{
    struct site_set s;
    json_t *a = json_array();
    site_collect(srv, 1, &s);
    for (size_t i = 0; i < s.n; i++)
        json_array_append_new(a, rec_api(&s.recs[i]));
    site_set_release(&s);
    return a;
}
