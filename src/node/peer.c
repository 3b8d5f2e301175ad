/*
 * peer.c - framing on a bufferevent for the replication protocol (see peer.h).
 */
#include "node/peer.h"
#include "common/err.h"
#include "common/log.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#define COMPRESS_MIN 512
/* Payloads from this size on go through a zcache when there is one: a memcmp of the frame is
 * far cheaper than compressing it again (a CHANGES frame of 512 KiB of bodies). */
#define ZCACHE_MIN (64u << 10)

void
peer_zcache_release(struct peer_zcache *c)
{
    free(c->in);
    free(c->out);
    memset(c, 0, sizeof *c);
}

/* Copies n bytes into *buf, growing it; -1 when out of memory (the cache is then emptied). */
static int
zcache_copy(uint8_t **buf, size_t *cap, const void *src, size_t n)
{
    if (n > *cap) {
        uint8_t *nb = realloc(*buf, n);
        if (!nb) return -1;
        *buf = nb;
        *cap = n;
    }
    memcpy(*buf, src, n);
    return 0;
}

void
peer_release(struct peer *p)
{
    if (p->bev) bufferevent_free(p->bev);
    p->bev = NULL;
    free(p->zbuf);
    p->zbuf = NULL;
    p->zcap = 0;
    ZSTD_freeCCtx(p->cctx);
    ZSTD_freeDCtx(p->dctx);
    p->cctx = NULL;
    p->dctx = NULL;
    p->closed = 1;
}

static void
peer_close(struct peer *p, const char *why)
{
    if (p->closed) return;
    peer_release(p);
    if (p->ops->on_close) p->ops->on_close(p, why);
}

/* After an ERROR frame: the socket lives on, alone, until the frame has left (or 2 s). The 2 s
 * are a timer of the slot's own: a bufferevent's write timeout does not fire while a TLS
 * handshake is unfinished, and such sockets held their slots for ever. */
#define LINGER_MAX 64
#define LINGER_MS 2000
static struct {
    struct bufferevent *bev;
    struct event *timer;
} lingering[LINGER_MAX];

static void
linger_end(struct bufferevent *bev)
{
    for (int i = 0; i < LINGER_MAX; i++)
        if (lingering[i].bev == bev) {
            if (lingering[i].timer) event_free(lingering[i].timer);
            lingering[i].bev = NULL;
            lingering[i].timer = NULL;
        }
    bufferevent_free(bev);
}

static void
linger_write(struct bufferevent *bev, void *arg)
{
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) linger_end(bev);
}

static void
linger_event(struct bufferevent *bev, short what, void *arg)
{
    linger_end(bev);
}

static void
linger_timeout(evutil_socket_t fd, short what, void *arg)
{
    linger_end(arg);
}

static int
linger_add(struct bufferevent *bev)
{
    struct timeval tv = {LINGER_MS / 1000, (LINGER_MS % 1000) * 1000};
    for (int i = 0; i < LINGER_MAX; i++)
        if (!lingering[i].bev) {
            lingering[i].timer = evtimer_new(bufferevent_get_base(bev), linger_timeout, bev);
            if (!lingering[i].timer) return -1;
            lingering[i].bev = bev;
            evtimer_add(lingering[i].timer, &tv);
            return 0;
        }
    return -1;
}

void
peer_linger_release_all(void)
{
    for (int i = 0; i < LINGER_MAX; i++)
        if (lingering[i].bev) linger_end(lingering[i].bev);
}

void
peer_fail(struct peer *p, const char *code, const char *fmt, ...)
{
    char msg[300];
    va_list ap;
    if (p->closed) return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_warn("peer %s: %s; closing the connection", p->addr, msg);
    if (code && p->bev && linger_add(p->bev) == 0) {
        struct timeval tv = {2, 0};
        struct bufferevent *bev = p->bev;
        json_t *o = json_pack("{s:s,s:s}", "code", code, "message", msg);
        peer_send_json(p, F_ERROR, o);
        p->bev = NULL; /* handed to the lingering close */
        bufferevent_disable(bev, EV_READ);
        bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
        bufferevent_setcb(bev, NULL, linger_write, linger_event, NULL);
        bufferevent_set_timeouts(bev, NULL, &tv);
        bufferevent_enable(bev, EV_WRITE);
    }
    peer_close(p, msg);
}

