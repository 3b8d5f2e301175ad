/*
 * changes.c - GET /v1/changes: the change log as a page, a long poll, or a followed NDJSON stream
 * (docs/api.md). Every page of the log is read on a reader thread; the loop only sends it.
 *
 * A position moves only past what was read: with no entry after `since`, `next` is the server's
 * seq only when the read saw nothing in between (a filtered replica's log has gaps), and the
 * seq it compares with was taken before the read.
 *
 * Not for: the peer protocol's log reading (repl_up.c).
 */
#include "node/http/http.h"
#include "common/util.h"

#include <event2/buffer.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define CHANGES_LIMIT_MAX 10000
#define FOLLOW_BATCH 500
#define HEARTBEAT_MS 15000

static json_t *
change_json(const struct ls_change *ch)
{
    char ts[40];
    json_t *o;
    ls_format_time(ch->ts, ts, sizeof ts);
    o = json_pack("{s:I,s:s,s:s,s:I,s:s}", "seq", (json_int_t)ch->seq, "op", op_name(ch->op),
                  "path", ch->path, "version", (json_int_t)ch->version, "ts", ts);
    if (ch->to) json_object_set_new(o, "to", json_string(ch->to));
    if (ch->op == LS_OP_PUT && ch->published) json_object_set_new(o, "published", json_true());
    return o;
}

/* ---------------------------------------------------------------- a page */

struct page {
    int64_t since, limit, seen; /* seen: the server's seq before the read */
    int64_t first;              /* log_first_seq, read with the page */
    json_t *arr;
};

static int
page_cb(void *arg, const struct ls_change *ch)
{
    json_array_append_new(arg, change_json(ch));
    return 0;
}

static void
page_run(struct store *st, struct http_read *r)
{
    struct page *p = r->arg;
    int64_t next = p->since;
    json_t *arr = json_array();
    int n = store_changes(st, p->since, (int)p->limit, page_cb, arr);
    if (n < 0) {
        json_decref(arr);
        ls_error_set(&r->err, LS_EIO, "cannot read the change log");
        return;
    }
    if (n > 0) next = json_integer_value(json_object_get(json_array_get(arr, (size_t)n - 1), "seq"));
    else if (p->seen > p->since) next = p->seen; /* a filtered replica: nothing in between */
    r->reply = json_pack("{s:o,s:I,s:I,s:I}", "changes", arr, "next", (json_int_t)next, "seq",
                         (json_int_t)p->seen, "log_first_seq",
                         (json_int_t)store_log_first_seq(st));
}

static void
page_submit(struct ctx *c, int64_t since, int64_t limit)
{
    struct http_read *r = calloc(1, sizeof *r);
    struct page *p = calloc(1, sizeof *p);
    if (!r || !p) {
        free(r);
        free(p);
        reply_error(c->req, LS_ENOMEM, NULL);
        ctx_free(c);
        return;
    }
    p->since = since;
    p->limit = limit;
    p->seen = c->srv->pos.seq;
    r->run = page_run;
    r->arg = p;
    r->free_arg = free;
    http_read_submit(c, r);
}

/* ---- long poll ---- */

struct long_poll {
    struct seq_waiter w;
    struct ctx *c;
    int64_t since, limit;
};

static void
long_poll_fire(struct seq_waiter *w, int timed_out)
{
    struct long_poll *lp = w->arg;
    page_submit(lp->c, lp->since, lp->limit);
    free(lp);
}

/* ---------------------------------------------------------------- follow */

/*
 * A followed feed: pages of the log read on a reader thread, sent as NDJSON lines, the next
 * page read only when the last has left; then it waits for the next commit. A client that goes
 * away while a page is being read ends the follower once the read comes back.
 */
struct follower {
    struct stream s;
    struct server *srv;
    struct follower *next, *prev;
    struct seq_waiter w;
    struct event *heartbeat;
    struct read_job job;
    int64_t pos;
    int64_t seen; /* the server's seq before the read in flight */
    struct evbuffer *page;
    int64_t page_last; /* the seq of the page's last line, 0: none */
    int sending, reading, gone;
};

static void follower_pump(struct follower *f);

static void
follower_unlink(struct follower *f)
{
    if (f->prev) f->prev->next = f->next;
    else f->srv->followers = f->next;
    if (f->next) f->next->prev = f->prev;
}

static void
follower_free(struct follower *f)
{
    server_cancel_wait(f->srv, &f->w);
    event_free(f->heartbeat);
    follower_unlink(f);
    if (f->page) evbuffer_free(f->page);
    free(f);
}

static void
follower_gone(struct stream *s)
{
    struct follower *f = (struct follower *)s;
    f->gone = 1;
    if (f->reading) atomic_store(&f->job.cancelled, 1); /* freed when the read is back */
    else follower_free(f);
}

static void
follower_sent(struct stream *s)
{
    struct follower *f = (struct follower *)s;
    f->sending = 0;
    follower_pump(f);
}

static int
follower_line(void *arg, const struct ls_change *ch)
{
    struct follower *f = arg;
    json_t *o = change_json(ch);
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (text) {
        evbuffer_add_printf(f->page, "%s\n", text);
        free(text);
    }
    f->page_last = ch->seq;
    return 0;
}

