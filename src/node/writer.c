/*
 * writer.c - the writer thread: every store write goes through it, with group commit.
 *
 * The event loop hands it requests (a list of operations, or an NDJSON file) and goes on serving.
 * The writer takes every request queued, applies each inside a savepoint of one transaction (so
 * a request is all or nothing and one failing request does not fail its neighbours), commits once
 * (one fsync for the whole group), and hands the finished requests back to the loop, which
 * replies. While it syncs, new requests queue up and form the next group.
 *
 * Not for: deciding what to write (the HTTP API and replication do), or replying.
 */
#include "node/server.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LINE_MAX_BYTES (64u << 20)

struct writer {
    struct server *srv;
    struct store *st;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct wreq *queue, **queue_tail; /* submitted, not yet taken */
    struct wreq *finished, **finished_tail; /* done, waiting for the loop, in order */
    const void *held; /* the session whose unit's transaction is open (wreq.hold), or NULL */
    struct event *wake;               /* activated to run completions on the loop */
    struct event *stream_wake;        /* ... to send a streamed request's entries on */
    int stop;
    /* the loop's own: requests and body bytes submitted and not yet done (writer_admit) */
    size_t inflight, max_inflight;
    uint64_t inflight_bytes, max_inflight_bytes;
};

static uint64_t
wreq_bytes(const struct wreq *r)
{
    uint64_t n = 0;
    for (size_t i = 0; i < r->nops; i++) n += r->ops[i].body_len;
    return n;
}

void
wreq_free(struct wreq *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->nops; i++) op_release(&r->ops[i]);
    free(r->ops);
    if (r->batch_file) {
        unlink(r->batch_file);
        free(r->batch_file);
    }
    free(r);
}

/*
 * A request the writer may show downstreams before it commits (docs/streaming.md): a large one
 * of this server's own (not a replicated unit), while a downstream takes streamed units. It
 * runs alone in its transaction, so a rollback of it is a rollback of the unit.
 */
static int
streamable(struct writer *w, const struct wreq *r)
{
    if (r->session || r->hold || r->abort_unit || tail_streamers(w->srv->tail) <= 0) return 0;
    if (r->type == WREQ_BATCH_FILE) return 1;
    return r->type == WREQ_OPS &&
           (r->nops >= STREAM_MIN_OPS || wreq_bytes(r) >= STREAM_CHUNK_BYTES);
}

/* A streamed request's entries applied so far go to the tail, and downstreams are told. */
static void
stream_on(struct writer *w, struct wreq *r, int all)
{
    if (!r->streamed || (!all && tail_pending_bytes(w->srv->tail) < STREAM_CHUNK_BYTES)) return;
    tail_publish(w->srv->tail);
    event_active(w->stream_wake, EV_READ, 0);
}

static int
apply_ops(struct writer *w, struct wreq *r)
{
    for (size_t i = 0; i < r->nops; i++) {
        int rc;
        /* A new entry says whether its request goes on (LOG_MORE); a replicated one keeps the
         * flag its upstream logged (to_op, repl_down.c), so every log has the same units. */
        if (r->ops[i].seq == 0) r->ops[i].more = i + 1 < r->nops;
        rc = store_apply(w->st, &r->ops[i], &r->last, &r->err);
        if (rc) {
            if (r->ops[i].line > 0) ls_error_prefix(&r->err, "line %u: ", r->ops[i].line);
            return rc;
        }
        if (i == 0) r->first_seq = r->last.seq;
        r->applied++;
        stream_on(w, r, 0);
    }
    return 0;
}

/*
 * Reads the next line into *line (NUL-terminated, without its newline), growing it up to max
 * bytes: the length, -1 at the end of the file, -2 for a longer line (getline would have
 * allocated whatever the line asked for), -3 out of memory.
 */
static ssize_t
read_line(FILE *f, char **line, size_t *cap, size_t max)
{
    size_t n = 0;
    int c = EOF;
    while ((c = getc_unlocked(f)) != EOF && c != '\n') {
        if (n == max) return -2;
        if (n + 2 > *cap) {
            size_t want = *cap ? *cap * 2 : 4096;
            char *p = realloc(*line, want > max + 2 ? max + 2 : want);
            if (!p) return -3;
            *line = p;
            *cap = want > max + 2 ? max + 2 : want;
        }
        (*line)[n++] = (char)c;
    }
    if (n == 0 && c == EOF) return -1;
    if (!*line && !(*line = malloc(*cap = 1))) return -3;
    (*line)[n] = '\0';
    return (ssize_t)n;
}

