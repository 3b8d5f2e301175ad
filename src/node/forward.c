/*
 * forward.c - notifications published on a replica reach the primary, which alone orders the
 * log (docs/messenger.md, docs/protocol.md PUBLISH).
 *
 * A replica first keeps what it accepts in its outbox (a table of its store, committed before
 * anything is answered), then sends it up its replication link as PUBLISH frames, one batch in
 * flight, in outbox order. The primary applies a batch in one transaction together with the
 * highest outbox id it applied for that origin server (its node_id), so a batch sent again after
 * a lost PUBLISH_ACK is applied once; the replica deletes what was acknowledged. A request waits
 * for the ids the primary gave (wait_ms), or is answered 202 with its outbox ids while the
 * primary is out of reach: accepted, and forwarded as soon as the link is back.
 *
 * A replica that follows a replica relays its downstreams' PUBLISH frames up its own link and
 * their PUBLISH_ACKs back down; when its link is down it answers "retry" and the origin keeps the
 * batch in its outbox.
 */
#include "node/http/http.h"
#include "node/messenger.h"
#include "proto/frame.h"
#include "common/log.h"
#include "common/util.h"

#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

#define FWD_BATCH 256
#define FWD_BATCH_BYTES (2u << 20)
#define FWD_RETRY_MS 1000
#define RELAYS_MAX 64

/* A POST /v1/notify on this replica, waiting for the primary's ids. */
struct fwait {
    struct fwait *next;
    struct forwarder *f;
    struct evhttp_request *req;
    int64_t first, last; /* outbox ids */
    json_t *ids;         /* the primary's ids, filled as acks come (null: applied earlier) */
    struct event *timer;
};

struct relay {
    uint64_t downstream; /* repl_up's serial of the connection it came from */
    int64_t tag;         /* ours, in the frame sent up */
    json_t *inner;       /* the tag it came with (a relay below us), or NULL */
};

struct forwarder {
    struct server *srv;
    int link;            /* the upstream link is streaming and knows PUBLISH */
    int64_t inflight;    /* the last outbox id of the batch in flight, 0: none */
    int64_t inflight_first;
    int64_t queued;      /* the highest outbox id known to exist */
    struct fwait *waits;
    struct event *retry;
    struct relay relays[RELAYS_MAX];
    int nrelays;
    int64_t relay_tag;
};

static void kick(struct forwarder *f);

/* ---------------------------------------------------------------- waiting requests */

static void
fwait_answer(struct fwait *w, int queued)
{
    struct forwarder *f = w->f;
    struct fwait **p = &f->waits;
    while (*p && *p != w) p = &(*p)->next;
    if (*p) *p = w->next;
    if (queued) {
        json_t *ids = json_array();
        for (int64_t i = w->first; i <= w->last; i++) json_array_append_new(ids, json_integer(i));
        reply_json(w->req, 202, json_pack("{s:o,s:s}", "queued", ids, "message",
                                          "accepted and kept on this server; forwarded to the "
                                          "primary as soon as it is reachable"));
        json_decref(w->ids);
    } else {
        int64_t seq = 0;
        size_t i;
        json_t *v;
        json_array_foreach(w->ids, i, v) if (json_integer_value(v) > seq) seq = json_integer_value(v);
        reply_json(w->req, 200, json_pack("{s:o,s:I}", "ids", w->ids, "seq", (json_int_t)seq));
    }
    event_free(w->timer);
    free(w);
}

static void
fwait_timeout(evutil_socket_t fd, short what, void *arg)
{
    fwait_answer(arg, 1);
}

/* ---------------------------------------------------------------- accepting (the replica) */

struct accept_job {
    struct forwarder *f;
    struct evhttp_request *req;
    int64_t wait_ms, first, last;
};

static int
accept_run(struct store *st, struct wreq *r)
{
    struct accept_job *j = r->fn_arg;
    int64_t now = ls_now_ms();
    for (size_t i = 0; i < r->nops; i++) {
        int64_t id;
        int rc = store_outbox_add(st, r->ops[i].path, r->ops[i].to, now, &id, &r->err);
        if (rc) return rc;
        if (i == 0) j->first = id;
        j->last = id;
    }
    return 0;
}

