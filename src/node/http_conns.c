/*
 * http_conns.c - what evhttp does not bound by itself: connections per client address, and
 * how long a connection may take to deliver a whole request.
 *
 * evhttp's timeout restarts with every byte received, so a client sending one header byte at
 * a time could hold a connection for ever (slow-loris). Every connection's bufferevent is made
 * here (evhttp_set_bevcb); a once-a-second sweep closes connections that have spent longer
 * than --request-timeout without a request being served, and the youngest connections of an
 * address holding more than --max-conns-per-addr. Closing means shutdown() on the socket:
 * evhttp sees the end of the stream and frees the connection itself.
 *
 * We keep a reference on each bufferevent so that it cannot be freed under us; evhttp's free
 * clears its callbacks, which is how the sweep learns that a connection has gone.
 *
 * And one thing evhttp gets wrong: it answers a malformed chunked body with the HTML 413 it
 * gives a body that is too large. Each connection's input is watched as it arrives, before
 * evhttp reads it (the section "malformed chunked bodies" below), so that those get a JSON 400.
 */
#include "node/net.h"
#include "node/server.h"
#include "node/http/http.h"
#include "common/err.h"
#include "common/log.h"
#include "common/util.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct watch;

struct conn {
    struct bufferevent *bev;
    struct watch *watch; /* NULL: not watched (out of memory), evhttp alone reads the input */
    int64_t created_ms;
    int64_t since_ms; /* created, or last request finished */
    int busy;         /* a request is being served */
    int closing;
    char addr[80];   /* "host:port", looked up once by the first sweep that sees the socket */
    size_t host_len; /* of addr's host part: connections are counted per host */
};

struct http_conns {
    struct server *srv;
    struct conn *v;
    int n, cap;
    /* An index from bufferevent to its place in v (open addressing, index + 1; 0: empty), so
     * that finding a request's connection does not cost a scan of every connection. Rebuilt by
     * the sweep, which moves entries; NULL (out of memory): find() scans instead. */
    size_t *slots, nslots;
    struct event *sweep;
};

static size_t
slot_of(const void *bev, size_t mask)
{
    uint64_t x = (uint64_t)(uintptr_t)bev;
    x ^= x >> 29;
    x *= 0x9e3779b97f4a7c15ull;
    return (size_t)(x >> 32) & mask;
}

static void
index_put(struct http_conns *hc, int i)
{
    size_t s = slot_of(hc->v[i].bev, hc->nslots - 1);
    while (hc->slots[s]) s = (s + 1) & (hc->nslots - 1);
    hc->slots[s] = (size_t)i + 1;
}

/* A table at most half full, whatever v holds now. */
static void
index_rebuild(struct http_conns *hc)
{
    size_t want = 128;
    while (want < 2 * (size_t)hc->cap) want *= 2;
    free(hc->slots);
    hc->nslots = want;
    if (!(hc->slots = calloc(want, sizeof *hc->slots))) return;
    for (int i = 0; i < hc->n; i++) index_put(hc, i);
}

static struct conn *
find(struct http_conns *hc, struct bufferevent *bev)
{
    if (!hc->slots) {
        for (int i = 0; i < hc->n; i++)
            if (hc->v[i].bev == bev) return &hc->v[i];
        return NULL;
    }
    for (size_t s = slot_of(bev, hc->nslots - 1); hc->slots[s]; s = (s + 1) & (hc->nslots - 1))
        if (hc->v[hc->slots[s] - 1].bev == bev) return &hc->v[hc->slots[s] - 1];
    return NULL;
}

static int
gone(struct bufferevent *bev)
{
    bufferevent_data_cb r, w;
    bufferevent_event_cb e;
    void *arg;
    bufferevent_getcb(bev, &r, &w, &e, &arg);
    return r == NULL && e == NULL;
}

static void
kick(struct conn *c, const char *addr, const char *why)
{
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    if (c->closing || fd < 0) return;
    log_warn("closing the HTTP connection of %s: %s", addr, why);
    shutdown(fd, SHUT_RDWR);
    c->closing = 1;
}

/* "host:port" of c, looked up the first time it is needed. */
static const char *
conn_addr(struct conn *c)
{
    if (!c->addr[0]) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        const char *colon;
        if (getpeername(bufferevent_getfd(c->bev), (struct sockaddr *)&ss, &len) == 0)
            format_sockaddr((struct sockaddr *)&ss, c->addr, sizeof c->addr);
        else snprintf(c->addr, sizeof c->addr, "?");
        colon = strrchr(c->addr, ':');
        c->host_len = colon ? (size_t)(colon - c->addr) : strlen(c->addr);
    }
    return c->addr;
}

/* ---------------------------------------------------------------- malformed chunked bodies */

