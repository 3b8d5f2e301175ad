/*
 * notify.c - the cluster messenger's HTTP API (docs/messenger.md): publishing
 * (POST /v1/notify), reading pages and long polls (GET /v1/notifications), Server-Sent Events
 * (GET /v1/events) and the consumers' operations (/v1/consumers).
 *
 * Every read of notifications happens on a reader thread (struct nread): the floor below which
 * entries are gone, whether the reader is behind it (a reset), then one page. The loop then
 * updates the consumer and answers or streams.
 *
 * Not for: the consumers' records and states (messenger.c).
 */
#include "node/http/http.h"
#include "common/log.h"
#include "common/util.h"
#include "core/tail.h"
#include "node/messenger.h"

#include <event2/buffer.h>
#include <sys/queue.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define NOTIFY_BATCH_MAX 1000
#define PAGE_LIMIT_MAX 1000
#define SSE_BATCH 500
#define SSE_PING_MS 15000
#define SCAN_MIN 10000

/* ---------------------------------------------------------------- parameters */

/* The channel parameters as a set ("" for none: every channel), or NULL after a 400. */
char *
query_channels(struct ctx *c)
{
    struct evkeyval *kv;
    struct ls_error err;
    size_t len = 0, n = 0;
    char *set;
    TAILQ_FOREACH(kv, &c->query, next) {
        if (strcmp(kv->key, "channel") != 0) continue;
        if (name_check("channel", kv->value, strlen(kv->value), &err)) {
            reply_lserror(c->req, &err);
            return NULL;
        }
        len += strlen(kv->value) + 1;
        if (++n > 64) {
            reply_error(c->req, LS_EINVAL, "at most 64 channels");
            return NULL;
        }
    }
    if (!(set = calloc(1, len + 1))) {
        reply_error(c->req, LS_ENOMEM, NULL);
        return NULL;
    }
    TAILQ_FOREACH(kv, &c->query, next) {
        if (strcmp(kv->key, "channel") != 0 || (*set && channels_has(set, kv->value))) continue;
        if (*set) strcat(set, ",");
        strcat(set, kv->value);
    }
    return set;
}

/* consumer=, channel= and from=: the consumer (created at its first use) or NULL for an
 * anonymous reader; -1 after a 400. *channels is the reader's set (the consumer's, or the
 * query's), owned by the caller. */
static int
open_reader(struct ctx *c, struct consumer **out, char **channels, int64_t *cursor)
{
    const char *name = qget(c, "consumer"), *from = qget(c, "from");
    int given = 0, from_start = 0;
    struct evkeyval *kv;
    struct ls_error err;
    *out = NULL;
    if (from && strcmp(from, "now") != 0 && !(from_start = strcmp(from, "start") == 0)) {
        reply_error(c->req, LS_EINVAL, "from is now or start");
        return -1;
    }
    TAILQ_FOREACH(kv, &c->query, next) given |= strcmp(kv->key, "channel") == 0;
    if (!(*channels = query_channels(c))) return -1;
    *cursor = from_start ? -1 : c->srv->pos.seq;
    if (!name) return 0;
    if (name_check("consumer", name, strlen(name), &err)) {
        reply_lserror(c->req, &err);
        goto fail;
    }
    if (!(*out = consumer_open(c->srv, name, given ? *channels : NULL, from_start))) {
        reply_error(c->req, LS_ENOMEM, NULL);
        goto fail;
    }
    free(*channels);
    if (!(*channels = strdup((*out)->channels))) {
        reply_error(c->req, LS_ENOMEM, NULL);
        return -1;
    }
    *cursor = (*out)->position;
    return 0;
fail:
    free(*channels);
    *channels = NULL;
    return -1;
}

/* ---------------------------------------------------------------- one read */

static int
nread_cb(void *arg, const struct ls_note *n)
{
    json_array_append_new(arg, note_json(n));
    return 0;
}

/* On a reader thread. */
void
nread_run(struct store *st, struct nread *r)
{
    int64_t scanned;
    int at_end, n, scan = r->limit * 20 > SCAN_MIN ? r->limit * 20 : SCAN_MIN;
    r->floor = notes_floor(st, r->channels);
    r->gen = store_floor(st, LOG_GEN);
    r->from = r->cursor;
    r->reset = 0; /* a stream reads again and again with the same struct */
    if (r->from < 0) {
        r->from = r->floor;
    } else if (r->gen_in >= 0 && r->gen_in != r->gen) {
        /* another history past gen_start: read again from there (or the floor) */
        int64_t start = store_floor(st, GEN_START);
        r->reset = 1;
        if (start < r->from) r->from = start;
        if (r->from < r->floor) r->from = r->floor;
    } else if (r->from < r->floor) {
        r->reset = 1;
        r->from = r->floor;
    }
    json_decref(r->notes);
    r->notes = json_array();
    /* up to what the loop has counted: a `next` beyond it would be refused by an ack */
    n = store_notes(st, r->from, r->seen, r->channels, r->limit, scan, nread_cb, r->notes,
                    &scanned, &at_end);
    if (n < 0) {
        r->rc = n;
        return;
    }
    r->rc = 0;
    r->next = scanned > r->from ? scanned : r->from;
    if (at_end && r->seen > r->next) r->next = r->seen; /* nothing between: a filtered log */
}