static void
on_read(struct bufferevent *bev, void *arg)
{
    struct peer *p = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    while (!p->closed && p->bev && (bufferevent_get_enabled(p->bev) & EV_READ)) {
        size_t avail = evbuffer_get_length(in);
        uint8_t *head;
        const uint8_t *payload;
        size_t len;
        int type;
        long whole;
        if (avail < LS_FRAME_HEADER) return;
        head = evbuffer_pullup(in, LS_FRAME_HEADER);
        /* Checked on the header alone: an oversized frame is refused before it is buffered. */
        whole = frame_peek(head, LS_FRAME_HEADER, p->max_frame, &type, &payload, &len);
        if (whole < 0) {
            peer_fail(p, "protocol_error", "%s",
                      whole == LS_ETOOBIG ? "frame larger than the limit" : "malformed frame");
            return;
        }
        {
            uint32_t flen = (uint32_t)head[0] << 24 | (uint32_t)head[1] << 16 |
                            (uint32_t)head[2] << 8 | head[3];
            if (avail < 4 + (size_t)flen) return; /* the rest has not arrived */
            head = evbuffer_pullup(in, 4 + (ev_ssize_t)flen);
        }
        whole = frame_peek(head, evbuffer_get_length(in), p->max_frame, &type, &payload, &len);
        p->bytes_in += whole;
        if (type & LS_FRAME_COMPRESSED) {
            unsigned long long size = ZSTD_getFrameContentSize(payload, len);
            size_t n;
            /* The declared size is checked before anything is allocated: a few hundred bytes
             * of zstd can claim megabytes. The buffer grows to what frames really need. */
            if (!p->zstd || size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN ||
                size > p->max_frame) {
                peer_fail(p, "protocol_error", "bad compressed frame");
                return;
            }
            if (size > p->zcap) {
                void *nb = realloc(p->zbuf, size ? (size_t)size : 1);
                if (!nb) {
                    peer_fail(p, NULL, "out of memory");
                    return;
                }
                p->zbuf = nb;
                p->zcap = (size_t)size;
            }
            if (!p->dctx && !(p->dctx = ZSTD_createDCtx())) {
                peer_fail(p, NULL, "out of memory");
                return;
            }
            n = ZSTD_decompressDCtx(p->dctx, p->zbuf, (size_t)size, payload, len);
            if (ZSTD_isError(n) || n != size) {
                peer_fail(p, "protocol_error", "bad compressed frame");
                return;
            }
            type &= ~LS_FRAME_COMPRESSED;
            payload = p->zbuf;
            len = n;
        }
        /* Hand the frame over before draining: payload points into the buffer. */
        p->ops->on_frame(p, type, payload, len);
        if (p->closed || !p->bev) return;
        evbuffer_drain(in, (size_t)whole);
    }
}

static void
on_write(struct bufferevent *bev, void *arg)
{
    struct peer *p = arg;
    if (p->ops->on_drain && !p->closed) p->ops->on_drain(p);
}

