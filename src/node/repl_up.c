/*
 * repl_up.c - the upstream side of replication: every server (primary or replica) accepts
 * downstreams on its peer port and feeds each one from a position in its own log.
 *
 * One struct downstream per connection, with an explicit state:
 *   DS_HELLO -> DS_SYNC -> DS_SNAPSHOT -> DS_STREAM          (closing: DS_DOWN)
 * The log is read at the downstream's pace: more entries are read only when the connection's
 * output buffer has drained below PEER_HIGH_WATER/2, so a downstream a million changes behind,
 * or stalled, costs the same memory as a live one. Blobs travel in BLOB frames ahead of the
 * records that use them.
 *
 * The registry (GET /v1/nodes) remembers the downstreams seen since start, connected or not:
 * a departed one for NODE_FORGET_MS, and at most NODES_DOWN_MAX departed ones (the longest gone
 * are forgotten first), so made-up names cannot grow it without bound. A name belongs to one
 * live connection: another HELLO with it is refused (name_in_use) unless the first has gone
 * silent for --heartbeat-timeout or both carry the same node_id (the same server reconnecting).
 */
#include "node/net.h"
#include "node/peer.h"
#include "node/server.h"
#include "node/site.h"
#include "common/log.h"
#include "common/util.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define BATCH_ENTRIES 2000
#define BATCH_BYTES (512u << 10)
#define BLOB_CHUNK (1u << 20)
#define MAX_INCLUDE 16
#define PING_MS 1000
#define NODES_DOWN_MAX 256                      /* departed downstreams remembered at most */
#define NODE_FORGET_MS (6 * 3600 * 1000LL)      /* a departed downstream is forgotten after this */
#define WAL_CHECK_MS 1000                       /* how often --snapshot-max-wal is checked */
#define WAL_DROP_GRACE_MS 5000 /* after a drop, time for the checkpoint before the next one */

enum ds_state { DS_HELLO, DS_SYNC, DS_SNAPSHOT, DS_STREAM, DS_DOWN };
static const char *const ds_state_names[] = {"connecting", "connecting", "snapshot", "live",
                                             "down"};

/* What the registry keeps of a downstream, whether or not it is connected. */
struct node {
    struct node *next;
    char name[64], role[16], version[32], addr[80];
    int64_t acked_seq, acked_ms, last_heartbeat_ms, connected_ms;
    struct downstream *conn; /* NULL when down */
    int64_t disconnected_ms;
    char last_error[200];
    char node_id[65]; /* HELLO's node_id when it had one: the same server reconnecting */
    struct site_list site; /* its subtree, itself first, as its last PING with a list said */
};

struct downstream {
    struct peer peer;
    struct server *srv;
    struct repl_up *up;
    struct downstream *next;
    enum ds_state state;
    struct node *node;
    int published_only;
    char *include[MAX_INCLUDE];
    int ninclude;
    int64_t sent_seq; /* the upto of the last CHANGES frame sent */
    struct store_snapshot *snap;
    struct qrec *queue, **queue_tail; /* records read, not yet in a frame */
    struct ls_wbuf frame;                /* records not yet sent */
    int frame_type;
    int64_t read_upto;  /* how far the log has been read for this downstream */
    int64_t read_first; /* the first seq the last read returned (0: none) */
    int64_t frame_seq;  /* seq of the last record in the frame */
    int blob_fd;
    uint64_t blob_off, blob_size;
    unsigned char blob_sha[32];
    struct seq_waiter w;
    struct event *ping;
    int64_t accepted_ms;     /* mono_ms: HELLO must come within --heartbeat-timeout */
    int64_t snap_started_ms; /* mono_ms: when its snapshot began (--snapshot-max-wal) */
    int64_t snap_wal_size;   /* the -wal file's size then */
    unsigned site_pace;      /* PINGs left until the next one with the site list */
    int pumping;
    int dead; /* closed; freed from the loop, never while its callbacks run */
    int messenger;   /* it takes notifications, and may send NOTIFY (forward.c) */
    int txn;         /* it takes CHANGES_PART and REC_MORE (docs/streaming.md) */
    int read_more;   /* the entry at read_upto is not the last of its unit (LOG_MORE) */
    int frame_more;  /* ... nor the one of the frame's last record */
    int cur_more;    /* ... nor the entry whose records are being queued */
    /* feature stream (docs/streaming.md): it takes units before they commit, and ABORT */
    int stream;
    int streaming;      /* counted in the tail's streamers (exact, live) */
    int reading_open;   /* on_log_entry is passed uncommitted entries */
    int part_open;      /* the last frame sent was a CHANGES_PART */
    uint64_t unit_gen;  /* the uncommitted unit read from the tail, or 0 */
    int64_t unit_after; /* ... the seq before it */
    int unit_more;      /* ... whether the entry at read_upto really had MORE */
    int64_t unit_read;  /* ... its entries read before it committed */
    uint64_t serial; /* names this connection to work that answers it later */
};

/* A record encoded and waiting for its frame; blob records send their blob first. */
struct qrec {
    struct qrec *next;
    int64_t seq;
    int has_blob;
    int more; /* its log entry is not the last of its unit */
    unsigned char sha[32];
    size_t len;
    uint8_t data[];
};

struct repl_up {
    struct server *srv;
    struct evconnlistener *listener;
    struct downstream *conns;
    struct node *nodes;
    uint64_t serials;
    struct event *wal_timer;   /* --snapshot-max-wal */
    int64_t wal_quiet_until;   /* mono_ms: no drop before, the last one is being checkpointed */
    size_t site_held;          /* records in every node's site list together (SITE_HELD_MAX) */
    struct repl_up_counters counted; /* bytes_sent: of the connections closed so far */
    /* A CHANGES frame is assembled here (upto, then the records): one buffer for every
     * downstream, kept, rather than one grown from nothing and freed for each frame. */
    struct ls_wbuf out;
    /* The last large frame compressed: downstreams at the same place get the same frames,
     * compressed once (used while more than one downstream is live). */
    struct peer_zcache zcache;
};

static void pump(struct downstream *ds);
static int unit_state(struct downstream *ds);
static int read_open(struct downstream *ds);

#define DS_FROM(s) (1u << (s))
/* For each state, the states it may be entered from; anything else is a bug. */
static const unsigned ds_allowed_from[] = {
    [DS_SYNC] = DS_FROM(DS_HELLO),
    [DS_SNAPSHOT] = DS_FROM(DS_SYNC),
    [DS_STREAM] = DS_FROM(DS_SYNC) | DS_FROM(DS_SNAPSHOT),
};

/* Every change of ds->state goes through here (as repl_down.c's set_state). */
static void
ds_set_state(struct downstream *ds, enum ds_state to)
{
    static const char *const names[] = {"hello", "sync", "snapshot", "stream", "down"};
    if (!(ds_allowed_from[to] & DS_FROM(ds->state))) { /* a bug: loud in every build */
        log_error("downstream %s: %s -> %s is not an allowed state change", ds->peer.addr,
                  names[ds->state], names[to]);
        assert(!"downstream state change not in the table");
    }
    log_debug("downstream %s: %s -> %s", ds->peer.addr, names[ds->state], names[to]);
    ds->state = to;
    /* Units before they commit go only to an exact downstream: a filter reads the store for
     * some entries (a move into --include, staging's publishes), which cannot see them. */
    if (to == DS_STREAM && ds->stream && !ds->streaming && ds->ninclude == 0 &&
        !ds->published_only) {
        ds->streaming = 1;
        tail_streamers_add(ds->srv->tail, 1);
    }
}

/* ---------------------------------------------------------------- filters */