/* On the loop, after a read for consumer c (NULL: anonymous): a new consumer's start, a reset.
 * Returns the reset event's body to send (a reference), or NULL. */
json_t *
nread_apply(struct server *srv, struct consumer *c, struct nread *r)
{
    json_t *why = NULL;
    if (r->reset) {
        why = reset_json(r->cursor, r->from, r->seen);
        if (r->gen_in >= 0 && r->gen_in != r->gen)
            json_object_set_new(why, "reason", json_string("this server's log was replaced by a "
                                                           "snapshot of another history"));
        if (c && (c->position < r->floor || (c->gen >= 0 && c->gen != r->gen))) {
            consumer_reset(srv, c, r->from, why);
            c->gen = r->gen;
        }
        return why;
    }
    if (!c) return NULL;
    if (c->gen != r->gen) {
        c->gen = r->gen;
        consumer_touch(srv, c);
    }
    if (c->position < 0) { /* created from the start: that is the floor, no reset */
        c->position = r->floor;
        consumer_touch(srv, c);
    }
    if (c->reset_at > 0 && r->from <= c->reset_at) { /* delivered again until acknowledged */
        if (!c->reset_why) c->reset_why = json_pack("{s:s,s:s,s:I}", "type", "reset", "reason",
                                                    "a reset waits to be acknowledged", "oldest",
                                                    (json_int_t)(c->reset_at + 1));
        return json_incref(c->reset_why);
    }
    return NULL;
}

/* ---------------------------------------------------------------- the log tail */

/*
 * The fast way, on the loop: what follows the cursor, from the log tail (core/tail.h) rather
 * than a store read on a reader thread: a live stream then costs no thread hop and no SQLite
 * read per commit. Only where a store read would give the same: the last store read found no
 * reset, the tail has not started again since that read began (no snapshot or fork replaced
 * the log), the consumer was not moved, and no reset waits for its acknowledgement. The tail
 * holds every entry after its base; the floor cannot pass entries it still holds unseen to a
 * reader that is live, and if retention cut them, delivering them is no gap.
 */
struct fast {
    struct evbuffer *out; /* SSE events, or */
    json_t *notes;        /* note_json objects */
    const char *channels;
    int64_t upto, scanned; /* scanned: every entry up to it is sent or not for this reader */
    int matched, limit;
};

static int
fast_cb(void *arg, const struct ls_entry *x)
{
    struct fast *f = arg;
    struct ls_note n;
    json_t *o;
    if (x->seq > f->upto || f->matched >= f->limit) return 1; /* > upto: not counted yet */
    memset(&n, 0, sizeof n);
    n.seq = x->seq;
    n.ts = x->ts;
    n.op = x->op;
    if (x->op == LS_OP_NOTIFY) {
        n.channel = x->path;
        n.payload = x->to;
    } else {
        n.channel = LS_CONTENT_CHANNEL;
        n.path = x->path;
        n.version = x->version;
        if (x->op == LS_OP_MOVE) n.to = x->to;
    }
    if (channels_has(f->channels, n.channel) && (x->op != LS_OP_NOTIFY || n.payload)) {
        if (!(o = note_json(&n))) return 1;
        if (f->notes) {
            json_array_append_new(f->notes, o);
        } else {
            sse_event_json(f->out, "notification", n.seq, o);
            json_decref(o);
        }
        f->matched++;
    }
    f->scanned = x->seq;
    return 0;
}

/* Whether a reader that read the store in `epoch` and found no reset may read the tail now. */
static int
fast_allowed(struct server *srv, const char *name, int tail_ok, unsigned moves, int64_t gen,
             int64_t cursor)
{
    struct consumer *c = *name ? consumer_find(srv, name) : NULL;
    if (!tail_ok || cursor < 0) return 0;
    return !c || (c->moves == moves && c->gen == gen && !(c->reset_at > 0 && cursor <= c->reset_at));
}

/* Reads what follows f->scanned (the cursor) up to f->upto from the tail; -1: it cannot say. */
static int
fast_read(struct server *srv, uint64_t epoch, struct fast *f)
{
    if (tail_read_epoch(srv->tail, epoch, f->scanned, f->limit * 20, 4u << 20, fast_cb, f) < 0)
        return -1;
    return 0;
}

