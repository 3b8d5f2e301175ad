/*
 * repl_down.c - the downstream side of replication: a replica or staging server follows its
 * upstream from the position it last applied.
 *
 * States (like Redis' REPL_STATE_*):
 *   US_IDLE -> US_RESOLVING -> US_CONNECTING -> US_HELLO -> US_SYNC -> US_SNAPSHOT -> US_STREAM
 * and back to US_IDLE (retry with backoff) when the connection drops. Every change goes
 * through set_state(), which checks it against a table and logs it.
 *
 * The upstream's name is resolved at every connection (it may move) with libevent's evdns,
 * never with a blocking getaddrinfo: a slow or dead DNS server must not stall the loop that
 * answers the HTTP API. evdns reads /etc/resolv.conf and /etc/hosts (LOCKSTEP_RESOLV_CONF
 * names another resolv.conf, for tests); numeric addresses and names in /etc/hosts are
 * answered at once, without any network.
 *
 * Every frame of records becomes one writer request that applies them and records the new
 * position in the same transaction: a crash never applies a change twice or skips one. At most
 * MAX_INFLIGHT such requests wait for the writer; past that the connection stops reading, and
 * TCP pushes back on the upstream.
 */
#include "node/net.h"
#include "node/peer.h"
#include "node/server.h"
#include "node/site.h"
#include "node/tls.h"
#include "common/log.h"
#include "common/util.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/util.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Frames decoded and waiting for the writer. The writer commits everything queued as one
 * group, so a replica applying a backlog commits up to this many frames at once (one fsync
 * for ~4 MB of changes instead of one per 512 KiB frame) while the loop keeps receiving and
 * decoding. Memory: at most this many decoded frames. */
#define MAX_INFLIGHT 8
#define PING_MS 1000
#define RETRY_MIN_MS 200
#define RETRY_MAX_MS 5000

enum us_state { US_IDLE, US_RESOLVING, US_CONNECTING, US_HELLO, US_SYNC, US_SNAPSHOT, US_STREAM };

/* One name lookup in flight. Its callback may come after the lookup was abandoned (a halt, or
 * the server stopping: then d is NULL) and even after repl_down is freed: it owns itself. */
struct lookup {
    struct repl_down *d;
};

struct repl_down {
    struct server *srv;
    struct peer peer;
    enum us_state state;
    struct event *retry, *ping;
    int backoff_ms;
    struct evdns_base *dns;
    struct lookup *lookup;                     /* the lookup in flight, if any */
    struct evdns_getaddrinfo_request *dns_req; /* ... when it did not answer at once */
    struct evutil_addrinfo *addrs;             /* the upstream's addresses, from the last lookup */
    struct evutil_addrinfo *addr_next;         /* the next one to try when a connect fails */
    int64_t recv_seq;    /* this session: the upto of the last CHANGES frame (or where it began) */
    int64_t applied_seq; /* the upto of the last frame applied (-1: unknown, after a reset) */
    char up_name[64];
    char primary_http[128]; /* where writes go: the top of the chain */
    int64_t up_seq, up_seen_ms;
    const char *last_sync;
    int64_t last_sync_ms;
    int inflight;
    int chain_failed; /* a batch failed: the writer fails those after it (wreq.chain_failed) */
    int stopping;
    int64_t resync_from, resync_since; /* -1: none */
    int fork_pending;
    int64_t replay_upto; /* after a resync, entries up to here arrive again: tolerated */
    int want_snapshot;   /* this exact replica diverged: the next SYNC asks for a snapshot */
    int refused;         /* the last handshake was refused here (status: "refused") */
    int refused_now;     /* ... this session's: its close keeps the reason in last_error */
    int peer_error_now;  /* this session's upstream sent an ERROR frame: its close keeps it */
    char node_id[33];    /* this server's (store meta) */
    int up_messenger;    /* the upstream takes PUBLISH frames (forward.c) */
    int up_txn;          /* the upstream may send CHANGES_PART (docs/streaming.md) */
    int up_stream;       /* ... and units before they commit, and ABORT */
    int64_t unit_records; /* records of the unit received and not committed (status) */
    int in_unit;         /* a CHANGES_PART went to the writer, and no CHANGES after it yet */
    json_t *up_chain;    /* the upstream's chain of node_ids up to the primary, as it said */
    struct site_list site; /* the site as the upstream's last PING with a list said, it first */
    unsigned site_pace;    /* PINGs left until the next one with this server's subtree */
    char last_error[600];
    /* the blob being received */
    int blob_fd;
    unsigned char blob_sha[32];
    uint64_t blob_size, blob_off;
    EVP_MD_CTX *blob_md;
    char blob_tmp[4300];
};

static void connect_upstream(struct repl_down *d);

static const char *const state_names[] = {"idle", "resolving", "connecting", "hello",
                                          "sync", "snapshot",  "stream"};

#define FROM(s) (1u << (s))
/* The changes allowed: for each state, the states it may be entered from. Any state may drop
 * back to US_IDLE (a connection fails at any point); US_CONNECTING comes from US_IDLE too when
 * the previous address of the upstream's name refused the connection. */
static const unsigned allowed_from[] = {
    [US_IDLE] = FROM(US_IDLE) | FROM(US_RESOLVING) | FROM(US_CONNECTING) | FROM(US_HELLO) |
                FROM(US_SYNC) | FROM(US_SNAPSHOT) | FROM(US_STREAM),
    [US_RESOLVING] = FROM(US_IDLE),
    [US_CONNECTING] = FROM(US_IDLE) | FROM(US_RESOLVING),
    [US_HELLO] = FROM(US_CONNECTING),
    [US_SYNC] = FROM(US_HELLO),
    [US_SNAPSHOT] = FROM(US_SYNC),
    [US_STREAM] = FROM(US_SYNC) | FROM(US_SNAPSHOT),
};

/* Every change of d->state goes through here: a change not in the table is a bug. */
static void
set_state(struct repl_down *d, enum us_state to, const char *why)
{
    enum us_state from = d->state;
    if (!(allowed_from[to] & FROM(from))) { /* a bug: loud in every build */
        log_error("upstream %s: %s -> %s is not an allowed state change (%s)",
                  d->srv->cfg.upstream, state_names[from], state_names[to], why);
        assert(!"upstream state change not in the table");
    }
    if (from == to) return;
    d->state = to;
    /* notifications accepted here go up while the link streams (forward.c) */
    if (to == US_STREAM && d->up_messenger) forward_link(d->srv, 1);
    else if (from == US_STREAM) forward_link(d->srv, 0);
    /* The reconnect loop of an outage goes by at debug level; the rest at info. */
    if (to == US_RESOLVING || to == US_CONNECTING || (to == US_IDLE && from <= US_CONNECTING))
        log_debug("upstream %s: %s -> %s (%s)", d->srv->cfg.upstream, state_names[from],
                  state_names[to], why);
    else
        log_info("upstream %s: %s -> %s (%s)", d->srv->cfg.upstream, state_names[from],
                 state_names[to], why);
}

static void
schedule_retry(struct repl_down *d, const char *why)
{
    struct timeval tv;
    if (d->stopping) return;
    set_state(d, US_IDLE, why);
    tv.tv_sec = d->backoff_ms / 1000;
    tv.tv_usec = (d->backoff_ms % 1000) * 1000;
    evtimer_add(d->retry, &tv);
    d->backoff_ms = d->backoff_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : d->backoff_ms * 2;
}

