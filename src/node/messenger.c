/*
 * messenger.c - the consumers of the cluster messenger (messenger.h, docs/messenger.md).
 *
 * A consumer lives in memory on the loop and in the store's consumers table. A change (an ack,
 * a rewind, a reset) marks it dirty; a timer hands every dirty one to the writer at most every
 * FLUSH_MS, so a thousand acks a second cost a few small transactions, and a kill -9 loses at
 * most the acks of the last FLUSH_MS (delivered again: at least once).
 *
 * Every RECKON_MS a reader thread counts what waits for each consumer; the loop then sets each
 * one's state and logs the changes.
 */
#include "node/messenger.h"
#include "common/log.h"
#include "common/util.h"
#include "node/pgmsg.h"
#include "node/server.h"
#include "node/webhook.h"

#include <stdlib.h>
#include <string.h>

#define BUCKETS 256
#define FLUSH_MS 100
#define RECKON_MS 5000
#define PENDING_CAP 10000
#define RECOUNT_EVERY 12 /* a full count every 12 reckonings; between, only what is new */
#define BEHIND_PENDING 1000
#define BEHIND_AGE_MS 60000

struct messenger {
    struct server *srv;
    struct consumer *bucket[BUCKETS];
    size_t count;
    struct event *flush_timer, *reckon_timer;
    int flush_armed, reckoning;
    uint64_t reckonings;
    uint64_t published, acks; /* since start, for GET /metrics */
};

static const char *const state_names[] = {"live", "behind", "stalled", "reset"};

static unsigned
bucket_of(const char *name)
{
    unsigned h = 2166136261u;
    for (; *name; name++) h = (h ^ (unsigned char)*name) * 16777619u;
    return h % BUCKETS;
}

struct consumer *
consumer_find(struct server *srv, const char *name)
{
    struct consumer *c;
    if (!srv->msg) return NULL;
    for (c = srv->msg->bucket[bucket_of(name)]; c; c = c->next)
        if (strcmp(c->name, name) == 0 && !c->gone) return c;
    return NULL;
}

static struct consumer *
consumer_add(struct messenger *m, const char *name, const char *channels)
{
    struct consumer *c = calloc(1, sizeof *c);
    unsigned b = bucket_of(name);
    if (!c || !(c->channels = strdup(channels))) {
        free(c);
        return NULL;
    }
    snprintf(c->name, sizeof c->name, "%s", name);
    c->reck_pos = c->reck_head = -1;
    c->next = m->bucket[b];
    m->bucket[b] = c;
    m->count++;
    return c;
}

static void
consumer_unlink_free(struct messenger *m, struct consumer *c)
{
    struct consumer **p = &m->bucket[bucket_of(c->name)];
    while (*p && *p != c) p = &(*p)->next;
    if (*p) *p = c->next;
    m->count--;
    json_decref(c->reset_why);
    free(c->channels);
    free(c);
}

/* ---------------------------------------------------------------- saving */

struct save_job {
    size_t n;
    struct ls_consumer *rows;
    char **owned; /* names and channel sets, copied for the writer thread */
    int *del;     /* 1: remove the row */
    struct consumer **who; /* the loop's records (a saving one is never freed before done) */
};

static int
save_run(struct store *st, struct wreq *r)
{
    struct save_job *j = r->fn_arg;
    for (size_t i = 0; i < j->n; i++) {
        int rc = j->del[i] ? store_consumer_del(st, j->rows[i].name, &r->err)
                           : store_consumer_save(st, &j->rows[i], &r->err);
        if (rc) return rc;
    }
    return 0;
}

static void save_arm(struct messenger *m);