/* ---------------------------------------------------------------- GET /v1/notifications */

struct npage {
    struct nread r;
    struct seq_waiter w;
    struct ctx *c;
    int64_t deadline_ms;
    unsigned moves; /* the consumer's, when the read began from its position */
    int own_cursor; /* after= was given: the consumer's moves do not apply */
    char name[LS_CHANNEL_MAX + 1]; /* "" anonymous */
    uint64_t epoch, read_epoch; /* as in struct esession: a parked poll wakes on the tail */
    int tail_ok;
};

static void npage_submit(struct npage *p);

static void
npage_free(void *arg)
{
    struct npage *p = arg;
    free(p->r.channels);
    json_decref(p->r.notes);
    free(p);
}

static void
npage_run(struct store *st, struct http_read *hr)
{
    struct npage *p = hr->arg;
    nread_run(st, &p->r);
    if (p->r.rc) ls_error_set(&hr->err, LS_EIO, "cannot read the log");
}

/* A parked long poll woken by a commit: its page from the log tail, on the loop (see fast_cb).
 * 1: answered or parked again; 0: read the store. */
static int
npage_fast(struct npage *p)
{
    struct server *srv = p->c->srv;
    struct fast f = {.channels = p->r.channels, .upto = srv->pos.seq, .scanned = p->r.cursor,
                     .limit = p->r.limit};
    json_t *reply;
    if (!fast_allowed(srv, p->own_cursor ? "" : p->name, p->tail_ok, p->moves, p->r.gen,
                      p->r.cursor) ||
        !(f.notes = json_array()))
        return 0;
    if (f.upto > p->r.cursor && (fast_read(srv, p->epoch, &f) ||
                                 (json_array_size(f.notes) == 0 && f.scanned < f.upto))) {
        json_decref(f.notes);
        return 0;
    }
    p->r.cursor = p->r.next = f.scanned;
    if (json_array_size(f.notes) == 0 && p->deadline_ms > ls_mono_ms()) {
        json_decref(f.notes);
        p->w.target = p->r.next + 1;
        p->w.deadline_ms = p->deadline_ms;
        server_wait_seq(srv, &p->w);
        return 1;
    }
    reply = json_pack("{s:o,s:I,s:I}", "notifications", f.notes, "next", (json_int_t)p->r.next,
                      "head", (json_int_t)f.upto);
    if (reply) reply_json(p->c->req, 200, reply);
    else reply_error(p->c->req, LS_ENOMEM, NULL);
    ctx_free(p->c);
    npage_free(p);
    return 1;
}

static void
npage_fire(struct seq_waiter *w, int timed_out)
{
    struct npage *p = w->arg;
    struct consumer *c = *p->name ? consumer_find(p->c->srv, p->name) : NULL;
    p->r.cursor = p->r.next;
    if (c && !p->own_cursor && c->moves != p->moves) { /* moved while it waited */
        p->moves = c->moves;
        p->r.cursor = c->position;
        p->tail_ok = 0; /* from the store: it may be a reset now */
    }
    if (timed_out) p->deadline_ms = 0;
    if (npage_fast(p)) return;
    npage_submit(p);
}

/* The loop, after the read: the reply, or a wait for the next commit (a long poll). 1: took r. */
static int
npage_finish(struct http_read *hr)
{
    struct npage *p = hr->arg;
    struct server *srv = p->c->srv;
    struct consumer *c = *p->name ? consumer_find(srv, p->name) : NULL;
    json_t *reset;
    if (p->r.rc) return 0;
    if (c && !p->own_cursor && c->moves != p->moves) {
        /* an operator moved it while this was read: read from where it is now */
        p->moves = c->moves;
        p->r.cursor = c->position;
        npage_submit(p);
        return 1;
    }
    reset = nread_apply(srv, c, &p->r);
    if (!reset && json_array_size(p->r.notes) == 0 && p->deadline_ms > ls_mono_ms()) {
        p->tail_ok = 1;
        p->epoch = p->read_epoch;
        p->w.target = p->r.next + 1;
        p->w.deadline_ms = p->deadline_ms;
        p->w.fire = npage_fire;
        p->w.arg = p;
        server_wait_seq(srv, &p->w);
        return 1;
    }
    hr->reply = json_pack("{s:O,s:I,s:I}", "notifications", p->r.notes, "next",
                          (json_int_t)p->r.next, "head", (json_int_t)p->r.seen);
    if (reset) json_object_set_new(hr->reply, "reset", reset);
    return 0;
}

static void
npage_submit(struct npage *p)
{
    struct http_read *hr = calloc(1, sizeof *hr);
    if (!hr) {
        reply_error(p->c->req, LS_ENOMEM, NULL);
        ctx_free(p->c);
        npage_free(p);
        return;
    }
    p->r.seen = p->c->srv->pos.seq;
    p->read_epoch = tail_epoch(p->c->srv->tail);
    p->tail_ok = 0;
    hr->run = npage_run;
    hr->finish = npage_finish;
    hr->arg = p;
    hr->free_arg = npage_free;
    http_read_submit(p->c, hr);
}

