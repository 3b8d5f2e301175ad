/*
 * notify_pg.c - the messenger's HTTP API on the shared database (`--messenger postgres://...`
 * or `sqlite:PATH`, docs/messenger.md "Shared database"): the same routes, parameters and replies
 * as notify.c, which hands each request here when the server runs in this mode. One handler
 * serves both databases: the statements go through msgdb_exec, in each one's dialect (DB_SQL).
 *
 * Every statement runs on pgmsg's connection threads (struct pg_job); the loop parses, then
 * answers or streams when the job is back. Consumers are the database's (every server of the site
 * sees the same ones); this server keeps only what it reckons about them (their states, logged
 * when they change) and how many of its own event streams read each.
 *
 * Not for: the connections, the watermark, retention (pgmsg.c); the native mode (notify.c).
 */
#include "node/http/http.h"
#include "common/log.h"
#include "common/util.h"
#include "node/messenger.h"
#include "node/pgmsg.h"

#include <event2/buffer.h>
#include <sys/queue.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define PAGE_LIMIT_MAX 1000
#define SSE_BATCH 500
#define SSE_PING_MS 15000
#define SCAN_MIN 10000
#define PENDING_CAP "100000"
#define RECKON_MS 5000
#define RECENT_PUBLISH 32 /* a publish of at most this many keeps them for the streams */

/*
 * The SQL is written once for both databases where their dialects agree (CAST rather than ::,
 * CASE rather than greatest()), and twice (DB_SQL) where they do not: a channel in a set, JSON,
 * row locks.
 */
/* the highest id committed, or the floor if retention removed everything */
#define HEAD_OF                                                                                    \
    "(SELECT CASE WHEN h > f THEN h ELSE f END FROM (SELECT coalesce((SELECT max(id) FROM "        \
    "lockstep_notes), 0) AS h, (SELECT value FROM lockstep_meta WHERE key = 'floor') AS f) hf)"
static const char head_sql[] = "SELECT " HEAD_OF;

static const char consumers_pg[] =
    "SELECT c.name, c.channels, c.position, c.created, c.acked, c.resets, c.reset_at, p.n, "
    "p.first FROM lockstep_consumers c CROSS JOIN LATERAL (SELECT count(*) AS n, "
    "coalesce(min(ts), 0) AS first FROM (SELECT ts FROM lockstep_notes n WHERE n.id > c.position "
    "AND (c.channels = '' OR n.channel = ANY (string_to_array(c.channels, ','))) ORDER BY n.id "
    "LIMIT " PENDING_CAP ") q) p WHERE $1 = '' OR c.name = $1 ORDER BY c.name";
#define IN_CONSUMERS                                                                               \
    "(c.channels = '' OR instr(',' || c.channels || ',', ',' || n.channel || ',') > 0)"
static const char consumers_lite[] =
    "SELECT c.name, c.channels, c.position, c.created, c.acked, c.resets, c.reset_at, "
    "(SELECT count(*) FROM (SELECT 1 FROM lockstep_notes n WHERE n.id > c.position "
    "AND " IN_CONSUMERS " ORDER BY n.id LIMIT " PENDING_CAP ")), coalesce((SELECT n.ts FROM "
    "lockstep_notes n WHERE n.id > c.position AND " IN_CONSUMERS " ORDER BY n.id LIMIT 1), 0) "
    "FROM lockstep_consumers c WHERE $1 = '' OR c.name = $1 ORDER BY c.name";
#define CONSUMERS_SQL(conn) DB_SQL(conn, consumers_pg, consumers_lite)

static void
i64s(char *buf, size_t n, int64_t v)
{
    snprintf(buf, n, "%lld", (long long)v);
}

/* ---------------------------------------------------------------- what this server knows */

/* The consumers as last reckoned here (states, pending), and the streams reading each here. */
struct views {
    struct consumer *list;
    struct event *timer;
    int reckoning;
};

static struct views *
views_of(struct server *srv)
{
    void **slot = pgmsg_views(pgmsg_of(srv));
    if (!*slot) *slot = calloc(1, sizeof(struct views));
    return *slot;
}

static struct consumer *
view_find(struct server *srv, const char *name, int create)
{
    struct views *v = views_of(srv);
    struct consumer *c;
    if (!v) return NULL;
    for (c = v->list; c; c = c->next)
        if (strcmp(c->name, name) == 0) return c;
    if (!create || !(c = calloc(1, sizeof *c)) || !(c->channels = strdup(""))) {
        free(c);
        return NULL;
    }
    snprintf(c->name, sizeof c->name, "%s", name);
    c->next = v->list;
    v->list = c;
    return c;
}

static void
view_free(struct consumer *c)
{
    json_decref(c->reset_why);
    free(c->channels);
    free(c);
}

/* A consumer row of consumers_sql, as a consumer (the fields the views use). */
struct crow {
    char name[LS_CHANNEL_MAX + 1];
    char *channels;
    int64_t position, created, acked, resets, reset_at, pending, first_ts;
};

static struct crow *
crows_of(struct msgdb_res *r, int *n)
{
    struct crow *rows = calloc((size_t)msgdb_rows(r) + 1, sizeof *rows);
    *n = 0;
    if (!rows) return NULL;
    for (int i = 0; i < msgdb_rows(r); i++) {
        struct crow *w = &rows[i];
        snprintf(w->name, sizeof w->name, "%s", msgdb_text(r, i, 0));
        w->channels = strdup(msgdb_text(r, i, 1));
        w->position = msgdb_i64(r, i, 2);
        w->created = msgdb_i64(r, i, 3);
        w->acked = msgdb_i64(r, i, 4);
        w->resets = msgdb_i64(r, i, 5);
        w->reset_at = msgdb_i64(r, i, 6);
        w->pending = msgdb_i64(r, i, 7);
        w->first_ts = msgdb_i64(r, i, 8);
        (*n)++;
    }
    return rows;
}

static void
crows_free(struct crow *rows, int n)
{
    for (int i = 0; rows && i < n; i++) free(rows[i].channels);
    free(rows);
}

/* The loop: a row into this server's view of it (its state judged, and logged if it changed). */
static struct consumer *
view_apply(struct server *srv, const struct crow *w)
{
    struct consumer *c = view_find(srv, w->name, 1);
    if (!c) return NULL;
    if (w->channels && strcmp(c->channels, w->channels) != 0) {
        char *dup = strdup(w->channels);
        if (dup) {
            free(c->channels);
            c->channels = dup;
        }
    }
    c->position = w->position;
    c->created = w->created;
    c->acked = w->acked;
    c->resets = w->resets;
    c->reset_at = w->reset_at;
    consumer_judge(srv, c, w->pending, w->first_ts);
    return c;
}

static json_t *
view_json(struct server *srv, const struct consumer *c)
{
    json_t *o = consumer_json(srv, c);
    json_object_set_new(o, "head", json_integer(pgmsg_head(pgmsg_of(srv))));
    return o;
}

