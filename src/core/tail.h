/*
 * tail.h - the newest part of the change log, kept in memory as well, so that downstreams that
 * are live read what was just committed without reading it back from SQLite.
 *
 * The writer thread adds each entry as the store logs it; entries become visible when their
 * transaction commits, and go when the savepoint or transaction around them rolls back. The
 * tail promises one thing: every log entry with a seq above its base is in it. A reader asking
 * for entries after a position below the base is told to read the store instead. Memory is
 * capped in bytes; the oldest entries go first (the base moves up), so a downstream far behind
 * reads the store, at its own pace, as before. Until the first read, nothing is kept: a server
 * that nobody follows pays nothing.
 *
 * Not for: anything but reading forward from a position. The store stays the truth.
 */
#ifndef LS_TAIL_H
#define LS_TAIL_H

#include <stddef.h>
#include <stdint.h>

#include "core/item.h"
#include "core/store.h"

struct log_tail;

struct log_tail *tail_new(size_t max_bytes);
void tail_free(struct log_tail *t);

/* ---- the writer thread, inside a transaction ---- */
/* Copies e (pending until tail_commit). A failed copy breaks the tail (see tail_break). */
void tail_add(struct log_tail *t, const struct ls_entry *e);
size_t tail_mark(struct log_tail *t);            /* before a savepoint */
void tail_undo(struct log_tail *t, size_t mark); /* that savepoint rolled back */
/* The log changed in a way the tail does not follow (an entry it cannot hold, a truncated or
 * emptied log): when this transaction ends, the tail starts again, empty, at the store's seq. */
void tail_break(struct log_tail *t);
/* The transaction ended (committed or rolled back); seq is the store's seq afterwards. */
void tail_end(struct log_tail *t, int committed, int64_t seq);

/*
 * Streaming (docs/streaming.md, feature `stream`): a request alone in its transaction may show
 * its entries to downstreams before it commits. tail_stream_begin opens such a unit (right
 * after the transaction began, before its first entry) and returns its generation, or 0 when
 * nobody reads the tail; tail_publish moves the pending entries into the ring as uncommitted
 * (plain readers never see them; when a reader holds the ring it does nothing: the writer
 * never waits); the unit ends committed with tail_end, or aborted with any
 * rollback of its entries (tail_undo, tail_end not committed). While a unit is open the ring
 * may hold up to TAIL_STREAM_FACTOR times max_bytes; the oldest entries go first, as always.
 */
#define TAIL_STREAM_FACTOR 4
uint64_t tail_stream_begin(struct log_tail *t);
void tail_publish(struct log_tail *t);
size_t tail_pending_bytes(const struct log_tail *t);

/* ---- any thread ---- */
/*
 * Calls cb for the entries after seq `after`, in order, at most limit of them and about
 * max_bytes, until cb returns nonzero: the number passed, or -1 when the tail cannot say what
 * follows `after` (read the store). Entries are valid during the callback only; the tail is
 * locked meanwhile, so cb must not block for long.
 */
int tail_read(struct log_tail *t, int64_t after, int limit, size_t max_bytes, store_entry_cb cb,
              void *arg);
/*
 * The tail's epoch moves each time it starts again (the log was replaced by a snapshot or a
 * fork, or an entry it could not hold). tail_read_epoch reads as tail_read, but only in that
 * epoch (-1 otherwise): a reader that read the store while the tail was in epoch E knows that
 * nothing replaced the log since, as long as the tail is still in E.
 */
#define TAIL_ANY_EPOCH UINT64_MAX
uint64_t tail_epoch(struct log_tail *t);
int tail_read_epoch(struct log_tail *t, uint64_t epoch, int64_t after, int limit,
                    size_t max_bytes, store_entry_cb cb, void *arg);

/*
 * Streaming readers: tail_read_open reads as tail_read the uncommitted entries of the open unit
 * after `after` (-1 when no unit is open, or another than *gen when *gen is not 0, or `after`
 * is before the unit or the ring's base: wait for its end and read committed entries), and
 * gives the unit's generation and the seq before its first entry. tail_unit says what became
 * of a generation.
 */
enum tail_unit_state { TAIL_UNIT_OPEN, TAIL_UNIT_COMMITTED, TAIL_UNIT_ABORTED, TAIL_UNIT_UNKNOWN };
int tail_read_open(struct log_tail *t, int64_t after, int limit, size_t max_bytes,
                   store_entry_cb cb, void *arg, uint64_t *gen, int64_t *unit_after);
enum tail_unit_state tail_unit(struct log_tail *t, uint64_t gen);
/* How many downstreams take streamed units (the writer streams only when one does). */
void tail_streamers_add(struct log_tail *t, int delta);
int tail_streamers(struct log_tail *t);

#endif