static void
h_notifications(struct ctx *c)
{
    if (c->srv->pgmsg) { pg_h_notifications(c); return; } /* --messenger: notify_pg.c */
    struct npage *p = calloc(1, sizeof *p);
    struct consumer *cons;
    int64_t limit, wait_ms, after = -1;
    if (!p) {
        reply_error(c->req, LS_ENOMEM, NULL);
        goto out;
    }
    if (qint(c, "limit", 100, 1, PAGE_LIMIT_MAX, &limit) ||
        qint(c, "wait_ms", 0, 0, WAIT_MAX_MS, &wait_ms) ||
        qint(c, "after", -1, 0, INT64_MAX - 1, &after) ||
        open_reader(c, &cons, &p->r.channels, &p->r.cursor))
        goto out;
    if (after >= 0) p->r.cursor = after;
    p->own_cursor = after >= 0;
    if (cons) p->moves = cons->moves;
    if (p->r.cursor > c->srv->pos.seq) {
        reply_error(c->req, LS_EINVAL, "after=%lld is beyond this server's seq %lld",
                    (long long)p->r.cursor, (long long)c->srv->pos.seq);
        goto out;
    }
    p->r.gen_in = cons && after < 0 ? cons->gen : -1;
    if (cons) snprintf(p->name, sizeof p->name, "%s", cons->name);
    p->r.limit = (int)limit;
    p->deadline_ms = wait_ms ? ls_mono_ms() + wait_ms : 0;
    p->c = c;
    npage_submit(p);
    return;
out:
    if (p) npage_free(p);
    ctx_free(c);
}

/* ---------------------------------------------------------------- GET /v1/events (SSE) */

/*
 * A Server-Sent Events stream: pages read on a reader thread, sent as events, the next page
 * read only once the last has left; then it waits for the next commit. A client that goes away
 * while a page is being read ends the stream once the read comes back.
 */
struct esession {
    struct stream s;
    struct server *srv;
    struct read_job job;
    struct nread r;
    struct seq_waiter w;
    struct event *ping;
    char name[LS_CHANNEL_MAX + 1];
    unsigned moves; /* the consumer's: a move (rewind, reset) restarts the stream there */
    int sending, reading, gone, attached;
    /* The log tail's epoch when the last store read began, and whether that read left the
     * stream where the tail can take over (es_fast) */
    uint64_t epoch, read_epoch;
    int tail_ok;
};

static void es_pump(struct esession *e);

static void
es_free(struct esession *e)
{
    struct consumer *c = *e->name ? consumer_find(e->srv, e->name) : NULL;
    if (c && e->attached) c->connected--;
    server_cancel_wait(e->srv, &e->w);
    if (e->ping) event_free(e->ping);
    free(e->r.channels);
    json_decref(e->r.notes);
    free(e);
}

static void
es_end(struct esession *e)
{
    stream_end(&e->s);
    es_free(e);
}

static void
es_gone(struct stream *s)
{
    struct esession *e = (struct esession *)s;
    e->gone = 1;
    if (e->reading) atomic_store(&e->job.cancelled, 1); /* freed when the read is back */
    else es_free(e);
}

static void
es_sent(struct stream *s)
{
    struct esession *e = (struct esession *)s;
    e->sending = 0;
    es_pump(e);
}

static void
es_read(struct store *st, struct read_job *j)
{
    struct esession *e = (struct esession *)((char *)j - offsetof(struct esession, job));
    nread_run(st, &e->r);
}

void
sse_event_json(struct evbuffer *out, const char *type, int64_t id, json_t *body)
{
    char ids[24], *text = json_dumps(body, JSON_COMPACT);
    snprintf(ids, sizeof ids, "%lld", (long long)id);
    if (text) sse_format(out, type, ids, text);
    free(text);
}

