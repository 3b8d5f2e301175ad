/*
 * fuzz_frame.c - libFuzzer target for the peer protocol's decoder (src/proto/frame.c).
 *
 * The input is read as a peer stream: frame after frame with frame_peek, as peer.c does. A
 * compressed frame is decompressed the way peer.c does it (capped). Then every payload is decoded
 * the way the downstream does:
 *  - CHANGES: a varint (upto seq), then records (rec_decode) until the payload ends;
 *  - SNAP_ITEMS: records until the payload ends;
 *  - BLOB: sha256 (get_bytes, 32), size and offset (varints), data (get_bytes);
 *  - ACK: a varint.
 * To reach the record decoder without a valid frame header, the whole input is also decoded
 * directly as CHANGES, SNAP_ITEMS and BLOB payloads.
 *
 * Invariants: frame_peek reports a frame inside the buffer, with the payload right after the
 * header; the reader never moves past its end; every decoded record is valid (a known op, no
 * negative numbers, paths present) and survives rec_encode + rec_decode unchanged.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "common/err.h"
#include "core/item.h"
#include "proto/frame.h"

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_frame: invariant broken: %s: ", #cond);                          \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define ZBUF_MAX (1u << 20) /* peer.c allows LS_FRAME_MAX; 1 MiB keeps the fuzzer fast */

static int
same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static void
check_record(const struct ls_entry *e, size_t consumed)
{
    struct ls_wbuf w;
    struct ls_rbuf rb;
    struct ls_entry e2;
    CHECK(e->op >= LS_OP_PUT && e->op <= LS_OP_NOTIFY, "op %d", e->op);
    CHECK(e->seq >= 0 && e->ts >= 0 && e->version >= 0, "negative number");
    CHECK(e->path != NULL, "no path");
    CHECK(strlen(e->path) <= LS_PATH_MAX, "path of %zu bytes", strlen(e->path));
    if (e->op == LS_OP_NOTIFY) /* a notification: its payload, no flag but MORE (a batch) */
        CHECK(e->to != NULL && strlen(e->to) <= LS_NOTIFY_MAX && (e->flags & ~REC_MORE) == 0,
              "notify");
    else
        CHECK(e->op == LS_OP_MOVE ? e->to != NULL && strlen(e->to) <= LS_PATH_MAX : e->to == NULL,
              "to");
    if (e->flags & REC_DATA) {
        CHECK(e->kind && strlen(e->kind) <= LS_KIND_MAX, "kind");
        CHECK(e->meta && strlen(e->meta) <= LS_META_MAX, "meta");
        CHECK(e->body_kind == BODY_INLINE || e->body_kind == BODY_BLOB ||
                  e->body_kind == BODY_MISSING,
              "body_kind %d", e->body_kind);
        if (e->body_kind == BODY_INLINE)
            CHECK(e->body_len == e->size && (e->body || !e->body_len), "inline body");
    } else {
        CHECK(!e->kind && !e->meta && !e->body && !e->body_len, "data without REC_DATA");
    }
    CHECK(consumed > 0, "a record of no bytes");

    /* Round trip. */
    ls_wbuf_init(&w, LS_FRAME_MAX);
    rec_encode(&w, e);
    CHECK(!w.failed, "rec_encode failed");
    rb = (struct ls_rbuf){w.p, w.len, 0, 0};
    CHECK(rec_decode(&rb, &e2) == 0, "re-encoded record refused");
    CHECK(rb.pos == rb.len, "re-encoded record: %zu of %zu bytes read", rb.pos, rb.len);
    CHECK(e2.seq == e->seq && e2.op == e->op && e2.flags == e->flags && e2.ts == e->ts &&
              e2.version == e->version,
          "numbers differ after a round trip");
    CHECK(same_str(e2.path, e->path) && same_str(e2.to, e->to), "paths differ");
    if (e->flags & REC_DATA) {
        CHECK(same_str(e2.kind, e->kind) && same_str(e2.meta, e->meta), "kind/meta differ");
        CHECK(e2.size == e->size && memcmp(e2.sha, e->sha, 32) == 0 && e2.body_kind == e->body_kind,
              "data differs");
        if (e->body_kind == BODY_INLINE)
            CHECK(e2.body_len == e->body_len &&
                      (!e->body_len || memcmp(e2.body, e->body, e->body_len) == 0),
                  "inline body differs");
    }
    rec_release(&e2);
    ls_wbuf_release(&w);
}