static void
on_event(struct bufferevent *bev, short what, void *arg)
{
    struct peer *p = arg;
    if (what & BEV_EVENT_CONNECTED) {
        if (p->ops->on_connected) p->ops->on_connected(p);
        return;
    }
    if (what & BEV_EVENT_TIMEOUT) {
        peer_fail(p, "timeout", "no data for %lld ms (stalled peer)", (long long)p->timeout_ms);
    } else if (what & BEV_EVENT_EOF) {
        peer_close(p, "connection closed by the peer");
    } else {
        unsigned long tls = bufferevent_get_openssl_error(bev);
        char msg[300];
        if (tls) {
            snprintf(msg, sizeof msg, "TLS: ");
            ERR_error_string_n(tls, msg + 5, sizeof msg - 5);
            log_warn("peer %s: %s", p->addr, msg);
            peer_close(p, msg);
        } else {
            peer_close(p, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        }
    }
}

void
peer_init(struct peer *p, struct bufferevent *bev, const struct peer_ops *ops, void *owner,
          const char *addr, int64_t timeout_ms)
{
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    memset(p, 0, sizeof *p);
    p->bev = bev;
    p->ops = ops;
    p->owner = owner;
    p->timeout_ms = timeout_ms;
    p->max_frame = LS_FRAME_MAX;
    snprintf(p->addr, sizeof p->addr, "%s", addr);
    bufferevent_setcb(bev, on_read, on_write, on_event, p);
    bufferevent_setwatermark(bev, EV_WRITE, PEER_HIGH_WATER / 2, 0);
    bufferevent_set_timeouts(bev, &tv, NULL);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

int
peer_send(struct peer *p, int type, const void *payload, size_t len)
{
    uint8_t head[LS_FRAME_HEADER];
    struct evbuffer *out;
    if (p->closed || !p->bev) return LS_EIO;
    out = bufferevent_get_output(p->bev);
    if (p->zstd && p->zcache && len >= ZCACHE_MIN && p->zcache->in_len == len &&
        memcmp(p->zcache->in, payload, len) == 0) {
        frame_header(head, type | LS_FRAME_COMPRESSED, p->zcache->out_len);
        evbuffer_add(out, head, sizeof head);
        evbuffer_add(out, p->zcache->out, p->zcache->out_len);
        p->bytes_out += (int64_t)(sizeof head + p->zcache->out_len);
        return 0;
    }
    if (p->zstd && len >= COMPRESS_MIN && (p->cctx || (p->cctx = ZSTD_createCCtx()))) {
        /* Straight into the output buffer, after room for the header; kept if it is smaller. */
        size_t bound = ZSTD_compressBound(len);
        struct evbuffer_iovec v;
        if (evbuffer_reserve_space(out, (ev_ssize_t)(sizeof head + bound), &v, 1) == 1) {
            size_t n = ZSTD_compressCCtx(p->cctx, (uint8_t *)v.iov_base + sizeof head, bound,
                                         payload, len, 1);
            if (!ZSTD_isError(n) && n < len) {
                struct peer_zcache *c = p->zcache;
                if (c && len >= ZCACHE_MIN) {
                    c->in_len = 0; /* invalid until both copies are made */
                    if (zcache_copy(&c->in, &c->in_cap, payload, len) == 0 &&
                        zcache_copy(&c->out, &c->out_cap, (uint8_t *)v.iov_base + sizeof head,
                                    n) == 0) {
                        c->in_len = len;
                        c->out_len = n;
                    }
                }
                frame_header(v.iov_base, type | LS_FRAME_COMPRESSED, n);
                v.iov_len = sizeof head + n;
                evbuffer_commit_space(out, &v, 1);
                p->bytes_out += (int64_t)v.iov_len;
                return 0;
            }
            /* not committed: the reservation is simply dropped */
        }
    }
    frame_header(head, type, len);
    evbuffer_add(out, head, sizeof head);
    if (len) evbuffer_add(out, payload, len);
    p->bytes_out += (int64_t)(sizeof head + len);
    return 0;
}

int
peer_send_json(struct peer *p, int type, json_t *o)
{
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    int rc;
    json_decref(o);
    if (!text) return LS_ENOMEM;
    rc = peer_send(p, type, text, strlen(text));
    free(text);
    return rc;
}

size_t
peer_pending(struct peer *p)
{
    return p->bev ? evbuffer_get_length(bufferevent_get_output(p->bev)) : 0;
}

void
peer_pause(struct peer *p, int paused)
{
    if (!p->bev) return;
    if (paused) bufferevent_disable(p->bev, EV_READ);
    else {
        bufferevent_enable(p->bev, EV_READ);
        /* Frames that arrived while paused are already buffered: go through them now. */
        if (evbuffer_get_length(bufferevent_get_input(p->bev)) > 0) on_read(p->bev, p);
    }
}
