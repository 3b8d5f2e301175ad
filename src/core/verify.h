/*
 * verify.h - the scrub: rehashes every stored body (the inline ones in store.db, the files in
 * blobs/) against the SHA-256 its version records, and names the damaged ones.
 *
 * A digest (store_digest) hashes the recorded hashes only, so a body damaged on disk leaves it
 * unchanged; this reads the bodies themselves. It runs on a thread of its own handle (a reader
 * thread), in short read slices, never on the event loop, and reads at most `rate` bytes per
 * second so that a scrub does not starve the server of disk.
 */
#ifndef LS_VERIFY_H
#define LS_VERIFY_H

#include <stdatomic.h>
#include <stdint.h>

#include "common/err.h"

struct store;

struct verify_options {
    uint64_t rate;     /* bytes per second; 0: no limit */
    atomic_int *cancel; /* nonzero: stop with LS_EUNAVAIL (may be NULL) */
};

struct verify_result {
    int64_t checked; /* versions whose body was checked */
    int64_t blobs;   /* distinct blob files read */
    uint64_t bytes;  /* bytes hashed */
    int64_t damaged; /* versions reported */
};

/* One damaged version: problem is "missing" (its blob file is not there), "sha256 mismatch" or
 * "unreadable: ..."; blob is the file's path under the store directory, NULL for inline bodies. */
typedef int (*verify_damage_cb)(void *arg, const char *path, int64_t version,
                                const unsigned char sha[32], const char *problem,
                                const char *blob);

/* 0 when the scrub ran to its end (whatever it found: see res->damaged), or a negative error. */
int store_verify(struct store *st, const struct verify_options *opt, verify_damage_cb cb,
                 void *arg, struct verify_result *res, struct ls_error *err);

#endif
