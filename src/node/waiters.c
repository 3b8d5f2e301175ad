/*
 * waiters.c - everything that waits for a seq or a deadline, in two binary heaps: one ordered
 * by target seq (then arrival), one by deadline (then arrival). A commit pops only the waiters
 * it satisfies, a timer only those whose deadline passed: O(log n) each, whatever the number of
 * idle long polls. A waiter knows its place in each heap, so it can leave in O(log n) too.
 *
 * Not for: waiting on downstream acknowledgements (server.c's ack waiters, few and short).
 */
#include "node/server.h"

#include <assert.h>
#include <stddef.h>
#include <stdlib.h>

typedef int (*before_fn)(const struct seq_waiter *a, const struct seq_waiter *b);

static int
target_before(const struct seq_waiter *a, const struct seq_waiter *b)
{
    return a->target != b->target ? a->target < b->target : a->order < b->order;
}

static int
deadline_before(const struct seq_waiter *a, const struct seq_waiter *b)
{
    return a->deadline_ms != b->deadline_ms ? a->deadline_ms < b->deadline_ms
                                            : a->order < b->order;
}

/* One heap: its array, size, and which of the waiter's position fields is its own. */
struct heap {
    struct seq_waiter **v;
    size_t *n, *cap;
    size_t offset; /* offsetof the position field */
    before_fn before;
};

static size_t *
pos(const struct heap *h, struct seq_waiter *w)
{
    return (size_t *)((char *)w + h->offset);
}

static void
place(const struct heap *h, size_t i, struct seq_waiter *w)
{
    h->v[i] = w;
    *pos(h, w) = i + 1;
}

static void
sift_up(const struct heap *h, size_t i)
{
    struct seq_waiter *w = h->v[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!h->before(w, h->v[parent])) break;
        place(h, i, h->v[parent]);
        i = parent;
    }
    place(h, i, w);
}

static void
sift_down(const struct heap *h, size_t i)
{
    struct seq_waiter *w = h->v[i];
    size_t n = *h->n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && h->before(h->v[c + 1], h->v[c])) c++;
        if (!h->before(h->v[c], w)) break;
        place(h, i, h->v[c]);
        i = c;
    }
    place(h, i, w);
}

static int
heap_push(const struct heap *h, struct seq_waiter ***array, struct seq_waiter *w)
{
    if (*h->n == *h->cap) {
        size_t cap = *h->cap ? *h->cap * 2 : 64;
        struct seq_waiter **v = realloc(*array, cap * sizeof *v);
        if (!v) return -1;
        *array = v;
        *h->cap = cap;
    }
    {
        struct heap g = *h;
        g.v = *array;
        place(&g, (*g.n)++, w);
        sift_up(&g, *g.n - 1);
    }
    return 0;
}

static void
heap_remove(const struct heap *h, struct seq_waiter *w)
{
    size_t i = *pos(h, w) - 1, last = --*h->n;
    struct seq_waiter *moved = h->v[last];
    assert(*pos(h, w) > 0 && h->v[i] == w);
    *pos(h, w) = 0;
    if (i == last) return;
    place(h, i, moved);
    sift_down(h, i);
    sift_up(h, *pos(h, moved) - 1);
}

static struct heap
by_target(struct waiters *ws)
{
    return (struct heap){ws->by_target, &ws->ntarget, &ws->cap_target,
                         offsetof(struct seq_waiter, at_target), target_before};
}

static struct heap
by_deadline(struct waiters *ws)
{
    return (struct heap){ws->by_deadline, &ws->ndeadline, &ws->cap_deadline,
                         offsetof(struct seq_waiter, at_deadline), deadline_before};
}

int
waiters_has(const struct seq_waiter *w)
{
    return w->at_target || w->at_deadline;
}

void
waiters_remove(struct waiters *ws, struct seq_waiter *w)
{
    if (w->at_target) {
        struct heap h = by_target(ws);
        heap_remove(&h, w);
    }
    if (w->at_deadline) {
        struct heap h = by_deadline(ws);
        heap_remove(&h, w);
    }
}

int
waiters_add(struct waiters *ws, struct seq_waiter *w)
{
    struct heap h;
    waiters_remove(ws, w);
    w->order = ++ws->added;
    h = by_target(ws);
    if (heap_push(&h, &ws->by_target, w)) return -1;
    if (w->deadline_ms) {
        h = by_deadline(ws);
        if (heap_push(&h, &ws->by_deadline, w)) {
            waiters_remove(ws, w);
            return -1;
        }
    }
    return 0;
}

struct seq_waiter *
waiters_pop_due(struct waiters *ws, int64_t seq, int64_t now)
{
    struct seq_waiter *w = NULL;
    if (ws->ntarget && (now < 0 || ws->by_target[0]->target <= seq)) w = ws->by_target[0];
    else if (ws->ndeadline && ws->by_deadline[0]->deadline_ms <= now) w = ws->by_deadline[0];
    if (w) waiters_remove(ws, w);
    return w;
}

int64_t
waiters_first_deadline(const struct waiters *ws)
{
    return ws->ndeadline ? ws->by_deadline[0]->deadline_ms : 0;
}

void
waiters_release(struct waiters *ws)
{
    free(ws->by_target);
    free(ws->by_deadline);
    ws->by_target = ws->by_deadline = NULL;
    ws->ntarget = ws->ndeadline = ws->cap_target = ws->cap_deadline = 0;
}