/* ---------------------------------------------------------------- jobs that answer a request */

/*
 * A request whose answer needs the database: run() on a connection thread, then finish() on the
 * loop (1: it took the request, to answer later), else the reply or the error is sent. A client
 * that goes away meanwhile cancels it.
 */
struct preq {
    struct pg_job job;
    struct ctx *c;
    int (*run)(struct msgdb_conn *conn, struct preq *q);
    int (*finish)(struct preq *q);
    void (*release)(struct preq *q);
    json_t *reply;
    int status;
    int answered; /* finish() replied itself */
};

static void
preq_gone(struct evhttp_connection *evcon, void *arg)
{
    struct preq *q = arg;
    atomic_store(&q->job.cancelled, 1);
}

static int
preq_run(struct pgmsg *m, struct msgdb_conn *conn, struct pg_job *j)
{
    struct preq *q = (struct preq *)j;
    return q->run(conn, q);
}

static void
preq_end(struct preq *q)
{
    if (q->release) q->release(q);
    json_decref(q->reply);
    ctx_free(q->c);
    free(q);
}

static void
preq_done(struct pg_job *j)
{
    struct preq *q = (struct preq *)j;
    struct evhttp_connection *evcon = evhttp_request_get_connection(q->c->req);
    if (evcon) evhttp_connection_set_closecb(evcon, NULL, NULL);
    if (atomic_load(&j->cancelled)) {
        /* nobody is listening (or the server is stopping): this frees a detached request */
        reply_error(q->c->req, LS_EUNAVAIL, "the request was cancelled");
    } else if (j->err.code) {
        reply_lserror(q->c->req, &j->err);
    } else if (q->finish && q->finish(q)) {
        return;
    } else if (q->reply) {
        reply_json(q->c->req, q->status ? q->status : 200, q->reply);
        q->reply = NULL;
    } else if (!q->answered) {
        reply_error(q->c->req, LS_ENOMEM, NULL); /* the only way to have no reply */
    }
    preq_end(q);
}

/* Takes c and q (calloc'ed, with run set). */
static void
preq_submit(struct ctx *c, struct preq *q, int idempotent)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(c->req);
    q->c = c;
    q->job.run = preq_run;
    q->job.done = preq_done;
    q->job.idempotent = idempotent;
    ls_error_clear(&q->job.err);
    if (pgmsg_submit(pgmsg_of(c->srv), &q->job)) {
        reply_error(c->req, LS_EUNAVAIL, "%s",
                    pgmsg_stopping(pgmsg_of(c->srv)) ? "the server is stopping"
                                                      : "too many requests wait; try again");
        preq_end(q);
        return;
    }
    if (evcon) evhttp_connection_set_closecb(evcon, preq_gone, q);
}

/* ---------------------------------------------------------------- POST /v1/notify */

struct publish {
    struct preq q;
    char *notes; /* a JSON array of {"channel","payload"} */
    int64_t *stamps; /* the ids and times they got, [id, ts] by id */
    int nstamps;
};

static int
publish_run(struct msgdb_conn *conn, struct preq *q)
{
    struct publish *p = (struct publish *)q;
    char now[24];
    const char *v[2] = {p->notes, now};
    json_t *ids;
    struct msgdb_res *r;
    int n;
    i64s(now, sizeof now, ls_now_ms()); /* SQLite's stamp (PostgreSQL's trigger stamps its own) */
    /* one statement: one transaction, all or none; ORDER BY: the ids follow the request */
    r = msgdb_exec(conn, &q->job.err,
                   DB_SQL(conn,
                          "INSERT INTO lockstep_notes (channel, payload) SELECT e->>'channel', "
                          "e->'payload' FROM json_array_elements($1::json) WITH ORDINALITY AS t(e, "
                          "n) ORDER BY n RETURNING id, ts",
                          "INSERT INTO lockstep_notes (channel, payload, ts) SELECT e.value ->> "
                          "'$.channel', e.value -> '$.payload', CAST($2 AS INTEGER) FROM "
                          "json_each($1) AS e ORDER BY e.key RETURNING id, ts"),
                   msgdb_is_sqlite(conn) ? 2 : 1, v);
    if (!r) return -1;
    n = msgdb_rows(r);
    if (!(p->stamps = calloc((size_t)n + 1, 2 * sizeof *p->stamps))) {
        msgdb_clear(r);
        return ls_error_set(&q->job.err, LS_ENOMEM, NULL);
    }
    /* RETURNING's order is the insertion's in practice; sorted, it is by definition */
    for (int i = 0; i < n; i++) {
        int64_t id = msgdb_i64(r, i, 0), ts = msgdb_i64(r, i, 1);
        int k = i;
        for (; k > 0 && p->stamps[2 * (k - 1)] > id; k--) {
            p->stamps[2 * k] = p->stamps[2 * (k - 1)];
            p->stamps[2 * k + 1] = p->stamps[2 * (k - 1) + 1];
        }
        p->stamps[2 * k] = id;
        p->stamps[2 * k + 1] = ts;
    }
    p->nstamps = n;
    msgdb_clear(r);
    ids = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(ids, json_integer(p->stamps[2 * i]));
    q->reply = json_pack("{s:o,s:O}", "ids", ids, "seq",
                         json_array_get(ids, json_array_size(ids) - 1));
    return 0;
}

/* The loop: the notifications just published go where the wake-ups' rows go (pgmsg_recent), so
 * that this server's event streams deliver them without a read, before the NOTIFY is back. */
static void
publish_keep(struct publish *p)
{
    struct pgmsg *m = pgmsg_of(p->q.c->srv);
    json_t *notes, *o;
    size_t i;
    if (p->nstamps > RECENT_PUBLISH || !(notes = json_loads(p->notes, 0, NULL))) return;
    if (json_array_size(notes) == (size_t)p->nstamps)
        json_array_foreach(notes, i, o) {
            pgmsg_recent_put(m, p->stamps[2 * i], p->stamps[2 * i + 1],
                             json_string_value(json_object_get(o, "channel")),
                             json_object_get(o, "payload"));
        }
    json_decref(notes);
}

static int
publish_finish(struct preq *q)
{
    publish_keep((struct publish *)q);
    /* this server's own readers need not wait for the NOTIFY, nor for a look: the reply's ids
     * are committed */
    pgmsg_committed(pgmsg_of(q->c->srv), json_integer_value(json_object_get(q->reply, "seq")));
    return 0;
}

static void
publish_release(struct preq *q)
{
    free(((struct publish *)q)->notes);
    free(((struct publish *)q)->stamps);
}

/* The parsed notifications as one JSON array text: the payloads are compact JSON already, and
 * channel names have no character that needs escaping (name_check). */
