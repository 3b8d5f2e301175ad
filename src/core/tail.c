/*
 * tail.c - the newest log entries in memory (see tail.h).
 *
 * Committed entries sit in a ring of pointers, oldest first, under a mutex; pending ones (the
 * writer's open transaction) in a plain array only the writer touches. Each entry is one
 * allocation holding its strings and inline body. A streamed unit's published entries sit at
 * the ring's end, above `committed`, until it ends.
 */
#include "core/tail.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct tent {
    struct ls_entry e;
    size_t bytes;
    char data[];
};

struct log_tail {
    pthread_mutex_t mu;
    size_t max_bytes;
    /* committed: ring[(head + i) % cap] for i < n, seqs increasing */
    struct tent **ring;
    size_t head, n, cap, bytes;
    int64_t base; /* every entry with seq > base is in the ring */
    int64_t committed; /* entries above it are a streamed unit's, not committed (yet) */
    /* the streamed unit: its generation, open or not, the seq before it; bit i of aborted says
     * whether generation gen - i was rolled back */
    uint64_t gen, aborted;
    int unit_open;
    int64_t unit_after;
    size_t published; /* the writer's: entries of its transaction already in the ring */
    atomic_int streamers;
    /* the writer's own */
    struct tent **pending;
    size_t npending, pending_cap, pending_bytes;
    int broken;
    uint64_t epoch; /* counts the restarts: a reader that saw one epoch knows the log went on */
    atomic_int wanted; /* a reader has come: until then entries are not even copied */
};

struct log_tail *
tail_new(size_t max_bytes)
{
    struct log_tail *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    pthread_mutex_init(&t->mu, NULL);
    t->max_bytes = max_bytes;
    t->base = INT64_MAX; /* nothing is known until the first transaction ends */
    t->committed = INT64_MAX;
    t->broken = 1;
    return t;
}

static void
clear_ring(struct log_tail *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->ring[(t->head + i) % t->cap]);
    t->head = t->n = t->bytes = 0;
}

static void
clear_pending(struct log_tail *t)
{
    for (size_t i = 0; i < t->npending; i++)
        free(t->pending[i]);
    t->npending = 0;
    t->pending_bytes = 0;
}

void
tail_free(struct log_tail *t)
{
    if (!t) return;
    clear_ring(t);
    clear_pending(t);
    free(t->ring);
    free(t->pending);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

/* ---------------------------------------------------------------- the writer */

static char *
copy_str(char **at, const char *s)
{
    size_t n;
    char *out;
    if (!s) return NULL;
    n = strlen(s) + 1;
    out = memcpy(*at, s, n);
    *at += n;
    return out;
}

void
tail_add(struct log_tail *t, const struct ls_entry *e)
{
    size_t body = e->body_kind == BODY_INLINE ? e->body_len : 0;
    size_t strs = strlen(e->path) + 1 + (e->to ? strlen(e->to) + 1 : 0) +
                  (e->kind ? strlen(e->kind) + 1 : 0) + (e->meta ? strlen(e->meta) + 1 : 0);
    struct tent *x;
    char *at;
    if (!atomic_load_explicit(&t->wanted, memory_order_relaxed)) t->broken = 1;
    if (t->broken) return;
    if (t->pending_bytes + sizeof *x + strs + body > t->max_bytes) {
        /* A transaction larger than the tail (a big import): it would only push everything
         * out; readers find it in the store. */
        clear_pending(t);
        t->broken = 1;
        return;
    }
    if (t->npending == t->pending_cap) {
        size_t cap = t->pending_cap ? t->pending_cap * 2 : 256;
        struct tent **p = realloc(t->pending, cap * sizeof *p);
        if (!p) {
            t->broken = 1;
            return;
        }
        t->pending = p;
        t->pending_cap = cap;
    }
    if (!(x = malloc(sizeof *x + strs + body))) {
        t->broken = 1;
        return;
    }
    x->e = *e;
    at = x->data;
    if (body) {
        x->e.body = memcpy(at, e->body, body);
        at += body;
    } else if (e->body_kind == BODY_INLINE) {
        x->e.body = "";
    }
    x->e.path = copy_str(&at, e->path);
    x->e.to = copy_str(&at, e->to);
    x->e.kind = copy_str(&at, e->kind);
    x->e.meta = copy_str(&at, e->meta);
    x->bytes = sizeof *x + strs + body;
    t->pending[t->npending++] = x;
    t->pending_bytes += x->bytes;
}

size_t
tail_mark(struct log_tail *t)
{
    return t->published + t->npending;
}

/* The open unit ended without a commit (under t->mu). */
static void
unit_aborted(struct log_tail *t)
{
    if (!t->unit_open) return;
    t->unit_open = 0;
    t->aborted |= 1;
}

void
tail_undo(struct log_tail *t, size_t mark)
{
    if (mark < t->published) { /* published entries go too: the unit is rolled back */
        clear_pending(t);
        pthread_mutex_lock(&t->mu);
        while (t->published > mark && t->n > 0) {
            struct tent *x = t->ring[(t->head + t->n - 1) % t->cap];
            if (x->e.seq <= t->committed) break;
            t->bytes -= x->bytes;
            t->n--;
            t->published--;
            free(x);
        }
        /* Some went out of the ring already (the base passed the unit's start): the tail
         * cannot say what follows; it starts again when the transaction ends. */
        if (t->published > mark || t->base > t->committed) t->broken = 1;
        t->published = mark;
        unit_aborted(t);
        pthread_mutex_unlock(&t->mu);
        return;
    }
    mark -= t->published;
    while (t->npending > mark) {
        struct tent *x = t->pending[--t->npending];
        t->pending_bytes -= x->bytes;
        free(x);
    }
}

void
tail_break(struct log_tail *t)
{
    t->broken = 1;
}

static int
ring_push(struct log_tail *t, struct tent *x)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 1024;
        struct tent **r = malloc(cap * sizeof *r);
        if (!r) return -1;
        for (size_t i = 0; i < t->n; i++)
            r[i] = t->ring[(t->head + i) % t->cap];
        free(t->ring);
        t->ring = r;
        t->head = 0;
        t->cap = cap;
    }
    t->ring[(t->head + t->n) % t->cap] = x;
    t->n++;
    t->bytes += x->bytes;
    return 0;
}