static void
accept_done(struct wreq *r, void *arg)
{
    struct accept_job *j = arg;
    struct forwarder *f = j->f;
    struct fwait *w;
    struct timeval tv = {j->wait_ms / 1000, (j->wait_ms % 1000) * 1000};
    if (r->rc) {
        reply_lserror(j->req, &r->err);
        goto out;
    }
    if (j->last > f->queued) f->queued = j->last;
    if (!(w = calloc(1, sizeof *w)) || !(w->ids = json_array()) ||
        !(w->timer = evtimer_new(f->srv->base, fwait_timeout, w))) {
        if (w) json_decref(w->ids);
        free(w);
        reply_json(j->req, 202, json_pack("{s:[I,I]}", "queued", (json_int_t)j->first,
                                          (json_int_t)j->last));
        kick(f);
        goto out;
    }
    w->f = f;
    w->req = j->req;
    w->first = j->first;
    w->last = j->last;
    for (int64_t i = j->first; i <= j->last; i++) json_array_append_new(w->ids, json_null());
    w->next = f->waits;
    f->waits = w;
    evtimer_add(w->timer, &tv);
    kick(f);
out:
    free(j);
    wreq_free(r);
}

void
forward_accept(struct server *srv, struct evhttp_request *req, struct wreq *r, int64_t wait_ms)
{
    struct accept_job *j = calloc(1, sizeof *j);
    if (!j) {
        reply_error(req, LS_ENOMEM, NULL);
        wreq_free(r);
        return;
    }
    j->f = srv->fwd;
    j->req = req;
    j->wait_ms = wait_ms;
    r->type = WREQ_CUSTOM;
    r->fn = accept_run;
    r->fn_arg = j;
    r->done = accept_done;
    r->arg = j;
    writer_submit(srv->writer, r);
}

/* ---------------------------------------------------------------- sending (the replica) */

struct batch {
    json_t *notes;
    int64_t first, last;
    size_t bytes;
};

static int
batch_cb(void *arg, int64_t id, const char *channel, const char *payload, int64_t ts)
{
    struct batch *b = arg;
    if (b->bytes > FWD_BATCH_BYTES) return 1;
    json_array_append_new(b->notes, json_pack("{s:I,s:s,s:s,s:I}", "id", (json_int_t)id,
                                              "channel", channel, "payload", payload, "ts",
                                              (json_int_t)ts));
    if (!b->first) b->first = id;
    b->last = id;
    b->bytes += strlen(payload) + strlen(channel) + 64;
    return 0;
}

static void
on_retry(evutil_socket_t fd, short what, void *arg)
{
    kick(arg);
}

/* The next batch of the outbox up the link, when none is in flight. */
static void
kick(struct forwarder *f)
{
    struct batch b = {json_array(), 0, 0, 0};
    json_t *o;
    int n;
    if (!f->link || f->inflight || f->srv->stopping) goto out;
    /* a short indexed read of at most FWD_BATCH rows */
    n = store_outbox(f->srv->reader, 0, FWD_BATCH, batch_cb, &b);
    if (n <= 0) goto out;
    o = json_pack("{s:s,s:O}", "origin", repl_down_node_id(f->srv), "notes", b.notes);
    if (repl_down_send_json(f->srv, F_PUBLISH, o) == 0) {
        f->inflight_first = b.first;
        f->inflight = b.last;
    }
    json_decref(o);
out:
    json_decref(b.notes);
}

void
forward_link(struct server *srv, int up)
{
    struct forwarder *f = srv->fwd;
    if (!f) return;
    f->link = up;
    f->inflight = 0; /* what was in flight is sent again; the primary applies it once */
    while (f->nrelays > 0) json_decref(f->relays[--f->nrelays].inner); /* their origins resend */
    if (up) kick(f);
}

struct done_job {
    struct forwarder *f;
    int64_t upto;
};

static int
done_run(struct store *st, struct wreq *r)
{
    struct done_job *j = r->fn_arg;
    return store_outbox_done(st, j->upto, &r->err);
}

static void
done_done(struct wreq *r, void *arg)
{
    struct done_job *j = arg;
    struct forwarder *f = j->f;
    if (r->rc) log_warn("forwarding notifications: %s", r->err.msg);
    else if (f->inflight == j->upto) f->inflight = 0;
    free(j);
    wreq_free(r);
    if (!f->inflight) kick(f);
}

/* The primary's answer to our batch: {"upto": the last outbox id it holds now, "first": the
 * first of the batch, "applied": how many of its last ones it applied now, "first_seq": their
 * first seq} or {"retry": true}. */