/* CHANGES (upto varint, then records) or SNAP_ITEMS (records only), as on_records reads them. */
static void
decode_records(const uint8_t *p, size_t len, int snapshot)
{
    struct ls_rbuf rb = {p, len, 0, 0};
    if (!snapshot) {
        (void)ls_get_varint(&rb);
        if (rb.failed) return;
    }
    while (rb.pos < rb.len) {
        struct ls_entry e;
        size_t before = rb.pos;
        int rc = rec_decode(&rb, &e);
        CHECK(rb.pos <= rb.len, "reader past the end: %zu > %zu", rb.pos, rb.len);
        if (rc) {
            CHECK(rc == LS_EPROTO, "rc %d", rc);
            CHECK(!e.path && !e.to && !e.kind && !e.meta, "strings left after a failure");
            return;
        }
        check_record(&e, rb.pos - before);
        rec_release(&e);
    }
}

/* BLOB: sha256, total size, offset, data (on_blob). */
static void
decode_blob(const uint8_t *p, size_t len)
{
    struct ls_rbuf rb = {p, len, 0, 0};
    size_t n, dlen;
    const uint8_t *sha = ls_get_bytes(&rb, &n, 32), *data;
    uint64_t size = ls_get_varint(&rb), off = ls_get_varint(&rb);
    data = ls_get_bytes(&rb, &dlen, LS_FRAME_MAX);
    CHECK(rb.pos <= rb.len, "reader past the end");
    if (rb.failed) {
        CHECK(!data && dlen == 0, "data after a failure");
        return;
    }
    CHECK(sha && n <= 32 && sha >= p && sha + n <= p + len, "sha out of the buffer");
    CHECK(data >= p && data + dlen <= p + len, "data out of the buffer");
    if (dlen) {
        volatile uint8_t sink = data[0] ^ data[dlen - 1]; /* ASan checks both ends */
        (void)sink;
    }
    (void)size;
    (void)off;
}

static void
decode_payload(int type, const uint8_t *p, size_t len)
{
    switch (type) {
    case F_CHANGES:
        decode_records(p, len, 0);
        break;
    case F_SNAP_ITEMS:
        decode_records(p, len, 1);
        break;
    case F_BLOB:
        decode_blob(p, len);
        break;
    case F_ACK: {
        struct ls_rbuf rb = {p, len, 0, 0};
        (void)ls_get_varint(&rb);
        CHECK(rb.pos <= rb.len, "reader past the end");
        break;
    }
    default:
        break; /* JSON control frames: jansson's business */
    }
    CHECK(strcmp(frame_type_name(type), "?") != 0, "a known type without a name: %d", type);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t *zbuf;
    size_t off = 0;

    /* The input as a stream of frames. */
    while (off < size) {
        int type = -1;
        const uint8_t *payload = NULL;
        size_t len = 0;
        long whole = frame_peek(data + off, size - off, LS_FRAME_MAX, &type, &payload, &len);
        if (whole <= 0) {
            CHECK(whole == 0 || whole == LS_EPROTO || whole == LS_ETOOBIG, "frame_peek %ld", whole);
            break;
        }
        CHECK((size_t)whole >= LS_FRAME_HEADER && (size_t)whole <= size - off, "frame size %ld",
              whole);
        CHECK(payload == data + off + LS_FRAME_HEADER && len == (size_t)whole - LS_FRAME_HEADER,
              "payload outside the frame");
        {
            /* The header frame_header writes for it reads back the same. */
            uint8_t h[LS_FRAME_HEADER];
            frame_header(h, type, len);
            CHECK(memcmp(h, data + off, LS_FRAME_HEADER) == 0, "frame_header differs");
        }
        if (type & LS_FRAME_COMPRESSED) {
            unsigned long long want = ZSTD_getFrameContentSize(payload, len);
            size_t n;
            if (want == ZSTD_CONTENTSIZE_ERROR || want == ZSTD_CONTENTSIZE_UNKNOWN ||
                want > ZBUF_MAX)
                break;
            if (!zbuf && !(zbuf = malloc(ZBUF_MAX))) break;
            n = ZSTD_decompress(zbuf, ZBUF_MAX, payload, len);
            if (ZSTD_isError(n) || n != want) break;
            /* An exact-size copy, so ASan sees reads past the decompressed payload. */
            {
                uint8_t *copy = malloc(n ? n : 1);
                if (!copy) break;
                memcpy(copy, zbuf, n);
                decode_payload(type & ~LS_FRAME_COMPRESSED, copy, n);
                free(copy);
            }
        } else {
            decode_payload(type, payload, len);
        }
        off += (size_t)whole;
    }

    /* The whole input as a payload of each binary type. */
    decode_records(data, size, 0);
    decode_records(data, size, 1);
    decode_blob(data, size);
    return 0;
}