static char *
notes_text(const struct wreq *r)
{
    size_t len = 2;
    char *s, *p;
    for (size_t i = 0; i < r->nops; i++)
        len += strlen(r->ops[i].path) + strlen(r->ops[i].to) + 32;
    if (!(s = malloc(len))) return NULL;
    p = s;
    *p++ = '[';
    for (size_t i = 0; i < r->nops; i++)
        p += sprintf(p, "%s{\"channel\":\"%s\",\"payload\":%s}", i ? "," : "", r->ops[i].path,
                     r->ops[i].to);
    *p++ = ']';
    *p = '\0';
    return s;
}

void
pg_h_notify(struct ctx *c)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(c->req);
    size_t len = evbuffer_get_length(in);
    struct publish *p = NULL;
    json_error_t jerr;
    struct wreq *r;
    json_t *body;
    int64_t wait_ms; /* accepted for the native mode's sake; a publish here never queues */
    if (qint(c, "wait_ms", 5000, 0, WAIT_MAX_MS, &wait_ms)) goto out;
    body = json_loadb((const char *)evbuffer_pullup(in, -1), len, JSON_DECODE_ANY, &jerr);
    if (!body) {
        reply_error(c->req, LS_EINVAL, "the body is not JSON: %s", jerr.text);
        goto out;
    }
    r = notify_parse(c, body);
    json_decref(body);
    if (!r) goto out;
    if (!(p = calloc(1, sizeof *p)) || !(p->notes = notes_text(r))) {
        wreq_free(r);
        free(p);
        reply_error(c->req, LS_ENOMEM, NULL);
        goto out;
    }
    wreq_free(r);
    p->q.run = publish_run;
    p->q.finish = publish_finish;
    p->q.release = publish_release;
    p->q.job.urgent = 1;
    preq_submit(c, &p->q, 0);
    return;
out:
    ctx_free(c);
}

/* ---------------------------------------------------------------- reading a page */

/* One read of notifications, on a connection thread. */
struct pread {
    /* in */
    char name[LS_CHANNEL_MAX + 1]; /* "" anonymous */
    char *channels;                /* the query's set, then the consumer's */
    int given, from_start, check;  /* check: a cursor from the client, not above the head */
    int64_t cursor;                /* >= 0: read after it; -1: the consumer's position, or from= */
    int64_t ack;                   /* >= 0: acknowledge this first (Last-Event-ID) */
    int limit;
    int reset_sent; /* an event stream sent its reset: the waiting one is not sent again */
    int opened;     /* the named consumer was opened by this request's first read */
    /* out */
    int64_t floor, from, next, head;
    int blocked, beyond;
    json_t *notes, *reset;
};

static void
pread_release(struct pread *r)
{
    free(r->channels);
    json_decref(r->notes);
    json_decref(r->reset);
}

/* The named consumer (created at its first use), its channels set when given; its position. */
static int
consumer_open_pg(struct msgdb_conn *conn, struct pread *r, int64_t *position, int64_t *reset_at,
                 struct ls_error *err)
{
    char now[24], ack[24];
    const char *v[5] = {r->name, r->channels, r->from_start ? "t" : "f", now, NULL};
    struct msgdb_res *res;
    i64s(now, sizeof now, ls_now_ms());
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!(res = msgdb_exec(conn, err,
                               "SELECT channels, position, reset_at FROM lockstep_consumers WHERE "
                               "name = $1",
                               1, v)))
            return -1;
        if (msgdb_rows(res) || attempt) break;
        msgdb_clear(res);
        if (!(res = msgdb_exec(conn, err,
                               "INSERT INTO lockstep_consumers (name, channels, position, created) "
                               "VALUES ($1, $2, CASE WHEN $3 = 't' THEN -1 ELSE " HEAD_OF " END, "
                               "CAST($4 AS bigint)) ON CONFLICT (name) DO NOTHING",
                               4, v)))
            return -1;
        if (msgdb_changed(res) == 1)
            log_info("consumer %s created at %s, channels %s", r->name,
                     r->from_start ? "the oldest retained notification" : "the head",
                     *r->channels ? r->channels : "(every channel)");
        msgdb_clear(res);
    }
    if (!msgdb_rows(res)) {
        msgdb_clear(res);
        return ls_error_set(err, LS_EIO, "consumer %s vanished as it was created", r->name);
    }
    *position = msgdb_i64(res, 0, 1);
    *reset_at = msgdb_i64(res, 0, 2);
    if (r->given && strcmp(msgdb_text(res, 0, 0), r->channels) != 0) {
        msgdb_clear(res);
        if (msgdb_run(conn, err, "UPDATE lockstep_consumers SET channels = $2 WHERE name = $1", 2,
                      v))
            return -1;
        log_info("consumer %s: channels now %s", r->name,
                 *r->channels ? r->channels : "(every channel)");
    } else {
        free(r->channels);
        r->channels = strdup(msgdb_text(res, 0, 0));
        msgdb_clear(res);
        if (!r->channels) return ls_error_set(err, LS_ENOMEM, NULL);
    }
    if (r->ack >= 0) {
        i64s(ack, sizeof ack, r->ack);
        if (msgdb_run(conn, err,
                      "UPDATE lockstep_consumers SET position = CASE WHEN position > CAST($2 AS "
                      "bigint) THEN position ELSE CAST($2 AS bigint) END, acked = CAST($3 AS "
                      "bigint), reset_at = CASE WHEN reset_at > 0 AND CAST($2 AS bigint) >= "
                      "reset_at THEN 0 ELSE reset_at END WHERE name = $1",
                      3, (const char *const[]){r->name, ack, now}))
            return -1;
        if (r->ack > *position) *position = r->ack;
        if (*reset_at > 0 && r->ack >= *reset_at) *reset_at = 0;
    }
    return 0;
}

/*
 * A read is one statement, so one snapshot (in autocommit, PostgreSQL's READ COMMITTED gives each
 * statement its own; SQLite reads a statement in one transaction): the floor, the head, the
 * consumer's row and the rows after the position. A first row with what was read besides the
 * notifications, the notifications beside it (a LEFT JOIN: the first row is there when there are
 * none). It was five statements (the consumer, BEGIN, the floor and head, the rows, COMMIT),
 * five round trips on the path of every delivery.
 *   $1 the consumer ('' anonymous), $2 the channels when $3 = 't' (given, or anonymous), else the
 *   consumer's; $4 the cursor (-1: the consumer's position, or $5: 't' from the start, else
 *   from the head); $6 how many rows to look at.
 * Columns: floor, head, found (1: the consumer exists), channels, position, reset_at, start (the
 * position to read after, before the floor clamps it), then id, ts, channel, payload (NULL for
 * another channel's row; id NULL: no rows).
 */
