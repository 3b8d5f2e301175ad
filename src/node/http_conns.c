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
#include "common/log.h"
#include "common/util.h"

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct conn {
    struct bufferevent *bev;
    int64_t since_ms; /* created, or last request finished */
    int busy;         /* a request is being served */
    int closing;
};

struct http_conns {
    struct server *srv;
    struct conn *v;
    int n, cap;
    struct event *sweep;
};

static struct conn *
find(struct http_conns *hc, struct bufferevent *bev)
{
    for (int i = 0; i < hc->n; i++)
        if (hc->v[i].bev == bev) return &hc->v[i];
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

static void
on_sweep(evutil_socket_t fd, short what, void *arg)
{
    struct http_conns *hc = arg;
    int64_t now = mono_ms();
    for (int i = 0; i < hc->n;) {
        if (gone(hc->v[i].bev)) {
            bufferevent_decref(hc->v[i].bev);
            hc->v[i] = hc->v[--hc->n];
        } else {
            i++;
        }
    }
    for (int i = 0; i < hc->n; i++) {
        struct conn *c = &hc->v[i];
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        char addr[80] = "?";
        int same = 0;
        if (c->closing) continue;
        if (getpeername(bufferevent_getfd(c->bev), (struct sockaddr *)&ss, &len) == 0)
            format_sockaddr((struct sockaddr *)&ss, addr, sizeof addr);
        if (!c->busy && now - c->since_ms > hc->srv->cfg.request_timeout_ms) {
            kick(c, addr, "no whole request within --request-timeout");
            continue;
        }
        /* Older connections of the same address count first: the newest go. */
        for (int k = 0; k < hc->n; k++) {
            struct sockaddr_storage so;
            socklen_t lo = sizeof so;
            char other[80];
            if (k == i || hc->v[k].closing) continue;
            if (hc->v[k].since_ms > c->since_ms) continue;
            if (getpeername(bufferevent_getfd(hc->v[k].bev), (struct sockaddr *)&so, &lo)) continue;
            format_sockaddr((struct sockaddr *)&so, other, sizeof other);
            if (same_host(addr, other)) same++;
        }
        if (same >= hc->srv->cfg.max_conns_per_addr) kick(c, addr, "too many connections");
    }
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
    }
    bufferevent_incref(bev);
    hc->v[hc->n++] = (struct conn){bev, mono_ms(), 0, 0};
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
        c->since_ms = mono_ms();
    }
}

void
http_conns_request(struct server *srv, struct evhttp_request *req)
{
    struct http_conns *hc = srv->conns;
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct conn *c = evcon && hc ? find(hc, evhttp_connection_get_bufferevent(evcon)) : NULL;
    if (!c) return;
    c->busy = 1;
    evhttp_request_set_on_complete_cb(req, on_request_done, hc);
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
    free(hc->v);
    free(hc);
    srv->conns = NULL;
}