static void
blob_reset(struct repl_down *d)
{
    if (d->blob_fd >= 0) {
        close(d->blob_fd);
        unlink(d->blob_tmp);
    }
    d->blob_fd = -1;
}

/* ---------------------------------------------------------------- writer jobs */

struct job {
    struct repl_down *d;
    char store_id[33];
    struct ls_epoch *epochs; /* the upstream's history (CONTINUE, SNAPSHOT): job_free frees it */
    int nepochs;
    int64_t seq;
    int reset;         /* snapshot begins: empty the store */
    int snapshot_done; /* snapshot ends at seq */
    int truncate;      /* continue from seq < ours: forget the log after it */
    int new_history;   /* the store's history is replaced or re-based: drop our downstreams */
    int64_t fork_at;   /* > 0: save the changes after it and ask for a snapshot */
    int export_store;  /* before the reset: export the store's own history (--replace-store) */
};

static void
job_free(struct job *j)
{
    if (!j) return;
    free(j->epochs);
    free(j);
}

/* What an export knows of a path it has written puts for. */
struct export_path {
    struct export_path *next;
    char *path;
    int created;      /* the export holds the item's version 1: its numbers replay as they are */
    int64_t last;     /* the version of its last put line */
    char *last_draft; /* that put line without a status */
};

struct export_ctx {
    FILE *f;
    struct store *st;
    struct export_path **buckets; /* EXPORT_BUCKETS chains, by a hash of the path */
    int track;                    /* a log export: follow paths for its publishes */
    size_t held;                  /* bytes of last_draft lines held, at most EXPORT_HELD_MAX */
};

#define EXPORT_HELD_MAX ((size_t)64 << 20)
#define EXPORT_BUCKETS 65536

static struct export_path **
export_bucket(struct export_ctx *x, const char *path)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *c = (const unsigned char *)path; *c; c++)
        h = (h ^ *c) * 16777619u;
    return &x->buckets[h % EXPORT_BUCKETS];
}

static struct export_path *
export_path_find(struct export_ctx *x, const char *path)
{
    if (!x->buckets) return NULL;
    for (struct export_path *p = *export_bucket(x, path); p; p = p->next)
        if (strcmp(p->path, path) == 0) return p;
    return NULL;
}

static void
export_path_unlink(struct export_ctx *x, struct export_path *p)
{
    for (struct export_path **pp = export_bucket(x, p->path); *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            return;
        }
}

static void
export_path_free(struct export_ctx *x, struct export_path *p)
{
    if (p->last_draft) x->held -= strlen(p->last_draft);
    free(p->path);
    free(p->last_draft);
    free(p);
}

static void
export_paths_free(struct export_ctx *x)
{
    for (int i = 0; x->buckets && i < EXPORT_BUCKETS; i++)
        while (x->buckets[i]) {
            struct export_path *p = x->buckets[i];
            x->buckets[i] = p->next;
            export_path_free(x, p);
        }
    free(x->buckets);
    x->buckets = NULL;
    x->held = 0;
}

/* Keeps the draft form of a path's last put, within EXPORT_HELD_MAX in all. */
static void
export_keep_draft(struct export_ctx *x, struct export_path *p, json_t *draft)
{
    if (p->last_draft) x->held -= strlen(p->last_draft);
    free(p->last_draft);
    p->last_draft = json_dumps(draft, JSON_COMPACT);
    if (p->last_draft && x->held + strlen(p->last_draft) > EXPORT_HELD_MAX) {
        free(p->last_draft);
        p->last_draft = NULL; /* its publish then names no version, as before */
    }
    if (p->last_draft) x->held += strlen(p->last_draft);
}

/* A put line for the version an entry carries (its data), with or without "status". */
static json_t *
export_put(struct export_ctx *x, const struct ls_entry *e, int published)
{
    json_t *o = json_pack("{s:s,s:s}", "op", "put", "path", e->path);
    const void *body = e->body;
    size_t len = e->body_len;
    void *file_body = NULL;
    char *b64;
    json_object_set_new(o, "kind", json_string(e->kind));
    json_object_set_new(o, "meta", json_loads(e->meta, 0, NULL));
    if (published) json_object_set_new(o, "status", json_string("published"));
    if (e->body_kind == BODY_BLOB) {
        char path[4300];
        FILE *bf;
        store_blob_path(x->st, e->sha, path, sizeof path);
        len = 0;
        if ((bf = fopen(path, "rb")) && (file_body = malloc(e->size ? e->size : 1)))
            len = fread(file_body, 1, e->size, bf);
        if (bf) fclose(bf);
        body = file_body;
    }
    if ((e->body_kind == BODY_INLINE || file_body) && (b64 = malloc(4 * ((len + 2) / 3) + 1))) {
        EVP_EncodeBlock((unsigned char *)b64, body ? body : (const void *)"", (int)len);
        json_object_set_new(o, "body_base64", json_string(b64));
        free(b64);
    } /* out of memory: the line goes without its body, as for a body no longer held */
    free(file_body);
    return o;
}

static void
export_line(FILE *f, int64_t seq, json_t *o)
{
    char *text;
    json_object_set_new(o, "seq", json_integer(seq)); /* where it stood; import ignores it */
    if ((text = json_dumps(o, JSON_COMPACT))) fprintf(f, "%s\n", text);
    free(text);
    json_decref(o);
}

/*
 * Lines `lockstep import` takes: bodies inline, no version numbers on puts (they would name
 * this history's versions, not the new one's). A publish names its version only where the
 * numbers replay as they are: the export holds the item from its version 1. Otherwise a
 * publish of an older version than the item's latest becomes a put of that version, published,
 * and the latest again as a draft: the same published content and status on import.
 */
static int
export_entry(void *arg, const struct ls_entry *e)
{
    struct export_ctx *x = arg;
    struct export_path *p = x->track ? export_path_find(x, e->path) : NULL;
    json_t *o;
    if (e->op == LS_OP_NOTIFY) return 0; /* not content: an import has nothing to do with it */
    if (e->op == LS_OP_PUT && (e->flags & REC_DATA) && x->track) {
        json_t *draft = export_put(x, e, 0);
        if (!x->buckets) x->buckets = calloc(EXPORT_BUCKETS, sizeof *x->buckets);
        if (!p && x->buckets && (p = calloc(1, sizeof *p)) && (p->path = strdup(e->path))) {
            struct export_path **b = export_bucket(x, p->path);
            p->created = e->version == 1;
            p->next = *b;
            *b = p;
        } else if (p && !p->path) {
            free(p);
            p = NULL;
        }
        if (p) {
            export_keep_draft(x, p, draft);
            p->last = e->version;
        }
        json_decref(draft);
    }
    if (e->op == LS_OP_PUT && (e->flags & REC_DATA)) {
        export_line(x->f, e->seq, export_put(x, e, (e->flags & REC_PUBLISHED) != 0));
        return 0;
    }
    if (e->op == LS_OP_PUBLISH && p && e->version != p->last) {
        if (p->created) {
            export_line(x->f, e->seq, json_pack("{s:s,s:s,s:I}", "op", "publish", "path", e->path,
                                        "version", (json_int_t)e->version));
            return 0;
        }
        if ((e->flags & REC_DATA) && e->body_kind != BODY_MISSING && p->last_draft) {
            export_line(x->f, e->seq, export_put(x, e, 1));
            export_line(x->f, e->seq, json_loads(p->last_draft, 0, NULL));
            return 0;
        }
    }
    o = json_pack("{s:s,s:s}", "op", op_name(e->op), "path", e->path);
    if (e->op == LS_OP_MOVE) {
        json_object_set_new(o, "to", json_string(e->to));
        if (p) { /* the item goes on under its new name */
            struct export_path *old = export_path_find(x, e->to);
            char *to = strdup(e->to);
            export_path_unlink(x, p);
            if (old) { /* a tombstone replaced there: that item is gone */
                export_path_unlink(x, old);
                export_path_free(x, old);
            }
            if (to) {
                struct export_path **b = export_bucket(x, to);
                free(p->path);
                p->path = to;
                p->next = *b;
                *b = p;
            } else {
                export_path_free(x, p);
                p = NULL;
            }
        }
    }
    if (e->op == LS_OP_PURGE && p) { /* a later put starts at version 1 */
        export_path_unlink(x, p);
        export_path_free(x, p);
    }
    export_line(x->f, e->seq, o);
    return 0;
}