/*
 * evhttp reads a chunked body itself, and a chunk size line it cannot parse ("5;x=y", "zz")
 * ends in the same evhttp_send_error as a body over its limit: an HTML 413, with no hook to
 * answer otherwise. So each connection's input is watched: an evbuffer callback sees the bytes
 * as they are added, before evhttp's read callback parses them, and framing.c scans them one
 * request at a time. The scan stops at the end of a request and starts on the next once evhttp
 * has served it (http_conns_request), from where evhttp then stands: the scan cannot drift
 * from evhttp by more than one request, and a request the scan cannot be sure of is left to
 * evhttp alone, as before.
 *
 * A line the scan refuses is cut off the input, with everything after it and everything that
 * comes later. evhttp reads what comes before (the request's head and its good chunks) and
 * waits for more; once it has read all of it, and is not answering anything, the connection is
 * taken over: our callbacks replace evhttp's, the JSON 400 is written, and when it has left
 * evhttp frees the connection (evhttp_connection_free), as it does after its own errors.
 *
 * The order matters for pipelined requests: the cut can come while evhttp still serves an
 * earlier request, and the answer must wait for that one's.
 */
struct watch {
    struct http_conns *hc;
    struct bufferevent *bev;
    struct evbuffer_cb_entry *cb;
    struct event *ready;             /* deferred: may the connection be taken over now? */
    struct evhttp_connection *evcon; /* once taken over */
    uint64_t consumed, received;     /* bytes drained from and added to the input, ever */
    uint64_t begin;                  /* where the scanned request began */
    uint64_t pos;                    /* scanned up to here */
    int idle;                        /* the scan waits for evhttp to serve the request */
    int editing;                     /* changing the input ourselves: not news */
    const char *refused;             /* why, once a line was cut */
    struct frame_scan scan;
};

static void
give_up(struct watch *w, const char *why)
{
    evutil_socket_t fd = bufferevent_getfd(w->bev);
    log_warn("closing an HTTP connection: %s", why);
    if (fd >= 0) shutdown(fd, SHUT_RDWR);
}

/* Keeps the first keep bytes of the input and drops the rest. */
static void
keep_first(struct watch *w, size_t keep)
{
    struct evbuffer *in = bufferevent_get_input(w->bev), *head = NULL;
    if (evbuffer_get_length(in) <= keep) return;
    if (keep && !(head = evbuffer_new())) {
        give_up(w, "out of memory");
        return;
    }
    w->editing = 1;
    if (head) evbuffer_remove_buffer(in, head, keep);
    evbuffer_drain(in, evbuffer_get_length(in));
    if (head) evbuffer_prepend_buffer(in, head);
    w->editing = 0;
    if (head) evbuffer_free(head);
}

static void
refuse(struct watch *w, uint64_t at, const char *why)
{
    if (at < w->consumed) { /* evhttp has read part of the line: cannot be (it reads whole lines) */
        give_up(w, why);
        return;
    }
    w->refused = why;
    keep_first(w, (size_t)(at - w->consumed));
    w->received = at;
    event_active(w->ready, EV_TIMEOUT, 0);
}

/* Scans what has come of the current request, up to its end. */
static void
scan(struct watch *w)
{
    struct evbuffer *in = bufferevent_get_input(w->bev);
    char buf[512];
    while (!w->idle && !w->refused && w->pos < w->received) {
        uint64_t avail = w->received - w->pos;
        struct evbuffer_ptr at;
        enum frame_verdict v;
        size_t used = 0;
        ev_ssize_t n;
        if (w->scan.skip) { /* a body or a chunk's data: counted, not read */
            uint64_t k = w->scan.skip < avail ? w->scan.skip : avail;
            v = frame_scan_skip(&w->scan, k);
            w->pos += k;
        } else {
            size_t want = avail < sizeof buf ? (size_t)avail : sizeof buf;
            if (w->pos < w->consumed ||
                evbuffer_ptr_set(in, &at, (size_t)(w->pos - w->consumed), EVBUFFER_PTR_SET) < 0 ||
                (n = evbuffer_copyout_from(in, &at, buf, want)) <= 0) {
                w->idle = 1; /* cannot be; evhttp alone reads this request */
                break;
            }
            v = frame_scan_feed(&w->scan, buf, (size_t)n, &used);
            w->pos += used;
        }
        if (v == FRAME_BAD) refuse(w, w->begin + w->scan.line_start, w->scan.why);
        else if (v != FRAME_MORE) w->idle = 1; /* the end, or evhttp's alone: until it is served */
    }
}