static void
save_done(struct wreq *r, void *arg)
{
    struct messenger *m = arg;
    struct save_job *j = r->fn_arg;
    for (size_t i = 0; i < j->n; i++) {
        struct consumer *c = j->who[i];
        c->saving = 0;
        if (r->rc) c->dirty = 1; /* tried again at the next flush */
        if (c->gone && !c->dirty) consumer_unlink_free(m, c);
    }
    if (r->rc) log_warn("saving consumer positions: %s", r->err.msg);
    for (size_t i = 0; i < 2 * j->n; i++) free(j->owned[i]);
    free(j->owned);
    free(j->rows);
    free(j->del);
    free(j->who);
    free(j);
    wreq_free(r);
    save_arm(m);
}

/* c's row into the job, when it is dirty and not being saved already */
static void
save_add(struct save_job *j, struct consumer *c, size_t *k, size_t n)
{
    char *name, *channels;
    if (!c->dirty || c->saving || *k == n) return;
    name = strdup(c->name);
    channels = strdup(c->channels);
    if (!name || !channels) { /* stays dirty: the next flush */
        free(name);
        free(channels);
        return;
    }
    j->owned[2 * *k] = name;
    j->owned[2 * *k + 1] = channels;
    j->rows[*k] = (struct ls_consumer){name,          channels,  c->position, c->created,
                                       c->acked,      c->resets, c->reset_at, c->gen};
    j->del[*k] = c->gone;
    j->who[*k] = c;
    c->dirty = 0;
    c->saving = 1;
    (*k)++;
}

static void
save_flush(evutil_socket_t fd, short what, void *arg)
{
    struct messenger *m = arg;
    struct save_job *j;
    struct wreq *r;
    size_t n = 0, k = 0;
    m->flush_armed = 0;
    for (int b = 0; b < BUCKETS; b++)
        for (struct consumer *c = m->bucket[b]; c; c = c->next) n += c->dirty && !c->saving;
    if (n == 0 || !m->srv->writer) return;
    if (!(j = calloc(1, sizeof *j)) || !(j->rows = calloc(n, sizeof *j->rows)) ||
        !(j->owned = calloc(2 * n, sizeof *j->owned)) || !(j->del = calloc(n, sizeof *j->del)) ||
        !(j->who = calloc(n, sizeof *j->who)) || !(r = calloc(1, sizeof *r))) {
        if (j) free(j->rows), free(j->owned), free(j->del), free(j->who);
        free(j);
        save_arm(m); /* out of memory: later */
        return;
    }
    /* removals first: a consumer removed and made again under its name within one flush
     * must end up saved, not removed */
    for (int b = 0; b < BUCKETS; b++)
        for (struct consumer *c = m->bucket[b]; c; c = c->next)
            if (c->gone) save_add(j, c, &k, n);
    for (int b = 0; b < BUCKETS; b++)
        for (struct consumer *c = m->bucket[b]; c; c = c->next)
            if (!c->gone) save_add(j, c, &k, n);
    j->n = k;
    r->type = WREQ_CUSTOM;
    r->fn = save_run;
    r->fn_arg = j;
    r->done = save_done;
    r->arg = m;
    writer_submit(m->srv->writer, r);
}

static void
save_arm(struct messenger *m)
{
    struct timeval tv = {0, FLUSH_MS * 1000};
    int any = 0;
    if (m->flush_armed || m->srv->stopping) return;
    for (int b = 0; b < BUCKETS && !any; b++)
        for (struct consumer *c = m->bucket[b]; c && !any; c = c->next) any = c->dirty && !c->saving;
    if (!any) return;
    m->flush_armed = 1;
    evtimer_add(m->flush_timer, &tv);
}

void
consumer_touch(struct server *srv, struct consumer *c)
{
    c->dirty = 1;
    save_arm(srv->msg);
}

/* ---------------------------------------------------------------- changes */