static int
snap_export_entry(void *arg, const struct ls_entry *e)
{
    return export_entry(arg, e);
}

/*
 * The whole content of a store about to be replaced by another one's (--replace-store): every
 * retained version of every item, oldest first, the published one marked, tombstones as
 * deletes. Importing the file gives back the same live items, statuses and bodies.
 */
static int
export_own_store(struct store *st, struct ls_error *err)
{
    struct ls_position pos;
    struct store_snapshot *sn;
    char path[4300];
    FILE *f;
    int rc = 0, n = 0;
    if (!(sn = store_snapshot_open(store_dir(st), 0, 0, &pos, err))) return err->code;
    snprintf(path, sizeof path, "%s/forked-store-%s-seq%lld-%lld.ndjson", store_dir(st),
             pos.store_id, (long long)pos.seq, (long long)ls_now_ms());
    if (!(f = fopen(path, "w"))) {
        store_snapshot_close(sn);
        return ls_error_set(err, LS_EIO, "cannot write %s: %s", path, strerror(errno));
    }
    {
        struct export_ctx x = {f, st, NULL, 0, 0};
        while ((rc = store_snapshot_next(sn, NULL, snap_export_entry, &x)) > 0)
            n++;
        export_paths_free(&x);
    }
    store_snapshot_close(sn);
    if (fclose(f) != 0 || rc < 0) return ls_error_set(err, LS_EIO, "cannot write %s", path);
    log_warn("--replace-store: this store's own history (store %s, seq %lld, %d items) is "
             "saved in %s (import it with lockstep import if it is wanted); replacing it by "
             "the upstream's",
             pos.store_id, (long long)pos.seq, n, path);
    return 0;
}

static int
run_job(struct store *st, struct wreq *r)
{
    struct job *j = r->fn_arg;
    int rc = 0;
    if (j->fork_at != 0) {
        int64_t after = j->fork_at < 0 ? 0 : j->fork_at;
        char path[4300];
        FILE *f;
        int n;
        struct ls_position pos;
        store_position(st, &pos);
        snprintf(path, sizeof path, "%s/forked-epoch%lld-after%lld-%lld.ndjson", store_dir(st),
                 (long long)pos.epoch, (long long)after, (long long)ls_now_ms());
        if (!(f = fopen(path, "w")))
            return ls_error_set(&r->err, LS_EIO, "cannot write %s: %s", path, strerror(errno));
        {
            struct export_ctx x = {f, st, NULL, 1, 0};
            n = store_log_entries(st, after, 1 << 30, (size_t)1 << 62, export_entry, &x);
            export_paths_free(&x);
        }
        if (fclose(f) != 0 || n < 0)
            return ls_error_set(&r->err, LS_EIO, "cannot write %s", path);
        log_warn("this server's history forked from its upstream's after seq %lld: its %d "
                 "changes after that point are saved in %s (import them with lockstep import "
                 "if they are wanted); resynchronizing with a snapshot",
                 (long long)after, n, path);
        return store_meta_set(st, "snapshot_pending", "1", &r->err);
    }
    if (j->export_store && (rc = export_own_store(st, &r->err))) return rc;
    if (j->reset && (rc = store_reset(st, &r->err))) return rc;
    if (j->nepochs && (rc = store_set_identity(st, j->store_id, j->epochs, j->nepochs, &r->err)))
        return rc;
    if (j->truncate) {
        /* Entries after seq will arrive again; the store converges as they are re-applied. */
        if ((rc = store_truncate_log(st, j->seq, &r->err))) return rc;
        store_set_seq(st, j->seq);
    }
    if (j->snapshot_done) {
        store_set_seq(st, j->seq);
        rc = store_meta_set(st, "snapshot_pending", "0", &r->err);
        /* The log starts here now: a consumer from before gets a reset (docs/messenger.md). */
        if (rc == 0) rc = store_raise_floor(st, FLOOR_LOG, j->seq, &r->err);
        /* Bodies of the store before the snapshot that nothing refers to any more. */
        if (rc == 0) store_collect_all_garbage(st);
    }
    return rc;
}

static void ack(struct repl_down *d);
static void abort_unit(struct repl_down *d, int how);

/* An exact replica holds everything its upstream has: an operation on an item it lacks means
 * its store diverged. Filtered ones (staging, --include) lack items by design. */
static int
exact_replica(const struct server *srv)
{
    return strcmp(srv->cfg.role, "replica") == 0 && srv->cfg.include.n == 0;
}

static void
job_done(struct wreq *r, void *arg)
{
    struct repl_down *d = arg;
    struct job *j = r->fn_arg;
    d->inflight--;
    if (r->rc == 0 && r->hold) {
        /* Applied, not committed: neither the position nor an ACK moves (the unit's CHANGES
         * commits it). */
    } else if (r->rc == 0 && r->type == WREQ_OPS && r->set_seq > 0) {
        /* Frames apply in the order they came, and came in order (on_records): the position
         * never goes backwards but through a truncate or a snapshot (jobs, below). */
        assert(d->applied_seq < 0 || r->set_seq >= d->applied_seq);
        d->applied_seq = r->set_seq;
    } else if (r->rc == 0 && j && (j->truncate || j->snapshot_done)) {
        d->applied_seq = j->seq;
    } else if (r->rc == 0 && j && j->reset) {
        d->applied_seq = -1;
    }
    if (r->rc && r->type == WREQ_OPS && exact_replica(d->srv) &&
        (r->rc == LS_ENOTFOUND || r->rc == LS_ECONFLICT)) {
        /* Strict mode (to_op): the change names an item or version this store lacks. */
        snprintf(d->last_error, sizeof d->last_error,
                 "this replica diverged from its upstream (%.400s); resynchronizing with a "
                 "snapshot",
                 r->err.msg);
        log_error("%s", d->last_error);
        d->want_snapshot = 1;
        if (d->state != US_IDLE) peer_fail(&d->peer, "apply_failed", "%s", d->last_error);
    } else if (r->rc == LS_EUNAVAIL && d->chain_failed && d->state == US_IDLE) {
        /* A frame after the one that failed: last_error keeps the cause. */
        log_info("dropped a frame after a failed one: %s", r->err.msg);
    } else if (r->rc) {
        if (j && j->fork_at != 0) d->fork_pending = 0; /* the next handshake tries again */
        log_error("applying the upstream's changes failed: %s", r->err.msg);
        snprintf(d->last_error, sizeof d->last_error, "%s", r->err.msg);
        if (d->state != US_IDLE) peer_fail(&d->peer, "apply_failed", "%s", r->err.msg);
    } else if (j && j->fork_at != 0) {
        d->fork_pending = 0;
        if (d->state != US_IDLE) peer_fail(&d->peer, NULL, "resynchronizing after a fork");
    } else if (d->state >= US_SYNC && !r->hold) {
        ack(d);
        /* Only a frame applied shows the link works: a handshake that ends in a failure
         * every time must not reconnect at the shortest interval for ever. */
        if (r->type == WREQ_OPS) d->backoff_ms = RETRY_MIN_MS;
    }
    /* Servers following this one hold positions in the history that was just replaced (a
     * snapshot, a truncated log, a new epoch): they must handshake again to learn where they
     * stand. (Until the snapshot ends they are refused.) */
    if (r->rc == 0 && j && j->new_history)
        repl_up_drop_all(d->srv, "this server's history was replaced by its upstream's");
    if (d->state != US_IDLE && d->inflight < MAX_INFLIGHT) peer_pause(&d->peer, 0);
    job_free(j);
    wreq_free(r);
}

