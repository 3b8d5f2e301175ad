/*
 * item.h - items and the operations on them, independent of where they are stored: path rules,
 * meta validation, and the one parser that turns a JSON operation (an NDJSON line of a batch or an
 * import file) into a struct ls_op. The HTTP API, the CLI's import and the replication protocol all
 * describe operations with these types.
 */
#ifndef LS_ITEM_H
#define LS_ITEM_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define LS_PATH_MAX 1024
#define LS_KIND_MAX 64
#define LS_META_MAX (64 * 1024)
#define LS_JSON_DEPTH_MAX 32

enum ls_op_type {
    LS_OP_PUT = 1,
    LS_OP_DELETE,
    LS_OP_PURGE,
    LS_OP_MOVE,
    LS_OP_PUBLISH,
    LS_OP_UNPUBLISH,
    LS_OP_NOTIFY, /* a notification (docs/messenger.md): path is its channel, to its payload */
};

#define LS_CHANNEL_MAX 64
#define LS_NOTIFY_MAX (64 * 1024) /* a payload, as compact JSON text */
#define LS_CONTENT_CHANNEL "content" /* the store's own changes; nobody publishes there */

const char *op_name(int type);
int op_from_name(const char *name); /* an item operation's (not notify); 0 when unknown */

/*
 * One operation. Strings are owned by the op (op_release frees them) except body, which is
 * borrowed from whoever filled it in and must outlive the apply.
 */
struct ls_op {
    int type;
    char *path;
    char *to;   /* move: destination */
    char *kind; /* put: NULL keeps the previous version's kind ("document" for a new item) */
    char *meta; /* put: canonical JSON object text; NULL keeps the previous version's meta */
    const void *body; /* put: the body, when it is in memory */
    size_t body_len;
    void *body_owned;  /* when the op owns its body (decoded base64, replicated entries) */
    char *body_file;   /* put: a file holding the body; the store moves it into the blob store */
    uint64_t body_file_size;
    int has_sha;
    unsigned char sha[32]; /* the body's SHA-256 when the caller already knows it */
    int publish;           /* put: publish the new version too */
    int64_t version;       /* publish: which version, 0 for the latest; replicated put: its number */
    int64_t if_version;    /* when > 0 the current version must equal it (optimistic locking) */
    int64_t mtime;         /* 0: now; replicated operations carry the primary's */
    int64_t seq;           /* replicated: the upstream's seq for this entry; 0: the next one */
    int no_log;            /* loading a snapshot: no log entry, the seq does not move */
    int tolerant;          /* filtered downstream: an operation on a missing item is skipped */
    int body_absent;       /* replicated put whose body the upstream no longer holds */
    int restore;           /* replicated put (REC_RESTORE): add this old version if missing */
    uint32_t line;         /* its line in a batch, for error messages (0: not from a batch) */
    int more;              /* not the last operation of its request: logged with LOG_MORE */
};

/*
 * One entry of the change log, or one version of an item in a snapshot, with what a downstream
 * needs to apply it. Filled from the store (strings borrowed from SQLite until the callback
 * returns) or decoded from a frame (strings owned; rec_release frees them).
 */
enum { BODY_NONE, BODY_INLINE, BODY_BLOB, BODY_MISSING };
#define REC_PUBLISHED 1 /* put: this version is (or becomes) the published one */
#define REC_DATA 2      /* carries kind, meta, size, sha and body */
#define REC_NOLOG 4     /* apply without a log entry (a second record for the same seq) */
#define REC_RESTORE 8   /* put: a version the downstream may lack, sent before the publish that
                         * needs it; only the version is added, the item stays as it is */
#define REC_MORE 16     /* not the last entry of its request (log flag LOG_MORE); on the wire
                         * only to a downstream that said `txn` (docs/streaming.md) */
#define LOG_PUBLISHED 1 /* log.flags: the put published its version */
#define LOG_MORE 0x10   /* log.flags: the request goes on in the next entry */

struct ls_entry {
    int64_t seq;
    int op; /* LS_OP_* */
    int flags;
    int64_t ts;
    char *path, *to, *kind, *meta;
    int64_t version;
    uint64_t size;
    unsigned char sha[32];
    int body_kind;
    const void *body; /* BODY_INLINE */
    size_t body_len;
};

void op_init(struct ls_op *op);
void op_release(struct ls_op *op);

/* A channel or consumer name: 1 to 64 of A-Z a-z 0-9 . _ : -, starting with a letter or a
 * digit (docs/messenger.md). */
int name_check(const char *what, const char *name, size_t len, struct ls_error *err);

/* Checks a path against the rules in docs/api.md; fills err with the reason. */
int path_check(const char *path, size_t len, struct ls_error *err);

/*
 * Validates meta text as a JSON object within the size and nesting limits and returns its
 * canonical form (sorted keys, compact), which is what the store keeps and what digests hash.
 * *out is malloc'd and owned by the caller.
 */
int meta_canonical(const char *text, size_t len, char **out, struct ls_error *err);

/*
 * Parses one NDJSON operation, e.g. {"op":"put","path":"/a","body":"text"}. line need not be
 * NUL-terminated. On success the op owns everything it points to.
 */
int op_parse_json(const char *line, size_t len, struct ls_op *op, struct ls_error *err);

#endif