#define READ_HEAD                                                                                  \
    "WITH h AS (SELECT f.floor, CASE WHEN f.mx > f.floor THEN f.mx ELSE f.floor END AS head, "    \
    "c.found, c.channels, c.position, c.reset_at FROM (SELECT coalesce((SELECT value FROM "        \
    "lockstep_meta WHERE key = 'floor'), 0) AS floor, coalesce((SELECT max(id) FROM "             \
    "lockstep_notes), 0) AS mx) f LEFT JOIN (SELECT 1 AS found, channels, position, reset_at "    \
    "FROM lockstep_consumers WHERE name = $1) c ON 1 = 1), s AS (SELECT h.*, CASE WHEN $3 = 't' " \
    "THEN $2 ELSE h.channels END AS ch, CASE WHEN CAST($4 AS bigint) >= 0 THEN CAST($4 AS "       \
    "bigint) WHEN $1 <> '' THEN CASE WHEN h.position < 0 THEN h.floor ELSE h.position END WHEN "  \
    "$5 = 't' THEN h.floor ELSE h.head END AS start FROM h) SELECT s.floor, s.head, s.found, "    \
    "s.ch, s.position, s.reset_at, s.start, n.id, n.ts, n.channel, "
#define READ_ROWS(payload)                                                                         \
    " FROM s LEFT JOIN (SELECT id, ts, channel, " payload " AS payload FROM lockstep_notes WHERE " \
    "id > (SELECT CASE WHEN start > floor THEN start ELSE floor END FROM s) ORDER BY id LIMIT "   \
    "CAST($6 AS bigint)) n ON 1 = 1 ORDER BY n.id"
static const char read_pg[] = READ_HEAD
    "CASE WHEN s.ch = '' OR n.channel = ANY (string_to_array(s.ch, ',')) THEN n.payload END"
    READ_ROWS("payload::text");
static const char read_lite[] = READ_HEAD
    "CASE WHEN s.ch = '' OR instr(',' || s.ch || ',', ',' || n.channel || ',') > 0 THEN "
    "n.payload END" READ_ROWS("payload");
#define READ_COL_ID 7

/* Walks the rows (id order, every channel) and keeps the page: see pgmsg.c for the rule. */
static void
pread_walk(struct msgdb_res *res, int64_t watermark, struct pread *r)
{
    int64_t prev = r->from;
    int n = 0;
    for (int i = 0; i < msgdb_rows(res) && n < r->limit; i++) {
        int64_t id = msgdb_i64(res, i, READ_COL_ID);
        struct ls_note note;
        if (msgdb_isnull(res, i, READ_COL_ID)) break; /* no rows */
        if (id != prev + 1 && id - 1 > watermark) {
            r->blocked = 1; /* ids in (prev, id) may still commit */
            break;
        }
        prev = id;
        if (msgdb_isnull(res, i, READ_COL_ID + 3)) continue; /* another channel's */
        memset(&note, 0, sizeof note);
        note.seq = id;
        note.ts = msgdb_i64(res, i, READ_COL_ID + 1);
        note.op = LS_OP_NOTIFY;
        note.channel = msgdb_text(res, i, READ_COL_ID + 2);
        note.payload = msgdb_text(res, i, READ_COL_ID + 3);
        json_array_append_new(r->notes, note_json(&note));
        n++;
    }
    r->next = prev;
}

static int
pread_run(struct pgmsg *m, struct msgdb_conn *conn, struct pread *r, struct ls_error *err)
{
    int64_t position = -1, reset_at = 0, watermark, scan, start;
    char cursor_s[24], scan_s[24], pos_s[24], floor_s[24];
    int started = 0, behind = 0;
    struct msgdb_res *res;
    json_decref(r->notes);
    json_decref(r->reset);
    r->notes = json_array();
    r->reset = NULL;
    r->blocked = r->beyond = 0;
    scan = r->limit * 20 > SCAN_MIN ? r->limit * 20 : SCAN_MIN;
    i64s(cursor_s, sizeof cursor_s, r->cursor);
    i64s(scan_s, sizeof scan_s, scan);
    for (int attempt = 0;; attempt++) {
        /* a named consumer is opened (created, its channels set, Last-Event-ID acknowledged) at
         * the first read of a request; later reads find its row in the read itself */
        if (*r->name && !r->opened) {
            if (consumer_open_pg(conn, r, &position, &reset_at, err)) return -1;
            r->opened = 1;
        }
        /* the watermark as it is before the snapshot: what it covers has ended before it */
        watermark = pgmsg_watermark(m);
        if (!(res = msgdb_exec(conn, err, DB_SQL(conn, read_pg, read_lite), 6,
                               (const char *const[]){r->name, r->channels,
                                                     !*r->name || r->given ? "t" : "f", cursor_s,
                                                     r->from_start ? "t" : "f", scan_s})))
            return -1;
        if (!*r->name || !msgdb_isnull(res, 0, 2)) break;
        msgdb_clear(res); /* removed since it was opened: opened (created) again */
        if (attempt) return ls_error_set(err, LS_EIO, "consumer %s vanished as it was read", r->name);
        r->opened = 0;
    }
    r->floor = msgdb_i64(res, 0, 0);
    r->head = msgdb_i64(res, 0, 1);
    start = msgdb_i64(res, 0, 6);
    if (*r->name) {
        position = msgdb_i64(res, 0, 4);
        reset_at = msgdb_i64(res, 0, 5);
        if (!r->given && strcmp(r->channels, msgdb_text(res, 0, 3)) != 0) {
            char *dup = strdup(msgdb_text(res, 0, 3));
            if (!dup) {
                msgdb_clear(res);
                return ls_error_set(err, LS_ENOMEM, NULL);
            }
            free(r->channels);
            r->channels = dup;
        }
    }
    if (r->cursor >= 0 && r->check && r->cursor > r->head) {
        r->from = r->cursor;
        r->beyond = 1;
        msgdb_clear(res);
        return 0;
    }
    started = r->cursor < 0 && *r->name && position < 0; /* created from the start: no reset */
    r->from = start;
    if (r->from < r->floor) {
        behind = !started;
        position = r->from;
        r->from = r->floor;
    }
    pread_walk(res, watermark, r);
    msgdb_clear(res);
    if (r->blocked) { /* what the next look will use, and settle */
        if (pgmsg_probe(m, conn, err)) return -1;
        pgmsg_gap_seen(m);
    }
    i64s(floor_s, sizeof floor_s, r->floor);
    if (behind) {
        r->reset = reset_json(position, r->floor, r->head);
        if (*r->name) {
            log_warn("consumer %s: reset, its position %lld is older than the oldest retained "
                     "notification (it continues after %lld)",
                     r->name, (long long)position, (long long)r->floor);
            i64s(pos_s, sizeof pos_s, position);
            if (msgdb_run(conn, err,
                          "UPDATE lockstep_consumers SET position = CAST($2 AS bigint), reset_at = "
                          "CASE WHEN CAST($2 AS bigint) > 1 THEN CAST($2 AS bigint) ELSE 1 END, "
                          "resets = resets + 1 WHERE name = $1 AND position < CAST($2 AS bigint)",
                          2, (const char *const[]){r->name, floor_s}))
                return -1;
        }
    } else if (started) {
        if (msgdb_run(
                conn, err,
                "UPDATE lockstep_consumers SET position = CAST($2 AS bigint) WHERE name = $1 AND "
                "position < 0",
                2, (const char *const[]){r->name, floor_s}))
            return -1;
    } else if (*r->name && !r->reset_sent && reset_at > 0 && r->from <= reset_at) {
        /* again until acknowledged: at every page of /v1/notifications, at the start of a stream
         * (a stream that had it sent it again with every read, 370 in 4 s) */
        r->reset = json_pack("{s:s,s:s,s:I}", "type", "reset", "reason",
                             "a reset waits to be acknowledged", "oldest",
                             (json_int_t)(reset_at + 1));
    }
    return 0;
}