static void
submit(struct repl_down *d, struct wreq *r)
{
    r->done = job_done;
    r->arg = d;
    r->max_body = UINT64_MAX;
    r->chain_failed = &d->chain_failed;
    r->session = d;
    d->inflight++;
    if (d->inflight >= MAX_INFLIGHT) peer_pause(&d->peer, 1);
    writer_submit(d->srv->writer, r);
}

static void
submit_job(struct repl_down *d, struct job *j)
{
    struct wreq *r = calloc(1, sizeof *r);
    if (!r) {
        job_free(j);
        peer_fail(&d->peer, NULL, "out of memory");
        return;
    }
    r->type = WREQ_CUSTOM;
    r->fn = run_job;
    r->fn_arg = j;
    submit(d, r);
}

static void
ack(struct repl_down *d)
{
    struct ls_wbuf w;
    ls_wbuf_init(&w, 16);
    ls_put_varint(&w, (uint64_t)d->srv->pos.seq);
    peer_send(&d->peer, F_ACK, w.p, w.len);
    ls_wbuf_release(&w);
}

/* ---------------------------------------------------------------- records */

static int
to_op(struct repl_down *d, struct ls_entry *e, struct ls_op *op, int snapshot)
{
    op_init(op);
    op->type = e->op;
    op->path = e->path;
    op->to = e->to;
    e->path = e->to = NULL;
    op->seq = e->seq;
    op->mtime = e->ts;
    /* Filtered downstreams skip operations on items they do not hold; so does an exact
     * replica for entries a resync sends again. Otherwise a missing item is divergence. */
    op->tolerant = snapshot || !exact_replica(d->srv) || e->seq <= d->replay_upto;
    op->no_log = snapshot || (e->flags & REC_NOLOG);
    op->more = !snapshot && (e->flags & REC_MORE); /* this log keeps its upstream's units */
    if (e->op == LS_OP_PUBLISH) op->version = e->version;
    if (e->op != LS_OP_PUT) return 0;
    op->version = e->version;
    op->kind = e->kind;
    op->meta = e->meta;
    e->kind = e->meta = NULL;
    op->publish = (e->flags & REC_PUBLISHED) != 0;
    op->restore = (e->flags & REC_RESTORE) != 0;
    op->has_sha = 1;
    memcpy(op->sha, e->sha, 32);
    if (e->body_kind == BODY_INLINE) {
        op->body_owned = malloc(e->body_len + 1);
        if (!op->body_owned) return LS_ENOMEM;
        memcpy(op->body_owned, e->body, e->body_len);
        op->body = op->body_owned;
        op->body_len = e->body_len;
    } else {
        char tmp[4300], hex[65];
        op->body_file_size = e->size;
        ls_hex_encode(e->sha, 32, hex);
        snprintf(tmp, sizeof tmp, "%s/blobs/tmp/in-%s", store_dir(d->srv->reader), hex);
        /* A blob that came is handed to the writer even when the store has it now: a batch
         * still queued may drop the store's copy before this one applies (the writer's adopt
         * keeps one copy). Without one it is a placeholder (the upstream no longer had it) or
         * a body this store holds from before (a snapshot's or a restart's). */
        if (e->body_kind == BODY_BLOB && access(tmp, F_OK) == 0) {
            if (!(op->body_file = strdup(tmp))) return LS_ENOMEM;
        } else {
            op->body_absent = 1;
        }
    }
    return 0;
}

/* A CHANGES_PART's records (hold) stay in the writer's open transaction (docs/streaming.md). */
static void
on_records(struct repl_down *d, const uint8_t *payload, size_t len, int snapshot, int hold)
{
    struct ls_rbuf rb = {payload, len, 0, 0};
    struct wreq *r = calloc(1, sizeof *r);
    size_t cap = 0;
    if (!r) {
        peer_fail(&d->peer, NULL, "out of memory");
        return;
    }
    r->type = WREQ_OPS;
    r->hold = hold;
    if (!snapshot) {
        r->set_seq = (int64_t)ls_get_varint(&rb);
        if (rb.failed) goto bad;
        if (r->set_seq < d->recv_seq) { /* the upstream went backwards: a broken upstream */
            int64_t upto = r->set_seq;
            wreq_free(r);
            peer_fail(&d->peer, "protocol_error", "CHANGES up to seq %lld after seq %lld",
                      (long long)upto, (long long)d->recv_seq);
            return;
        }
        d->recv_seq = r->set_seq;
    }
    while (rb.pos < rb.len) {
        struct ls_entry e;
        if (rec_decode(&rb, &e)) goto bad;
        if (r->nops == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            struct ls_op *ops = realloc(r->ops, ncap * sizeof *ops);
            if (!ops) {
                rec_release(&e);
                wreq_free(r);
                peer_fail(&d->peer, NULL, "out of memory");
                return;
            }
            r->ops = ops;
            cap = ncap;
        }
        if (to_op(d, &e, &r->ops[r->nops], snapshot)) {
            rec_release(&e);
            goto bad;
        }
        r->nops++;
        rec_release(&e);
        if (!snapshot && r->ops[r->nops - 1].seq > r->set_seq) goto bad;
    }
    d->in_unit = hold;
    d->unit_records = hold ? d->unit_records + (int64_t)r->nops : 0;
    submit(d, r);
    return;
bad:
    wreq_free(r);
    peer_fail(&d->peer, "protocol_error", "malformed records");
}