static int
under(const char *path, const char *prefix)
{
    size_t n = strlen(prefix);
    while (n > 1 && prefix[n - 1] == '/') n--;
    if (n == 1 && prefix[0] == '/') return 1;
    return strncmp(path, prefix, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

static int
included(void *arg, const char *path)
{
    struct downstream *ds = arg;
    if (ds->ninclude == 0) return 1;
    for (int i = 0; i < ds->ninclude; i++)
        if (under(path, ds->include[i])) return 1;
    return 0;
}

/* ---------------------------------------------------------------- sending records */

static void
add_record(struct downstream *ds, const struct ls_entry *e)
{
    struct ls_wbuf w;
    struct qrec *q;
    struct ls_entry t = *e;
    if (!ds->txn) t.flags &= ~REC_MORE; /* it would refuse the record */
    ls_wbuf_init(&w, LS_FRAME_MAX / 2);
    rec_encode(&w, &t);
    if (w.failed || !(q = malloc(sizeof *q + w.len))) {
        ls_wbuf_release(&w);
        ds->frame.failed = 1; /* reported when the frame is flushed */
        return;
    }
    q->next = NULL;
    q->seq = e->seq;
    q->more = ds->cur_more;
    q->has_blob = (e->flags & REC_DATA) && e->body_kind == BODY_BLOB;
    memcpy(q->sha, e->sha, 32);
    q->len = w.len;
    memcpy(q->data, w.p, w.len);
    ls_wbuf_release(&w);
    *ds->queue_tail = q;
    ds->queue_tail = &q->next;
}

static void
queue_clear(struct downstream *ds)
{
    while (ds->queue) {
        struct qrec *q = ds->queue;
        ds->queue = q->next;
        free(q);
    }
    ds->queue_tail = &ds->queue;
}

/* Sends version v of the item at path as a put (published when it is the published one). */
static void
send_version(struct downstream *ds, int64_t seq, const char *path, int64_t v, int flags)
{
    struct ls_item it;
    struct ls_error err;
    struct ls_entry t;
    if (v <= 0 || store_get(ds->srv->reader, path, v, 1, &it, &err)) return;
    memset(&t, 0, sizeof t);
    t.seq = seq;
    t.op = LS_OP_PUT;
    t.ts = it.mtime;
    t.path = it.path;
    t.version = it.version;
    t.flags = flags | REC_DATA | (it.published_version == it.version ? REC_PUBLISHED : 0);
    t.kind = it.kind;
    t.meta = it.meta;
    t.size = it.size;
    memcpy(t.sha, it.sha, 32);
    t.body_kind = it.in_blob ? BODY_BLOB : BODY_INLINE;
    t.body = it.body;
    t.body_len = it.in_blob ? 0 : it.size;
    add_record(ds, &t);
    item_release(&it);
}

/*
 * An item moved into an --include subtree: the downstream never had it, so it gets the item as
 * it is now: the published version (flagged, so it stays the published one) and then the
 * latest, when that is newer. Earlier history is not sent; live state and digests agree.
 */
static void
enter_subtree(struct downstream *ds, const struct ls_entry *e)
{
    struct ls_item it;
    struct ls_error err;
    int64_t published, latest;
    if (store_get(ds->srv->reader, e->to, 0, 0, &it, &err)) return;
    published = it.published_version;
    latest = it.version;
    item_release(&it);
    /* Two records, one seq: the first is applied without a log entry. */
    int second = !ds->published_only && latest != published;
    if (published > 0)
        send_version(ds, e->seq, e->to, published, second ? REC_NOLOG : (e->flags & REC_MORE));
    if (second) send_version(ds, e->seq, e->to, latest, e->flags & REC_MORE);
}

/* A log entry as this downstream should see it (its filter), or nothing. */
static int
on_log_entry(void *arg, const struct ls_entry *e)
{
    struct downstream *ds = arg;
    struct ls_entry t = *e;
    int in = included(ds, e->path);

    ds->read_upto = e->seq;
    ds->read_more = ds->cur_more = (e->flags & REC_MORE) != 0;
    if (ds->reading_open) {
        /* Not committed: whatever its flag, its unit is not over until the commit says so. */
        ds->unit_more = ds->read_more;
        ds->read_more = ds->cur_more = 1;
        ds->unit_read++;
    }
    if (!ds->read_first) ds->read_first = e->seq;
    /* Notifications reach every server of the site, whatever its filter (docs/messenger.md);
     * a downstream too old to know them does without. */
    if (e->op == LS_OP_NOTIFY) {
        if (ds->messenger) add_record(ds, &t);
        return 0;
    }
    if (e->op == LS_OP_MOVE && ds->ninclude) {
        int to_in = included(ds, e->to);
        if (in && !to_in) { /* leaves the subtree: gone from here */
            t.op = LS_OP_PURGE;
            t.flags &= REC_MORE;
            add_record(ds, &t);
            return 0;
        }
        if (!in && to_in) { /* enters it: send the item as it is now */
            enter_subtree(ds, e);
            return 0;
        }
    }
    if (!in) return 0;
    if (ds->published_only) {
        switch (e->op) {
        case LS_OP_PUT:
            if (!(e->flags & REC_PUBLISHED)) return 0; /* drafts never reach staging */
            break;
        case LS_OP_PUBLISH: /* staging gets the published version as its only version */
            t.op = LS_OP_PUT;
            t.flags |= REC_PUBLISHED;
            if (!(t.flags & REC_DATA)) return 0;
            break;
        case LS_OP_UNPUBLISH:
        case LS_OP_DELETE:
            t.op = LS_OP_PURGE;
            t.flags &= REC_MORE;
            break;
        default: break;
        }
    } else if (e->op == LS_OP_PUBLISH) {
        /* A replica holds the latest version, and every version made since its snapshot; an
         * older one it may lack (left out by --sync-max-versions, pruned by its own
         * --max-versions, or before the item entered its --include): that one goes first, as
         * a restore of the same seq. */
        int64_t latest = 0;
        int older = 0;
        /* The item is found by the entry's item id, not by its path: it may have moved (or
         * been deleted) since, and the version is still needed to replay this publish. When
         * even that fails the restore goes out anyway: it changes nothing where not needed. */
        if ((t.flags & REC_DATA) && t.body_kind != BODY_MISSING)
            older = store_log_item_version(ds->srv->reader, e->seq, &latest) != 0 ||
                    latest != e->version;
        if (older) {
            struct ls_entry r = t;
            r.op = LS_OP_PUT;
            r.flags = REC_DATA | REC_NOLOG | REC_RESTORE; /* not the seq's last: no MORE */
            add_record(ds, &r);
        }
        t.flags &= ~REC_DATA;
    }
    add_record(ds, &t);
    return 0;
}

static int
on_snap_entry(void *arg, const struct ls_entry *e)
{
    ((struct downstream *)arg)->cur_more = 0;
    add_record(arg, e);
    return 0;
}

/* Opens the blob a record needs. 0 when there is nothing to send (then the record goes out as
 * it is: the downstream, finding no blob, keeps a placeholder that a later entry replaces). */
static int
blob_open(struct downstream *ds, const unsigned char sha[32])
{
    char path[4300];
    struct stat sb;
    store_blob_path(ds->srv->reader, sha, path, sizeof path);
    ds->blob_fd = open(path, O_RDONLY | O_CLOEXEC);
    if (ds->blob_fd < 0) return 0;
    if (fstat(ds->blob_fd, &sb) < 0) {
        close(ds->blob_fd);
        ds->blob_fd = -1;
        return 0;
    }
    memcpy(ds->blob_sha, sha, 32);
    ds->blob_size = (uint64_t)sb.st_size;
    ds->blob_off = 0;
    return 1;
}

/* Sends the next piece (at most BLOB_CHUNK) of the blob in progress. */
static void
blob_send_piece(struct downstream *ds)
{
    struct ls_wbuf w;
    uint8_t *chunk = malloc(BLOB_CHUNK);
    ssize_t n = chunk ? read(ds->blob_fd, chunk, BLOB_CHUNK) : -1;
    if (n < 0) n = 0;
    ls_wbuf_init(&w, BLOB_CHUNK + 128);
    ls_put_bytes(&w, ds->blob_sha, 32);
    ls_put_varint(&w, ds->blob_size);
    ls_put_varint(&w, ds->blob_off);
    ls_put_bytes(&w, chunk, (size_t)n);
    free(chunk);
    peer_send(&ds->peer, F_BLOB, w.p, w.len);
    ls_wbuf_release(&w);
    ds->blob_off += (uint64_t)n;
    if (n == 0 || ds->blob_off >= ds->blob_size) {
        close(ds->blob_fd);
        ds->blob_fd = -1;
    }
}

/*
 * Sends the records gathered so far. A CHANGES frame starts with how far it reaches (upto):
 * the last record's seq while more records wait, or everything read (including entries the
 * filter dropped) once the queue is empty. A downstream never skips an entry it has not got.
 */
/* Downstreams receiving changes now. */
static int
live_downstreams(const struct repl_up *up)
{
    int n = 0;
    for (const struct downstream *d = up->conns; d; d = d->next)
        if (d->state == DS_STREAM && !d->dead) n++;
    return n;
}

static void
flush_records(struct downstream *ds)
{
    if (ds->frame.failed) {
        peer_fail(&ds->peer, "internal", "a record does not fit in a frame");
        return;
    }
    ds->peer.zcache = live_downstreams(ds->up) > 1 ? &ds->up->zcache : NULL;
    if (ds->frame_type == F_CHANGES) {
        struct ls_wbuf *out = &ds->up->out;
        int64_t upto = ds->queue ? ds->frame_seq : ds->read_upto;
        /* A frame that ends inside a unit tells a `txn` downstream to keep it uncommitted. */
        int type = ds->txn && (ds->queue ? ds->frame_more : ds->read_more) ? F_CHANGES_PART
                                                                          : F_CHANGES;
        /* A position only moves forward, and only past what was read for this downstream. */
        assert(upto >= ds->sent_seq && upto <= ds->read_upto);
        assert(ds->frame.len == 0 || ds->frame_seq <= upto);
        out->len = 0;
        out->failed = 0;
        out->max = LS_FRAME_MAX;
        ls_put_varint(out, (uint64_t)upto);
        ls_put_raw(out, ds->frame.p, ds->frame.len);
        if (out->failed) {
            ds->peer.zcache = NULL;
            peer_fail(&ds->peer, "internal", "a frame does not fit");
            return;
        }
        peer_send(&ds->peer, type, out->p, out->len);
        ds->part_open = type == F_CHANGES_PART;
        /* A one-off large frame does not keep its buffer (a snapshot's or a catch-up's are
         * at most LS_FRAME_MAX, the usual ones BATCH_BYTES and a little more). */
        if (out->cap > 2 * BATCH_BYTES) ls_wbuf_release(out);
        ds->sent_seq = upto;
    } else if (ds->frame.len > 0) {
        peer_send(&ds->peer, ds->frame_type, ds->frame.p, ds->frame.len);
    }
    ds->peer.zcache = NULL;
    ds->frame.len = 0;
}

/* ---------------------------------------------------------------- the pump */

static void
on_commit_wait(struct seq_waiter *w, int timed_out)
{
    pump(w->arg);
}

static void
finish_snapshot(struct downstream *ds)
{
    store_snapshot_close(ds->snap);
    ds->snap = NULL;
    peer_send_json(&ds->peer, F_SNAPSHOT_END, json_pack("{s:I}", "seq", (json_int_t)ds->sent_seq));
    log_info("snapshot for %s complete at seq %lld", ds->node->name, (long long)ds->sent_seq);
    ds_set_state(ds, DS_STREAM);
    ds->frame_type = F_CHANGES;
    ds->read_upto = ds->sent_seq;
    ds->read_more = 0;
}

/* Reads uncommitted entries of the unit being written, after read_upto: how many, or -1. */
static int
read_open(struct downstream *ds)
{
    uint64_t gen = ds->unit_gen; /* the unit it reads already, not one begun since */
    int64_t after = 0;
    int n;
    ds->reading_open = 1;
    n = tail_read_open(ds->srv->tail, ds->read_upto, BATCH_ENTRIES, BATCH_BYTES, on_log_entry, ds,
                       &gen, &after);
    ds->reading_open = 0;
    if (n > 0 && !ds->unit_gen) {
        ds->unit_gen = gen;
        ds->unit_after = after;
        log_debug("downstream %s: streaming the unit after seq %lld before it commits",
                  ds->node->name, (long long)after);
    }
    return n;
}

/*
 * The unit this downstream was sent before it committed: still open (read on: the count read,
 * 0 for nothing now), committed (-1: read on as usual, the entries are the same), or rolled
 * back (ABORT, and the position goes back to before it: -1). One whose fate is unknown is
 * treated as rolled back: the downstream discards it and gets it again if it did commit.
 */
static int
unit_state(struct downstream *ds)
{
    enum tail_unit_state st = tail_unit(ds->srv->tail, ds->unit_gen);
    if (st == TAIL_UNIT_OPEN) {
        int n = read_open(ds);
        if (n < 0) return 0; /* out of the tail's window: its end brings it from the store */
        return n > 0;
    }
    if (st == TAIL_UNIT_COMMITTED) {
        log_info("downstream %s: %lld entries of the unit after seq %lld were sent before the "
                 "commit (stream)",
                 ds->node->name, (long long)ds->unit_read, (long long)ds->unit_after);
        ds->read_more = ds->unit_more;
    } else {
        /* What was read of it and not sent yet goes; what was sent, the downstream drops. */
        queue_clear(ds);
        ds->frame.len = 0;
        ds->frame.failed = 0;
        if (ds->sent_seq > ds->unit_after || ds->part_open)
            peer_send_json(&ds->peer, F_ABORT,
                           json_pack("{s:I}", "after", (json_int_t)ds->unit_after));
        log_info("downstream %s: the unit after seq %lld was rolled back; ABORT sent (%lld "
                 "entries of it were read)",
                 ds->node->name, (long long)ds->unit_after, (long long)ds->unit_read);
        ds->read_upto = ds->sent_seq = ds->unit_after;
        ds->read_more = ds->part_open = 0;
    }
    ds->unit_gen = 0;
    ds->unit_read = 0;
    return -1;
}

/* Reads more of the snapshot or the log (one batch into the queue). 0: nothing more now. */
static int
refill(struct downstream *ds)
{
    if (ds->state == DS_SNAPSHOT) {
        int rc = store_snapshot_next(ds->snap, included, on_snap_entry, ds);
        if (rc < 0) {
            peer_fail(&ds->peer, "internal", "cannot read the snapshot");
            return 0;
        }
        if (rc == 0) {
            if (ds->frame.len > 0) flush_records(ds); /* the last items before the end */
            finish_snapshot(ds);
        }
        return 1;
    }
    if (ds->state == DS_STREAM) {
        int64_t from, first, seen = ds->srv->pos.seq;
        int n;
        if (ds->unit_gen) {
            n = unit_state(ds);
            if (n >= 0) return n;
        }
        from = ds->read_upto;
        ds->read_first = 0;
        /* What was just committed is in memory; older changes are read from the store. The
         * writer commits a group before it hands it to the tail, and the loop's position may
         * already include it: when the tail has nothing while the position says there is
         * more, only the store can tell whether there is (a filtered replica's log has gaps). */
        n = tail_read(ds->srv->tail, from, BATCH_ENTRIES, BATCH_BYTES, on_log_entry, ds);
        if (n == 0 && seen > from) n = -1;
        if (n < 0)
            n = store_log_entries(ds->srv->reader, from, BATCH_ENTRIES, BATCH_BYTES, on_log_entry,
                                  ds);
        if (n < 0) {
            peer_fail(&ds->peer, "internal", "cannot read the log");
            return 0;
        }
        /* Checked after the read, which retention may have cut just before: what follows
         * `from` was either just read, or it is gone and this downstream needs a snapshot. */
        first = store_log_first_seq(ds->srv->reader);
        if (first > 0 && from + 1 < first && ds->read_first != from + 1 &&
            ds->srv->pos.seq > from) {
            peer_fail(&ds->peer, "behind_retention",
                      "this downstream fell behind the retained log; it will get a snapshot");
            return 0;
        }
        if (n > 0) return 1;
        if (ds->streaming && seen <= ds->read_upto) {
            /* Caught up with what committed: a unit being written may be read already. What
             * was read of committed entries goes first, in frames of its own. */
            if (ds->frame.len > 0 || ds->read_upto > ds->sent_seq || ds->queue) return 0;
            if (read_open(ds) > 0) return 1;
        }
        /* Caught up. A filtered downstream may still need to hear how far we are: the store
         * was read after `seen` was, and had nothing after `from`, so nothing lies between.
         * Never further than that: a position moves only past what was read. */
        if (seen > ds->read_upto) {
            ds->read_upto = seen; /* a committed position: no unit goes on past it */
            ds->read_more = 0;
            return 1;
        }
        ds->w.target = ds->read_upto + 1;
        if (!waiters_has(&ds->w)) server_wait_seq(ds->srv, &ds->w);
    }
    return 0;
}

/*
 * Moves records from the queue into frames while the connection has room: a record's blob
 * goes first, frames go out at BATCH_BYTES, and the queue is refilled from the snapshot or the
 * log only when empty. Memory: the output buffer, one frame, and one batch of records.
 */
static void
pump(struct downstream *ds)
{
    if (ds->pumping || ds->dead) return;
    ds->pumping = 1;
    while (!ds->dead && peer_pending(&ds->peer) < PEER_HIGH_WATER) {
        if (ds->blob_fd >= 0) {
            blob_send_piece(ds);
        } else if (ds->queue) {
            struct qrec *q = ds->queue;
            if (q->has_blob) {
                q->has_blob = 0;
                if (blob_open(ds, q->sha)) continue;
            }
            ls_put_raw(&ds->frame, q->data, q->len);
            ds->frame_seq = q->seq;
            ds->frame_more = q->more;
            ds->queue = q->next;
            if (!ds->queue) ds->queue_tail = &ds->queue;
            free(q);
            /* Records of one seq (a restore and its publish, an item entering --include) go
             * in one frame: a frame's upto covers its last seq whole. */
            if (ds->frame.len >= BATCH_BYTES && !(ds->queue && ds->queue->seq == ds->frame_seq))
                flush_records(ds);
        } else if (ds->frame.len < BATCH_BYTES && refill(ds)) {
            continue; /* fill the frame before sending it */
        } else if (ds->frame.len > 0 ||
                   (ds->frame_type == F_CHANGES &&
                    (ds->read_upto > ds->sent_seq || (ds->part_open && !ds->read_more)))) {
            /* (A unit sent whole before it committed ends with a CHANGES of no record.) */
            flush_records(ds);
        } else {
            break;
        }
    }
    ds->pumping = 0;
}

static void
on_drain(struct peer *p)
{
    pump(p->owner);
}

/* ---------------------------------------------------------------- handshake */

static void
node_free(struct repl_up *up, struct node *n)
{
    up->site_held -= n->site.n;
    site_list_release(&n->site);
    free(n);
}

/* Forgets departed downstreams: those gone for NODE_FORGET_MS, then the longest gone while more
 * than `keep` remain. Only nodes without a connection go (a live downstream's node is its). */
static void
nodes_forget(struct repl_up *up, int keep)
{
    int64_t now = ls_now_ms();
    int down = 0;
    for (struct node **pp = &up->nodes; *pp;) {
        struct node *n = *pp;
        if (!n->conn && now - n->disconnected_ms > NODE_FORGET_MS) {
            *pp = n->next;
            node_free(up, n);
            continue;
        }
        if (!n->conn) down++;
        pp = &n->next;
    }
    while (down > keep) {
        struct node **oldest = NULL;
        for (struct node **pp = &up->nodes; *pp; pp = &(*pp)->next)
            if (!(*pp)->conn && (!oldest || (*pp)->disconnected_ms < (*oldest)->disconnected_ms))
                oldest = pp;
        if (!oldest) break;
        {
            struct node *n = *oldest;
            *oldest = n->next;
            node_free(up, n);
        }
        down--;
    }
}

static struct node *
node_for(struct repl_up *up, const char *name)
{
    struct node *n;
    for (n = up->nodes; n; n = n->next)
        if (strcmp(n->name, name) == 0) return n;
    nodes_forget(up, NODES_DOWN_MAX - 1); /* room for this one once it departs */
    n = calloc(1, sizeof *n);
    if (!n) return NULL;
    snprintf(n->name, sizeof n->name, "%s", name);
    n->next = up->nodes;
    up->nodes = n;
    return n;
}

/*
 * ds said HELLO with the name of ds->node. The name is its unless another live connection holds
 * it: that one is replaced when it has not been heard from for --heartbeat-timeout (its
 * server reconnected after a network cut or a crash) or when both HELLOs carry the same
 * node_id; otherwise ds is refused with name_in_use (and -1), and the first keeps its place.
 */
static int
node_claim(struct downstream *ds, json_t *hello)
{
    struct node *n = ds->node;
    struct downstream *old = n->conn;
    const char *id = json_string_value(json_object_get(hello, "node_id"));
    if (id && strlen(id) >= sizeof n->node_id) id = NULL;
    if (old && old != ds) {
        int64_t silent = ls_now_ms() - n->last_heartbeat_ms;
        if (id && *id && strcmp(id, n->node_id) == 0) {
            peer_fail(&old->peer, "replaced", "%s connected again from %s", n->name,
                      ds->peer.addr);
        } else if (silent > ds->srv->cfg.heartbeat_timeout_ms) {
            peer_fail(&old->peer, "replaced",
                      "%s connected again from %s; this connection was silent for %lld ms",
                      n->name, ds->peer.addr, (long long)silent);
        } else {
            ds->node = NULL;
            peer_fail(&ds->peer, "name_in_use",
                      "a downstream named %s is connected (from %s, heard from %lld ms ago); "
                      "refusing a second one (names must be unique)",
                      n->name, old->peer.addr, (long long)silent);
            return -1;
        }
    }
    snprintf(n->node_id, sizeof n->node_id, "%s", id ? id : "");
    return 0;
}

static json_t *
epochs_json(struct store *st)
{
    struct ls_epoch *ep;
    int n = store_epoch_list_all(st, &ep); /* every one: a history may have more than 64 */
    json_t *a = json_array();
    if (n < 0) log_error("cannot list the epochs: %s", ls_strerror(n));
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_pack("[I,I,s]", (json_int_t)ep[i].epoch,
                                           (json_int_t)ep[i].start_seq, ep[i].id));
    free(ep);
    return a;
}

/*
 * Where a downstream's history (SYNC's epochs: [number, start seq, id]) and ours part: they
 * share the longest common prefix of epochs equal in number, id and start seq, and each leaves
 * it where its next epoch begins (ours: at our seq when we are still in it). -1: nothing in
 * common at all.
 */
static int64_t
fork_point(struct server *srv, json_t *down, const char *store_id)
{
    struct ls_epoch *up;
    int nup = store_epoch_list_all(srv->reader, &up), k = 0;
    int nd = (int)json_array_size(down);
    int64_t up_leaves, at;
    if (nup < 0) return -2;
    while (k < nup && k < nd) {
        json_t *v = json_array_get(down, (size_t)k);
        int64_t e = json_integer_value(json_array_get(v, 0));
        const char *id = json_string_value(json_array_get(v, 2));
        char def[33];
        if (!id) { /* as a store without ids would name it */
            store_epoch_default_id(store_id, e, def);
            id = def;
        }
        if (e != up[k].epoch || json_integer_value(json_array_get(v, 1)) != up[k].start_seq ||
            strcmp(id, up[k].id) != 0)
            break;
        k++;
    }
    up_leaves = k < nup ? up[k].start_seq : srv->pos.seq;
    free(up);
    if (k == 0) return -1;
    at = up_leaves;
    if (k < nd) {
        int64_t down_leaves = json_integer_value(json_array_get(json_array_get(down, k), 1));
        if (down_leaves < at) at = down_leaves;
    }
    return at;
}

/* What a downstream must know of this server to refuse it (self, a cycle, a filtered store). */
static void
identity_fields(struct server *srv, json_t *o)
{
    char id[33] = "";
    store_meta_get(srv->reader, "node_id", id, sizeof id);
    json_object_set_new(o, "node_id", json_string(id));
    json_object_set_new(
        o, "filtered",
        json_boolean(strcmp(srv->cfg.role, "staging") == 0 || srv->cfg.include.n > 0));
    json_object_set_new(o, "chain", repl_down_chain(srv));
}

static void
on_hello(struct downstream *ds, json_t *o)
{
    const char *name = json_string_value(json_object_get(o, "name"));
    const char *role = json_string_value(json_object_get(o, "role"));
    json_int_t proto = json_integer_value(json_object_get(o, "proto"));
    int zstd = json_is_true(json_object_get(o, "zstd")) &&
               strcmp(ds->srv->cfg.compress, "zstd") == 0;
    if (proto != LS_PROTO_VERSION) {
        peer_fail(&ds->peer, "bad_version", "protocol version %lld, this server speaks %d",
                  (long long)proto, LS_PROTO_VERSION);
        return;
    }
    if (!name || !*name || strlen(name) >= 64 || !role ||
        (strcmp(role, "replica") != 0 && strcmp(role, "staging") != 0)) {
        peer_fail(&ds->peer, "bad_hello", "HELLO needs a name and the role replica or staging");
        return;
    }
    {
        json_t *nid = json_object_get(o, "node_id");
        const char *id = json_string_value(nid);
        char mine[33] = "";
        if (nid && (!id || strlen(id) != 32 || strspn(id, "0123456789abcdef") != 32)) {
            peer_fail(&ds->peer, "bad_hello", "HELLO's node_id must be 32 lowercase hex digits");
            return;
        }
        store_meta_get(ds->srv->reader, "node_id", mine, sizeof mine);
        if (id && strcmp(id, mine) == 0) {
            log_error("refused downstream %s from %s: it is this server itself (its --upstream "
                      "points here)",
                      name, ds->peer.addr);
            peer_fail(&ds->peer, "same_node",
                      "this server is its own upstream (--upstream points at itself): refused");
            return;
        }
    }
    {
        const char *token = json_string_value(json_object_get(o, "token")), *trole;
        int rc = auth_check(ds->srv->auth, token, NEED_REPLICATE, &trole);
        if (rc) {
            /* The token itself is never logged. */
            peer_fail(&ds->peer, "unauthorized", "%s from %s: %s", name, ds->peer.addr,
                      rc == LS_EDENIED ? "the token's role may not replicate"
                      : token          ? "unknown token"
                                       : "this server needs a token with the role replicate");
            return;
        }
    }
    if (!(ds->node = node_for(ds->up, name))) {
        peer_fail(&ds->peer, NULL, "out of memory");
        return;
    }
    if (node_claim(ds, o)) return;
    ds->node->conn = ds;
    snprintf(ds->node->role, sizeof ds->node->role, "%s", role);
    snprintf(ds->node->version, sizeof ds->node->version, "%s",
             json_string_value(json_object_get(o, "version")) ?: "?");
    snprintf(ds->node->addr, sizeof ds->node->addr, "%s", ds->peer.addr);
    ds->node->connected_ms = ls_now_ms();
    ds->node->last_heartbeat_ms = ls_now_ms();
    ds->node->last_error[0] = '\0';
    ds->published_only = strcmp(role, "staging") == 0;
    ds->messenger = json_is_true(json_object_get(o, "messenger"));
    ds->txn = json_is_true(json_object_get(o, "txn"));
    ds->stream = ds->txn && json_is_true(json_object_get(o, "stream"));
    {
        json_t *w = json_pack("{s:i,s:s,s:s,s:s,s:b,s:s,s:b,s:b,s:b}", "proto", LS_PROTO_VERSION,
                              "name", ds->srv->cfg.name, "role", ds->srv->cfg.role, "version",
                              LS_VERSION, "zstd", zstd, "primary", server_primary_http(ds->srv),
                              "messenger", 1, "txn", 1, "stream", 1);
        identity_fields(ds->srv, w);
        peer_send_json(&ds->peer, F_WELCOME, w);
    }
    ds->peer.zstd = zstd;
    ds_set_state(ds, DS_SYNC);
    log_info("downstream %s (%s) connected from %s", name, role, ds->peer.addr);
}

int
repl_up_send_json(struct server *srv, uint64_t serial, int type, json_t *o)
{
    if (!srv->up) return -1;
    for (struct downstream *ds = srv->up->conns; ds; ds = ds->next)
        if (ds->serial == serial && !ds->dead && !ds->peer.closed)
            return peer_send_json(&ds->peer, type, json_incref(o));
    return -1; /* gone: its origin sends the batch again */
}

/* The size of the store's -wal file (0 when there is none). */
static int64_t
wal_size(struct server *srv)
{
    char path[4300];
    struct stat sb;
    snprintf(path, sizeof path, "%s/store.db-wal", store_dir(srv->reader));
    return stat(path, &sb) == 0 ? (int64_t)sb.st_size : 0;
}

static void
start_snapshot(struct downstream *ds, const char *why)
{
    struct ls_error err;
    struct ls_position pos;
    ds->snap = store_snapshot_open(store_dir(ds->srv->reader), ds->srv->cfg.sync_max_versions,
                                   ds->published_only, &pos, &err);
    if (!ds->snap) {
        peer_fail(&ds->peer, "internal", "cannot start a snapshot: %s", err.msg);
        return;
    }
    log_info("sending %s a snapshot at seq %lld (%s)", ds->node->name, (long long)pos.seq, why);
    ds->snap_started_ms = ls_mono_ms();
    ds->up->counted.snapshots++;
    ds->snap_wal_size = wal_size(ds->srv);
    peer_send_json(&ds->peer, F_SNAPSHOT,
                   json_pack("{s:s,s:I,s:I,s:o,s:s}", "store_id", pos.store_id, "epoch",
                             (json_int_t)pos.epoch, "seq", (json_int_t)pos.seq, "epochs",
                             epochs_json(ds->srv->reader), "reason", why));
    ds->sent_seq = pos.seq; /* where the log continues after the snapshot */
    ds_set_state(ds, DS_SNAPSHOT);
    ds->frame_type = F_SNAP_ITEMS;
    pump(ds);
}

static void
start_stream(struct downstream *ds, int64_t from)
{
    struct ls_position *pos = &ds->srv->pos;
    peer_send_json(&ds->peer, F_CONTINUE,
                   json_pack("{s:s,s:I,s:I,s:o}", "store_id", pos->store_id, "epoch",
                             (json_int_t)pos->epoch, "from", (json_int_t)from, "epochs",
                             epochs_json(ds->srv->reader)));
    log_info("%s continues from seq %lld (this server is at %lld)", ds->node->name,
             (long long)from, (long long)pos->seq);
    ds->sent_seq = ds->read_upto = from;
    ds->read_more = 0;
    ds->node->acked_seq = from;
    ds->up->counted.catchups++;
    ds_set_state(ds, DS_STREAM);
    ds->frame_type = F_CHANGES;
    pump(ds);
}

/* Where does this downstream's history stand against ours? (DESIGN.md: fork detection) */
static void
on_sync(struct downstream *ds, json_t *o)
{
    struct ls_position *pos = &ds->srv->pos;
    const char *store_id = json_string_value(json_object_get(o, "store_id"));
    int64_t epoch = json_integer_value(json_object_get(o, "epoch"));
    int64_t seq = json_integer_value(json_object_get(o, "seq"));
    int64_t first = store_log_first_seq(ds->srv->reader);
    int64_t oldest = first > 0 ? first - 1 : pos->seq; /* continue needs seq >= oldest */
    json_t *inc = json_object_get(json_object_get(o, "filter"), "include"), *v;
    json_t *resync_from = json_object_get(o, "resync_from_seq");
    json_t *resync_since = json_object_get(o, "resync_since_ms");
    size_t i;

    json_array_foreach(inc, i, v)
    {
        if (ds->ninclude < MAX_INCLUDE && json_is_string(v)) {
            if (!(ds->include[ds->ninclude] = strdup(json_string_value(v)))) {
                peer_fail(&ds->peer, "internal", "out of memory");
                return;
            }
            ds->ninclude++;
        }
    }
    if (json_is_true(json_object_get(json_object_get(o, "filter"), "published_only")))
        ds->published_only = 1;
    {
        /* A replica loading a snapshot has a partial store: nothing to serve from yet. */
        char pending[8] = "0";
        store_meta_get(ds->srv->reader, "snapshot_pending", pending, sizeof pending);
        if (strcmp(pending, "1") == 0) {
            peer_fail(&ds->peer, "unavailable",
                      "this server is loading a snapshot from its own upstream; try again soon");
            return;
        }
    }
    if (json_is_true(json_object_get(o, "snapshot_pending")) || !store_id ||
        strcmp(store_id, pos->store_id) != 0) {
        start_snapshot(ds, store_id && strcmp(store_id, pos->store_id) == 0
                               ? "its last snapshot did not finish"
                               : "it holds another store");
        return;
    }
    /* Fork detection comes first: nothing, not even a resync, may paper over a fork. */
    if (epoch > pos->epoch) {
        peer_fail(&ds->peer, "newer_history",
                  "%s is at epoch %lld, newer than this server's %lld: it may have been promoted; "
                  "refusing to overwrite it (point it at the current primary)",
                  ds->node->name, (long long)epoch, (long long)pos->epoch);
        return;
    }
    {
        int64_t fork_at = -1;
        json_t *down_epochs = json_object_get(o, "epochs");
        if (json_is_array(down_epochs) && json_array_size(down_epochs) > 0) {
            /* Epoch ids: two servers promoted to the same number are told apart. */
            fork_at = fork_point(ds->srv, down_epochs, pos->store_id);
            if (fork_at < -1) {
                peer_fail(&ds->peer, "internal", "cannot list this server's epochs");
                return;
            }
            if (fork_at < 0) fork_at = 0; /* no epoch in common: everything it has forked */
        } else if (epoch < pos->epoch) {  /* a downstream that sends no epochs: numbers only */
            /* Our history left its epoch where the next one began. */
            struct ls_epoch *ep;
            int n = store_epoch_list_all(ds->srv->reader, &ep);
            if (n < 0) {
                peer_fail(&ds->peer, "internal", "cannot list this server's epochs");
                return;
            }
            for (int k = 0; k < n; k++)
                if (ep[k].epoch > epoch) {
                    fork_at = ep[k].start_seq;
                    break;
                }
            free(ep);
        } else {
            fork_at = pos->seq;
        }
        if (fork_at >= 0 && seq > fork_at) {
            log_warn("%s has %lld changes after seq %lld (epoch %lld) that this history does not "
                     "have: its history forked",
                     ds->node->name, (long long)(seq - fork_at), (long long)fork_at,
                     (long long)epoch);
            peer_send_json(&ds->peer, F_FORK,
                           json_pack("{s:I,s:I}", "at", (json_int_t)fork_at, "epoch",
                                     (json_int_t)pos->epoch));
            return; /* it saves its changes, then asks again for a snapshot */
        }
    }
    if (json_is_integer(resync_from) || json_is_integer(resync_since)) {
        int64_t from = json_integer_value(resync_from);
        if (json_is_integer(resync_since)) {
            /* The first entry at or after that time: continue from just before it. */
            int64_t lo = first, hi = pos->seq + 1;
            while (lo > 0 && lo < hi) {
                int64_t mid = lo + (hi - lo) / 2, cum, ts;
                if (store_log_cum_at(ds->srv->reader, mid, &cum, &ts) ||
                    ts >= json_integer_value(resync_since))
                    hi = mid;
                else
                    lo = mid + 1;
            }
            from = lo > 0 ? lo - 1 : 0;
        }
        if (from > seq) from = seq; /* never past what it has: that would skip changes */
        if (from < oldest) start_snapshot(ds, "resync beyond the retained log");
        else start_stream(ds, from);
        return;
    }
    if (seq < oldest) {
        start_snapshot(ds, "it is older than the retained log");
        return;
    }
    start_stream(ds, seq);
}

/* ---------------------------------------------------------------- frames */

/* Keeps the subtree a downstream's PING reported, within SITE_HELD_MAX for all of them: a
 * downstream cannot make this server hold more than that, whatever it sends. */
static void
take_site(struct downstream *ds, json_t *ping)
{
    struct repl_up *up = ds->up;
    struct node *n = ds->node;
    size_t before = n->site.n, others = up->site_held - before;
    size_t room = others < SITE_HELD_MAX ? SITE_HELD_MAX - others : 0;
    if (site_list_parse(&n->site, ping, room)) up->site_held = others + n->site.n;
}

static void
on_frame(struct peer *p, int type, const uint8_t *payload, size_t len)
{
    struct downstream *ds = p->owner;
    json_t *o = NULL;
    if (type == F_HELLO || type == F_SYNC || type == F_PING || type == F_ERROR ||
        type == F_PUBLISH) {
        o = json_loadb((const char *)payload, len, 0, NULL);
        if (!json_is_object(o)) {
            json_decref(o);
            peer_fail(p, "protocol_error", "%s frame is not a JSON object", frame_type_name(type));
            return;
        }
    }
    if (ds->node) ds->node->last_heartbeat_ms = ls_now_ms();
    switch (type) {
    case F_HELLO:
        if (ds->state != DS_HELLO) goto unexpected;
        on_hello(ds, o);
        /* Past HELLO (authenticated): frames up to the protocol's limit. */
        if (ds->state != DS_HELLO) p->max_frame = LS_FRAME_MAX;
        break;
    case F_SYNC:
        if (ds->state != DS_SYNC) goto unexpected;
        on_sync(ds, o);
        break;
    case F_ACK: {
        struct ls_rbuf rb = {payload, len, 0, 0};
        int64_t seq = (int64_t)ls_get_varint(&rb);
        if (rb.failed || ds->state < DS_SYNC) goto unexpected;
        if (seq < 0 || seq > ds->sent_seq) {
            /* It cannot have applied what it was not sent: a lie that would satisfy
             * wait_replicas (and show in /v1/nodes). */
            peer_fail(p, "protocol_error", "ACK of seq %llu, beyond the %lld sent to it",
                      (unsigned long long)seq, (long long)ds->sent_seq);
            return;
        }
        if (seq > ds->node->acked_seq) {
            ds->node->acked_seq = seq;
            ds->node->acked_ms = ls_now_ms();
            server_on_ack(ds->srv);
        }
        break;
    }
    case F_PING:
        if (ds->state == DS_HELLO) goto unexpected;
        take_site(ds, o);
        break;
    case F_PUBLISH: {
        const char *why = NULL;
        if (ds->state < DS_SYNC || !ds->messenger) goto unexpected;
        if (forward_on_notify(ds->srv, ds->serial, o, &why)) {
            json_decref(o);
            peer_fail(p, "protocol_error", "%s", why);
            return;
        }
        break;
    }
    case F_ERROR:
        log_warn("downstream %s reports: %s", ds->node ? ds->node->name : p->addr,
                 json_string_value(json_object_get(o, "message")) ?: "?");
        break;
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
send_ping(evutil_socket_t fd, short what, void *arg)
{
    struct downstream *ds = arg;
    struct timeval tv = {PING_MS / 1000, (PING_MS % 1000) * 1000};
    if (ds->state == DS_HELLO && !ds->peer.closed &&
        ls_mono_ms() - ds->accepted_ms > ds->srv->cfg.heartbeat_timeout_ms) {
        /* Slow or unfinished (a TLS handshake that never ends, a HELLO sent byte by byte):
         * it would hold a slot for ever. No ERROR: over TLS it could not even be sent. */
        peer_fail(&ds->peer, NULL, "no HELLO within %lld ms of connecting",
                  (long long)ds->srv->cfg.heartbeat_timeout_ms);
        return; /* the timer was freed with the connection */
    }
    if (ds->state >= DS_SYNC && !ds->peer.closed) {
        json_t *o = server_info(ds->srv);
        identity_fields(ds->srv, o); /* re-checked by the downstream at every PING */
        site_ping_fields(ds->srv, o, 1, &ds->site_pace);
        peer_send_json(&ds->peer, F_PING, o);
    }
    evtimer_add(ds->ping, &tv);
}

/* Unlinks a closed downstream and lets go of what it holds; the memory goes in ds_free. */
static void
ds_detach(struct downstream *ds)
{
    struct repl_up *up = ds->up;
    if (!ds->dead) up->counted.bytes_sent += (uint64_t)ds->peer.bytes_out;
    ds->dead = 1;
    if (ds->streaming) tail_streamers_add(ds->srv->tail, -1);
    ds->streaming = 0;
    for (struct downstream **pp = &up->conns; *pp; pp = &(*pp)->next)
        if (*pp == ds) {
            *pp = ds->next;
            break;
        }
    server_cancel_wait(ds->srv, &ds->w);
    if (ds->ping) event_free(ds->ping);
    ds->ping = NULL;
    store_snapshot_close(ds->snap);
    ds->snap = NULL;
    if (ds->blob_fd >= 0) close(ds->blob_fd);
    ds->blob_fd = -1;
    queue_clear(ds);
}

static void
ds_free(evutil_socket_t fd, short what, void *arg)
{
    struct downstream *ds = arg;
    for (int i = 0; i < ds->ninclude; i++) free(ds->include[i]);
    ls_wbuf_release(&ds->frame);
    free(ds);
}

/*
 * The connection is gone. This can happen deep inside our own callbacks (a pump that failed,
 * a frame that broke the protocol), so the memory is freed from the loop afterwards.
 */
static void
on_close(struct peer *p, const char *why)
{
    struct downstream *ds = p->owner;
    struct timeval now = {0, 0};
    if (ds->node && ds->node->conn == ds) {
        ds->node->conn = NULL;
        ds->node->disconnected_ms = ls_now_ms();
        snprintf(ds->node->last_error, sizeof ds->node->last_error, "%s", why);
        log_info("downstream %s disconnected: %s", ds->node->name, why);
    }
    ds_detach(ds);
    event_base_once(ds->srv->base, -1, EV_TIMEOUT, ds_free, ds, &now);
}

static const struct peer_ops up_ops = {
    .on_frame = on_frame, .on_drain = on_drain, .on_close = on_close};

static void
on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    struct repl_up *up = arg;
    struct downstream *ds = calloc(1, sizeof *ds);
    struct bufferevent *bev;
    char addr[80];
    struct timeval tv = {PING_MS / 1000, 0};
    if (ds) ds->serial = ++up->serials;

    format_sockaddr(sa, addr, sizeof addr);
    if (!cidr_match(up->srv->peer_allow, up->srv->npeer_allow, sa)) {
        log_warn("refused a peer connection from %s: not in --peer-allow", addr);
        free(ds);
        evutil_closesocket(fd);
        return;
    }
    {
        int same = 0;
        for (struct downstream *o = up->conns; o; o = o->next)
            if (!o->dead && same_host(o->peer.addr, addr)) same++;
        if (same >= up->srv->cfg.max_conns_per_addr) {
            log_warn("refused a peer connection from %s: it holds %d already", addr, same);
            free(ds);
            evutil_closesocket(fd);
            return;
        }
    }
    if (!ds) {
        evutil_closesocket(fd);
        return;
    }
    if (up->srv->tls_server) {
        bev = bufferevent_openssl_socket_new(up->srv->base, fd, SSL_new(up->srv->tls_server),
                                             BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
        if (bev) bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    } else {
        bev = bufferevent_socket_new(up->srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
    }
    if (!bev) {
        free(ds);
        evutil_closesocket(fd);
        return;
    }
    ds->srv = up->srv;
    ds->up = up;
    ds->blob_fd = -1;
    ds->w.fire = on_commit_wait;
    ds->w.arg = ds;
    ls_wbuf_init(&ds->frame, LS_FRAME_MAX - 64);
    ds->queue_tail = &ds->queue;
    ds->frame_type = F_CHANGES;
    peer_init(&ds->peer, bev, &up_ops, ds, addr, up->srv->cfg.heartbeat_timeout_ms);
    ds->peer.max_frame = LS_HELLO_MAX; /* an unauthenticated peer gets HELLO-sized frames */
    ds->accepted_ms = ls_mono_ms();
    ds->ping = evtimer_new(up->srv->base, send_ping, ds);
    evtimer_add(ds->ping, &tv);
    ds->next = up->conns;
    up->conns = ds;
}

/* ---------------------------------------------------------------- --snapshot-max-wal */

/*
 * A snapshot holds one read transaction: the WAL cannot be checkpointed past it and grows with
 * every write for as long as it is open. A downstream that reads its snapshot slowly, or not at
 * all, would make the -wal file grow without bound; once the file is over --snapshot-max-wal
 * the snapshot open the longest (the one pinning the oldest WAL frames) is dropped, and the
 * checkpoint thread asked to empty the file. The downstream reconnects and starts a new one.
 */
static void
check_wal(evutil_socket_t fd, short what, void *arg)
{
    struct repl_up *up = arg;
    struct server *srv = up->srv;
    struct downstream *oldest = NULL;
    int64_t now = ls_mono_ms(), size;
    if (!srv->cfg.snapshot_max_wal || now < up->wal_quiet_until) return;
    size = wal_size(srv);
    if ((uint64_t)size <= srv->cfg.snapshot_max_wal) return;
    for (struct downstream *ds = up->conns; ds; ds = ds->next)
        if (!ds->dead && ds->state == DS_SNAPSHOT &&
            (!oldest || ds->snap_started_ms < oldest->snap_started_ms))
            oldest = ds;
    /* A -wal file that was already that big (frames checkpointed long ago, kept for reuse) is
     * not this snapshot's doing: only growth while it is open is. */
    if (!oldest || size <= oldest->snap_wal_size) return;
    log_warn("the WAL is %lld bytes, over --snapshot-max-wal %llu: dropping the snapshot sent to "
             "%s for %lld s",
             (long long)size, (unsigned long long)srv->cfg.snapshot_max_wal,
             oldest->node ? oldest->node->name : oldest->peer.addr,
             (long long)((now - oldest->snap_started_ms) / 1000));
    peer_fail(&oldest->peer, "snapshot_too_slow",
              "the snapshot was open %lld s and kept the WAL from being checkpointed "
              "(over --snapshot-max-wal %llu bytes); reconnect for a new one",
              (long long)((now - oldest->snap_started_ms) / 1000),
              (unsigned long long)srv->cfg.snapshot_max_wal);
    if (srv->wstore) store_checkpoint_request(srv->wstore, 1);
    up->wal_quiet_until = now + WAL_DROP_GRACE_MS;
}

/* ---------------------------------------------------------------- server interface */

int
repl_up_start(struct server *srv, struct ls_error *err)
{
    struct repl_up *up = calloc(1, sizeof *up);
    struct sockaddr_storage ss;
    int sslen;
    if (!up) return ls_error_set(err, LS_ENOMEM, NULL);
    up->srv = srv;
    if (parse_hostport(srv->cfg.listen, &ss, &sslen)) {
        free(up);
        return ls_error_set(err, LS_EINVAL, "--listen %s: expected HOST:PORT", srv->cfg.listen);
    }
    up->listener = evconnlistener_new_bind(srv->base, on_accept, up,
                                           LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 64,
                                           (struct sockaddr *)&ss, sslen);
    if (!up->listener) {
        free(up);
        return ls_error_set(err, LS_EIO, "cannot listen on %s: %s", srv->cfg.listen,
                            strerror(errno));
    }
    {
        struct timeval tv = {WAL_CHECK_MS / 1000, (WAL_CHECK_MS % 1000) * 1000};
        up->wal_timer = event_new(srv->base, -1, EV_PERSIST, check_wal, up);
        if (up->wal_timer) event_add(up->wal_timer, &tv);
    }
    srv->up = up;
    return 0;
}

void
repl_up_drop_all(struct server *srv, const char *why)
{
    if (!srv->up) return;
    while (srv->up->conns) peer_fail(&srv->up->conns->peer, "reconnect", "%s", why);
}

void
repl_up_stop(struct server *srv)
{
    struct repl_up *up = srv->up;
    if (!up) return;
    while (up->conns) {
        struct downstream *ds = up->conns;
        peer_release(&ds->peer);
        if (ds->node) ds->node->conn = NULL;
        ds_detach(ds);
        ds_free(-1, 0, ds);
    }
    while (up->nodes) {
        struct node *n = up->nodes;
        up->nodes = n->next;
        node_free(up, n);
    }
    if (up->wal_timer) event_free(up->wal_timer);
    evconnlistener_free(up->listener);
    ls_wbuf_release(&up->out);
    peer_zcache_release(&up->zcache);
    free(up);
    srv->up = NULL;
}

int
repl_up_connected(struct server *srv)
{
    int n = 0;
    for (struct downstream *ds = srv->up ? srv->up->conns : NULL; ds; ds = ds->next)
        if (ds->node && !ds->dead) n++;
    return n;
}

int
repl_up_acked(struct server *srv, int64_t seq)
{
    int n = 0;
    if (!srv->up) return 0;
    for (struct node *nd = srv->up->nodes; nd; nd = nd->next)
        if (nd->conn && nd->acked_seq >= seq) n++;
    return n;
}

void
repl_up_count(struct server *srv, struct repl_up_counters *out)
{
    memset(out, 0, sizeof *out);
    if (!srv->up) return;
    *out = srv->up->counted;
    for (struct downstream *ds = srv->up->conns; ds; ds = ds->next)
        if (!ds->dead) out->bytes_sent += (uint64_t)ds->peer.bytes_out;
}

json_t *
repl_up_nodes(struct server *srv)
{
    json_t *a = json_array();
    int64_t now = ls_now_ms(), my_cum = 0, ts;
    if (!srv->up) return a;
    nodes_forget(srv->up, NODES_DOWN_MAX);
    store_log_cum_at(srv->reader, srv->pos.seq, &my_cum, &ts);
    for (struct node *n = srv->up->nodes; n; n = n->next) {
        struct downstream *ds = n->conn;
        const char *state = "down";
        int64_t lag = srv->pos.seq - n->acked_seq, lag_bytes = 0, lag_s = 0, cum = 0;
        char hb[40];
        json_t *o;
        if (lag < 0) lag = 0;
        if (ds) {
            state = ds_state_names[ds->state];
            if (ds->state == DS_STREAM && ds->sent_seq < srv->pos.seq) state = "catching-up";
            if (ds->state == DS_STREAM && lag > 0 && ds->sent_seq >= srv->pos.seq &&
                now - n->acked_ms > 5000)
                state = "catching-up";
            if (now - n->last_heartbeat_ms > srv->cfg.heartbeat_timeout_ms) state = "down";
        }
        /* the log's cum counts the bytes up to and with each entry: what it lacks is my_cum
         * less the cum of the last entry it applied; the time is the first one's it lacks */
        if (lag > 0 && (n->acked_seq == 0 || store_log_cum_at(srv->reader, n->acked_seq, &cum,
                                                              &ts) == 0) &&
            store_log_cum_at(srv->reader, n->acked_seq + 1, &lag_bytes, &ts) == 0) {
            lag_bytes = my_cum - cum;
            lag_s = (now - ts) / 1000;
            if (lag_bytes < 0) lag_bytes = 0;
            if (lag_s < 0) lag_s = 0;
        }
        ls_format_time(n->last_heartbeat_ms, hb, sizeof hb);
        o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:s}", "name", n->name, "role",
                      n->role, "address", n->addr, "version", n->version, "state", state,
                      "applied_seq", (json_int_t)n->acked_seq, "lag_changes", (json_int_t)lag,
                      "lag_bytes", (json_int_t)lag_bytes, "lag_seconds", (json_int_t)lag_s,
                      "last_heartbeat", hb);
        if (!ds && n->last_error[0])
            json_object_set_new(o, "last_error", json_string(n->last_error));
        json_array_append_new(a, o);
    }
    return a;
}

int64_t
repl_up_acked_sum(struct server *srv)
{
    int64_t sum = 0;
    if (!srv->up) return 0;
    for (struct node *n = srv->up->nodes; n; n = n->next)
        if (n->conn) sum += n->acked_seq;
    return sum;
}

/* How this server sees a direct downstream: by the link, whatever the downstream says. */
static int
link_state(struct server *srv, const struct node *n, int64_t now)
{
    if (!n->conn || now - n->last_heartbeat_ms > srv->cfg.heartbeat_timeout_ms) return SITE_DOWN;
    return now - n->last_heartbeat_ms > SITE_STALE_MS ? SITE_STALE : SITE_ACTIVE;
}

void
repl_up_site(struct server *srv, struct site_set *s)
{
    int64_t now = ls_now_ms(), now_mono = ls_mono_ms();
    if (!srv->up) return;
    for (struct node *n = srv->up->nodes; n; n = n->next) {
        struct site_rec r;
        size_t first = n->site.n > 0 && strcmp(n->site.recs[0].name, n->name) == 0;
        int old = !n->conn || site_list_old(&n->site, now_mono);
        if (first) {
            r = n->site.recs[0];
        } else { /* a downstream that sends no list (an older one): what HELLO said */
            memset(&r, 0, sizeof r);
            r.seq = n->acked_seq;
        }
        snprintf(r.name, sizeof r.name, "%s", n->name);
        if (!r.node_id[0]) snprintf(r.node_id, sizeof r.node_id, "%.32s", n->node_id);
        if (!r.role[0]) snprintf(r.role, sizeof r.role, "%s", n->role);
        if (!r.version[0]) snprintf(r.version, sizeof r.version, "%s", n->version);
        if (!r.upstream[0]) snprintf(r.upstream, sizeof r.upstream, "%s", srv->cfg.name);
        r.heard_ms = n->last_heartbeat_ms;
        r.state = link_state(srv, n, now);
        site_set_add(s, &r, 1);
        /* Its subtree: as it said, but nobody is active on a report that is not fresh. */
        for (size_t i = first; i < n->site.n; i++) {
            r = n->site.recs[i];
            if (old && r.state == SITE_ACTIVE) r.state = SITE_STALE;
            site_set_add(s, &r, 1);
        }
    }
}

/* The writer showed more of a request before its commit, or such a request ended: downstreams
 * that take units before they commit read on (the others wait for the commit as before). */
void
repl_up_kick(struct server *srv)
{
    if (!srv->up) return;
    for (struct downstream *ds = srv->up->conns, *next; ds; ds = next) {
        next = ds->next;
        if (ds->streaming && ds->state == DS_STREAM && !ds->dead) pump(ds);
    }
}