struct consumer *
consumer_open(struct server *srv, const char *name, const char *channels, int from_start)
{
    struct consumer *c = consumer_find(srv, name);
    if (c) {
        if (channels && strcmp(channels, c->channels) != 0) {
            char *dup = strdup(channels);
            if (!dup) return NULL;
            free(c->channels);
            c->channels = dup;
            log_info("consumer %s: channels now %s", c->name, *dup ? dup : "(every channel)");
            consumer_touch(srv, c);
        }
        return c;
    }
    if (!(c = consumer_add(srv->msg, name, channels ? channels : ""))) return NULL;
    c->created = ls_now_ms();
    c->gen = -1; /* the first read tells */
    /* from_start: the oldest retained, which notes_floor finds at the first read (a reset
     * there is not one: the consumer asked for everything that is kept). */
    c->position = from_start ? -1 : srv->pos.seq;
    log_info("consumer %s created at %s, channels %s", c->name,
             from_start ? "the oldest retained entry" : "the head",
             *c->channels ? c->channels : "(every channel)");
    consumer_touch(srv, c);
    return c;
}

void
consumer_ack(struct server *srv, struct consumer *c, int64_t id)
{
    c->acked = ls_now_ms();
    srv->msg->acks++;
    if (id > c->position) c->position = id;
    if (c->reset_at > 0 && id >= c->reset_at) {
        c->reset_at = 0;
        json_decref(c->reset_why);
        c->reset_why = NULL;
    }
    consumer_touch(srv, c);
}

void
consumer_move(struct server *srv, struct consumer *c, int64_t pos)
{
    log_info("consumer %s moved from %lld to %lld", c->name, (long long)c->position,
             (long long)pos);
    c->position = pos;
    c->moves++;
    c->reset_at = 0;
    json_decref(c->reset_why);
    c->reset_why = NULL;
    consumer_touch(srv, c);
    webhook_kick(srv, c->name); /* a webhook delivers from there now, not at the next commit */
}

void
consumer_reset(struct server *srv, struct consumer *c, int64_t floor, json_t *why)
{
    log_warn("consumer %s: reset, its position %lld is older than the oldest retained entry "
             "(it continues after %lld)",
             c->name, (long long)c->position, (long long)floor);
    c->position = floor;
    c->reset_at = floor > 0 ? floor : 1;
    c->resets++;
    json_decref(c->reset_why);
    c->reset_why = json_incref(why);
    consumer_touch(srv, c);
}

void
consumer_delete(struct server *srv, struct consumer *c)
{
    log_info("consumer %s removed", c->name);
    c->gone = 1;
    consumer_touch(srv, c);
}

/* ---------------------------------------------------------------- reckoning states */

struct reckon_row {
    char name[LS_CHANNEL_MAX + 1];
    char *channels;
    int64_t position, pending, first_ts;
    int64_t prev_pos, prev_head, prev_pending, prev_first_ts; /* the last reckoning's */
};

struct reckon {
    struct read_job job;
    struct messenger *m;
    size_t n;
    struct reckon_row *rows;
    int64_t head; /* the loop's seq when it began: counts stop there */
    int full;     /* count everything again (retention may have removed some) */
};

/* What waits for each consumer. A consumer that did not move since the last time is counted
 * only for what came since: a thousand idle consumers cost a thousand short index reads. */
static void
reckon_run(struct store *st, struct read_job *j)
{
    struct reckon *k = (struct reckon *)j;
    for (size_t i = 0; i < k->n && !atomic_load(&j->cancelled); i++) {
        struct reckon_row *r = &k->rows[i];
        int64_t from = r->position < 0 ? notes_floor(st, r->channels) : r->position;
        int64_t add = 0, first = 0;
        if (!k->full && r->prev_head >= 0 && r->prev_pos == r->position &&
            r->prev_head >= from && r->prev_head <= k->head) {
            if (store_notes_pending(st, r->prev_head, k->head, r->channels, PENDING_CAP, &add,
                                    &first)) {
                r->pending = -1;
                continue;
            }
            r->pending = r->prev_pending + add;
            if (r->pending > PENDING_CAP) r->pending = PENDING_CAP;
            r->first_ts = r->prev_pending > 0 ? r->prev_first_ts : first;
        } else if (store_notes_pending(st, from, k->head, r->channels, PENDING_CAP, &r->pending,
                                       &r->first_ts)) {
            r->pending = -1;
        }
    }
}