static void
follower_read(struct store *st, struct read_job *j)
{
    struct follower *f = (struct follower *)((char *)j - offsetof(struct follower, job));
    if (store_changes(st, f->pos, FOLLOW_BATCH, follower_line, f) < 0) f->page_last = -1;
}

static void
follower_read_done(struct read_job *j)
{
    struct follower *f = (struct follower *)((char *)j - offsetof(struct follower, job));
    f->reading = 0;
    if (f->gone) {
        follower_free(f);
        return;
    }
    if (f->page_last < 0 || atomic_load(&j->cancelled)) {
        /* the log cannot be read (or the server is stopping): end the stream */
        stream_end(&f->s);
        follower_free(f);
        return;
    }
    if (f->page_last > 0 && evbuffer_get_length(f->page) == 0) { /* out of memory */
        stream_end(&f->s);
        follower_free(f);
        return;
    }
    if (f->page_last > 0) {
        f->pos = f->page_last;
        f->sending = 1;
        stream_send(&f->s, f->page);
        return;
    }
    /* Caught up. A filtered replica may be ahead of its last log entry. */
    if (f->seen > f->pos) f->pos = f->seen;
    f->w.target = f->pos + 1;
    server_wait_seq(f->srv, &f->w);
}

static void
follower_pump(struct follower *f)
{
    if (f->sending || f->reading || !f->s.req) return;
    f->page_last = 0;
    f->seen = f->srv->pos.seq;
    atomic_store(&f->job.cancelled, 0);
    f->job.run = follower_read;
    f->job.done = follower_read_done;
    f->reading = 1;
    if (readers_submit(f->srv->readers, &f->job)) {
        /* the readers are full: try again at the next commit or heartbeat */
        f->reading = 0;
        f->w.target = f->pos + 1;
        server_wait_seq(f->srv, &f->w);
    }
}

static void
follower_fire(struct seq_waiter *w, int timed_out)
{
    follower_pump(w->arg);
}

static void
follower_heartbeat(evutil_socket_t fd, short what, void *arg)
{
    struct follower *f = arg;
    struct timeval tv = {HEARTBEAT_MS / 1000, 0};
    if (!f->sending && !f->reading) {
        struct evbuffer *buf = evbuffer_new();
        evbuffer_add(buf, "\n", 1); /* keeps proxies open and finds dead clients */
        f->sending = 1;
        stream_send(&f->s, buf);
        evbuffer_free(buf);
    }
    evtimer_add(f->heartbeat, &tv);
}

static void
follow_start(struct ctx *c, int64_t since)
{
    struct follower *f = calloc(1, sizeof *f);
    struct timeval tv = {HEARTBEAT_MS / 1000, 0};
    if (!f || !(f->page = evbuffer_new())) {
        free(f);
        reply_error(c->req, LS_ENOMEM, NULL);
        return;
    }
    f->srv = c->srv;
    f->pos = since;
    f->s.on_gone = follower_gone;
    f->s.on_sent = follower_sent;
    f->w.fire = follower_fire;
    f->w.arg = f;
    if (!(f->heartbeat = evtimer_new(c->srv->base, follower_heartbeat, f))) {
        evbuffer_free(f->page);
        free(f);
        reply_error(c->req, LS_ENOMEM, NULL);
        return;
    }
    f->next = c->srv->followers;
    if (f->next) f->next->prev = f;
    c->srv->followers = f;
    evhttp_add_header(evhttp_request_get_output_headers(c->req), "Content-Type",
                      "application/x-ndjson");
    stream_start(&f->s, c->req, 200);
    evtimer_add(f->heartbeat, &tv);
    follower_pump(f);
}

void
http_followers_stop(struct server *srv)
{
    /* Reads in flight have come back already (the readers stop first). */
    while (srv->followers) {
        struct follower *f = srv->followers;
        stream_end(&f->s);
        follower_free(f);
    }
}

/* ---------------------------------------------------------------- the route */

static void
h_changes(struct ctx *c)
{
    int64_t since, limit, wait_ms;
    if (qint(c, "since", 0, 0, INT64_MAX - 1, &since) ||
        qint(c, "limit", 1000, 1, CHANGES_LIMIT_MAX, &limit) ||
        qint(c, "wait_ms", 0, 0, WAIT_MAX_MS, &wait_ms))
        goto out;
    if (qflag(c, "follow")) {
        follow_start(c, since);
    } else if (wait_ms > 0 && c->srv->pos.seq <= since) {
        struct long_poll *lp = calloc(1, sizeof *lp);
        if (!lp) {
            reply_error(c->req, LS_ENOMEM, NULL);
            goto out;
        }
        lp->c = c;
        lp->since = since;
        lp->limit = limit;
        lp->w.target = since + 1;
        lp->w.deadline_ms = ls_mono_ms() + wait_ms;
        lp->w.fire = long_poll_fire;
        lp->w.arg = lp;
        server_wait_seq(c->srv, &lp->w);
        return;
    } else {
        page_submit(c, since, limit);
        return;
    }
out:
    ctx_free(c);
}

void
http_changes_routes(struct server *srv)
{
    /* GET only: a HEAD reply has no body, and a followed one would never send its chunks */
    const struct route r = {"/v1/changes", EVHTTP_REQ_GET, NEED_READ, NEED_READ, NO_BODY,
                            h_changes};
    http_route(srv, &r);
}
