/*
 * readers.c - reader threads: the long reads (a digest of a million items, a large listing,
 * history, a page of the change log, hashing a resumed upload) run here, so that the event loop
 * never waits behind them (docs/design.md, "Threads").
 *
 * Each thread opens its own read-only store handle: in WAL mode readers block neither the
 * writer nor each other. Jobs wait in one FIFO queue, bounded (READERS_QUEUE_MAX) so that a
 * flood of reads costs a 503, not memory. A finished job goes back to the loop through one
 * event, as the writer's do, and its done() runs there. Cancelling (a client that went away)
 * sets a flag that SQLite's progress handler reads, so a digest stops within a few thousand
 * steps rather than running to its end for nobody.
 *
 * Not for: writes (writer.c), or work that must keep an order across requests of different
 * connections: jobs of different connections finish in any order. One connection's requests
 * keep their order because evhttp reads its next request only once the current one is answered.
 */
#include "node/server.h"
#include "common/log.h"

#include <assert.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdlib.h>

struct readers {
    struct server *srv;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct read_job *queue, **queue_tail;
    struct read_job *finished, **finished_tail;
    struct read_job *running; /* linked by next while they run: readers_stop cancels them */
    int queued;
    int stop;
    int nthreads;
    pthread_t *threads;
    struct event *wake;
};

static void
push(struct read_job ***tail, struct read_job *j)
{
    j->next = NULL;
    **tail = j;
    *tail = &j->next;
}

static void *
reader_main(void *arg)
{
    struct readers *r = arg;
    struct store_options opt = r->srv->store_opt;
    struct ls_error err;
    struct store *st;

    opt.readonly = 1;
    st = store_open(store_dir(r->srv->reader), &opt, &err);
    if (!st) log_error("a reader thread cannot open the store: %s", err.msg);
    pthread_mutex_lock(&r->mu);
    for (;;) {
        struct read_job *j;
        int stopping;
        while (!r->queue && !r->stop) pthread_cond_wait(&r->cv, &r->mu);
        if (!r->queue) break; /* stopping, and nothing left */
        j = r->queue;
        r->queue = j->next;
        if (!r->queue) r->queue_tail = &r->queue;
        r->queued--;
        j->next = r->running;
        r->running = j;
        stopping = r->stop; /* read under the lock: readers_stop writes it */
        pthread_mutex_unlock(&r->mu);

        if (!atomic_load(&j->cancelled) && !stopping && st) {
            store_set_interrupt(st, &j->cancelled);
            j->run(st, j);
            store_set_interrupt(st, NULL);
        } else {
            atomic_store(&j->cancelled, 1);
        }

        pthread_mutex_lock(&r->mu);
        for (struct read_job **p = &r->running; *p; p = &(*p)->next)
            if (*p == j) {
                *p = j->next;
                break;
            }
        push(&r->finished_tail, j);
        event_active(r->wake, EV_READ, 0);
    }
    pthread_mutex_unlock(&r->mu);
    store_free(st);
    return NULL;
}

/* On the loop: the finished jobs' done(), in the order they finished. */
static void
on_wake(evutil_socket_t fd, short what, void *arg)
{
    struct readers *r = arg;
    struct read_job *list;
    pthread_mutex_lock(&r->mu);
    list = r->finished;
    r->finished = NULL;
    r->finished_tail = &r->finished;
    pthread_mutex_unlock(&r->mu);
    for (struct read_job *j = list, *next; j; j = next) {
        next = j->next;
        j->done(j);
    }
}

struct readers *
readers_start(struct server *srv, int nthreads, struct ls_error *err)
{
    struct readers *r = calloc(1, sizeof *r);
    if (!r || !(r->threads = calloc((size_t)nthreads, sizeof *r->threads))) {
        free(r);
        ls_error_set(err, LS_ENOMEM, NULL);
        return NULL;
    }
    r->srv = srv;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->queue_tail = &r->queue;
    r->finished_tail = &r->finished;
    if (!(r->wake = event_new(srv->base, -1, 0, on_wake, r))) goto fail;
    for (; r->nthreads < nthreads; r->nthreads++)
        if (pthread_create(&r->threads[r->nthreads], NULL, reader_main, r)) goto fail;
    return r;
fail:
    readers_stop(r);
    ls_error_set(err, LS_ENOMEM, "cannot start the reader threads");
    return NULL;
}

void
readers_stop(struct readers *r)
{
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    r->stop = 1;
    for (struct read_job *j = r->queue; j; j = j->next) atomic_store(&j->cancelled, 1);
    /* a long job (a scrub, a digest) ends soon rather than holding up the shutdown */
    for (struct read_job *j = r->running; j; j = j->next) atomic_store(&j->cancelled, 1);
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    for (int i = 0; i < r->nthreads; i++) pthread_join(r->threads[i], NULL);
    assert(!r->queue);
    if (r->wake) {
        on_wake(-1, 0, r);
        event_free(r->wake);
    }
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r->threads);
    free(r);
}

int
readers_submit(struct readers *r, struct read_job *j)
{
    if (!r) return LS_EUNAVAIL; /* stopped */
    pthread_mutex_lock(&r->mu);
    if (r->queued >= READERS_QUEUE_MAX || r->stop) {
        pthread_mutex_unlock(&r->mu);
        return LS_EUNAVAIL;
    }
    push(&r->queue_tail, j);
    r->queued++;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return 0;
}
