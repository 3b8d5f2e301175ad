/*
 * peer.h - one connection of the replication protocol, either side: reads whole frames off a
 * bufferevent (refusing oversized or unknown ones), writes frames (zstd-compressed when both
 * sides agreed), and tells its owner when the output has drained so the owner can read more of
 * the log. Memory per connection stays bounded: the owner only produces while the output
 * holds less than PEER_HIGH_WATER.
 */
#ifndef LS_PEER_H
#define LS_PEER_H

#include <event2/bufferevent.h>
#include <jansson.h>

#include "proto/frame.h"

#define PEER_HIGH_WATER (1u << 20)

struct peer;

struct peer_ops {
    void (*on_frame)(struct peer *p, int type, const uint8_t *payload, size_t len);
    void (*on_drain)(struct peer *p); /* output fell below PEER_HIGH_WATER / 2 */
    void (*on_connected)(struct peer *p);
    void (*on_close)(struct peer *p, const char *why); /* the peer is gone; owner frees */
};

struct peer {
    struct bufferevent *bev;
    const struct peer_ops *ops;
    void *owner;
    char addr[80];
    int zstd;
    int closed;
    int64_t timeout_ms;
    int64_t bytes_in, bytes_out;
    /* Largest frame accepted now, before and after decompression (LS_FRAME_MAX unless the
     * owner lowers it: an upstream takes only HELLO-sized frames before HELLO). */
    uint32_t max_frame;
    void *zbuf; /* decompression buffer, zcap bytes: grown to the largest frame seen */
    size_t zcap;
    /* zstd contexts, made on first use and kept: making one per frame costs more than
     * compressing a frame of small records */
    struct ZSTD_CCtx_s *cctx;
    struct ZSTD_DCtx_s *dctx;
    /* Set by the owner (an upstream with several downstreams) for the frame being sent: the
     * last large payload compressed through it, so that the same frame to the next
     * downstream is not compressed again. Not owned. */
    struct peer_zcache *zcache;
};

/* The last large payload compressed, and what it compressed to (loop thread only). */
struct peer_zcache {
    uint8_t *in, *out;
    size_t in_len, out_len, in_cap, out_cap;
};
void peer_zcache_release(struct peer_zcache *c);

/* Takes over bev (a connected or connecting bufferevent). */
void peer_init(struct peer *p, struct bufferevent *bev, const struct peer_ops *ops, void *owner,
               const char *addr, int64_t timeout_ms);
int peer_send(struct peer *p, int type, const void *payload, size_t len);
int peer_send_json(struct peer *p, int type, json_t *o); /* steals o */
size_t peer_pending(struct peer *p);
void peer_pause(struct peer *p, int paused); /* stop or resume reading */
/* Sends an ERROR frame (best effort), logs why, and closes. Calls on_close. */
void peer_fail(struct peer *p, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Closes the sockets still sending a last ERROR frame (at shutdown). */
void peer_linger_release_all(void);
/* Frees the connection without calling on_close. */
void peer_release(struct peer *p);

#endif
