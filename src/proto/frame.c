/*
 * frame.c - encoding and decoding of peer frames and change records (see frame.h).
 * Nothing here touches a socket or the store: the fuzz target feeds it arbitrary bytes.
 */
#include "proto/frame.h"
#include "common/err.h"
#include "core/item.h"

#include <stdlib.h>
#include <string.h>

static const char *const type_names[F_TYPE_MAX] = {
    [F_HELLO] = "HELLO",           [F_WELCOME] = "WELCOME",   [F_SYNC] = "SYNC",
    [F_CONTINUE] = "CONTINUE",     [F_SNAPSHOT] = "SNAPSHOT", [F_SNAP_ITEMS] = "SNAP_ITEMS",
    [F_SNAPSHOT_END] = "SNAPSHOT_END", [F_CHANGES] = "CHANGES", [F_BLOB] = "BLOB",
    [F_ACK] = "ACK",               [F_PING] = "PING",         [F_ERROR] = "ERROR",
    [F_FORK] = "FORK",             [F_PUBLISH] = "PUBLISH",     [F_PUBLISH_ACK] = "PUBLISH_ACK",
    [F_CHANGES_PART] = "CHANGES_PART",
    [F_ABORT] = "ABORT",
};

const char *
frame_type_name(int type)
{
    type &= ~LS_FRAME_COMPRESSED;
    return type > 0 && type < F_TYPE_MAX ? type_names[type] : "?";
}

long
frame_peek(const uint8_t *buf, size_t n, uint32_t max, int *type, const uint8_t **payload,
           size_t *len)
{
    uint32_t flen;
    int t;
    if (n < LS_FRAME_HEADER) return 0;
    flen = (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 | (uint32_t)buf[2] << 8 | buf[3];
    if (flen < 1) return LS_EPROTO;
    if (flen > max) return LS_ETOOBIG;
    t = buf[4] & ~LS_FRAME_COMPRESSED;
    if (t < 1 || t >= F_TYPE_MAX) return LS_EPROTO;
    if (n < 4 + (size_t)flen) return 0;
    *type = buf[4];
    *payload = buf + LS_FRAME_HEADER;
    *len = flen - 1;
    return 4 + (long)flen;
}

void
frame_header(uint8_t out[LS_FRAME_HEADER], int type, size_t payload_len)
{
    uint32_t flen = (uint32_t)payload_len + 1;
    out[0] = (uint8_t)(flen >> 24);
    out[1] = (uint8_t)(flen >> 16);
    out[2] = (uint8_t)(flen >> 8);
    out[3] = (uint8_t)flen;
    out[4] = (uint8_t)type;
}

/* ---------------------------------------------------------------- writing */

void
ls_wbuf_init(struct ls_wbuf *w, size_t max)
{
    memset(w, 0, sizeof *w);
    w->max = max;
}

void
ls_wbuf_release(struct ls_wbuf *w)
{
    free(w->p);
    memset(w, 0, sizeof *w);
}

static int
wbuf_grow(struct ls_wbuf *w, size_t n)
{
    if (w->failed) return -1;
    if (w->len + n > w->max) {
        w->failed = 1;
        return -1;
    }
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap : 4096;
        uint8_t *p;
        while (cap < w->len + n) cap *= 2;
        if (!(p = realloc(w->p, cap))) {
            w->failed = 1;
            return -1;
        }
        w->p = p;
        w->cap = cap;
    }
    return 0;
}

void
ls_put_u8(struct ls_wbuf *w, uint8_t v)
{
    if (wbuf_grow(w, 1) == 0) w->p[w->len++] = v;
}

void
ls_put_varint(struct ls_wbuf *w, uint64_t v)
{
    if (wbuf_grow(w, 10)) return;
    do {
        uint8_t b = v & 0x7f;
        v >>= 7;
        w->p[w->len++] = b | (v ? 0x80 : 0);
    } while (v);
}

void
ls_put_bytes(struct ls_wbuf *w, const void *data, size_t n)
{
    ls_put_varint(w, n);
    if (n && wbuf_grow(w, n) == 0) {
        memcpy(w->p + w->len, data, n);
        w->len += n;
    }
}

void
ls_put_raw(struct ls_wbuf *w, const void *data, size_t n)
{
    if (n && wbuf_grow(w, n) == 0) {
        memcpy(w->p + w->len, data, n);
        w->len += n;
    }
}

void
ls_put_str(struct ls_wbuf *w, const char *s)
{
    ls_put_bytes(w, s ? s : "", s ? strlen(s) : 0);
}

/* ---------------------------------------------------------------- reading */