/* The oldest entries go while the ring holds more than max (under t->mu): the base moves up. */
static void
trim(struct log_tail *t, size_t max)
{
    while (t->n > 0 && t->bytes > max) {
        struct tent *x = t->ring[t->head];
        t->base = x->e.seq;
        t->bytes -= x->bytes;
        t->head = (t->head + 1) % t->cap;
        t->n--;
        free(x);
    }
}

void
tail_end(struct log_tail *t, int committed, int64_t seq)
{
    pthread_mutex_lock(&t->mu);
    if (committed) t->unit_open = 0;
    else unit_aborted(t);
    if (t->published && !committed) t->broken = 1; /* its entries are in the ring */
    t->published = 0;
    if (t->broken) {
        clear_ring(t);
        clear_pending(t);
        t->base = seq;
        t->committed = seq;
        t->broken = 0;
        t->epoch++;
    } else if (committed) {
        size_t i;
        for (i = 0; i < t->npending; i++)
            if (ring_push(t, t->pending[i])) break;
        if (i < t->npending) { /* out of memory: start again after this transaction */
            for (; i < t->npending; i++)
                free(t->pending[i]);
            clear_ring(t);
            t->base = seq;
            t->epoch++;
        }
        t->npending = 0; /* the rest belong to the ring now */
        t->pending_bytes = 0;
        t->committed = seq;
        trim(t, t->max_bytes);
    } else {
        clear_pending(t);
    }
    pthread_mutex_unlock(&t->mu);
}

/* ---------------------------------------------------------------- streamed units */

uint64_t
tail_stream_begin(struct log_tail *t)
{
    uint64_t gen;
    if (!atomic_load_explicit(&t->wanted, memory_order_relaxed) || t->broken || t->npending)
        return 0;
    pthread_mutex_lock(&t->mu);
    t->gen++;
    t->aborted <<= 1;
    t->unit_open = 1;
    t->unit_after = t->committed;
    t->published = 0;
    gen = t->gen;
    pthread_mutex_unlock(&t->mu);
    return gen;
}