static void
on_blob(struct repl_down *d, const uint8_t *payload, size_t len)
{
    struct ls_rbuf rb = {payload, len, 0, 0};
    size_t n;
    const uint8_t *sha = ls_get_bytes(&rb, &n, 32);
    uint64_t size = ls_get_varint(&rb), off = ls_get_varint(&rb);
    const uint8_t *data;
    size_t dlen;
    data = ls_get_bytes(&rb, &dlen, LS_FRAME_MAX);
    if (rb.failed || n != 32 || off + dlen > size) {
        peer_fail(&d->peer, "protocol_error", "malformed BLOB frame");
        return;
    }
    if (off == 0) {
        char hex[65];
        blob_reset(d);
        ls_hex_encode(sha, 32, hex);
        snprintf(d->blob_tmp, sizeof d->blob_tmp, "%s/blobs/tmp/in-%s.part",
                 store_dir(d->srv->reader), hex);
        d->blob_fd = open(d->blob_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (d->blob_fd < 0) {
            peer_fail(&d->peer, NULL, "cannot write %s: %s", d->blob_tmp, strerror(errno));
            return;
        }
        memcpy(d->blob_sha, sha, 32);
        d->blob_size = size;
        d->blob_off = 0;
        if (!d->blob_md) d->blob_md = EVP_MD_CTX_new();
        EVP_DigestInit_ex(d->blob_md, EVP_sha256(), NULL);
    } else if (d->blob_fd < 0 || off != d->blob_off || memcmp(sha, d->blob_sha, 32) != 0) {
        peer_fail(&d->peer, "protocol_error", "BLOB frame out of order");
        return;
    }
    if (ls_write_all(d->blob_fd, data, dlen) < 0) {
        peer_fail(&d->peer, NULL, "cannot write a blob: %s", strerror(errno));
        return;
    }
    EVP_DigestUpdate(d->blob_md, data, dlen);
    d->blob_off += dlen;
    if (d->blob_off == d->blob_size) {
        unsigned char got[32];
        char done_path[4300];
        EVP_DigestFinal_ex(d->blob_md, got, NULL);
        if (memcmp(got, d->blob_sha, 32) != 0 || fsync(d->blob_fd) < 0) {
            blob_reset(d);
            peer_fail(&d->peer, "protocol_error", "a blob does not match its hash");
            return;
        }
        close(d->blob_fd);
        d->blob_fd = -1;
        snprintf(done_path, sizeof done_path, "%.*s", (int)(strlen(d->blob_tmp) - 5), d->blob_tmp);
        if (rename(d->blob_tmp, done_path) < 0) { /* the body would be taken for absent */
            char why[200];
            snprintf(why, sizeof why, "cannot keep a received blob: %s", strerror(errno));
            blob_reset(d);
            peer_fail(&d->peer, NULL, "%s", why);
        }
    }
}

/* ---------------------------------------------------------------- handshake */

static int
parse_epochs(json_t *a, struct job *j)
{
    size_t i;
    json_t *v;
    j->nepochs = 0;
    free(j->epochs);
    /* However long the history: the frame that carries it is bounded already. */
    if (!json_is_array(a) || json_array_size(a) == 0 ||
        !(j->epochs = calloc(json_array_size(a), sizeof *j->epochs)))
        return -1;
    json_array_foreach(a, i, v)
    {
        j->epochs[j->nepochs].epoch = json_integer_value(json_array_get(v, 0));
        j->epochs[j->nepochs].start_seq = json_integer_value(json_array_get(v, 1));
        /* An upstream older than epoch ids sends none: store_set_identity derives them. */
        snprintf(j->epochs[j->nepochs].id, sizeof j->epochs[j->nepochs].id, "%s",
                 json_string_value(json_array_get(v, 2)) ?: "");
        j->nepochs++;
    }
    return j->nepochs > 0 ? 0 : -1;
}

static void
send_sync(struct repl_down *d)
{
    struct ls_position pos;
    struct ls_epoch *ep = NULL;
    char pending[8] = "0";
    json_t *inc = json_array(), *o, *epochs = json_array();
    int nep;
    store_position(d->srv->reader, &pos);
    /* The history this store holds, epoch ids included: the upstream finds the fork point. */
    nep = store_epoch_list_all(d->srv->reader, &ep);
    for (int i = 0; i < nep; i++)
        json_array_append_new(epochs, json_pack("[I,I,s]", (json_int_t)ep[i].epoch,
                                                (json_int_t)ep[i].start_seq, ep[i].id));
    free(ep);
    store_meta_get(d->srv->reader, "snapshot_pending", pending, sizeof pending);
    for (int i = 0; i < d->srv->cfg.include.n; i++)
        json_array_append_new(inc, json_string(d->srv->cfg.include.v[i]));
    o = json_pack("{s:s,s:I,s:I,s:b,s:{s:b,s:o}}", "store_id", pos.store_id, "epoch",
                  (json_int_t)pos.epoch, "seq", (json_int_t)pos.seq, "snapshot_pending",
                  strcmp(pending, "1") == 0 || d->want_snapshot, "filter", "published_only",
                  strcmp(d->srv->cfg.role, "staging") == 0, "include", inc);
    if (d->resync_from >= 0) json_object_set_new(o, "resync_from_seq", json_integer(d->resync_from));
    if (d->resync_since >= 0)
        json_object_set_new(o, "resync_since_ms", json_integer(d->resync_since));
    json_object_set_new(o, "epochs", epochs);
    d->resync_from = d->resync_since = -1;
    peer_send_json(&d->peer, F_SYNC, o);
    set_state(d, US_SYNC, "SYNC sent");
}

/* Refuses this upstream: the store stays as it is, and the next try comes after a back-off. */
static void
refuse(struct repl_down *d, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->last_error, sizeof d->last_error, fmt, ap);
    va_end(ap);
    d->refused = d->refused_now = 1;
    log_error("upstream %s refused: %s", d->srv->cfg.upstream, d->last_error);
    peer_fail(&d->peer, code, "%s", d->last_error);
}

#define CHAIN_MAX 32

/*
 * Checks what the upstream says of itself (WELCOME, and every PING: a cycle closed by two
 * handshakes at once shows only later): its chain of node_ids must not hold this server's
 * (itself, or a cycle), and an exact replica cannot follow a filtered store. 0: go on.
 */
static int
check_upstream(struct repl_down *d, json_t *o)
{
    json_t *chain = json_object_get(o, "chain"), *v;
    const char *role = json_string_value(json_object_get(o, "role"));
    int filtered =
        json_is_true(json_object_get(o, "filtered")) || (role && strcmp(role, "staging") == 0);
    size_t i;
    /* Kept even when refused: passed on in this server's own chain, it lets the other side of
     * a cycle see it too. */
    if (json_is_array(chain)) {
        json_decref(d->up_chain);
        d->up_chain = json_incref(chain);
    }
    json_array_foreach(chain, i, v)
    {
        if (!json_is_string(v) || strcmp(json_string_value(v), d->node_id) != 0) continue;
        if (i == 0)
            refuse(d, "same_node", "--upstream %s is this server itself: nobody would be writable",
                   d->srv->cfg.upstream);
        else
            refuse(d, "cycle",
                   "replication cycle: the upstream %s follows this server (%zu steps up its "
                   "chain): nobody would be writable; point one of them at the primary",
                   d->srv->cfg.upstream, i);
        return -1;
    }
    if (filtered && exact_replica(d->srv)) {
        refuse(d, "filtered_upstream",
               "the upstream %s (%s) holds a filtered store (staging or --include): an exact "
               "replica cannot follow it; point it at the primary or an exact replica",
               d->srv->cfg.upstream, role ? role : "?");
        return -1;
    }
    return 0;
}

static int
has_item(void *arg, const struct ls_item *it)
{
    *(int *)arg = 1;
    return 1;
}

/* Does this store hold a history of its own (anything but a new, empty store)? */
static int
own_history(struct server *srv)
{
    struct ls_error err;
    int any = 0;
    if (srv->pos.seq > 0) return 1;
    store_list(srv->reader, "/", "", 1, 1, has_item, &any, &err);
    return any;
}