static void
set_state(struct server *srv, struct consumer *c, enum consumer_state s, const char *why)
{
    if (c->state == s) return;
    if (s == CS_LIVE) log_info("consumer %s: %s -> live", c->name, state_names[c->state]);
    else log_warn("consumer %s: %s -> %s (%s)", c->name, state_names[c->state], state_names[s], why);
    c->state = s;
}

void
consumer_judge(struct server *srv, struct consumer *c, int64_t pending, int64_t first_ts)
{
    int64_t now = ls_now_ms(), age = 0, bytes = 0, quiet;
    char why[120];
    messenger_retention(srv, &age, &bytes);
    c->pending = pending;
    c->first_ts = first_ts;
    c->at_risk = pending > 0 && age > 0 && first_ts < now - age * 9 / 10;
    quiet = now - (c->acked > c->created ? c->acked : c->created);
    if (c->reset_at > 0) {
        set_state(srv, c, CS_RESET, "a reset waits for its ack");
    } else if (pending > 0 && quiet > srv->cfg.consumer_stall_ms) {
        snprintf(why, sizeof why, "%lld pending, no ack for %lld s", (long long)pending,
                 (long long)(quiet / 1000));
        set_state(srv, c, CS_STALLED, why);
    } else if (pending > BEHIND_PENDING || (pending > 0 && now - first_ts > BEHIND_AGE_MS)) {
        snprintf(why, sizeof why, "%lld pending, the oldest %lld s old", (long long)pending,
                 (long long)((now - first_ts) / 1000));
        set_state(srv, c, CS_BEHIND, why);
    } else {
        set_state(srv, c, CS_LIVE, "");
    }
}

static void
reckon_done(struct read_job *j)
{
    struct reckon *k = (struct reckon *)j;
    struct messenger *m = k->m;
    struct server *srv = m->srv;
    for (size_t i = 0; i < k->n; i++) {
        struct reckon_row *r = &k->rows[i];
        struct consumer *c = consumer_find(srv, r->name);
        free(r->channels);
        if (!c || r->pending < 0 || atomic_load(&j->cancelled)) continue;
        c->reck_pos = r->position;
        c->reck_head = k->head;
        consumer_judge(srv, c, r->pending, r->first_ts);
    }
    free(k->rows);
    free(k);
    m->reckoning = 0;
}

static void
reckon_start(evutil_socket_t fd, short what, void *arg)
{
    struct messenger *m = arg;
    struct reckon *k;
    size_t i = 0;
    if (m->reckoning || m->count == 0 || !m->srv->readers) return;
    if (!(k = calloc(1, sizeof *k)) || !(k->rows = calloc(m->count, sizeof *k->rows))) {
        free(k);
        return;
    }
    for (int b = 0; b < BUCKETS; b++) {
        for (struct consumer *c = m->bucket[b]; c && i < m->count; c = c->next) {
            if (c->gone || !(k->rows[i].channels = strdup(c->channels))) continue;
            snprintf(k->rows[i].name, sizeof k->rows[i].name, "%s", c->name);
            k->rows[i].position = c->position;
            k->rows[i].prev_pos = c->reck_pos;
            k->rows[i].prev_head = c->reck_head;
            k->rows[i].prev_pending = c->pending;
            k->rows[i].prev_first_ts = c->first_ts;
            i++;
        }
    }
    k->n = i;
    k->m = m;
    k->head = m->srv->pos.seq;
    k->full = m->reckonings++ % RECOUNT_EVERY == 0;
    k->job.run = reckon_run;
    k->job.done = reckon_done;
    m->reckoning = 1;
    if (readers_submit(m->srv->readers, &k->job)) {
        m->reckoning = 0;
        for (size_t x = 0; x < k->n; x++) free(k->rows[x].channels);
        free(k->rows);
        free(k);
    }
}

