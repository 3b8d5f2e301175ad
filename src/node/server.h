/*
 * server.h - the running server: the event loop (libevent) on the main thread, the writer
 * thread that owns all store writes, and what the HTTP API and replication share between them.
 */
#ifndef LS_SERVER_H
#define LS_SERVER_H

#include <event2/event.h>
#include <event2/http.h>
#include <pthread.h>
#include <stdatomic.h>

#include <jansson.h>
#include <openssl/ssl.h>

#include "core/store.h"
#include "core/tail.h"
#include "node/auth.h"
#include "node/config.h"

#define LS_VERSION "0.1.0"
/* What the in-memory log tail holds at most: live downstreams read there, not in SQLite. */
#define LOG_TAIL_BYTES (16u << 20)

struct wreq;
struct writer;
struct uploads;

/*
 * Someone waiting until the committed seq reaches a target, or a deadline passes (long polls,
 * min_seq reads, followed feeds, downstreams waiting for news, delayed 401s). Waiters sit in two
 * binary heaps (waiters.c), one by target and one by deadline, so a commit looks only at those
 * it wakes: 10,000 idle long polls cost nothing per commit.
 */
struct seq_waiter {
    int64_t target;
    int64_t deadline_ms; /* mono_ms; 0: none */
    void (*fire)(struct seq_waiter *w, int timed_out);
    void *arg;
    /* the heaps' own: positions + 1 (0: not in that heap), and the order of arrival */
    size_t at_target, at_deadline;
    uint64_t order;
};

struct waiters {
    struct seq_waiter **by_target, **by_deadline;
    size_t ntarget, ndeadline, cap_target, cap_deadline;
    uint64_t added;
};
/* Adds w, or moves it if it waits already (target or deadline changed). -1: out of memory. */
int waiters_add(struct waiters *ws, struct seq_waiter *w);
void waiters_remove(struct waiters *ws, struct seq_waiter *w);
int waiters_has(const struct seq_waiter *w);
/* Takes out one waiter that is due (target <= seq, or deadline <= now; now < 0: any), or NULL. */
struct seq_waiter *waiters_pop_due(struct waiters *ws, int64_t seq, int64_t now);
int64_t waiters_first_deadline(const struct waiters *ws); /* 0: none */
void waiters_release(struct waiters *ws);

struct server {
    struct config cfg;
    struct event_base *base;
    struct evhttp *http;
    struct store *wstore;   /* the writer thread's handle */
    struct evhttp_bound_socket *http_socket;
    struct store *reader;   /* the event loop's read handle */
    struct log_tail *tail;  /* the log's newest entries, fed by the writer (core/tail.h) */
    struct writer *writer;
    struct uploads *uploads;
    struct ls_position pos; /* as last committed: the loop's copy */
    int64_t started_ms;
    struct waiters waiters;
    struct event *waiter_timer;
    struct follower *followers;
    struct event *sigint, *sigterm;
    int stopping;
    struct repl_up *up;     /* serving downstreams on --listen */
    struct repl_down *down; /* following --upstream */
    struct ack_waiter *ack_waiters;
    struct store_options store_opt;
    int64_t retention_age_ms, retention_bytes, retention_interval_ms;
    struct event *retention_timer;
    struct auth *auth;
    struct cidr allow[LS_LIST_MAX], peer_allow[LS_LIST_MAX];
    int nallow, npeer_allow;
    SSL_CTX *tls_server, *tls_client; /* NULL: plain TCP */
    const char *upstream_token;
    struct http_conns *conns;
    struct readers *readers;
    struct http_router *router;
    struct messenger *msg;                  /* consumers (messenger.c) */
    struct pgmsg *pgmsg;                    /* --messenger: the shared database (pgmsg.c) */
    struct webhooks *hooks;                 /* --webhook (webhook.c) */
    struct mirrors *mirrors;                /* mirroring jobs (mirror.c) */
    struct forwarder *fwd;                  /* notifications a replica forwards (forward.c) */
    struct dashboard *dash;                 /* the dashboard's sampler and streams */
    int64_t notify_age_ms, notify_bytes;    /* --notify-retention */
    int lock_fd; /* the data directory's lock (server.c lock_data_dir), held while open; 0: none */
};

/* ---- http_conns.c: per-address limits and slow-request timeouts on the HTTP port ---- */
int http_conns_start(struct server *srv);
/* Notes a request being served; nonzero when it was refused here (it has its reply). */
int http_conns_request(struct server *srv, struct evhttp_request *req);
void http_conns_done(struct server *srv, struct evhttp_request *req); /* its reply has left */
void http_conns_stop(struct server *srv);

/* A write waiting until N downstreams have applied its seq (wait_replicas). */
struct ack_waiter {
    struct ack_waiter *next;
    int64_t seq;
    int want;
    int64_t deadline_ms;
    void (*fire)(struct ack_waiter *w, int acked);
    void *arg;
};
void server_wait_acks(struct server *srv, struct ack_waiter *w);
void server_on_ack(struct server *srv); /* a downstream acknowledged something */
int server_is_primary(const struct server *srv);
/* The primary's HTTP address as far as this server knows ("" when unknown). */
const char *server_primary_http(struct server *srv);
json_t *server_info(struct server *srv); /* name, role, version, seq, epoch, uptime (PING) */

