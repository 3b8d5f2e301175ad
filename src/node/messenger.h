/*
 * messenger.h - the cluster messenger's consumers as the event loop keeps them
 * (docs/messenger.md): each a name, a set of channels and a durable position, saved by the writer
 * within ~100 ms of a change; their state (live, behind, stalled, reset) reckoned every few
 * seconds on a reader thread; and what a reader of notifications needs to know about floors and
 * resets.
 *
 * Everything here runs on the loop thread, except the functions marked "reader thread".
 */
#ifndef LS_MESSENGER_H
#define LS_MESSENGER_H

#include <jansson.h>
#include <stdint.h>

#include "core/store.h"

struct server;

enum consumer_state { CS_LIVE, CS_BEHIND, CS_STALLED, CS_RESET };

struct consumer {
    char name[LS_CHANNEL_MAX + 1];
    char *channels; /* comma-separated; "" is every channel */
    int64_t position, created, acked, resets;
    int64_t reset_at;  /* > 0: a reset with this id waits for an ack */
    int64_t gen;       /* the log generation of position (store.h LOG_GEN); -1: not known */
    json_t *reset_why; /* the reset event's body while it waits (NULL after a restart) */
    int connected;     /* readers attached now */
    unsigned moves;    /* operator moves (rewind, reset): a read begun before one is read again */
    int dirty, saving, gone;
    enum consumer_state state;
    int64_t pending, first_ts; /* the last reckoning */
    int64_t reck_pos, reck_head; /* ... of (position, head]; -1: none yet */
    int at_risk;
    struct consumer *next; /* hash chain */
};

int messenger_start(struct server *srv, struct ls_error *err);
void messenger_stop(struct server *srv); /* before the writer stops: saves what is dirty */
void messenger_free(struct server *srv);  /* after it */

struct consumer *consumer_find(struct server *srv, const char *name);
/*
 * The consumer of that name, created at its first use (at the server's seq, or at the oldest
 * retained entry with from_start). channels, when not NULL, replace its set. NULL: out of memory.
 */
struct consumer *consumer_open(struct server *srv, const char *name, const char *channels,
                               int from_start);
/* Its record changed: saved within FLUSH_MS. */
void consumer_touch(struct server *srv, struct consumer *c);
/* Everything up to id is handled; the position only moves forward here. */
void consumer_ack(struct server *srv, struct consumer *c, int64_t id);
/* An operator's move (rewind, reset): the position becomes pos, whatever it was. */
void consumer_move(struct server *srv, struct consumer *c, int64_t pos);
/* A reader found the position behind the floor: the reset (why) is issued, and waits for an ack. */
void consumer_reset(struct server *srv, struct consumer *c, int64_t floor, json_t *why);
void consumer_delete(struct server *srv, struct consumer *c);
/* A reckoning's outcome: what waits for c (pending, counted up to a cap, and the time of the
 * oldest) sets its state (logged when it changes) and whether it is at risk of a reset. */
void consumer_judge(struct server *srv, struct consumer *c, int64_t pending, int64_t first_ts);
json_t *consumer_json(struct server *srv, const struct consumer *c);
json_t *messenger_consumers_json(struct server *srv);
json_t *messenger_status_json(struct server *srv);
/* Since start: notifications accepted by POST /v1/notify here, and consumers' acks. */
void messenger_count_published(struct server *srv, size_t n);
void messenger_counts(struct server *srv, uint64_t *published, uint64_t *acks);
/* notify retention: age and size from --notify-retention */
void messenger_retention(struct server *srv, int64_t *age_ms, int64_t *bytes);

/* ---- reading (reader thread) ---- */
/* The lowest position a reader of these channels may hold without having missed anything. */
int64_t notes_floor(struct store *st, const char *channels);
/* One entry as the API shows it: {"id","channel","payload","time"}. */
json_t *note_json(const struct ls_note *n);
/* The body of a reset event. */
json_t *reset_json(int64_t position, int64_t floor, int64_t head);

/*
 * One read of notifications for a reader (http/notify.c: pages, SSE; webhook.c): the floor below
 * which entries are gone, whether the cursor is behind it (a reset), then at most limit entries.
 * The caller fills the first four fields; nread_run (reader thread) the results.
 */
struct nread {
    char *channels;
    int64_t cursor; /* < 0: from the floor (a consumer that asked for everything kept) */
    int limit;
    int64_t seen; /* the server's seq before the read */
    int64_t gen_in; /* the consumer's log generation, -1: not known (store.h LOG_GEN) */
    /* results */
    int64_t floor, from, next, gen;
    int reset, rc;
    json_t *notes; /* note_json objects */
};
void nread_run(struct store *st, struct nread *r); /* reader thread */
/* The loop, after a read for consumer c (NULL: anonymous): a new consumer's start, a reset.
 * Returns the reset event's body to send (a reference the caller owns), or NULL. */
json_t *nread_apply(struct server *srv, struct consumer *c, struct nread *r);

#endif