/* The common parameters (consumer=, channel=, from=) into r; -1 after a 400. */
static int
pread_params(struct ctx *c, struct pread *r)
{
    const char *name = qget(c, "consumer"), *from = qget(c, "from");
    struct evkeyval *kv;
    struct ls_error err;
    if (from && strcmp(from, "now") != 0 && !(r->from_start = strcmp(from, "start") == 0)) {
        reply_error(c->req, LS_EINVAL, "from is now or start");
        return -1;
    }
    TAILQ_FOREACH(kv, &c->query, next) r->given |= strcmp(kv->key, "channel") == 0;
    if (!(r->channels = query_channels(c))) return -1;
    r->cursor = r->ack = -1;
    if (!name) return 0;
    if (name_check("consumer", name, strlen(name), &err)) {
        reply_lserror(c->req, &err);
        return -1;
    }
    snprintf(r->name, sizeof r->name, "%s", name);
    return 0;
}

/* ---------------------------------------------------------------- GET /v1/notifications */

struct npage {
    struct preq q;
    struct pread r;
    struct pg_waiter w;
    struct event *timer;
    int64_t deadline_ms;
};

static int
npage_run(struct msgdb_conn *conn, struct preq *q)
{
    struct npage *p = (struct npage *)q;
    return pread_run(pgmsg_of(q->c->srv), conn, &p->r, &q->job.err);
}

static void
npage_release(struct preq *q)
{
    struct npage *p = (struct npage *)q;
    pgmsg_cancel_wait(pgmsg_of(q->c->srv), &p->w);
    if (p->timer) event_free(p->timer);
    pread_release(&p->r);
}

static void
npage_again(struct npage *p)
{
    struct ctx *c = p->q.c;
    pgmsg_cancel_wait(pgmsg_of(c->srv), &p->w);
    evtimer_del(p->timer);
    p->r.check = 0;
    preq_submit(c, &p->q, 1);
}

static void
npage_fire(struct pg_waiter *w)
{
    npage_again(w->arg);
}

static void
npage_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct npage *p = arg;
    p->deadline_ms = 0; /* one more read, and the answer whatever it finds */
    npage_again(p);
}

/* The reply, or a wait for a notification after next (a long poll). 1: it waits. */
static int
npage_finish(struct preq *q)
{
    struct npage *p = (struct npage *)q;
    struct server *srv = q->c->srv;
    int64_t now = ls_mono_ms();
    if (p->r.beyond) {
        reply_error(q->c->req, LS_EINVAL, "after=%lld is beyond the head %lld",
                    (long long)p->r.cursor, (long long)p->r.head);
        q->answered = 1;
        return 0;
    }
    if (!p->r.reset && json_array_size(p->r.notes) == 0 && p->deadline_ms > now &&
        !pgmsg_stopping(pgmsg_of(srv))) {
        struct timeval tv = {(p->deadline_ms - now) / 1000, ((p->deadline_ms - now) % 1000) * 1000};
        if (!p->timer && !(p->timer = evtimer_new(srv->base, npage_timeout, p))) return 0;
        p->r.cursor = p->r.next;
        p->w.cursor = p->r.next;
        p->w.fire = npage_fire;
        p->w.arg = p;
        evtimer_add(p->timer, &tv);
        pgmsg_wait(pgmsg_of(srv), &p->w);
        return 1;
    }
    q->reply = json_pack("{s:O,s:I,s:I}", "notifications", p->r.notes, "next",
                         (json_int_t)p->r.next, "head", (json_int_t)p->r.head);
    if (p->r.reset) json_object_set(q->reply, "reset", p->r.reset);
    return 0;
}

void
pg_h_notifications(struct ctx *c)
{
    struct npage *p = calloc(1, sizeof *p);
    int64_t limit, wait_ms, after = -1;
    if (!p) {
        reply_error(c->req, LS_ENOMEM, NULL);
        ctx_free(c);
        return;
    }
    p->q.c = c;
    p->q.release = npage_release;
    if (qint(c, "limit", 100, 1, PAGE_LIMIT_MAX, &limit) ||
        qint(c, "wait_ms", 0, 0, WAIT_MAX_MS, &wait_ms) ||
        qint(c, "after", -1, 0, INT64_MAX - 1, &after) || pread_params(c, &p->r)) {
        preq_end(&p->q);
        return;
    }
    p->r.cursor = after;
    p->r.check = after >= 0;
    p->r.limit = (int)limit;
    p->deadline_ms = wait_ms ? ls_mono_ms() + wait_ms : 0;
    p->q.run = npage_run;
    p->q.finish = npage_finish;
    preq_submit(c, &p->q, 1);
}

/* ---------------------------------------------------------------- GET /v1/events (SSE) */

/*
 * A stream as notify.c's: a page read on a connection thread, sent as events, the next read only
 * once they have left; then it waits. The first read comes before the stream starts, so that an
 * unknown Last-Event-ID (checked against the database's head) gets its error event. A read that
 * fails (the database is away) is tried again at the next look, the stream kept open.
 */
struct esession {
    struct stream s;
    struct server *srv;
    struct pg_job job;
    struct pread r;
    struct pg_waiter w;
    struct event *ping;
    struct ctx *c; /* until the stream starts */
    int sending, reading, gone, attached;
};

static void es_pump(struct esession *e);

static void
es_free(struct esession *e)
{
    struct consumer *v = *e->r.name ? view_find(e->srv, e->r.name, 0) : NULL;
    if (v && e->attached) v->connected--;
    pgmsg_cancel_wait(pgmsg_of(e->srv), &e->w);
    if (e->ping) event_free(e->ping);
    pread_release(&e->r);
    ctx_free(e->c);
    free(e);
}

static void
es_gone(struct stream *s)
{
    struct esession *e = (struct esession *)s;
    e->gone = 1;
    if (!e->reading) es_free(e); /* else freed when the read is back */
}

static void
es_sent(struct stream *s)
{
    struct esession *e = (struct esession *)s;
    struct pgmsg *m = pgmsg_of(e->srv);
    e->sending = 0;
    /* A read that got all there was up to the head known here needs no second read to find
     * nothing: it waits, and the next wake-up above it fires it (one read per delivery, not
     * two). A page cut short (the limit, a gap) reads on at once. */
    if (e->s.req && !e->r.blocked && !pgmsg_stopping(m) &&
        (int)json_array_size(e->r.notes) < e->r.limit && e->r.next >= pgmsg_head(m)) {
        e->w.cursor = e->r.next;
        pgmsg_wait(m, &e->w);
        return;
    }
    es_pump(e);
}