static void
es_read_done(struct read_job *j)
{
    struct esession *e = (struct esession *)((char *)j - offsetof(struct esession, job));
    struct consumer *c = *e->name ? consumer_find(e->srv, e->name) : NULL;
    struct evbuffer *out;
    json_t *reset;
    size_t i, n;
    e->reading = 0;
    if (e->gone) {
        es_free(e);
        return;
    }
    if (e->r.rc || atomic_load(&j->cancelled) || !(out = evbuffer_new())) {
        es_end(e); /* the log cannot be read, or the server is stopping */
        return;
    }
    if (c && c->moves != e->moves) { /* an operator moved it: go on from there */
        e->moves = c->moves;
        e->r.cursor = c->position;
        evbuffer_free(out);
        es_pump(e);
        return;
    }
    if ((reset = nread_apply(e->srv, c, &e->r))) {
        sse_event_json(out, "reset", e->r.from, reset);
        json_decref(reset);
    }
    e->tail_ok = !reset;
    e->epoch = e->read_epoch;
    n = json_array_size(e->r.notes);
    for (i = 0; i < n; i++) {
        json_t *o = json_array_get(e->r.notes, i);
        sse_event_json(out, "notification", json_integer_value(json_object_get(o, "id")), o);
    }
    e->r.cursor = e->r.next;
    e->r.gen_in = e->r.gen; /* a snapshot loaded while it streams is another history: a reset */
    if (evbuffer_get_length(out) > 0) {
        e->sending = 1;
        stream_send(&e->s, out);
    } else {
        e->w.target = e->r.next + 1;
        server_wait_seq(e->srv, &e->w);
    }
    evbuffer_free(out);
}

static int
es_fast(struct esession *e)
{
    struct fast f = {.channels = e->r.channels, .upto = e->srv->pos.seq,
                     .scanned = e->r.cursor, .limit = SSE_BATCH};
    if (!fast_allowed(e->srv, e->name, e->tail_ok, e->moves, e->r.gen, e->r.cursor)) return 0;
    if (f.upto > e->r.cursor) {
        if (!(f.out = evbuffer_new())) return 0;
        if (fast_read(e->srv, e->epoch, &f)) {
            evbuffer_free(f.out);
            return 0;
        }
        e->r.cursor = f.scanned;
        if (evbuffer_get_length(f.out) > 0) {
            e->sending = 1;
            stream_send(&e->s, f.out);
            evbuffer_free(f.out);
            return 1;
        }
        evbuffer_free(f.out);
        if (e->r.cursor < f.upto) return 0; /* the tail could not say: read the store */
    }
    e->w.target = e->r.cursor + 1;
    server_wait_seq(e->srv, &e->w);
    return 1;
}

static void
es_pump(struct esession *e)
{
    if (e->sending || e->reading || !e->s.req) return;
    if (es_fast(e)) return;
    e->read_epoch = tail_epoch(e->srv->tail);
    e->tail_ok = 0;
    e->r.seen = e->srv->pos.seq;
    atomic_store(&e->job.cancelled, 0);
    e->job.run = es_read;
    e->job.done = es_read_done;
    e->reading = 1;
    if (readers_submit(e->srv->readers, &e->job)) {
        e->reading = 0; /* the readers are full: again at the next commit or ping */
        e->w.target = e->r.cursor + 1;
        server_wait_seq(e->srv, &e->w);
    }
}

static void
es_fire(struct seq_waiter *w, int timed_out)
{
    es_pump(w->arg);
}

static void
es_ping(evutil_socket_t fd, short what, void *arg)
{
    struct esession *e = arg;
    struct timeval tv = {SSE_PING_MS / 1000, 0};
    if (!e->sending && !e->reading) {
        struct evbuffer *buf = evbuffer_new();
        if (buf) {
            evbuffer_add(buf, ": ping\n\n", 8); /* keeps proxies open and finds dead clients */
            e->sending = 1;
            stream_send(&e->s, buf);
            evbuffer_free(buf);
        }
    }
    evtimer_add(e->ping, &tv);
}

/* One error event, and the end of the stream: never a silent hang. */
void
sse_refuse_unknown_id(struct ctx *c, const char *last, int64_t head)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(c->req);
    struct evbuffer *out = evbuffer_new();
    char msg[300];
    json_t *o;
    snprintf(msg, sizeof msg,
             "Last-Event-ID %s is not an id of this site's notifications (the client may have "
             "read another store): reconnect without it, or with from=start",
             last);
    o = json_pack("{s:s,s:s,s:I}", "error", "unknown_id", "message", msg, "head",
                  (json_int_t)head);
    evhttp_add_header(h, "Content-Type", "text/event-stream");
    evhttp_add_header(h, "Cache-Control", "no-cache");
    evhttp_add_header(h, "Connection", "close");
    if (out) sse_event_json(out, "error", head, o);
    evhttp_send_reply(c->req, 200, "OK", out);
    if (out) evbuffer_free(out);
    json_decref(o);
}