static void
on_input(struct evbuffer *in, const struct evbuffer_cb_info *info, void *arg)
{
    struct watch *w = arg;
    if (w->editing) return;
    w->consumed += info->n_deleted;
    if (!w->refused) {
        w->received += info->n_added;
        if (info->n_added) scan(w);
        return;
    }
    /* After the cut: what comes is dropped; once evhttp has read the rest, answer. */
    if (info->n_added) keep_first(w, (size_t)(w->received - w->consumed));
    if (evbuffer_get_length(in) == 0) event_active(w->ready, EV_TIMEOUT, 0);
}

/* evhttp read the request before; the next starts where evhttp stands. */
static void
watch_served(struct watch *w)
{
    if (w->refused) return; /* (the refused request never ends: it cannot be served) */
    frame_scan_init(&w->scan);
    w->begin = w->pos = w->consumed;
    w->idle = 0;
    scan(w);
}

/* ---- the connection, once taken over */

static void
release(struct watch *w)
{
    struct evhttp_connection *evcon = w->evcon;
    w->evcon = NULL;
    if (evcon) evhttp_connection_free(evcon); /* clears our callbacks: the sweep then frees w */
}

/* (evhttp may call this with its own arg, from a deferred read: only bev is used) */
static void
taken_read(struct bufferevent *bev, void *arg)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    evbuffer_drain(in, evbuffer_get_length(in));
}

static void
taken_written(struct bufferevent *bev, void *arg)
{
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) release(arg);
}