/* ---------------------------------------------------------------- views */

json_t *
consumer_json(struct server *srv, const struct consumer *c)
{
    char t[40], chans[LS_CHANNEL_MAX * 4];
    json_t *arr = json_array(), *o, *hook;
    snprintf(chans, sizeof chans, "%s", c->channels);
    for (char *save = NULL, *tok = strtok_r(chans, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save))
        json_array_append_new(arr, json_string(tok));
    o = json_pack("{s:s,s:o,s:I,s:I,s:I,s:i,s:s,s:b,s:I}", "name", c->name, "channels", arr,
                  "position", (json_int_t)(c->position < 0 ? 0 : c->position), "head",
                  (json_int_t)srv->pos.seq, "pending", (json_int_t)c->pending, "connected",
                  c->connected, "state", state_names[c->state], "at_risk", c->at_risk, "resets",
                  (json_int_t)c->resets);
    json_object_set_new(o, "lag_seconds",
                        json_integer(c->pending > 0 ? (ls_now_ms() - c->first_ts) / 1000 : 0));
    if (c->acked) ls_format_time(c->acked, t, sizeof t);
    json_object_set_new(o, "last_ack", c->acked ? json_string(t) : json_null());
    if ((hook = webhook_json(srv, c->name))) json_object_set_new(o, "webhook", hook);
    return o;
}

json_t *
messenger_consumers_json(struct server *srv)
{
    json_t *arr = json_array();
    if (!srv->msg) return arr;
    for (int b = 0; b < BUCKETS; b++)
        for (struct consumer *c = srv->msg->bucket[b]; c; c = c->next)
            if (!c->gone) json_array_append_new(arr, consumer_json(srv, c));
    return arr;
}

json_t *
messenger_status_json(struct server *srv)
{
    int64_t by[4] = {0, 0, 0, 0}, n = 0;
    json_t *risk;
    if (srv->pgmsg) return pgmsg_status_json(srv); /* --messenger: the shared database's */
    risk = json_array();
    if (srv->msg) {
        for (int b = 0; b < BUCKETS; b++) {
            for (struct consumer *c = srv->msg->bucket[b]; c; c = c->next) {
                if (c->gone) continue;
                n++;
                by[c->state]++;
                if (c->at_risk) json_array_append_new(risk, json_string(c->name));
            }
        }
    }
    return json_pack("{s:I,s:{s:I,s:I,s:I,s:I},s:o,s:o}", "consumers", (json_int_t)n, "states",
                     "live", (json_int_t)by[CS_LIVE], "behind", (json_int_t)by[CS_BEHIND],
                     "stalled", (json_int_t)by[CS_STALLED], "reset", (json_int_t)by[CS_RESET],
                     "at_risk", risk, "webhooks_failing", webhook_failing_json(srv));
}

void
messenger_count_published(struct server *srv, size_t n)
{
    if (srv->msg) srv->msg->published += n;
}

void
messenger_counts(struct server *srv, uint64_t *published, uint64_t *acks)
{
    *published = srv->msg ? srv->msg->published : 0;
    *acks = srv->msg ? srv->msg->acks : 0;
}

void
messenger_retention(struct server *srv, int64_t *age_ms, int64_t *bytes)
{
    *age_ms = srv->notify_age_ms;
    *bytes = srv->notify_bytes;
}

/* ---------------------------------------------------------------- reading helpers */

int64_t
notes_floor(struct store *st, const char *channels)
{
    int64_t floor = store_floor(st, FLOOR_LOG);
    /* a set of only "content" does not care how long notifications are kept */
    int only_content = *channels && strcmp(channels, LS_CONTENT_CHANNEL) == 0;
    if (!only_content) {
        int64_t nf = store_floor(st, FLOOR_NOTIFY);
        if (nf > floor) floor = nf;
    }
    return floor;
}