static void
h_events(struct ctx *c)
{
    if (c->srv->pgmsg) { pg_h_events(c); return; } /* --messenger: notify_pg.c */
    struct esession *e = calloc(1, sizeof *e);
    struct consumer *cons;
    const char *last = evhttp_find_header(evhttp_request_get_input_headers(c->req),
                                          "Last-Event-ID");
    struct timeval tv = {SSE_PING_MS / 1000, 0};
    int64_t id = -1;
    if (!e) {
        reply_error(c->req, LS_ENOMEM, NULL);
        goto out;
    }
    if (last && (ls_parse_i64(last, &id) || id < 0 || id > c->srv->pos.seq)) {
        sse_refuse_unknown_id(c, last, c->srv->pos.seq);
        free(e);
        goto out;
    }
    if (open_reader(c, &cons, &e->r.channels, &e->r.cursor)) goto free_e;
    if (id >= 0) {
        e->r.cursor = id;
        if (cons) consumer_ack(c->srv, cons, id); /* what the client says it has handled */
    }
    e->srv = c->srv;
    e->r.limit = SSE_BATCH;
    e->r.gen_in = cons && id < 0 ? cons->gen : -1;
    e->s.on_gone = es_gone;
    e->s.on_sent = es_sent;
    e->w.fire = es_fire;
    e->w.arg = e;
    if (!(e->ping = evtimer_new(c->srv->base, es_ping, e))) {
        reply_error(c->req, LS_ENOMEM, NULL);
        goto free_e;
    }
    if (cons) {
        snprintf(e->name, sizeof e->name, "%s", cons->name);
        e->moves = cons->moves;
        cons->connected++;
        e->attached = 1;
    }
    stream_start_sse(&e->s, c->req);
    evtimer_add(e->ping, &tv);
    es_pump(e);
    goto out;
free_e:
    if (e->ping) event_free(e->ping);
    free(e->r.channels);
    free(e);
out:
    ctx_free(c);
}

/* ---------------------------------------------------------------- POST /v1/notify */

/* One notification of a request into op (channel, compact payload); -1 after a 400. */
static int
note_op(struct ctx *c, const char *channel, json_t *payload, struct ls_op *op, size_t index)
{
    struct ls_error err;
    char *text;
    if (!channel || name_check("channel", channel, strlen(channel), &err)) {
        if (!channel) ls_error_set(&err, LS_EINVAL, "a notification needs a \"channel\"");
        if (index) ls_error_prefix(&err, "notification %zu: ", index);
        reply_lserror(c->req, &err);
        return -1;
    }
    if (strcmp(channel, LS_CONTENT_CHANNEL) == 0) {
        reply_error(c->req, LS_EINVAL,
                    "the channel content is the store's own (its changes); publish elsewhere");
        return -1;
    }
    if (!payload) {
        reply_error(c->req, LS_EINVAL, "a notification needs a \"payload\" (any JSON value)");
        return -1;
    }
    if (!(text = json_dumps(payload, JSON_COMPACT | JSON_ENCODE_ANY))) {
        reply_error(c->req, LS_ENOMEM, NULL);
        return -1;
    }
    if (strlen(text) > LS_NOTIFY_MAX) {
        free(text);
        reply_error(c->req, LS_ETOOBIG, "a payload is at most %d bytes of compact JSON",
                    LS_NOTIFY_MAX);
        return -1;
    }
    op_init(op);
    op->type = LS_OP_NOTIFY;
    op->to = text;
    if (!(op->path = strdup(channel))) {
        reply_error(c->req, LS_ENOMEM, NULL);
        return -1;
    }
    return 0;
}

static void
notify_done(struct wreq *r, void *arg)
{
    struct evhttp_request *req = arg;
    json_t *ids;
    if (r->rc) {
        reply_lserror(req, &r->err);
        wreq_free(r);
        return;
    }
    ids = json_array();
    for (size_t i = 0; i < r->applied; i++)
        json_array_append_new(ids, json_integer(r->first_seq + (json_int_t)i));
    reply_json(req, 200, json_pack("{s:o,s:I}", "ids", ids, "seq", (json_int_t)r->last.seq));
    wreq_free(r);
}

/* The request's notifications as writer ops; NULL after a reply. */
struct wreq *
notify_parse(struct ctx *c, json_t *body)
{
    const char *channel = qget(c, "channel");
    size_t n = channel ? 1 : json_is_array(body) ? json_array_size(body) : 1;
    struct wreq *r;
    if (!channel && !json_is_object(body) && !json_is_array(body)) {
        reply_error(c->req, LS_EINVAL,
                    "the body is {\"channel\":...,\"payload\":...}, an array of those, or any "
                    "JSON value with ?channel=");
        return NULL;
    }
    if (n == 0 || n > NOTIFY_BATCH_MAX) {
        reply_error(c->req, LS_EINVAL, "1 to %d notifications per request", NOTIFY_BATCH_MAX);
        return NULL;
    }
    if (!(r = calloc(1, sizeof *r)) || !(r->ops = calloc(n, sizeof *r->ops))) {
        free(r);
        reply_error(c->req, LS_ENOMEM, NULL);
        return NULL;
    }
    r->type = WREQ_OPS;
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_is_array(body) && !channel ? json_array_get(body, i) : body;
        int rc;
        if (channel) {
            rc = note_op(c, channel, body, &r->ops[i], 0);
        } else if (!json_is_object(o)) {
            reply_error(c->req, LS_EINVAL, "notification %zu: not a JSON object", i + 1);
            rc = -1;
        } else {
            rc = note_op(c, json_string_value(json_object_get(o, "channel")),
                         json_object_get(o, "payload"), &r->ops[i], json_is_array(body) ? i + 1 : 0);
        }
        r->nops = i + 1;
        if (rc) {
            wreq_free(r);
            return NULL;
        }
    }
    return r;
}