static void
own_ack(struct forwarder *f, json_t *o)
{
    int64_t upto = json_integer_value(json_object_get(o, "upto"));
    int64_t applied = json_integer_value(json_object_get(o, "applied"));
    int64_t first_seq = json_integer_value(json_object_get(o, "first_seq"));
    struct done_job *j;
    struct wreq *r;
    if (json_is_true(json_object_get(o, "retry"))) {
        struct timeval tv = {FWD_RETRY_MS / 1000, 0};
        f->inflight = 0;
        evtimer_add(f->retry, &tv);
        return;
    }
    if (!f->inflight || upto != f->inflight || applied < 0 || applied > upto - f->inflight_first + 1) {
        log_warn("the upstream acknowledged notifications up to %lld, not the batch sent (%lld to "
                 "%lld); sending it again",
                 (long long)upto, (long long)f->inflight_first, (long long)f->inflight);
        f->inflight = 0;
        return;
    }
    /* the ids of the requests waiting for them */
    for (struct fwait *w = f->waits, *next; w; w = next) {
        next = w->next;
        for (int64_t id = w->first; id <= w->last; id++) {
            int64_t k = id - (upto - applied + 1); /* its place among those applied now */
            if (id >= f->inflight_first && id <= upto && k >= 0)
                json_array_set_new(w->ids, (size_t)(id - w->first), json_integer(first_seq + k));
        }
        if (w->last <= upto) fwait_answer(w, 0);
    }
    if (!(j = calloc(1, sizeof *j)) || !(r = calloc(1, sizeof *r))) {
        free(j);
        f->inflight = 0;
        return;
    }
    j->f = f;
    j->upto = upto;
    r->type = WREQ_CUSTOM;
    r->fn = done_run;
    r->fn_arg = j;
    r->done = done_done;
    r->arg = j;
    writer_submit(f->srv->writer, r);
}

void
forward_on_ack(struct server *srv, json_t *o)
{
    struct forwarder *f = srv->fwd;
    json_t *tag = json_object_get(o, "relay");
    if (!f) return;
    if (!tag) {
        own_ack(f, o);
        return;
    }
    for (int i = 0; i < f->nrelays; i++) {
        if (f->relays[i].tag != json_integer_value(tag)) continue;
        if (f->relays[i].inner) json_object_set_new(o, "relay", f->relays[i].inner);
        else json_object_del(o, "relay");
        repl_up_send_json(srv, f->relays[i].downstream, F_PUBLISH_ACK, o);
        f->relays[i] = f->relays[--f->nrelays];
        return;
    }
}

/* ---------------------------------------------------------------- applying (the primary) */

struct apply_job {
    struct server *srv;
    uint64_t downstream;
    char origin[33];
    int64_t first, last, applied, first_seq;
    json_t *relay; /* the tag of a replica that relays it, echoed in the ack */
};

static int
apply_run(struct store *st, struct wreq *r)
{
    struct apply_job *j = r->fn_arg;
    int64_t done = store_forwarded(st, j->origin);
    if (done < 0) return ls_error_set(&r->err, LS_EIO, "cannot read the forwarded table");
    for (size_t i = 0; i < r->nops; i++) {
        struct ls_op_result res;
        int64_t id = j->first + (int64_t)i;
        int rc;
        if (id <= done) continue; /* applied before: its ack was lost */
        if ((rc = store_apply(st, &r->ops[i], &res, &r->err))) return rc;
        if (j->applied++ == 0) j->first_seq = res.seq;
    }
    if (j->last > done) return store_set_forwarded(st, j->origin, j->last, &r->err);
    return 0;
}

static void
apply_done(struct wreq *r, void *arg)
{
    struct apply_job *j = arg;
    json_t *o;
    if (r->rc) {
        log_warn("notifications forwarded by %s: %s", j->origin, r->err.msg);
        o = json_pack("{s:b}", "retry", 1);
    } else {
        o = json_pack("{s:I,s:I,s:I,s:I}", "upto", (json_int_t)j->last, "first",
                      (json_int_t)j->first, "applied", (json_int_t)j->applied, "first_seq",
                      (json_int_t)j->first_seq);
    }
    if (j->relay) json_object_set(o, "relay", j->relay);
    repl_up_send_json(j->srv, j->downstream, F_PUBLISH_ACK, o);
    json_decref(o);
    json_decref(j->relay);
    free(j);
    wreq_free(r);
}

/* A PUBLISH frame's notes as NOTIFY ops: consecutive ids, valid channels and JSON payloads.
 * Returns an error message, or NULL. */