/* Applies one operation of an NDJSON file. */
static int
apply_line(struct writer *w, struct wreq *r, struct ls_op *op, size_t lineno)
{
    int rc = store_apply(w->st, op, &r->last, &r->err);
    if (rc) {
        ls_error_prefix(&r->err, "line %zu: ", lineno);
        return rc;
    }
    if (r->applied++ == 0) r->first_seq = r->last.seq;
    stream_on(w, r, 0);
    return 0;
}

/*
 * Applies an NDJSON file line by line: bounded memory whatever the file's size. Each operation
 * is applied once the next one is parsed, so that all but the last are logged with LOG_MORE.
 */
static int
apply_file(struct writer *w, struct wreq *r)
{
    FILE *f = fopen(r->batch_file, "r");
    char *line = NULL;
    size_t cap = 0, lineno = 0, held_line = 0;
    ssize_t n;
    int rc = 0, have = 0;
    struct ls_op held;

    if (!f) return ls_error_set(&r->err, LS_EIO, "cannot read batch: %s", strerror(errno));
    while ((n = read_line(f, &line, &cap, LINE_MAX_BYTES)) != -1) {
        struct ls_op op;
        lineno++;
        if (n < -1) {
            rc = n == -3 ? ls_error_set(&r->err, LS_ENOMEM, "line %zu: out of memory", lineno)
                         : ls_error_set(&r->err, LS_EBATCH, "line %zu: longer than %u bytes",
                                        lineno, LINE_MAX_BYTES);
            break;
        }
        while (n > 0 && line[n - 1] == '\r') n--;
        if (n == 0) continue;
        rc = op_parse_json(line, (size_t)n, &op, &r->err);
        if (rc == 0 && op.body_len > r->max_body)
            rc = ls_error_set(&r->err, LS_ETOOBIG, "body is larger than --max-body");
        if (rc) {
            op_release(&op);
            ls_error_prefix(&r->err, "line %zu: ", lineno);
            break;
        }
        if (have) {
            held.more = 1;
            rc = apply_line(w, r, &held, held_line);
            op_release(&held);
            have = 0;
            if (rc) {
                op_release(&op);
                break;
            }
        }
        held = op;
        held_line = lineno;
        have = 1;
    }
    if (have) {
        held.more = 0;
        if (rc == 0) rc = apply_line(w, r, &held, held_line);
        op_release(&held);
    }
    /* As for a batch in the request body: an empty file is a mistake, not "0 operations". */
    if (rc == 0 && r->applied == 0)
        rc = ls_error_set(&r->err, LS_EBATCH, "the batch holds no operation");
    free(line);
    fclose(f);
    return rc;
}

/* A request failed: a later one of its chain must not move the position past it. */
static void
fail_request(struct wreq *r, int rc, const struct ls_error *err)
{
    if (err) r->err = *err;
    r->rc = rc;
    r->applied = 0;
    if (r->chain_failed) *r->chain_failed = 1;
}

/*
 * The open transaction of a unit is given up (a link that dropped, the server stopping, a
 * request of the unit that failed): ROLLBACK, and the position and the tail go back to what is
 * on disk. Nothing of the unit was committed, so nothing of it was ever seen.
 */
static void
drop_unit(struct writer *w, const char *why)
{
    w->held = NULL;
    log_info("a replicated unit left uncommitted is rolled back: %s", why);
    store_rollback(w->st);
}