static void
h_notify(struct ctx *c)
{
    if (c->srv->pgmsg) { pg_h_notify(c); return; } /* --messenger: notify_pg.c */
    struct evbuffer *in = evhttp_request_get_input_buffer(c->req);
    size_t len = evbuffer_get_length(in);
    json_error_t jerr;
    json_t *body;
    struct wreq *r;
    int64_t wait_ms;
    int replica = !server_is_primary(c->srv);
    if (qint(c, "wait_ms", 5000, 0, WAIT_MAX_MS, &wait_ms)) goto out;
    /* a replica keeps them and forwards them (forward.c); the primary applies them */
    if (replica ? writer_admit(c->srv->writer, len) != 0 : require_writable(c) != 0) {
        if (replica) reply_error(c->req, LS_EUNAVAIL, "too many writes are waiting; try again");
        goto out;
    }
    body = json_loadb((const char *)evbuffer_pullup(in, -1), len, JSON_DECODE_ANY, &jerr);
    if (!body) {
        reply_error(c->req, LS_EINVAL, "the body is not JSON: %s", jerr.text);
        goto out;
    }
    r = notify_parse(c, body);
    json_decref(body);
    if (!r) goto out;
    messenger_count_published(c->srv, r->nops);
    if (replica) {
        forward_accept(c->srv, c->req, r, wait_ms);
        goto out;
    }
    r->done = notify_done;
    r->arg = c->req;
    writer_submit(c->srv->writer, r);
out:
    ctx_free(c);
}

/* ---------------------------------------------------------------- /v1/consumers */

static struct consumer *
named(struct ctx *c)
{
    const char *name = param(c, "name");
    struct consumer *cons = consumer_find(c->srv, name);
    if (!cons) reply_error(c->req, LS_ENOTFOUND, "no consumer %s on this server", name);
    return cons;
}

static void
h_consumers(struct ctx *c)
{
    if (c->srv->pgmsg) { pg_h_consumers(c); return; } /* --messenger: notify_pg.c */
    reply_json(c->req, 200, json_pack("{s:o,s:I}", "consumers", messenger_consumers_json(c->srv),
                                      "head", (json_int_t)c->srv->pos.seq));
    ctx_free(c);
}

static void
h_consumer(struct ctx *c)
{
    if (c->srv->pgmsg) { pg_h_consumer(c); return; } /* --messenger: notify_pg.c */
    struct consumer *cons = named(c);
    if (cons) reply_json(c->req, 200, consumer_json(c->srv, cons));
    ctx_free(c);
}

static void
h_ack(struct ctx *c)
{
    if (c->srv->pgmsg) { pg_h_ack(c); return; } /* --messenger: notify_pg.c */
    struct consumer *cons = named(c);
    int64_t id;
    if (!cons || ack_id(c, &id)) goto out;
    if (id > c->srv->pos.seq) {
        reply_error(c->req, LS_EINVAL, "id %lld is beyond this server's seq %lld",
                    (long long)id, (long long)c->srv->pos.seq);
        goto out;
    }
    consumer_ack(c->srv, cons, id);
    reply_json(c->req, 200, consumer_json(c->srv, cons));
out:
    ctx_free(c);
}

int
ack_id(struct ctx *c, int64_t *id)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(c->req);
    if (qint(c, "id", -1, 0, INT64_MAX, id)) return -1;
    if (*id < 0 && evbuffer_get_length(in) > 0) {
        json_t *o = json_loadb((const char *)evbuffer_pullup(in, -1), evbuffer_get_length(in), 0,
                               NULL);
        json_t *v = json_object_get(o, "id");
        if (json_is_integer(v) && json_integer_value(v) >= 0) *id = json_integer_value(v);
        json_decref(o);
    }
    if (*id >= 0) return 0;
    reply_error(c->req, LS_EINVAL, "an ack is {\"id\": N} or ?id=N");
    return -1;
}

int
rewind_target(struct ctx *c, int64_t *v, int *by_time)
{
    const char *to = qget(c, "to");
    *by_time = 0;
    if (!to) {
        reply_error(c->req, LS_EINVAL, "rewind needs ?to=ID or ?to=TIME");
        return -1;
    }
    if (ls_parse_i64(to, v) == 0 && *v >= 0 && *v < 1000000000000LL) return 0; /* an id, not ms */
    if (ls_parse_time(to, v)) {
        reply_error(c->req, LS_EINVAL, "to=%s is neither an id nor a time", to);
        return -1;
    }
    *by_time = 1;
    return 0;
}