static const char *
parse_notes(json_t *notes, struct wreq *r, int64_t *first)
{
    size_t i, n = json_array_size(notes);
    json_t *v;
    struct ls_error err;
    if (n == 0 || n > 1000) return "a PUBLISH frame carries 1 to 1000 notifications";
    if (!(r->ops = calloc(n, sizeof *r->ops))) return "out of memory";
    json_array_foreach(notes, i, v) {
        const char *ch = json_string_value(json_object_get(v, "channel"));
        const char *pl = json_string_value(json_object_get(v, "payload"));
        int64_t id = json_integer_value(json_object_get(v, "id"));
        json_t *parsed;
        if (i == 0) *first = id;
        if (id < 1 || id != *first + (int64_t)i) return "notification ids are not consecutive";
        if (!ch || name_check("channel", ch, strlen(ch), &err) ||
            strcmp(ch, LS_CONTENT_CHANNEL) == 0)
            return "a notification has a bad channel";
        if (!pl || strlen(pl) > LS_NOTIFY_MAX ||
            !(parsed = json_loads(pl, JSON_DECODE_ANY, NULL)))
            return "a notification's payload is not JSON (or too large)";
        json_decref(parsed);
        op_init(&r->ops[i]);
        r->ops[i].type = LS_OP_NOTIFY;
        r->ops[i].path = strdup(ch);
        r->ops[i].to = strdup(pl);
        r->nops = i + 1;
        if (!r->ops[i].path || !r->ops[i].to) return "out of memory";
    }
    return NULL;
}

int
forward_on_notify(struct server *srv, uint64_t downstream, json_t *o, const char **why)
{
    struct forwarder *f = srv->fwd;
    const char *origin = json_string_value(json_object_get(o, "origin"));
    struct apply_job *j;
    struct wreq *r;
    if (!origin || strlen(origin) != 32 || strspn(origin, "0123456789abcdef") != 32) {
        *why = "a PUBLISH frame names its origin server (a node_id)";
        return -1;
    }
    if (!server_is_primary(srv)) { /* relay it up, or ask for it again later */
        json_t *ack;
        if (f && f->link && f->nrelays < RELAYS_MAX) {
            json_t *inner = json_incref(json_object_get(o, "relay"));
            struct relay *rl = &f->relays[f->nrelays];
            rl->downstream = downstream;
            rl->tag = ++f->relay_tag;
            rl->inner = inner;
            json_object_set_new(o, "relay", json_integer(f->relay_tag));
            if (repl_down_send_json(srv, F_PUBLISH, o) == 0) {
                f->nrelays++;
                return 0;
            }
            if (inner) json_object_set_new(o, "relay", inner); /* as it came */
            else json_object_del(o, "relay");
        }
        ack = json_pack("{s:b}", "retry", 1);
        if (json_object_get(o, "relay")) json_object_set(ack, "relay", json_object_get(o, "relay"));
        repl_up_send_json(srv, downstream, F_PUBLISH_ACK, ack);
        json_decref(ack);
        return 0;
    }
    if (!(j = calloc(1, sizeof *j)) || !(r = calloc(1, sizeof *r))) {
        free(j);
        *why = "out of memory";
        return -1;
    }
    if ((*why = parse_notes(json_object_get(o, "notes"), r, &j->first))) {
        wreq_free(r);
        free(j);
        return -1;
    }
    j->srv = srv;
    j->downstream = downstream;
    j->relay = json_incref(json_object_get(o, "relay"));
    j->last = j->first + (int64_t)r->nops - 1;
    memcpy(j->origin, origin, 33);
    r->type = WREQ_CUSTOM;
    r->fn = apply_run;
    r->fn_arg = j;
    r->done = apply_done;
    r->arg = j;
    writer_submit(srv->writer, r);
    return 0;
}

/* ---------------------------------------------------------------- start and stop */

int
forward_start(struct server *srv, struct ls_error *err)
{
    struct forwarder *f = calloc(1, sizeof *f);
    if (!f || !(f->retry = evtimer_new(srv->base, on_retry, f))) {
        free(f);
        return ls_error_set(err, LS_ENOMEM, "out of memory");
    }
    f->srv = srv;
    srv->fwd = f;
    return 0;
}

/* Requests still waiting are answered 202: what they sent is in the outbox. */
void
forward_stop(struct server *srv)
{
    struct forwarder *f = srv->fwd;
    if (!f) return;
    while (f->waits) fwait_answer(f->waits, 1);
    f->link = 0;
}

void
forward_free(struct server *srv)
{
    struct forwarder *f = srv->fwd;
    if (!f) return;
    forward_stop(srv);
    while (f->nrelays > 0) json_decref(f->relays[--f->nrelays].inner);
    event_free(f->retry);
    free(f);
    srv->fwd = NULL;
}