static void
on_frame(struct peer *p, int type, const uint8_t *payload, size_t len)
{
    struct repl_down *d = p->owner;
    json_t *o = NULL;
    if (type != F_CHANGES && type != F_CHANGES_PART && type != F_SNAP_ITEMS && type != F_BLOB) {
        o = json_loadb((const char *)payload, len, 0, NULL);
        if (!json_is_object(o)) {
            json_decref(o);
            peer_fail(p, "protocol_error", "%s frame is not a JSON object", frame_type_name(type));
            return;
        }
    }
    d->up_seen_ms = ls_mono_ms();
    switch (type) {
    case F_WELCOME:
        if (d->state != US_HELLO) goto unexpected;
        if (check_upstream(d, o)) break;
        snprintf(d->up_name, sizeof d->up_name, "%s",
                 json_string_value(json_object_get(o, "name")) ?: "?");
        p->zstd = json_is_true(json_object_get(o, "zstd"));
        d->up_messenger = json_is_true(json_object_get(o, "messenger"));
        d->up_txn = json_is_true(json_object_get(o, "txn"));
        d->up_stream = d->up_txn && json_is_true(json_object_get(o, "stream"));
        snprintf(d->primary_http, sizeof d->primary_http, "%s",
                 json_string_value(json_object_get(o, "primary")) ?: "");
        send_sync(d);
        break;
    case F_CONTINUE: {
        struct job *j = calloc(1, sizeof *j);
        int64_t from = json_integer_value(json_object_get(o, "from"));
        if (d->state != US_SYNC || !j) goto unexpected;
        j->d = d;
        snprintf(j->store_id, sizeof j->store_id, "%s",
                 json_string_value(json_object_get(o, "store_id")) ?: "");
        parse_epochs(json_object_get(o, "epochs"), j);
        if (from < d->srv->pos.seq) {
            j->truncate = 1;
            j->seq = from;
            d->replay_upto = d->srv->pos.seq;
            log_info("resynchronizing from seq %lld", (long long)from);
        }
        j->new_history =
            j->truncate || (j->nepochs && j->epochs[j->nepochs - 1].epoch != d->srv->pos.epoch);
        submit_job(d, j);
        d->refused = 0;
        d->last_sync = "continue";
        d->last_sync_ms = ls_now_ms();
        d->recv_seq = from;
        set_state(d, US_STREAM, "CONTINUE");
        log_info("following %s from seq %lld", d->up_name, (long long)from);
        break;
    }
    case F_SNAPSHOT: {
        struct job *j = calloc(1, sizeof *j);
        if (d->state != US_SYNC || !j) goto unexpected;
        j->d = d;
        j->reset = 1;
        j->new_history = 1;
        snprintf(j->store_id, sizeof j->store_id, "%s",
                 json_string_value(json_object_get(o, "store_id")) ?: "");
        if (parse_epochs(json_object_get(o, "epochs"), j) || strlen(j->store_id) != 32) {
            job_free(j);
            goto unexpected;
        }
        if (strcmp(j->store_id, d->srv->pos.store_id) != 0 && own_history(d->srv)) {
            /* Another site's store would replace this one's own items without a trace. */
            if (!d->srv->cfg.replace_store) {
                refuse(d, "foreign_store",
                       "the upstream holds another store (%.32s) and this one (%.32s, seq "
                       "%lld) has its own history: not replacing it; start with "
                       "--replace-store to replace it (it is exported first)",
                       j->store_id, d->srv->pos.store_id, (long long)d->srv->pos.seq);
                job_free(j);
                break;
            }
            j->export_store = 1;
        }
        submit_job(d, j);
        d->refused = 0;
        d->want_snapshot = 0;
        d->replay_upto = 0;
        d->last_sync = "snapshot";
        d->last_sync_ms = ls_now_ms();
        set_state(d, US_SNAPSHOT, "SNAPSHOT");
        log_info("receiving a snapshot from %s at seq %lld (%s)", d->up_name,
                 (long long)json_integer_value(json_object_get(o, "seq")),
                 json_string_value(json_object_get(o, "reason")) ?: "");
        break;
    }
    case F_SNAP_ITEMS:
        if (d->state != US_SNAPSHOT) goto unexpected;
        on_records(d, payload, len, 1, 0);
        break;
    case F_SNAPSHOT_END: {
        struct job *j = calloc(1, sizeof *j);
        if (d->state != US_SNAPSHOT || !j) goto unexpected;
        j->d = d;
        j->snapshot_done = 1;
        j->seq = json_integer_value(json_object_get(o, "seq"));
        d->recv_seq = j->seq;
        submit_job(d, j);
        set_state(d, US_STREAM, "SNAPSHOT_END");
        log_info("snapshot received; following %s live", d->up_name);
        break;
    }
    case F_CHANGES:
        if (d->state != US_STREAM) goto unexpected;
        on_records(d, payload, len, 0, 0);
        break;
    case F_CHANGES_PART:
        if (d->state != US_STREAM || !d->up_txn) goto unexpected;
        on_records(d, payload, len, 0, 1);
        break;
    case F_ABORT: {
        /* The unit sent since `after` will not commit on the upstream: its parts are dropped,
         * and what comes next (its seqs again, maybe) follows `after`. */
        json_t *a = json_object_get(o, "after");
        int64_t after = json_integer_value(a);
        if (d->state != US_STREAM || !d->up_stream) goto unexpected;
        if (!json_is_integer(a) || after < 0 || after > d->recv_seq) {
            json_decref(o);
            peer_fail(p, "protocol_error", "ABORT after seq %lld, received up to %lld",
                      (long long)after, (long long)d->recv_seq);
            return;
        }
        log_info("the upstream rolled back the unit after seq %lld: dropping its %lld received "
                 "seqs",
                 (long long)after, (long long)(d->recv_seq - after));
        abort_unit(d, ABORT_DISCARD);
        d->recv_seq = after;
        break;
    }
    case F_BLOB:
        if (d->state != US_STREAM && d->state != US_SNAPSHOT) goto unexpected;
        on_blob(d, payload, len);
        break;
    case F_FORK: {
        struct job *j = calloc(1, sizeof *j);
        if (d->state != US_SYNC || !j) goto unexpected;
        j->d = d;
        j->fork_at = json_integer_value(json_object_get(o, "at"));
        if (j->fork_at <= 0) j->fork_at = 0;
        d->fork_pending = 1;
        if (j->fork_at == 0) j->fork_at = -1; /* nothing in common: save everything */
        submit_job(d, j);
        break;
    }
    case F_PING:
        if (check_upstream(d, o)) break;
        d->up_seq = json_integer_value(json_object_get(o, "seq"));
        if (json_is_string(json_object_get(o, "primary")))
            snprintf(d->primary_http, sizeof d->primary_http, "%s",
                     json_string_value(json_object_get(o, "primary")));
        site_list_parse(&d->site, o, SITE_MAX);
        break;
    case F_PUBLISH_ACK:
        if (d->state != US_STREAM || !d->up_messenger) goto unexpected;
        forward_on_ack(d->srv, o);
        break;
    case F_ERROR: {
        const char *code = json_string_value(json_object_get(o, "code"));
        /* The upstream's own reason, kept over the close that follows (on_close). */
        snprintf(d->last_error, sizeof d->last_error, "the upstream refused: %s (%s)",
                 json_string_value(json_object_get(o, "message")) ?: "?", code ? code : "?");
        d->peer_error_now = 1;
        log_warn("upstream %s: %s", p->addr, d->last_error);
        /* The upstream refused this server for what it is: retrying will not help by itself. */
        if (code && strcmp(code, "same_node") == 0) {
            d->refused = d->refused_now = 1;
            log_error("upstream %s refused: %s", d->srv->cfg.upstream, d->last_error);
        }
        break;
    }
    default:
        goto unexpected;
    }
    json_decref(o);
    return;
unexpected:
    json_decref(o);
    peer_fail(p, "protocol_error", "unexpected %s frame", frame_type_name(type));
}