void
tail_publish(struct log_tail *t)
{
    size_t i;
    if (t->broken || !t->unit_open || t->npending == 0) return; /* unit_open: the writer's */
    /* A reader holds the ring (encoding what it read): the writer does not wait for it; these
     * entries go with the next piece, or with the commit. */
    if (pthread_mutex_trylock(&t->mu) != 0) return;
    for (i = 0; i < t->npending; i++)
        if (ring_push(t, t->pending[i])) break;
    t->published += i;
    if (i < t->npending) { /* out of memory: the rest stay pending; nothing is lost */
        memmove(t->pending, t->pending + i, (t->npending - i) * sizeof *t->pending);
        t->npending -= i;
        t->pending_bytes = 0;
        for (size_t k = 0; k < t->npending; k++)
            t->pending_bytes += t->pending[k]->bytes;
    } else {
        t->npending = 0;
        t->pending_bytes = 0;
    }
    trim(t, t->max_bytes * TAIL_STREAM_FACTOR);
    pthread_mutex_unlock(&t->mu);
}

size_t
tail_pending_bytes(const struct log_tail *t)
{
    return t->pending_bytes;
}

enum tail_unit_state
tail_unit(struct log_tail *t, uint64_t gen)
{
    enum tail_unit_state s;
    pthread_mutex_lock(&t->mu);
    if (gen == 0 || gen > t->gen || t->gen - gen >= 64) s = TAIL_UNIT_UNKNOWN;
    else if (gen == t->gen && t->unit_open) s = TAIL_UNIT_OPEN;
    else s = (t->aborted >> (t->gen - gen)) & 1 ? TAIL_UNIT_ABORTED : TAIL_UNIT_COMMITTED;
    pthread_mutex_unlock(&t->mu);
    return s;
}

void
tail_streamers_add(struct log_tail *t, int delta)
{
    if (t) atomic_fetch_add(&t->streamers, delta);
}

int
tail_streamers(struct log_tail *t)
{
    return t ? atomic_load(&t->streamers) : 0;
}

/* ---------------------------------------------------------------- readers */

uint64_t
tail_epoch(struct log_tail *t)
{
    uint64_t e;
    pthread_mutex_lock(&t->mu);
    e = t->epoch;
    pthread_mutex_unlock(&t->mu);
    return e;
}

int
tail_read(struct log_tail *t, int64_t after, int limit, size_t max_bytes, store_entry_cb cb,
          void *arg)
{
    return tail_read_epoch(t, TAIL_ANY_EPOCH, after, limit, max_bytes, cb, arg);
}

/* Passes the entries after `after` up to seq `upto` (under t->mu). */
static int
read_ring(struct log_tail *t, int64_t after, int64_t upto, int limit, size_t max_bytes,
          store_entry_cb cb, void *arg)
{
    size_t lo, hi, bytes = 0;
    int n = 0;
    /* the first entry with seq > after */
    lo = 0, hi = t->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (t->ring[(t->head + mid) % t->cap]->e.seq <= after)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (; lo < t->n && n < limit && bytes < max_bytes; lo++) {
        struct tent *x = t->ring[(t->head + lo) % t->cap];
        if (x->e.seq > upto) break;
        bytes += 64 + x->e.body_len + strlen(x->e.path) + (x->e.meta ? strlen(x->e.meta) : 0);
        n++;
        if (cb(arg, &x->e)) break;
    }
    return n;
}

int
tail_read_epoch(struct log_tail *t, uint64_t epoch, int64_t after, int limit, size_t max_bytes,
                store_entry_cb cb, void *arg)
{
    int n;
    if (!t) return -1;
    atomic_store_explicit(&t->wanted, 1, memory_order_relaxed);
    pthread_mutex_lock(&t->mu);
    if (after < t->base || (epoch != TAIL_ANY_EPOCH && epoch != t->epoch)) {
        pthread_mutex_unlock(&t->mu);
        return -1;
    }
    n = read_ring(t, after, t->committed, limit, max_bytes, cb, arg); /* committed ones only */
    pthread_mutex_unlock(&t->mu);
    return n;
}

int
tail_read_open(struct log_tail *t, int64_t after, int limit, size_t max_bytes,
               store_entry_cb cb, void *arg, uint64_t *gen, int64_t *unit_after)
{
    int n = -1;
    if (!t) return -1;
    pthread_mutex_lock(&t->mu);
    if (t->unit_open && after >= t->base && after >= t->unit_after && (!*gen || *gen == t->gen)) {
        *gen = t->gen;
        *unit_after = t->unit_after;
        n = read_ring(t, after, INT64_MAX, limit, max_bytes, cb, arg);
    }
    pthread_mutex_unlock(&t->mu);
    return n;
}