/* rewind ?to=ID|TIME: by time, the last entry before it is found on a reader thread */
struct rewind {
    char name[LS_CHANNEL_MAX + 1];
    int64_t ts, pos;
};

static void
rewind_run(struct store *st, struct http_read *hr)
{
    struct rewind *w = hr->arg;
    w->pos = store_log_seq_before(st, w->ts);
}

static int
rewind_finish(struct http_read *hr)
{
    struct rewind *w = hr->arg;
    struct consumer *cons = consumer_find(hr->c->srv, w->name);
    if (!cons) {
        ls_error_set(&hr->err, LS_ENOTFOUND, "no consumer %s on this server", w->name);
        return 0;
    }
    consumer_move(hr->c->srv, cons, w->pos);
    hr->reply = consumer_json(hr->c->srv, cons);
    return 0;
}

static void
h_rewind(struct ctx *c)
{
    if (c->srv->pgmsg) { pg_h_rewind(c); return; } /* --messenger: notify_pg.c */
    struct consumer *cons = named(c);
    struct http_read *hr;
    struct rewind *w;
    int64_t v;
    int by_time;
    if (!cons || rewind_target(c, &v, &by_time)) goto out;
    if (!by_time) {
        if (v > c->srv->pos.seq) {
            reply_error(c->req, LS_EINVAL, "id %lld is beyond this server's seq %lld",
                        (long long)v, (long long)c->srv->pos.seq);
            goto out;
        }
        consumer_move(c->srv, cons, v);
        reply_json(c->req, 200, consumer_json(c->srv, cons));
        goto out;
    }
    if (!(hr = calloc(1, sizeof *hr)) || !(w = calloc(1, sizeof *w))) {
        free(hr);
        reply_error(c->req, LS_ENOMEM, NULL);
        goto out;
    }
    snprintf(w->name, sizeof w->name, "%s", cons->name);
    w->ts = v;
    hr->run = rewind_run;
    hr->finish = rewind_finish;
    hr->arg = w;
    hr->free_arg = free;
    http_read_submit(c, hr);
    return;
out:
    ctx_free(c);
}

static void
h_reset(struct ctx *c)
{
    if (c->srv->pgmsg) { pg_h_reset(c); return; } /* --messenger: notify_pg.c */
    struct consumer *cons = named(c);
    if (cons) {
        consumer_move(c->srv, cons, c->srv->pos.seq);
        reply_json(c->req, 200, consumer_json(c->srv, cons));
    }
    ctx_free(c);
}

static void
h_consumer_delete(struct ctx *c)
{
    if (c->srv->pgmsg) { pg_h_consumer_delete(c); return; } /* --messenger: notify_pg.c */
    struct consumer *cons = named(c);
    if (cons) {
        consumer_delete(c->srv, cons);
        reply_json(c->req, 200, json_pack("{s:s}", "removed", param(c, "name")));
    }
    ctx_free(c);
}

void
http_notify_routes(struct server *srv)
{
    static const struct route table[] = {
        {"/v1/notify", EVHTTP_REQ_POST, NEED_NOTIFY, NEED_NOTIFY, 16u << 20, h_notify},
        /* GET only: a HEAD reply has no body, and a stream would never send its chunks */
        {"/v1/notifications", EVHTTP_REQ_GET, NEED_NOTIFY, NEED_NOTIFY, NO_BODY, h_notifications},
        {"/v1/events", EVHTTP_REQ_GET, NEED_NOTIFY, NEED_NOTIFY, NO_BODY, h_events},
        {"/v1/consumers", M_GET, NEED_REPORT, NEED_REPORT, NO_BODY, h_consumers},
        {"/v1/consumers/{name}", M_GET, NEED_REPORT, NEED_REPORT, NO_BODY, h_consumer},
        {"/v1/consumers/{name}", EVHTTP_REQ_DELETE, NEED_ADMIN, NEED_ADMIN, NO_BODY,
         h_consumer_delete},
        {"/v1/consumers/{name}/ack", EVHTTP_REQ_POST, NEED_NOTIFY, NEED_NOTIFY, 4096, h_ack},
        {"/v1/consumers/{name}/rewind", EVHTTP_REQ_POST, NEED_ADMIN, NEED_ADMIN, NO_BODY,
         h_rewind},
        {"/v1/consumers/{name}/reset", EVHTTP_REQ_POST, NEED_ADMIN, NEED_ADMIN, NO_BODY, h_reset},
    };
    http_routes(srv, table, sizeof table / sizeof table[0]);
}