/* ---- repl_up.c: serving downstreams ---- */
struct repl_up;
int repl_up_start(struct server *srv, struct ls_error *err);
void repl_up_stop(struct server *srv);
json_t *repl_up_nodes(struct server *srv);
/* Since start: bytes sent to downstreams, snapshots begun, streams begun from a position. */
struct repl_up_counters {
    uint64_t bytes_sent, snapshots, catchups;
};
void repl_up_count(struct server *srv, struct repl_up_counters *out);
int repl_up_acked(struct server *srv, int64_t seq); /* downstreams that applied seq */
int repl_up_connected(struct server *srv);
/* The seqs the connected downstreams have applied, summed (the dashboard's replication rate). */
int64_t repl_up_acked_sum(struct server *srv);
void repl_up_drop_all(struct server *srv, const char *why);
struct site_set;
/* Adds the direct downstreams (judged by their links) and the subtrees they reported. */
void repl_up_site(struct server *srv, struct site_set *s);

/* ---- forward.c: notifications published on a replica, forwarded to the primary ---- */
struct forwarder;
int forward_start(struct server *srv, struct ls_error *err);
void forward_stop(struct server *srv); /* answers the requests still waiting (202) */
void forward_free(struct server *srv);
/* A replica's POST /v1/notify: r's NOTIFY ops go to the outbox, then up; req is answered with
 * the primary's ids, or 202 with the outbox ids after wait_ms. Takes r. */
void forward_accept(struct server *srv, struct evhttp_request *req, struct wreq *r,
                    int64_t wait_ms);
void forward_became_primary(struct server *srv); /* promotion, or started so: drain the outbox */
void forward_link(struct server *srv, int up); /* repl_down: streaming (and NOTIFY known), or not */
void forward_on_ack(struct server *srv, json_t *o); /* repl_down: a PUBLISH_ACK */
/* repl_up: a NOTIFY from the downstream connection with that serial; -1 (with why) when it
 * breaks the protocol. */
int forward_on_notify(struct server *srv, uint64_t downstream, json_t *o, const char **why);
int repl_up_send_json(struct server *srv, uint64_t downstream, int type, json_t *o);

/* ---- repl_down.c: following an upstream ---- */
struct repl_down;
int repl_down_start(struct server *srv, struct ls_error *err);
void repl_down_stop(struct server *srv);
void repl_down_halt(struct server *srv);   /* stop following; repl_down_stop frees later */
void repl_down_resume(struct server *srv); /* follow again after a halt */
const char *repl_down_primary(struct server *srv); /* NULL when unknown */ /* stop following; repl_down_stop frees later */
void repl_down_status(struct server *srv, json_t *status);
/* This server's node_id, then its upstream's chain up to the primary as far as known. */
json_t *repl_down_chain(struct server *srv);
/* Adds what the upstream reported of the site, the upstream itself judged by the link. */
void repl_down_site(struct server *srv, struct site_set *s);
/* The upstream's name (its WELCOME), else --upstream; NULL on a server that follows nobody. */
const char *repl_down_upstream_name(struct server *srv);
int repl_down_resync(struct server *srv, int64_t from_seq, int64_t since_ms, struct ls_error *err);
/* A control frame up the link: -1 unless it is streaming and the upstream knows NOTIFY. */
int repl_down_send_json(struct server *srv, int type, json_t *o);
const char *repl_down_node_id(struct server *srv);

int serve_main(int argc, char **argv);
/* For embedding (the HTTP fuzz target): open with srv->cfg filled in, run srv->base, close. */
int server_open(struct server *srv, int listen_peer);
void server_close(struct server *srv);

/* Called on the loop thread after every commit that advanced the seq. */
void server_on_commit(struct server *srv, int64_t seq);
void server_wait_seq(struct server *srv, struct seq_waiter *w);
void server_cancel_wait(struct server *srv, struct seq_waiter *w);

/* ---- writer.c: the one thread that writes, with group commit ---- */

enum { WREQ_OPS, WREQ_BATCH_FILE, WREQ_CUSTOM };