static void
on_connected(struct peer *p)
{
    struct repl_down *d = p->owner;
    json_t *hello =
        json_pack("{s:i,s:s,s:s,s:s,s:b,s:s,s:b,s:b}", "proto", LS_PROTO_VERSION, "name",
                  d->srv->cfg.name, "role", d->srv->cfg.role, "version", LS_VERSION, "zstd",
                  strcmp(d->srv->cfg.compress, "zstd") == 0, "node_id", d->node_id, "messenger",
                  1, "txn", 1);
    json_object_set_new(hello, "stream", json_true());
    if (d->srv->upstream_token)
        json_object_set_new(hello, "token", json_string(d->srv->upstream_token));
    peer_send_json(p, F_HELLO, hello);
    d->refused_now = d->peer_error_now = 0;
    set_state(d, US_HELLO, "connected; HELLO sent");
}

static void
abort_done(struct wreq *r, void *arg)
{
    wreq_free(r);
}

/* The rest of the unit will not come (how: 1, or ABORT_DISCARD for an ABORT): the writer rolls
 * back what it holds of it. */
static void
abort_unit(struct repl_down *d, int how)
{
    struct wreq *r;
    d->unit_records = 0;
    if (!d->in_unit) return;
    d->in_unit = 0;
    if (!(r = calloc(1, sizeof *r))) {
        /* The writer keeps waiting for this session; stopping the server ends the unit. */
        log_error("out of memory: cannot abandon a replicated unit");
        return;
    }
    r->type = WREQ_CUSTOM;
    r->abort_unit = how;
    r->session = d;
    r->done = abort_done;
    writer_submit(d->srv->writer, r);
}

static void
on_close(struct peer *p, const char *why)
{
    struct repl_down *d = p->owner;
    blob_reset(d);
    abort_unit(d, 1);
    if (!d->stopping && d->state == US_CONNECTING && d->addr_next) {
        /* This address of the upstream's name refused: the next one, at once. */
        struct timeval now = {0, 0};
        log_info("upstream %s: %s; trying its next address", d->srv->cfg.upstream, why);
        set_state(d, US_IDLE, why);
        evtimer_add(d->retry, &now);
        return;
    }
    d->addr_next = NULL; /* the next connection resolves the name again */
    if (!d->stopping) {
        log_info("upstream %s: %s; reconnecting", d->srv->cfg.upstream, why);
        /* else last_error keeps why it was refused, here or by the upstream */
        if (!d->refused_now && !d->peer_error_now) {
            snprintf(d->last_error, sizeof d->last_error, "%s", why);
            d->refused = 0;
        }
    }
    schedule_retry(d, why);
}

static const struct peer_ops down_ops = {
    .on_frame = on_frame, .on_connected = on_connected, .on_close = on_close};