uint8_t
ls_get_u8(struct ls_rbuf *r)
{
    if (r->failed || r->pos >= r->len) {
        r->failed = 1;
        return 0;
    }
    return r->p[r->pos++];
}

uint64_t
ls_get_varint(struct ls_rbuf *r)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        uint8_t b = ls_get_u8(r);
        if (r->failed) return 0;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return v;
    }
    r->failed = 1;
    return 0;
}

const uint8_t *
ls_get_bytes(struct ls_rbuf *r, size_t *n, size_t max)
{
    uint64_t len = ls_get_varint(r);
    const uint8_t *p;
    if (r->failed || len > max || len > r->len - r->pos) {
        r->failed = 1;
        *n = 0;
        return NULL;
    }
    p = r->p + r->pos;
    r->pos += (size_t)len;
    *n = (size_t)len;
    return p;
}

static char *
get_str(struct ls_rbuf *r, size_t max)
{
    size_t n;
    const uint8_t *p = ls_get_bytes(r, &n, max);
    char *s;
    if (!p && r->failed) return NULL;
    if (memchr(p, '\0', n)) {
        r->failed = 1;
        return NULL;
    }
    if (!(s = malloc(n + 1))) {
        r->failed = 1;
        return NULL;
    }
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

/* ---------------------------------------------------------------- records */

void
rec_encode(struct ls_wbuf *w, const struct ls_entry *r)
{
    ls_put_varint(w, (uint64_t)r->seq);
    ls_put_u8(w, (uint8_t)r->op);
    ls_put_u8(w, (uint8_t)r->flags);
    ls_put_varint(w, (uint64_t)r->ts);
    ls_put_str(w, r->path);
    if (r->op == LS_OP_MOVE || r->op == LS_OP_NOTIFY) ls_put_str(w, r->to);
    ls_put_varint(w, (uint64_t)r->version);
    if (r->flags & REC_DATA) {
        ls_put_str(w, r->kind);
        ls_put_str(w, r->meta);
        ls_put_varint(w, r->size);
        ls_put_bytes(w, r->sha, 32);
        ls_put_u8(w, (uint8_t)r->body_kind);
        if (r->body_kind == BODY_INLINE) ls_put_bytes(w, r->body, r->body_len);
    }
}

void
rec_release(struct ls_entry *r)
{
    free(r->path);
    free(r->to);
    free(r->kind);
    free(r->meta);
    memset(r, 0, sizeof *r);
}

int
rec_decode(struct ls_rbuf *rb, struct ls_entry *r)
{
    memset(r, 0, sizeof *r);
    r->seq = (int64_t)ls_get_varint(rb);
    r->op = ls_get_u8(rb);
    r->flags = ls_get_u8(rb);
    r->ts = (int64_t)ls_get_varint(rb);
    r->path = get_str(rb, LS_PATH_MAX);
    if (r->op == LS_OP_MOVE) r->to = get_str(rb, LS_PATH_MAX);
    if (r->op == LS_OP_NOTIFY) r->to = get_str(rb, LS_NOTIFY_MAX);
    r->version = (int64_t)ls_get_varint(rb);
    if (!rb->failed && (r->flags & REC_DATA)) {
        size_t n;
        const uint8_t *sha;
        r->kind = get_str(rb, LS_KIND_MAX);
        r->meta = get_str(rb, LS_META_MAX);
        r->size = ls_get_varint(rb);
        sha = ls_get_bytes(rb, &n, 32);
        if (sha && n == 32) memcpy(r->sha, sha, 32);
        else rb->failed = 1;
        r->body_kind = ls_get_u8(rb);
        if (r->body_kind == BODY_INLINE) {
            r->body = ls_get_bytes(rb, &r->body_len, LS_FRAME_MAX);
            if (r->body_len != r->size) rb->failed = 1;
        } else if (r->body_kind != BODY_BLOB && r->body_kind != BODY_MISSING) {
            rb->failed = 1;
        }
    }
    if ((r->flags & REC_RESTORE) && (r->op != LS_OP_PUT || !(r->flags & REC_NOLOG)))
        rb->failed = 1; /* a restore is a put applied without a log entry */
    if (rb->failed || r->flags > 31 || r->op < LS_OP_PUT || r->op > LS_OP_NOTIFY || r->seq < 0 ||
        r->version < 0 || r->ts < 0 || !r->path || (r->op == LS_OP_MOVE && !r->to) ||
        (r->op == LS_OP_NOTIFY && (!r->to || (r->flags & ~REC_MORE) != 0))) {
        rec_release(r);
        return LS_EPROTO;
    }
    return 0;
}