struct wreq {
    struct wreq *next;
    int type;
    struct ls_op *ops; /* WREQ_OPS: owned; released with the request */
    size_t nops;
    char *batch_file; /* WREQ_BATCH_FILE: an NDJSON file, applied as one transaction */
    uint64_t max_body;
    int64_t set_seq; /* WREQ_OPS: afterwards the position is this seq (a replica's upto) */
    int (*fn)(struct store *st, struct wreq *r); /* WREQ_CUSTOM: runs inside the transaction */
    void *fn_arg;
    /* Requests that must apply in order or not at all share this flag (a replica's batches:
     * one that fails must not let a later one move the position past it). The writer sets it
     * when one fails and fails every later one while it is set; the owner clears it when none
     * is in flight. */
    int *chain_failed;
    /* A unit of replication split over several requests (docs/streaming.md): a request with
     * `hold` leaves the transaction open after it, and until a request of the same session
     * without `hold` commits it, the writer takes only that session's requests. A request
     * with `abort_unit` rolls back the session's open transaction (a link that dropped). */
    const void *session;
    int hold, abort_unit;
    /* abort_unit == ABORT_DISCARD: the upstream rolled the unit back (ABORT): the requests of
     * it that applied end without an error (nothing of them commits) */
#define ABORT_DISCARD 2
    int streamed; /* set by the writer: its entries went to the tail before the commit */
    /* results, valid in done() */
    int rc;
    struct ls_error err;
    struct ls_op_result last; /* of the last op applied */
    int64_t first_seq;
    size_t applied;
    void (*done)(struct wreq *r, void *arg); /* runs on the loop thread */
    void *arg;
};

struct writer *writer_start(struct server *srv, struct store *st, struct ls_error *err);
void writer_stop(struct writer *w);
void writer_submit(struct writer *w, struct wreq *r);
/*
 * Whether a new write of body_bytes may join the queue: 0, or LS_EUNAVAIL when
 * WRITER_QUEUE_MAX requests or WRITER_QUEUE_BYTES of bodies wait already (the caller answers 503
 * with Retry-After instead of holding more memory). Replication does not ask: its frames are
 * bounded by the link's own flow control. The loop thread only.
 */
#define WRITER_QUEUE_MAX 10000
#define WRITER_QUEUE_BYTES (256u << 20)
int writer_admit(struct writer *w, uint64_t body_bytes);
/* Requests and body bytes submitted and not yet done (the loop thread only). */
void writer_queue(struct writer *w, size_t *requests, uint64_t *bytes);
void writer_set_limits(struct writer *w, size_t requests, uint64_t bytes); /* tests */
/* Streamed units (docs/streaming.md): the writer shows downstreams a large request alone in its
 * transaction in pieces of STREAM_CHUNK_BYTES; repl_up_kick (the loop) sends them on. */
#define STREAM_CHUNK_BYTES (256u << 10)
#define STREAM_MIN_OPS 1000
void repl_up_kick(struct server *srv);
void wreq_free(struct wreq *r);

/* ---- http/: the HTTP API ---- */
int http_api_start(struct server *srv, struct ls_error *err);
void http_api_stop(struct server *srv);
void http_followers_stop(struct server *srv);
void http_dashboard_stop(struct server *srv); /* ends the dashboard's streams */

/* ---- readers.c: long reads off the loop, each thread with its own read-only store ---- */
struct readers;
struct read_job {
    struct read_job *next;
    /* On a reader thread, with that thread's store handle. Not called when the job was
     * cancelled before it began; a cancel while it runs interrupts its SQLite statements. */
    void (*run)(struct store *st, struct read_job *j);
    void (*done)(struct read_job *j); /* on the loop afterwards, whatever happened */
    atomic_int cancelled;
};
#define READERS_QUEUE_MAX 4096
#define READER_THREADS 2
struct readers *readers_start(struct server *srv, int nthreads, struct ls_error *err);
/* Waits for the running jobs; queued ones end cancelled. Every done() has run on return. */
void readers_stop(struct readers *r);
/* LS_EUNAVAIL when READERS_QUEUE_MAX jobs wait already (the caller answers 503). */
int readers_submit(struct readers *r, struct read_job *j);

/* ---- upload.c: resumable upload sessions ---- */
struct uploads *uploads_new(const char *dir, uint64_t max_size);
void uploads_free(struct uploads *u);
struct upload_info {
    char id[33];
    uint64_t size;
    unsigned char sha[32]; /* valid after upload_finish */
    char file[4200];
};
int upload_create(struct uploads *u, struct upload_info *info, struct ls_error *err);
int upload_stat(struct uploads *u, const char *id, struct upload_info *info, struct ls_error *err);
int upload_append(struct uploads *u, const char *id, uint64_t offset, const void *data, size_t n,
                  struct upload_info *info, struct ls_error *err);
/*
 * A commit in two steps. upload_finish_start (the loop, quick) renames the file out of the
 * session's reach and forgets the session; upload_finish_run (a reader thread: it may hash
 * gigabytes, and it fsyncs) fills info->sha and frees uc. The file (info->file) is then the
 * caller's; upload_reopen makes it a session again (upload_finish_run does on failure).
 */
struct upload_commit;
int upload_finish_start(struct uploads *u, const char *id, struct upload_info *info,
                        struct upload_commit **uc, struct ls_error *err);
int upload_finish_run(struct upload_commit *uc, struct upload_info *info, struct ls_error *err);
void upload_commit_free(struct upload_commit *uc);
void upload_reopen(const char *committed_file);
int upload_abort(struct uploads *u, const char *id, struct ls_error *err);

#endif