json_t *
note_json(const struct ls_note *n)
{
    char t[40];
    json_t *payload;
    ls_format_time(n->ts, t, sizeof t);
    if (n->op == LS_OP_NOTIFY) {
        payload = json_loads(n->payload, JSON_DECODE_ANY, NULL);
        if (!payload) payload = json_null(); /* stored by us, compact: not expected */
    } else {
        payload = json_pack("{s:s,s:s,s:I,s:I}", "path", n->path, "op", op_name(n->op), "version",
                            (json_int_t)n->version, "seq", (json_int_t)n->seq);
        if (n->to) json_object_set_new(payload, "to", json_string(n->to));
    }
    return json_pack("{s:I,s:s,s:o,s:s}", "id", (json_int_t)n->seq, "channel", n->channel,
                     "payload", payload, "time", t);
}

json_t *
reset_json(int64_t position, int64_t floor, int64_t head)
{
    char why[160];
    snprintf(why, sizeof why, "position %lld is older than the oldest retained entry",
             (long long)position);
    return json_pack("{s:s,s:s,s:I,s:I,s:I}", "type", "reset", "reason", why, "position",
                     (json_int_t)position, "oldest", (json_int_t)(floor + 1), "head",
                     (json_int_t)head);
}

/* ---------------------------------------------------------------- start and stop */

static int
load_cb(void *arg, const struct ls_consumer *row)
{
    struct messenger *m = arg;
    struct consumer *c = consumer_add(m, row->name, row->channels);
    if (!c) return -1;
    c->position = row->position;
    c->created = row->created;
    c->acked = row->acked;
    c->resets = row->resets;
    c->reset_at = row->reset_at;
    c->gen = row->gen;
    if (c->reset_at > 0) c->state = CS_RESET;
    return 0;
}

int
messenger_start(struct server *srv, struct ls_error *err)
{
    struct messenger *m = calloc(1, sizeof *m);
    const char *env = getenv("LOCKSTEP_RECKON_MS"); /* tests make it fast */
    int64_t every = RECKON_MS;
    struct timeval tv;
    if (!m) return ls_error_set(err, LS_ENOMEM, "out of memory");
    if (env && ls_parse_i64(env, &every) == 0 && every > 0 && every <= RECKON_MS) {
    } else {
        every = RECKON_MS;
    }
    tv.tv_sec = every / 1000;
    tv.tv_usec = (every % 1000) * 1000;
    m->srv = srv;
    srv->msg = m;
    /* at start, before any request: a short read of a small table */
    if (store_consumers(srv->reader, load_cb, m))
        return ls_error_set(err, LS_EIO, "cannot read the consumers of %s", srv->cfg.data);
    if (!(m->flush_timer = evtimer_new(srv->base, save_flush, m)) ||
        !(m->reckon_timer = event_new(srv->base, -1, EV_PERSIST, reckon_start, m)))
        return ls_error_set(err, LS_ENOMEM, "out of memory");
    event_add(m->reckon_timer, &tv);
    if (m->count) log_info("messenger: %zu consumers", m->count);
    return 0;
}

/* Before the writer stops: what is dirty is saved now (the writer still runs). */
void
messenger_stop(struct server *srv)
{
    struct messenger *m = srv->msg;
    if (!m) return;
    if (m->flush_timer) {
        evtimer_del(m->flush_timer);
        save_flush(-1, 0, m);
        event_free(m->flush_timer);
        m->flush_timer = NULL;
    }
    if (m->reckon_timer) event_free(m->reckon_timer);
    m->reckon_timer = NULL;
}

void
messenger_free(struct server *srv)
{
    struct messenger *m = srv->msg;
    if (!m) return;
    for (int b = 0; b < BUCKETS; b++)
        while (m->bucket[b]) consumer_unlink_free(m, m->bucket[b]);
    free(m);
    srv->msg = NULL;
}