static int
es_run(struct pgmsg *m, struct msgdb_conn *conn, struct pg_job *j)
{
    struct esession *e = (struct esession *)((char *)j - offsetof(struct esession, job));
    return pread_run(m, conn, &e->r, &j->err);
}

/* The stream's start, after its first read. 0: it streams. */
static int
es_begin(struct esession *e)
{
    struct timeval tv = {SSE_PING_MS / 1000, 0};
    struct ctx *c = e->c;
    struct evhttp_connection *evcon = evhttp_request_get_connection(c->req);
    if (evcon) evhttp_connection_set_closecb(evcon, NULL, NULL);
    if (atomic_load(&e->job.cancelled)) {
        reply_error(c->req, LS_EUNAVAIL, "the request was cancelled");
        return -1;
    }
    if (e->job.err.code) {
        reply_lserror(c->req, &e->job.err);
        return -1;
    }
    if (e->r.beyond) {
        char last[24];
        i64s(last, sizeof last, e->r.cursor);
        sse_refuse_unknown_id(c, last, e->r.head);
        return -1;
    }
    if (*e->r.name) {
        struct consumer *v = view_find(e->srv, e->r.name, 1);
        if (v) {
            v->connected++;
            e->attached = 1;
        }
    }
    e->r.check = 0;
    e->r.ack = -1;
    stream_start_sse(&e->s, c->req);
    evtimer_add(e->ping, &tv);
    ctx_free(c);
    e->c = NULL;
    return 0;
}

static void
es_read_done(struct pg_job *j)
{
    struct esession *e = (struct esession *)((char *)j - offsetof(struct esession, job));
    struct pgmsg *m = pgmsg_of(e->srv);
    struct evbuffer *out;
    size_t i, n;
    e->reading = 0;
    if (e->c && es_begin(e)) {
        es_free(e);
        return;
    }
    if (e->gone) {
        es_free(e);
        return;
    }
    if (atomic_load(&j->cancelled) || pgmsg_stopping(m)) {
        stream_end(&e->s);
        es_free(e);
        return;
    }
    if (j->err.code || !(out = evbuffer_new())) { /* again at the next look */
        e->w.cursor = -1;
        pgmsg_wait(m, &e->w);
        return;
    }
    if (e->r.reset) {
        sse_event_json(out, "reset", e->r.from, e->r.reset);
        e->r.reset_sent = 1;
    }
    n = json_array_size(e->r.notes);
    for (i = 0; i < n; i++) {
        json_t *o = json_array_get(e->r.notes, i);
        sse_event_json(out, "notification", json_integer_value(json_object_get(o, "id")), o);
    }
    e->r.cursor = e->r.next;
    if (evbuffer_get_length(out) > 0) {
        e->sending = 1;
        stream_send(&e->s, out);
    } else {
        e->w.cursor = e->r.next;
        pgmsg_wait(m, &e->w);
    }
    evbuffer_free(out);
}

/*
 * A started stream's next notifications from the rows the wake-ups carried (pgmsg_recent),
 * without a read: those that follow its cursor one by one (id = cursor + 1, + 2, ...) are
 * committed, and no id before them can still appear, so the reader's rule (pgmsg.c) delivers
 * them at once as a read would. 1: sent, or waiting; 0: a read is needed (the next id is not
 * kept, or only other channels' were and the head is further).
 */
static int
es_from_recent(struct esession *e)
{
    struct pgmsg *m = pgmsg_of(e->srv);
    int64_t id = e->r.cursor, ts;
    const char *channel;
    json_t *payload;
    struct evbuffer *out;
    int n = 0;
    if (e->c || !e->s.req || id < 0 || !pgmsg_recent(m, id + 1, &ts, &channel, &payload) ||
        !(out = evbuffer_new()))
        return 0;
    json_decref(e->r.notes);
    e->r.notes = json_array();
    while (n < e->r.limit && pgmsg_recent(m, id + 1, &ts, &channel, &payload)) {
        char t[40];
        json_t *o;
        if (!channels_has(e->r.channels, channel)) {
            id++;
            continue;
        }
        ls_format_time(ts, t, sizeof t);
        /* as note_json() has it */
        o = json_pack("{s:I,s:s,s:O,s:s}", "id", (json_int_t)(id + 1), "channel", channel,
                      "payload", payload, "time", t);
        if (!o) break;
        id++;
        sse_event_json(out, "notification", id, o);
        json_array_append_new(e->r.notes, o);
        n++;
    }
    e->r.from = e->r.cursor;
    e->r.cursor = e->r.next = id;
    e->r.blocked = 0;
    if (evbuffer_get_length(out) > 0) {
        e->sending = 1;
        stream_send(&e->s, out);
    } else if (id < pgmsg_head(m)) {
        evbuffer_free(out);
        return 0;
    } else {
        e->w.cursor = id;
        pgmsg_wait(m, &e->w);
    }
    evbuffer_free(out);
    return 1;
}

static void
es_pump(struct esession *e)
{
    struct pgmsg *m = pgmsg_of(e->srv);
    if (e->sending || e->reading || (!e->c && !e->s.req)) return;
    if (es_from_recent(e)) return;
    e->job.run = es_run;
    e->job.done = es_read_done;
    e->job.idempotent = 1;
    ls_error_clear(&e->job.err);
    e->reading = 1;
    if (pgmsg_submit(m, &e->job)) {
        e->reading = 0;
        if (e->c) { /* not started: answer now */
            reply_error(e->c->req, LS_EUNAVAIL, "too many requests wait; try again");
            es_free(e);
            return;
        }
        e->w.cursor = -1; /* full: again at the next look */
        pgmsg_wait(m, &e->w);
    }
}

static void
es_fire(struct pg_waiter *w)
{
    struct esession *e = w->arg;
    if (pgmsg_stopping(pgmsg_of(e->srv)) && e->s.req && !e->sending && !e->reading) {
        stream_end(&e->s);
        es_free(e);
        return;
    }
    es_pump(e);
}