static void
taken_event(struct bufferevent *bev, short what, void *arg)
{
    /* A client that has finished sending still gets the answer. */
    if ((what & BEV_EVENT_EOF) && !(what & (BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) &&
        evbuffer_get_length(bufferevent_get_output(bev)) > 0) {
        bufferevent_disable(bev, EV_READ);
        return;
    }
    release(arg);
}

static void
on_ready(evutil_socket_t fd, short what, void *arg)
{
    struct watch *w = arg;
    struct conn *c;
    bufferevent_data_cb readcb;
    void *evcon;
    if (!w->refused || w->evcon || gone(w->bev)) return;
    /* evhttp has not read up to the cut yet, or still answers an earlier request */
    if (evbuffer_get_length(bufferevent_get_input(w->bev))) return;
    c = find(w->hc, w->bev);
    if (c && c->busy) return;
    bufferevent_getcb(w->bev, &readcb, NULL, NULL, &evcon);
    if (!readcb || !evcon) return; /* evhttp answers already: an error of its own */
    if (c) log_info("refusing a request from %s: %s", conn_addr(c), w->refused);
    w->evcon = evcon;
    bufferevent_setcb(w->bev, taken_read, taken_written, taken_event, w);
    if (reply_error_raw(bufferevent_get_output(w->bev), LS_EINVAL, w->refused)) {
        release(w);
        return;
    }
    bufferevent_enable(w->bev, EV_READ | EV_WRITE);
}

static struct watch *
watch_new(struct http_conns *hc, struct bufferevent *bev)
{
    struct watch *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->hc = hc;
    w->bev = bev;
    frame_scan_init(&w->scan);
    if (!(w->ready = event_new(hc->srv->base, -1, 0, on_ready, w)) ||
        !(w->cb = evbuffer_add_cb(bufferevent_get_input(bev), on_input, w))) {
        if (w->ready) event_free(w->ready);
        free(w);
        return NULL;
    }
    return w;
}

static void
watch_free(struct watch *w)
{
    if (!w) return;
    evbuffer_remove_cb_entry(bufferevent_get_input(w->bev), w->cb);
    event_free(w->ready);
    free(w);
}

static int
same_host_conn(const struct conn *x, const struct conn *y)
{
    return x->host_len == y->host_len && memcmp(x->addr, y->addr, x->host_len) == 0;
}

/* Sorts connections by host, the oldest first within a host. */
static int
by_host_age(const void *a, const void *b)
{
    const struct conn *x = *(const struct conn *const *)a, *y = *(const struct conn *const *)b;
    size_t n = x->host_len < y->host_len ? x->host_len : y->host_len;
    int c = memcmp(x->addr, y->addr, n);
    if (c) return c;
    if (x->host_len != y->host_len) return x->host_len < y->host_len ? -1 : 1;
    return (x->created_ms > y->created_ms) - (x->created_ms < y->created_ms);
}

static void
on_sweep(evutil_socket_t fd, short what, void *arg)
{
    struct http_conns *hc = arg;
    int64_t now = ls_mono_ms();
    struct conn **order;
    int n = 0;
    for (int i = 0; i < hc->n;) {
        if (gone(hc->v[i].bev)) {
            watch_free(hc->v[i].watch);
            bufferevent_decref(hc->v[i].bev);
            hc->v[i] = hc->v[--hc->n];
        } else {
            i++;
        }
    }
    index_rebuild(hc); /* entries moved */
    order = hc->n ? malloc((size_t)hc->n * sizeof *order) : NULL;
    for (int i = 0; i < hc->n; i++) {
        struct conn *c = &hc->v[i];
        if (c->closing) continue;
        conn_addr(c);
        if (!c->busy && now - c->since_ms > hc->srv->cfg.request_timeout_ms) {
            kick(c, c->addr, "no whole request within --request-timeout");
            continue;
        }
        if (order) order[n++] = c;
    }
    /* Beyond the cap, the newest connections of a host go: older ones count first. */
    if (order) qsort(order, (size_t)n, sizeof *order, by_host_age);
    for (int i = 0, same = 0; i < n; i++) {
        same = i > 0 && same_host_conn(order[i - 1], order[i]) ? same + 1 : 0;
        if (same >= hc->srv->cfg.max_conns_per_addr)
            kick(order[i], order[i]->addr, "too many connections");
    }
    free(order);
}

static struct bufferevent *
make_bev(struct event_base *base, void *arg)
{
    struct http_conns *hc = arg;
    struct bufferevent *bev;
    if (hc->srv->tls_server) {
        bev = bufferevent_openssl_socket_new(base, -1, SSL_new(hc->srv->tls_server),
                                             BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
        if (bev) bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    } else {
        bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    if (!bev) return NULL;
    if (hc->n == hc->cap) {
        int cap = hc->cap ? hc->cap * 2 : 64;
        struct conn *v = realloc(hc->v, (size_t)cap * sizeof *v);
        if (!v) return bev; /* untracked, still served */
        hc->v = v;
        hc->cap = cap;
        index_rebuild(hc);
    }
    bufferevent_incref(bev);
    hc->v[hc->n++] = (struct conn){.bev = bev,
                                   .watch = watch_new(hc, bev),
                                   .created_ms = ls_mono_ms(),
                                   .since_ms = ls_mono_ms()};
    if (hc->slots) index_put(hc, hc->n - 1);
    return bev;
}

void
http_conns_done(struct server *srv, struct evhttp_request *req)
{
    struct http_conns *hc = srv->conns;
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct conn *c = evcon && hc ? find(hc, evhttp_connection_get_bufferevent(evcon)) : NULL;
    if (c) {
        c->busy = 0;
        c->since_ms = ls_mono_ms();
    }
}

/*
 * evhttp frames a body by the first Content-Length header and ignores any other: a second one
 * (which another server or proxy on the way may have read instead) makes the request's length
 * ambiguous. It is refused, and the connection closed: what follows on it cannot be trusted.
 */
static int
refuse_ambiguous(struct evhttp_request *req)
{
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    int n = 0;
    for (struct evkeyval *kv = h->tqh_first; kv; kv = kv->next.tqe_next)
        if (evutil_ascii_strcasecmp(kv->key, "Content-Length") == 0) n++;
    if (n < 2) return 0;
    evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
    reply_error(req, LS_EINVAL, "a request may have one Content-Length header, not %d", n);
    return 1;
}

int
http_conns_request(struct server *srv, struct evhttp_request *req)
{
    struct http_conns *hc = srv->conns;
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct conn *c = evcon && hc ? find(hc, evhttp_connection_get_bufferevent(evcon)) : NULL;
    if (c && c->watch) watch_served(c->watch);
    if (evcon) { /* replies leave at once: Nagle held a reply's last piece for the client's
                  * delayed ACK, 40 ms per request on a kept-alive connection */
        evutil_socket_t fd = bufferevent_getfd(evhttp_connection_get_bufferevent(evcon));
        int one = 1;
        if (fd >= 0) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (refuse_ambiguous(req)) return 1;
    if (!c) return 0;
    c->busy = 1; /* until http_conns_done (the router's completion callback calls it) */
    return 0;
}

int
http_conns_start(struct server *srv)
{
    struct http_conns *hc = calloc(1, sizeof *hc);
    struct timeval tv = {1, 0};
    if (!hc) return -1;
    hc->srv = srv;
    hc->sweep = event_new(srv->base, -1, EV_PERSIST, on_sweep, hc);
    event_add(hc->sweep, &tv);
    evhttp_set_bevcb(srv->http, make_bev, hc);
    srv->conns = hc;
    return 0;
}

/* After evhttp_free: every connection is gone; drop our references. */
void
http_conns_stop(struct server *srv)
{
    struct http_conns *hc = srv->conns;
    if (!hc) return;
    for (int i = 0; i < hc->n; i++) {
        watch_free(hc->v[i].watch);
        bufferevent_decref(hc->v[i].bev);
    }
    event_free(hc->sweep);
    free(hc->slots);
    free(hc->v);
    free(hc);
    srv->conns = NULL;
}
