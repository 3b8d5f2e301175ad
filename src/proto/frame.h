/*
 * frame.h - the peer protocol's wire format (docs/protocol.md): frames in, structs out.
 * Pure functions over byte buffers; no sockets, no store. Every length read from the wire is
 * checked against a cap before anything is allocated.
 *
 * A frame is: u32 length (big-endian; type byte + payload) | u8 type | payload.
 * The type's high bit marks a payload compressed with zstd (when both sides agreed to it).
 * Control frames carry JSON; CHANGES, SNAP_ITEMS and BLOB carry the binary records below.
 */
#ifndef LS_FRAME_H
#define LS_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "core/item.h"

#define LS_PROTO_VERSION 1
#define LS_FRAME_MAX (8u << 20)      /* largest frame accepted, after decompression */
#define LS_HELLO_MAX (64u << 10)     /* largest frame an upstream accepts before HELLO */
#define LS_FRAME_HEADER 5
#define LS_FRAME_COMPRESSED 0x80

enum ls_frame_type {
    F_HELLO = 1,     /* down -> up, JSON: proto, name, role, version, zstd */
    F_WELCOME,       /* up -> down, JSON: proto, name, role, version, zstd, primary */
    F_SYNC,          /* down -> up, JSON: position, filter, resync request */
    F_CONTINUE,      /* up -> down, JSON: from seq, epochs */
    F_SNAPSHOT,      /* up -> down, JSON: snapshot begins at seq, epochs */
    F_SNAP_ITEMS,    /* up -> down, binary: records of items as of the snapshot */
    F_SNAPSHOT_END,  /* up -> down, JSON: seq */
    F_CHANGES,       /* up -> down, binary: upto seq, then records */
    F_BLOB,          /* up -> down, binary: sha256, total size, offset, data */
    F_ACK,           /* down -> up, binary: applied seq */
    F_PING,          /* both, JSON: server info */
    F_ERROR,         /* both, JSON: code, message; the sender closes */
    F_FORK,          /* up -> down, JSON: histories diverge after seq */
    F_PUBLISH,        /* down -> up, JSON: notifications a replica accepted (forward.c) */
    F_PUBLISH_ACK,    /* up -> down, JSON: how far they are applied, or retry */
    F_CHANGES_PART,   /* up -> down, binary: as CHANGES, but its unit goes on (feature txn) */
    F_ABORT,          /* up -> down, JSON: the unit sent after seq will not commit (stream) */
    F_TYPE_MAX
};

const char *frame_type_name(int type);

/* ---- framing ---- */

/*
 * Looks at the start of buf. Returns the frame's total size when a whole frame is there,
 * 0 when more bytes are needed, or a negative LS_E* code for a frame that breaks the protocol
 * (too large, unknown type). *type, *payload and *len describe the frame when whole.
 */
long frame_peek(const uint8_t *buf, size_t n, uint32_t max, int *type, const uint8_t **payload,
                size_t *len);
void frame_header(uint8_t out[LS_FRAME_HEADER], int type, size_t payload_len);

/* ---- primitive encoding: LEB128 varints and length-prefixed strings ---- */

struct ls_wbuf { /* a growing output buffer with a cap */
    uint8_t *p;
    size_t len, cap, max;
    int failed;
};
void ls_wbuf_init(struct ls_wbuf *w, size_t max);
void ls_wbuf_release(struct ls_wbuf *w);
void ls_put_u8(struct ls_wbuf *w, uint8_t v);
void ls_put_varint(struct ls_wbuf *w, uint64_t v);
void ls_put_bytes(struct ls_wbuf *w, const void *data, size_t n);
void ls_put_str(struct ls_wbuf *w, const char *s); /* NULL is sent as the empty string */
void ls_put_raw(struct ls_wbuf *w, const void *data, size_t n); /* no length prefix */

struct ls_rbuf {
    const uint8_t *p;
    size_t len, pos;
    int failed;
};
uint8_t ls_get_u8(struct ls_rbuf *r);
uint64_t ls_get_varint(struct ls_rbuf *r);
/* Returns a pointer into the buffer; *n is its length. Fails when n exceeds max. */
const uint8_t *ls_get_bytes(struct ls_rbuf *r, size_t *n, size_t max);

/* ---- change records (struct ls_entry, core/item.h) ---- */

void rec_encode(struct ls_wbuf *w, const struct ls_entry *r);
/* Decodes one record; the strings are malloc'd (rec_release frees them). 0 or LS_EPROTO. */
int rec_decode(struct ls_rbuf *rb, struct ls_entry *r);
void rec_release(struct ls_entry *r);

#endif