/* Connects to one address of the upstream (d->addrs holds it). */
static void
connect_addr(struct repl_down *d, const struct evutil_addrinfo *a)
{
    struct bufferevent *bev;
    char addr[80];
    format_sockaddr(a->ai_addr, addr, sizeof addr);
    if (d->srv->tls_client) {
        char host[256];
        int port;
        /* The name to verify the certificate against: the one configured, not the address. */
        if (net_split_hostport(d->srv->cfg.upstream, host, sizeof host, &port)) host[0] = '\0';
        bev = bufferevent_openssl_socket_new(d->srv->base, -1,
                                             tls_client_ssl(d->srv->tls_client, host),
                                             BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
        if (bev) bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    } else {
        bev = bufferevent_socket_new(d->srv->base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    peer_init(&d->peer, bev, &down_ops, d, d->srv->cfg.upstream,
              d->srv->cfg.heartbeat_timeout_ms);
    set_state(d, US_CONNECTING, addr);
    if (bufferevent_socket_connect(bev, a->ai_addr, (int)a->ai_addrlen) < 0)
        peer_fail(&d->peer, NULL, "cannot connect to %s", addr);
}

static void
on_resolved(int result, struct evutil_addrinfo *res, void *arg)
{
    struct lookup *l = arg;
    struct repl_down *d = l->d;
    free(l);
    if (!d) { /* abandoned (halted, or the server stops): d may be gone */
        if (res) evutil_freeaddrinfo(res);
        return;
    }
    d->lookup = NULL;
    d->dns_req = NULL;
    if (result != 0 || !res) {
        char msg[sizeof d->last_error];
        if (res) evutil_freeaddrinfo(res);
        snprintf(msg, sizeof msg, "cannot resolve the upstream %s: %s", d->srv->cfg.upstream,
                 evutil_gai_strerror(result));
        /* Once per new error, not at every retry of an outage. */
        if (strcmp(msg, d->last_error) != 0) log_error("%s; retrying (DNS may come back)", msg);
        snprintf(d->last_error, sizeof d->last_error, "%s", msg);
        d->refused = 0;
        schedule_retry(d, "cannot resolve");
        return;
    }
    if (d->addrs) evutil_freeaddrinfo(d->addrs);
    d->addrs = res;
    d->addr_next = res->ai_next;
    connect_addr(d, res);
}

/* Looks the upstream's name up without blocking; on_resolved goes on from there. */
static void
resolve_upstream(struct repl_down *d)
{
    struct evutil_addrinfo hints;
    struct evdns_getaddrinfo_request *req;
    char host[256], port[8];
    int p;
    struct lookup *l;
    if (net_split_hostport(d->srv->cfg.upstream, host, sizeof host, &p) ||
        !(l = calloc(1, sizeof *l))) {
        /* check_config refused a bad --upstream: only memory can fail here */
        snprintf(d->last_error, sizeof d->last_error, "--upstream %s: cannot resolve",
                 d->srv->cfg.upstream);
        schedule_retry(d, d->last_error);
        return;
    }
    snprintf(port, sizeof port, "%d", p);
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    l->d = d;
    d->lookup = l;
    set_state(d, US_RESOLVING, host);
    /* May answer at once (a numeric address, /etc/hosts): on_resolved has run then. */
    req = evdns_getaddrinfo(d->dns, host, port, &hints, on_resolved, l);
    if (req && d->lookup == l) d->dns_req = req;
}

/* Stops waiting for the lookup in flight; its callback frees it later. */
static void
abandon_lookup(struct repl_down *d)
{
    if (!d->lookup) return;
    d->lookup->d = NULL;
    d->lookup = NULL;
    if (d->dns_req) evdns_getaddrinfo_cancel(d->dns_req);
    d->dns_req = NULL;
}

static void
connect_upstream(struct repl_down *d)
{
    if (d->stopping) return;
    if (d->inflight > 0 || d->fork_pending) { /* let the writer finish first */
        /* Soon again, without touching the back-off: the session that just failed counts. */
        struct timeval tv = {0, RETRY_MIN_MS * 1000};
        set_state(d, US_IDLE, "waiting for the writer");
        evtimer_add(d->retry, &tv);
        return;
    }
    d->chain_failed = 0; /* nothing in flight: the next session starts from the position */
    if (d->addr_next) {  /* the previous address refused: the next one of the same lookup */
        const struct evutil_addrinfo *a = d->addr_next;
        d->addr_next = a->ai_next;
        connect_addr(d, a);
        return;
    }
    resolve_upstream(d);
}

static void
on_retry(evutil_socket_t fd, short what, void *arg)
{
    connect_upstream(arg);
}

static void
send_ping(evutil_socket_t fd, short what, void *arg)
{
    struct repl_down *d = arg;
    struct timeval tv = {PING_MS / 1000, (PING_MS % 1000) * 1000};
    if (d->state >= US_SYNC && !d->peer.closed) {
        json_t *o = server_info(d->srv);
        site_ping_fields(d->srv, o, 0, &d->site_pace); /* this server and its subtree */
        peer_send_json(&d->peer, F_PING, o);
    }
    evtimer_add(d->ping, &tv);
}

/* ---------------------------------------------------------------- server interface */

int
repl_down_start(struct server *srv, struct ls_error *err)
{
    struct repl_down *d = calloc(1, sizeof *d);
    struct timeval tv = {PING_MS / 1000, 0};
    if (!d) return ls_error_set(err, LS_ENOMEM, NULL);
    d->srv = srv;
    d->blob_fd = -1;
    store_meta_get(srv->reader, "node_id", d->node_id, sizeof d->node_id);
    d->backoff_ms = RETRY_MIN_MS;
    d->resync_from = d->resync_since = -1;
    d->last_sync = "none";
    d->peer.closed = 1;
    d->applied_seq = -1;
    if (!(d->dns = net_dns_new(srv->base, err))) {
        free(d);
        return err->code;
    }
    d->retry = evtimer_new(srv->base, on_retry, d);
    d->ping = evtimer_new(srv->base, send_ping, d);
    evtimer_add(d->ping, &tv);
    srv->down = d;
    connect_upstream(d);
    return 0;
}

void
repl_down_stop(struct server *srv)
{
    struct repl_down *d = srv->down;
    if (!d) return;
    d->stopping = 1;
    if (!d->peer.closed) peer_release(&d->peer);
    blob_reset(d);
    if (d->lookup) d->lookup->d = NULL; /* its callback comes, without d, as the base frees */
    d->lookup = NULL;
    /* Requests still in flight fail (their callbacks run later, on the loop) rather than leak */
    evdns_base_free(d->dns, 1);
    if (d->addrs) evutil_freeaddrinfo(d->addrs);
    event_free(d->retry);
    event_free(d->ping);
    if (d->blob_md) EVP_MD_CTX_free(d->blob_md);
    json_decref(d->up_chain);
    site_list_release(&d->site);
    srv->down = NULL;
    /* Writer requests still in flight point at d: they finish before the writer stops, and
     * job_done must not run after this; the server stops the writer before calling us. */
    free(d);
}

void
repl_down_status(struct server *srv, json_t *o)
{
    struct repl_down *d = srv->down;
    const char *state = "down";
    char t[40];
    if (!d) return;
    switch (d->state) {
    case US_IDLE: state = d->refused ? "refused" : "down"; break;
    case US_RESOLVING:
    case US_CONNECTING:
    case US_HELLO:
    case US_SYNC: state = d->refused ? "refused" : "connecting"; break;
    case US_SNAPSHOT: state = "snapshot"; break;
    case US_STREAM: state = srv->pos.seq >= d->up_seq ? "live" : "catching-up"; break;
    }
    json_object_set_new(o, "upstream", json_string(srv->cfg.upstream));
    json_object_set_new(o, "upstream_name", json_string(d->up_name));
    json_object_set_new(o, "primary", json_string(d->primary_http));
    json_object_set_new(o, "state", json_string(state));
    json_object_set_new(o, "last_sync", json_string(d->last_sync));
    if (d->last_sync_ms) {
        ls_format_time(d->last_sync_ms, t, sizeof t);
        json_object_set_new(o, "last_sync_time", json_string(t));
    }
    json_object_set_new(o, "upstream_seq", json_integer(d->up_seq));
    json_object_set_new(o, "lag_changes",
                        json_integer(d->up_seq > srv->pos.seq ? d->up_seq - srv->pos.seq : 0));
    /* a unit being received (CHANGES_PART): its records so far, none of them visible yet */
    json_object_set_new(o, "unit_received", json_integer(d->unit_records));
    if (d->last_error[0]) json_object_set_new(o, "last_error", json_string(d->last_error));
}

json_t *
repl_down_chain(struct server *srv)
{
    struct repl_down *d = srv->down;
    json_t *a = json_array(), *v;
    char id[33] = "";
    size_t i;
    store_meta_get(srv->reader, "node_id", id, sizeof id);
    json_array_append_new(a, json_string(id));
    /* A promoted server follows nobody: the chain it knew is not above it any more. */
    if (d && d->up_chain && strcmp(srv->cfg.role, "primary") != 0)
        json_array_foreach(d->up_chain, i, v)
        {
            if (json_array_size(a) >= CHAIN_MAX) break;
            if (json_is_string(v)) json_array_append(a, v);
        }
    return a;
}

int
repl_down_send_json(struct server *srv, int type, json_t *o)
{
    struct repl_down *d = srv->down;
    if (!d || d->state != US_STREAM || !d->up_messenger || d->peer.closed) return -1;
    return peer_send_json(&d->peer, type, json_incref(o));
}

const char *
repl_down_node_id(struct server *srv)
{
    return srv->down ? srv->down->node_id : "";
}

const char *
repl_down_primary(struct server *srv)
{
    return srv->down && srv->down->primary_http[0] ? srv->down->primary_http : NULL;
}

void
repl_down_resume(struct server *srv)
{
    struct repl_down *d = srv->down;
    if (!d) return;
    d->stopping = 0;
    d->backoff_ms = RETRY_MIN_MS;
    schedule_retry(d, "resumed");
}

void
repl_down_halt(struct server *srv)
{
    struct repl_down *d = srv->down;
    if (!d) return;
    d->stopping = 1;
    evtimer_del(d->retry);
    abandon_lookup(d);
    d->addr_next = NULL;
    if (!d->peer.closed) peer_release(&d->peer);
    abort_unit(d, 1); /* peer_release calls no on_close: a unit held by the writer ends here */
    set_state(d, US_IDLE, "halted");
}

int
repl_down_resync(struct server *srv, int64_t from_seq, int64_t since_ms, struct ls_error *err)
{
    struct repl_down *d = srv->down;
    if (!d) return ls_error_set(err, LS_EINVAL, "this server follows no upstream");
    d->resync_from = from_seq;
    d->resync_since = since_ms;
    log_info("resync requested (%s %lld)", from_seq >= 0 ? "from seq" : "since",
             (long long)(from_seq >= 0 ? from_seq : since_ms));
    if (!d->peer.closed) peer_fail(&d->peer, NULL, "resynchronizing on request");
    return 0;
}

const char *
repl_down_upstream_name(struct server *srv)
{
    struct repl_down *d = srv->down;
    if (!d) return NULL;
    return d->up_name[0] ? d->up_name : srv->cfg.upstream;
}

void
repl_down_site(struct server *srv, struct site_set *s)
{
    struct repl_down *d = srv->down;
    int64_t now = ls_now_ms(), now_mono = ls_mono_ms();
    int linked, old;
    struct site_rec r;
    if (!d) return;
    linked = d->state >= US_SYNC && !d->peer.closed;
    old = !linked || site_list_old(&d->site, now_mono);
    for (size_t i = 0; i < d->site.n; i++) {
        r = d->site.recs[i];
        if (i == 0) { /* the upstream itself, as the link shows it */
            r.heard_ms = now - (now_mono - d->up_seen_ms);
            r.state = !linked                             ? SITE_DOWN
                      : now_mono - d->up_seen_ms > SITE_STALE_MS ? SITE_STALE
                                                               : SITE_ACTIVE;
        } else if (old && r.state == SITE_ACTIVE) {
            r.state = SITE_STALE; /* not heard of lately */
        }
        site_set_add(s, &r, 2);
    }
}