static void
run_group(struct writer *w, struct wreq *group)
{
    struct ls_error err;
    int rc = 0, unit = w->held != NULL || group->hold, unit_failed = 0;
    struct wreq *last = group;

    ls_error_clear(&err);
    if (!w->held || !store_in_transaction(w->st)) {
        w->held = NULL;
        rc = store_begin(w->st, &err);
    }
    for (struct wreq *r = group; r; r = r->next) {
        last = r;
        ls_error_clear(&r->err);
        r->applied = 0;
        r->streamed = 0;
        if (r->abort_unit) { /* the rest of the unit will not come */
            r->rc = 0;
            if (unit && rc == 0 && !unit_failed) {
                unit_failed = r->abort_unit;
                if (r->abort_unit == ABORT_DISCARD)
                    ls_error_set(&err, LS_EUNAVAIL, "the upstream rolled it back (ABORT)");
                else
                    ls_error_set(&err, LS_EUNAVAIL, "the unit was abandoned");
            }
            continue;
        }
        if (rc) { /* no transaction, or it is lost: nothing more of the group can commit */
            fail_request(r, rc, &err);
            continue;
        }
        if (r->chain_failed && *r->chain_failed) {
            r->rc = ls_error_set(&r->err, LS_EUNAVAIL, "an earlier request of its chain failed");
            continue;
        }
        if ((r->rc = store_savepoint(w->st))) {
            ls_error_set(&r->err, r->rc, "cannot start the request's transaction");
            fail_request(r, r->rc, NULL);
        } else {
            /* Alone in its transaction (take_group): its rollback is the unit's. */
            if (r == group && !r->next && !unit && streamable(w, r))
                r->streamed = tail_stream_begin(w->srv->tail) != 0;
            if (r->type == WREQ_OPS) r->rc = apply_ops(w, r);
            else if (r->type == WREQ_BATCH_FILE) r->rc = apply_file(w, r);
            else r->rc = r->fn(w->st, r);
            if (r->rc == 0 && r->set_seq > store_seq(w->st)) store_set_seq(w->st, r->set_seq);
            if (r->rc == 0 && (r->rc = store_savepoint_release(w->st)) != 0)
                ls_error_set(&r->err, r->rc, "cannot finish the request's transaction");
            if (r->rc == 0) stream_on(w, r, 1); /* the last piece goes before the commit */
            if (r->rc) {
                fail_request(r, r->rc, NULL);
                /* Undone alone, or (failing that) with the whole transaction below. */
                if (store_savepoint_rollback(w->st) != 0 && store_in_transaction(w->st))
                    store_rollback(w->st);
            }
        }
        if (!store_in_transaction(w->st)) {
            /* SQLite rolled back the whole transaction (SQLITE_FULL, SQLITE_IOERR and
             * SQLITE_NOMEM can): the requests before this one that succeeded are not committed
             * either, and none after it may run outside the transaction. The position and the
             * tail go back to what is on disk. */
            rc = r->rc ? r->rc : LS_EIO;
            if (r->rc) ls_error_set(&err, rc, "the transaction was rolled back: %s", r->err.msg);
            else ls_error_set(&err, rc, "the transaction was rolled back");
            log_error("%s", err.msg);
            store_rollback(w->st);
            for (struct wreq *q = group; q != r; q = q->next)
                if (q->rc == 0) fail_request(q, rc, &err);
            if (r->rc == 0) fail_request(r, rc, &err);
        }
        if (unit && r->rc && rc == 0) {
            unit_failed = 1;
            err = r->err;
        }
    }
    if (unit && rc == 0 && unit_failed) {
        /* A unit is whole or nothing: one of its requests failed, or it was abandoned. */
        drop_unit(w, err.msg);
        /* Discarded on the upstream's word, its parts end without an error (they held their
         * records uncommitted: nothing moves); otherwise the session's chain fails. */
        if (unit_failed != ABORT_DISCARD)
            for (struct wreq *r = group; r; r = r->next)
                if (r->rc == 0 && !r->abort_unit) fail_request(r, LS_EUNAVAIL, &err);
        return;
    }
    if (rc == 0 && unit && last->hold && store_in_transaction(w->st)) {
        w->held = last->session; /* the unit goes on: no commit yet */
        return;
    }
    w->held = NULL;
    if (rc == 0 && (rc = store_commit(w->st, &err)) != 0) {
        /* Nothing of the group is durable: every request fails with the commit's error. */
        log_error("commit failed: %s", err.msg);
        for (struct wreq *r = group; r; r = r->next) {
            if (r->chain_failed) *r->chain_failed = 1;
            if (r->rc == 0) {
                r->rc = rc;
                r->err = err;
                r->applied = 0;
            }
        }
    }
    if (rc == 0) store_collect_garbage(w->st);
}

/*
 * Takes the next group from the queue (under w->mu): everything queued, but a unit (wreq.hold)
 * starts a group of its own, and while a unit's transaction is open only its session's requests
 * are taken, up to the one that ends it; the others wait, in their order.
 */
static struct wreq *
take_group(struct writer *w)
{
    struct wreq *group = NULL, **gt = &group, **pp = &w->queue;
    const void *unit = w->held;
    while (*pp) {
        struct wreq *r = *pp;
        if (unit && r->session != unit) {
            pp = &r->next;
            continue;
        }
        if (!unit && r->hold) {
            if (group) break;
            unit = r->session;
        }
        if (!unit && streamable(w, r)) { /* a group of its own */
            if (group) break;
            *pp = r->next;
            r->next = NULL;
            group = r;
            break;
        }
        *pp = r->next;
        r->next = NULL;
        *gt = r;
        gt = &r->next;
        if (unit && !r->hold) break;
    }
    for (w->queue_tail = &w->queue; *w->queue_tail; w->queue_tail = &(*w->queue_tail)->next) {
    }
    return group;
}