static void
es_ping(evutil_socket_t fd, short what, void *arg)
{
    struct esession *e = arg;
    struct timeval tv = {SSE_PING_MS / 1000, 0};
    if (!e->sending && !e->reading && e->s.req) {
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

static void
es_client_gone(struct evhttp_connection *evcon, void *arg)
{
    struct esession *e = arg;
    atomic_store(&e->job.cancelled, 1);
}

void
pg_h_events(struct ctx *c)
{
    struct esession *e = calloc(1, sizeof *e);
    const char *last = evhttp_find_header(evhttp_request_get_input_headers(c->req),
                                          "Last-Event-ID");
    struct evhttp_connection *evcon = evhttp_request_get_connection(c->req);
    int64_t id = -1;
    if (!e) {
        reply_error(c->req, LS_ENOMEM, NULL);
        ctx_free(c);
        return;
    }
    e->c = c;
    e->srv = c->srv;
    if (last && (ls_parse_i64(last, &id) || id < 0)) {
        sse_refuse_unknown_id(c, last, pgmsg_head(pgmsg_of(c->srv)));
        es_free(e);
        return;
    }
    if (pread_params(c, &e->r)) {
        es_free(e);
        return;
    }
    if (id >= 0) {
        e->r.cursor = id;
        e->r.check = 1;
        if (*e->r.name) e->r.ack = id; /* what the client says it has handled */
    }
    e->r.limit = SSE_BATCH;
    e->s.on_gone = es_gone;
    e->s.on_sent = es_sent;
    e->w.fire = es_fire;
    e->w.arg = e;
    if (!(e->ping = evtimer_new(c->srv->base, es_ping, e))) {
        reply_error(c->req, LS_ENOMEM, NULL);
        es_free(e);
        return;
    }
    es_pump(e);
    if (e->reading && evcon) evhttp_connection_set_closecb(evcon, es_client_gone, e);
}

/* ---------------------------------------------------------------- /v1/consumers */

enum cop_kind { COP_LIST, COP_GET, COP_ACK, COP_REWIND, COP_RESET, COP_DELETE };

struct cop {
    struct preq q;
    enum cop_kind kind;
    char name[LS_CHANNEL_MAX + 1];
    int64_t arg; /* ack: the id; rewind: the id, or the time with by_time */
    int by_time, missing, beyond;
    int64_t head, old_position, new_position;
    struct crow *rows;
    int nrows;
};

static int
cop_list(struct msgdb_conn *conn, struct cop *o, const char *name)
{
    struct msgdb_res *r =
        msgdb_exec(conn, &o->q.job.err, CONSUMERS_SQL(conn), 1, (const char *const[]){name});
    if (!r) return -1;
    o->rows = crows_of(r, &o->nrows);
    msgdb_clear(r);
    if (!o->rows) return ls_error_set(&o->q.job.err, LS_ENOMEM, NULL);
    o->missing = *name && o->nrows == 0;
    return 0;
}

/* Moves the consumer: ack (forward only) or an operator's move (anywhere; the reset forgotten).
 * One transaction, the row locked (SQLite: the file's write lock) from the read of the old
 * position to the move. */
static int
cop_move(struct msgdb_conn *conn, struct cop *o, int64_t to, int forward)
{
    char to_s[24], now[24];
    const char *v[3] = {o->name, to_s, now};
    struct msgdb_res *r;
    i64s(to_s, sizeof to_s, to);
    i64s(now, sizeof now, ls_now_ms());
    if (msgdb_run(conn, &o->q.job.err, DB_SQL(conn, "BEGIN", "BEGIN IMMEDIATE"), 0, NULL) ||
        !(r = msgdb_exec(
              conn, &o->q.job.err,
              DB_SQL(conn, "SELECT position FROM lockstep_consumers WHERE name = $1 FOR UPDATE",
                     "SELECT position FROM lockstep_consumers WHERE name = $1"),
              1, v)))
        return -1;
    o->missing = msgdb_rows(r) == 0;
    if (!o->missing) o->old_position = msgdb_i64(r, 0, 0);
    o->new_position = to;
    msgdb_clear(r);
    if (o->missing) return msgdb_run(conn, &o->q.job.err, "ROLLBACK", 0, NULL);
    if (msgdb_run(conn, &o->q.job.err,
                  forward
                      ? "UPDATE lockstep_consumers SET position = CASE WHEN position > CAST($2 "
                        "AS bigint) THEN position ELSE CAST($2 AS bigint) END, acked = CAST($3 "
                        "AS bigint), reset_at = CASE WHEN reset_at > 0 AND CAST($2 AS bigint) "
                        ">= reset_at THEN 0 ELSE reset_at END WHERE name = $1"
                      : "UPDATE lockstep_consumers SET position = CAST($2 AS bigint), reset_at = "
                        "0 WHERE name = $1",
                  forward ? 3 : 2, v))
        return -1;
    return msgdb_run(conn, &o->q.job.err, "COMMIT", 0, NULL);
}

static int
cop_run(struct msgdb_conn *conn, struct preq *q)
{
    struct cop *o = (struct cop *)q;
    struct msgdb_res *r;
    int64_t to = o->arg;
    if (o->kind == COP_LIST) return cop_list(conn, o, "");
    if (o->kind == COP_GET) return cop_list(conn, o, o->name);
    if (o->kind == COP_DELETE) {
        if (!(r = msgdb_exec(conn, &q->job.err, "DELETE FROM lockstep_consumers WHERE name = $1", 1,
                             (const char *const[]){o->name})))
            return -1;
        o->missing = msgdb_changed(r) == 0;
        msgdb_clear(r);
        return 0;
    }
    if (!(r = msgdb_exec(conn, &q->job.err, head_sql, 0, NULL))) return -1;
    o->head = msgdb_i64(r, 0, 0);
    msgdb_clear(r);
    if (o->kind == COP_RESET) {
        to = o->head;
    } else if (o->by_time) {
        char ts[24];
        i64s(ts, sizeof ts, o->arg);
        if (!(r = msgdb_exec(
                  conn, &q->job.err,
                  "SELECT (SELECT min(id) FROM lockstep_notes WHERE ts >= CAST($1 AS bigint)) - 1",
                  1, (const char *const[]){ts})))
            return -1;
        to = msgdb_isnull(r, 0, 0) ? o->head : msgdb_i64(r, 0, 0);
        msgdb_clear(r);
    } else if (to > o->head) {
        o->beyond = 1;
        return 0;
    }
    if (cop_move(conn, o, to, o->kind == COP_ACK) || o->missing) return o->missing ? 0 : -1;
    return cop_list(conn, o, o->name);
}

static int
cop_finish(struct preq *q)
{
    struct cop *o = (struct cop *)q;
    struct server *srv = q->c->srv;
    struct consumer *v;
    if (o->beyond) {
        reply_error(q->c->req, LS_EINVAL, "id %lld is beyond the head %lld", (long long)o->arg,
                    (long long)o->head);
        q->answered = 1;
        return 0;
    }
    if (o->missing) {
        reply_error(q->c->req, LS_ENOTFOUND, "no consumer %s in the shared database", o->name);
        q->answered = 1;
        return 0;
    }
    if (o->kind == COP_DELETE) {
        if ((v = view_find(srv, o->name, 0))) v->gone = 1; /* forgotten at the next reckoning */
        log_info("consumer %s removed", o->name);
        q->reply = json_pack("{s:s}", "removed", o->name);
        return 0;
    }
    if (o->kind == COP_REWIND || o->kind == COP_RESET)
        log_info("consumer %s moved from %lld to %lld", o->name, (long long)o->old_position,
                 (long long)o->new_position);
    if (o->kind == COP_LIST) {
        json_t *arr = json_array();
        for (int i = 0; i < o->nrows; i++)
            if ((v = view_apply(srv, &o->rows[i]))) json_array_append_new(arr, view_json(srv, v));
        q->reply = json_pack("{s:o,s:I}", "consumers", arr, "head",
                             (json_int_t)pgmsg_head(pgmsg_of(srv)));
        return 0;
    }
    if (o->nrows == 1 && (v = view_apply(srv, &o->rows[0]))) q->reply = view_json(srv, v);
    return 0;
}

static void
cop_release(struct preq *q)
{
    struct cop *o = (struct cop *)q;
    crows_free(o->rows, o->nrows);
}

/* A consumer operation on the database; the name from the route (kind != COP_LIST). */
static void
cop_submit(struct ctx *c, enum cop_kind kind, int64_t arg, int by_time)
{
    struct cop *o = calloc(1, sizeof *o);
    const char *name = param(c, "name");
    struct ls_error err;
    if (!o) {
        reply_error(c->req, LS_ENOMEM, NULL);
        ctx_free(c);
        return;
    }
    if (kind != COP_LIST && name_check("consumer", name, strlen(name), &err)) {
        reply_lserror(c->req, &err);
        free(o);
        ctx_free(c);
        return;
    }
    snprintf(o->name, sizeof o->name, "%s", kind == COP_LIST ? "" : name);
    o->kind = kind;
    o->arg = arg;
    o->by_time = by_time;
    o->q.run = cop_run;
    o->q.finish = cop_finish;
    o->q.release = cop_release;
    preq_submit(c, &o->q, 1);
}

void
pg_h_consumers(struct ctx *c)
{
    cop_submit(c, COP_LIST, 0, 0);
}

void
pg_h_consumer(struct ctx *c)
{
    cop_submit(c, COP_GET, 0, 0);
}

void
pg_h_ack(struct ctx *c)
{
    int64_t id;
    if (ack_id(c, &id)) {
        ctx_free(c);
        return;
    }
    cop_submit(c, COP_ACK, id, 0);
}

void
pg_h_rewind(struct ctx *c)
{
    int64_t v;
    int by_time;
    if (rewind_target(c, &v, &by_time)) {
        ctx_free(c);
        return;
    }
    cop_submit(c, COP_REWIND, v, by_time);
}

void
pg_h_reset(struct ctx *c)
{
    cop_submit(c, COP_RESET, 0, 0);
}

void
pg_h_consumer_delete(struct ctx *c)
{
    cop_submit(c, COP_DELETE, 0, 0);
}

/* ---------------------------------------------------------------- reckoning and status */

struct reckon {
    struct pg_job job;
    struct server *srv;
    struct crow *rows;
    int nrows;
};

static int
reckon_run(struct pgmsg *m, struct msgdb_conn *conn, struct pg_job *j)
{
    struct reckon *k = (struct reckon *)j;
    struct msgdb_res *r =
        msgdb_exec(conn, &j->err, CONSUMERS_SQL(conn), 1, (const char *const[]){""});
    if (!r) return -1;
    k->rows = crows_of(r, &k->nrows);
    msgdb_clear(r);
    return k->rows ? 0 : -1;
}

/* The loop: every consumer of the database judged; those gone from it forgotten here. */
static void
reckon_done(struct pg_job *j)
{
    struct reckon *k = (struct reckon *)j;
    struct views *v = views_of(k->srv);
    if (v) v->reckoning = 0;
    if (v && !j->err.code && !atomic_load(&j->cancelled)) {
        for (struct consumer *c = v->list; c; c = c->next) c->dirty = 0;
        for (int i = 0; i < k->nrows; i++) {
            struct consumer *c = view_apply(k->srv, &k->rows[i]);
            if (c) {
                c->dirty = 1; /* seen */
                c->gone = 0;
            }
        }
        for (struct consumer **p = &v->list; *p;) {
            struct consumer *c = *p;
            if (!c->dirty && c->connected <= 0) {
                *p = c->next;
                view_free(c);
            } else {
                p = &c->next;
            }
        }
    }
    crows_free(k->rows, k->nrows);
    free(k);
}

static void
reckon_start(evutil_socket_t fd, short what, void *arg)
{
    struct server *srv = arg;
    struct views *v = views_of(srv);
    struct reckon *k;
    if (!v || v->reckoning || !(k = calloc(1, sizeof *k))) return;
    k->srv = srv;
    k->job.run = reckon_run;
    k->job.done = reckon_done;
    k->job.idempotent = 1;
    if (pgmsg_submit(pgmsg_of(srv), &k->job)) {
        free(k);
        return;
    }
    v->reckoning = 1;
}

void
pgmsg_reckon_start(struct server *srv)
{
    struct views *v = views_of(srv);
    const char *env = getenv("LOCKSTEP_RECKON_MS"); /* tests make it fast */
    int64_t every = RECKON_MS;
    struct timeval tv;
    if (!v) return;
    if (!env || ls_parse_i64(env, &every) || every <= 0 || every > RECKON_MS) every = RECKON_MS;
    tv.tv_sec = every / 1000;
    tv.tv_usec = (every % 1000) * 1000;
    if ((v->timer = event_new(srv->base, -1, EV_PERSIST, reckon_start, srv)))
        event_add(v->timer, &tv);
}

void
pgmsg_reckon_stop(struct server *srv)
{
    struct views *v = *pgmsg_views(pgmsg_of(srv));
    if (v && v->timer) event_del(v->timer);
}

void
pgmsg_reckon_free(struct server *srv)
{
    struct views *v = *pgmsg_views(pgmsg_of(srv));
    if (!v) return;
    if (v->timer) event_free(v->timer);
    while (v->list) {
        struct consumer *c = v->list;
        v->list = c->next;
        view_free(c);
    }
    free(v);
    *pgmsg_views(pgmsg_of(srv)) = NULL;
}

json_t *
pgmsg_status_json(struct server *srv)
{
    struct views *v = views_of(srv);
    int64_t by[4] = {0, 0, 0, 0}, n = 0;
    json_t *risk = json_array();
    for (struct consumer *c = v ? v->list : NULL; c; c = c->next) {
        if (c->gone) continue;
        n++;
        by[c->state]++;
        if (c->at_risk) json_array_append_new(risk, json_string(c->name));
    }
    return json_pack("{s:s,s:I,s:{s:I,s:I,s:I,s:I},s:o}", "mode", pgmsg_kind(pgmsg_of(srv)),
                     "consumers", (json_int_t)n, "states", "live", (json_int_t)by[CS_LIVE],
                     "behind", (json_int_t)by[CS_BEHIND], "stalled", (json_int_t)by[CS_STALLED],
                     "reset", (json_int_t)by[CS_RESET], "at_risk", risk);
}
