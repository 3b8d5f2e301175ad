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
 */
#include "node/net.h"
#include "node/server.h"
#include "node/http/http.h"
#include "common/err.h"
#include "common/log.h"
#include "common/util.h"

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct conn {
    struct bufferevent *bev;
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
    hc->v[hc->n++] = (struct conn){.bev = bev, .created_ms = ls_mono_ms(), .since_ms = ls_mono_ms()};
    if (hc->slots) index_put(hc, hc->n - 1);
    return bev;
}

static void
on_request_done(struct evhttp_request *req, void *arg)
{
    struct http_conns *hc = arg;
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct conn *c = evcon ? find(hc, evhttp_connection_get_bufferevent(evcon)) : NULL;
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
    if (refuse_ambiguous(req)) return 1;
    if (!c) return 0;
    c->busy = 1;
    evhttp_request_set_on_complete_cb(req, on_request_done, hc);
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
    for (int i = 0; i < hc->n; i++) bufferevent_decref(hc->v[i].bev);
    event_free(hc->sweep);
    free(hc->slots);
    free(hc->v);
    free(hc);
    srv->conns = NULL;
}