static void *
writer_main(void *arg)
{
    struct writer *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        struct wreq *group, *last;
        while (!(group = take_group(w)) && !w->stop) pthread_cond_wait(&w->cv, &w->mu);
        if (!group && w->held) { /* stopping: the rest of the unit will not come */
            pthread_mutex_unlock(&w->mu);
            drop_unit(w, "the server is stopping");
            pthread_mutex_lock(&w->mu);
            continue;
        }
        if (!group) break;
        pthread_mutex_unlock(&w->mu);

        run_group(w, group);

        pthread_mutex_lock(&w->mu);
        for (last = group; last->next; last = last->next) {
        }
        *w->finished_tail = group;
        w->finished_tail = &last->next;
        event_active(w->wake, EV_READ, 0);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* On the loop thread: reply to finished requests in the order they were submitted. */
static void
on_wake(evutil_socket_t fd, short what, void *arg)
{
    struct writer *w = arg;
    struct wreq *list;
    struct ls_position pos;
    int streamed = 0;

    pthread_mutex_lock(&w->mu);
    list = w->finished;
    w->finished = NULL;
    w->finished_tail = &w->finished;
    pthread_mutex_unlock(&w->mu);
    if (store_position(w->srv->reader, &pos) == 0) w->srv->pos = pos;
    for (struct wreq *r = list, *next; r; r = next) {
        next = r->next;
        r->next = NULL;
        w->inflight--;
        w->inflight_bytes -= wreq_bytes(r);
        streamed |= r->streamed;
        r->done(r, r->arg);
    }
    server_on_commit(w->srv, w->srv->pos.seq);
    if (streamed) repl_up_kick(w->srv); /* its unit ended: committed or rolled back */
}

/* On the loop thread: a streamed request has more entries in the tail. */
static void
on_stream_wake(evutil_socket_t fd, short what, void *arg)
{
    struct writer *w = arg;
    repl_up_kick(w->srv);
}

struct writer *
writer_start(struct server *srv, struct store *st, struct ls_error *err)
{
    struct writer *w = calloc(1, sizeof *w);
    if (!w) {
        ls_error_set(err, LS_ENOMEM, NULL);
        return NULL;
    }
    w->srv = srv;
    w->st = st;
    w->queue_tail = &w->queue;
    w->finished_tail = &w->finished;
    w->max_inflight = WRITER_QUEUE_MAX;
    w->max_inflight_bytes = WRITER_QUEUE_BYTES;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->wake = event_new(srv->base, -1, 0, on_wake, w);
    w->stream_wake = event_new(srv->base, -1, 0, on_stream_wake, w);
    if (!w->wake || !w->stream_wake || pthread_create(&w->thread, NULL, writer_main, w)) {
        ls_error_set(err, LS_EINTERNAL, "cannot start the writer thread");
        if (w->wake) event_free(w->wake);
        if (w->stream_wake) event_free(w->stream_wake);
        free(w);
        return NULL;
    }
    return w;
}

void
writer_submit(struct writer *w, struct wreq *r)
{
    r->next = NULL;
    if (w->stop) { /* shutting down: refuse rather than strand the request */
        r->rc = ls_error_set(&r->err, LS_EUNAVAIL, "the server is stopping");
        r->done(r, r->arg);
        return;
    }
    w->inflight++;
    w->inflight_bytes += wreq_bytes(r);
    pthread_mutex_lock(&w->mu);
    *w->queue_tail = r;
    w->queue_tail = &r->next;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int
writer_admit(struct writer *w, uint64_t body_bytes)
{
    if (!w || w->stop) return LS_EUNAVAIL;
    if (w->inflight >= w->max_inflight ||
        (w->inflight > 0 && w->inflight_bytes + body_bytes > w->max_inflight_bytes))
        return LS_EUNAVAIL;
    return 0;
}

void
writer_queue(struct writer *w, size_t *requests, uint64_t *bytes)
{
    *requests = w ? w->inflight : 0;
    *bytes = w ? w->inflight_bytes : 0;
}

void
writer_set_limits(struct writer *w, size_t requests, uint64_t bytes)
{
    w->max_inflight = requests;
    w->max_inflight_bytes = bytes;
}

/* Finishes what is queued, then stops. Completions still pending are run on the loop. */
void
writer_stop(struct writer *w)
{
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    on_wake(-1, 0, w);
    event_free(w->wake);
    event_free(w->stream_wake);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}
