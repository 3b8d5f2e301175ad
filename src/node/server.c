/*
 * server.c - `lockstep serve`: wires the store, the writer thread and the HTTP API onto one
 * libevent loop, and keeps the list of requests waiting for the store to reach a seq.
 *
 * Start-up order matters: the store opens (and recovers) before any port listens, so a client
 * never talks to a server that cannot answer. Shutdown is the reverse: stop listening, let the
 * writer finish and answer what it committed, then close the store.
 */
#include "node/net.h"
#include "node/peer.h"
#include "node/tls.h"
#include "node/server.h"
#include "node/mirror.h"
#include "node/messenger.h"
#include "node/webhook.h"
#include "node/pgmsg.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <event2/thread.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- waiting for a seq */

static void
arm_waiter_timer(struct server *srv)
{
    int64_t first = waiters_first_deadline(&srv->waiters), now = ls_mono_ms();
    struct timeval tv;
    for (struct ack_waiter *a = srv->ack_waiters; a; a = a->next)
        if (!first || a->deadline_ms < first) first = a->deadline_ms;
    if (!first) {
        evtimer_del(srv->waiter_timer);
        return;
    }
    if (first < now) first = now;
    tv.tv_sec = (first - now) / 1000;
    tv.tv_usec = ((first - now) % 1000) * 1000;
    evtimer_add(srv->waiter_timer, &tv);
}

/* Waits (again, if w waits already: its target or deadline may have changed). */
void
server_wait_seq(struct server *srv, struct seq_waiter *w)
{
    if (waiters_add(&srv->waiters, w)) {
        /* out of memory: answer now rather than never */
        w->fire(w, 1);
        return;
    }
    if (w->deadline_ms) arm_waiter_timer(srv);
}

void
server_cancel_wait(struct server *srv, struct seq_waiter *w)
{
    waiters_remove(&srv->waiters, w);
}

/* Fires every waiter that is due, those that reached their seq first; a waiter may wait again
 * as it fires (it is then due at the next commit at the earliest). At shutdown (now < 0)
 * every waiter fires as timed out. */
static void
fire_waiters(struct server *srv, int64_t seq, int64_t now)
{
    struct seq_waiter **due = NULL, *w;
    size_t n = 0, cap = 0;
    while ((w = waiters_pop_due(&srv->waiters, seq, now))) {
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            struct seq_waiter **d = realloc(due, ncap * sizeof *d);
            if (!d) { /* fire what is gathered; the rest stays due for the next round */
                waiters_add(&srv->waiters, w);
                break;
            }
            due = d;
            cap = ncap;
        }
        due[n++] = w;
    }
    for (size_t i = 0; i < n; i++) due[i]->fire(due[i], now < 0 || due[i]->target > seq);
    free(due);
    arm_waiter_timer(srv);
}

/* ---------------------------------------------------------------- waiting for downstreams */

static void
fire_ack_waiters(struct server *srv, int64_t now)
{
    struct ack_waiter **pp = &srv->ack_waiters, *due = NULL, *a;
    while ((a = *pp)) {
        int acked = repl_up_acked(srv, a->seq);
        if (acked >= a->want || a->deadline_ms <= now) {
            *pp = a->next;
            a->next = due;
            due = a;
        } else {
            pp = &a->next;
        }
    }
    while ((a = due)) {
        due = a->next;
        a->fire(a, repl_up_acked(srv, a->seq));
    }
}

void
server_wait_acks(struct server *srv, struct ack_waiter *w)
{
    w->next = srv->ack_waiters;
    srv->ack_waiters = w;
    fire_ack_waiters(srv, ls_mono_ms());
    arm_waiter_timer(srv);
}

void
server_on_ack(struct server *srv)
{
    if (srv->ack_waiters) fire_ack_waiters(srv, ls_mono_ms());
}

int
server_is_primary(const struct server *srv)
{
    return strcmp(srv->cfg.role, "primary") == 0;
}

const char *
server_primary_http(struct server *srv)
{
    const char *p;
    if (server_is_primary(srv)) return srv->cfg.http;
    p = repl_down_primary(srv);
    return p ? p : "";
}

/* What a PING says about this server (both directions of the peer protocol). */
json_t *
server_info(struct server *srv)
{
    return json_pack("{s:s,s:s,s:s,s:s,s:I,s:I,s:I,s:I}", "name", srv->cfg.name, "role",
                     srv->cfg.role, "primary", server_primary_http(srv), "version", LS_VERSION,
                     "seq", (json_int_t)srv->pos.seq, "epoch", (json_int_t)srv->pos.epoch,
                     "uptime_s", (json_int_t)((ls_mono_ms() - srv->started_ms) / 1000), "time_ms",
                     (json_int_t)ls_now_ms());
}

static void
on_waiter_timer(evutil_socket_t fd, short what, void *arg)
{
    struct server *srv = arg;
    fire_ack_waiters(srv, ls_mono_ms());
    fire_waiters(srv, srv->pos.seq, ls_mono_ms());
}

/* ---------------------------------------------------------------- log retention */

static int
retain_job(struct store *st, struct wreq *r)
{
    struct server *srv = r->fn_arg;
    int64_t removed = 0, min_ts = srv->retention_age_ms ? ls_now_ms() - srv->retention_age_ms : 0;
    int rc = store_log_retain(st, min_ts, srv->retention_bytes, 0, &removed, &r->err);
    if (rc) return rc;
    if (removed) log_info("log retention removed %lld old entries", (long long)removed);
    /* notifications have their own, shorter, retention (--notify-retention) */
    min_ts = srv->notify_age_ms ? ls_now_ms() - srv->notify_age_ms : 0;
    if (!min_ts && !srv->notify_bytes) return 0;
    rc = store_log_retain(st, min_ts, srv->notify_bytes, 1, &removed, &r->err);
    if (rc == 0 && removed)
        log_info("notification retention removed %lld old notifications", (long long)removed);
    return rc;
}

static void
retain_done(struct wreq *r, void *arg)
{
    if (r->rc) log_warn("log retention: %s", r->err.msg);
    wreq_free(r);
}

static void
on_retention_timer(evutil_socket_t fd, short what, void *arg)
{
    struct server *srv = arg;
    struct wreq *r;
    if (srv->stopping || !srv->writer || !(r = calloc(1, sizeof *r))) return;
    r->type = WREQ_CUSTOM;
    r->fn = retain_job;
    r->fn_arg = srv;
    r->done = retain_done;
    writer_submit(srv->writer, r);
}

/* "7d,1G", "1h", "500M": an age, a size, or both. */
static int
parse_retention(const char *s, int64_t *age, int64_t *bytes)
{
    char buf[64], *tok, *save = NULL;
    *age = *bytes = 0;
    snprintf(buf, sizeof buf, "%s", s);
    for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        uint64_t sz;
        int64_t ms;
        size_t n = strlen(tok);
        char last = n ? tok[n - 1] : 0;
        if ((last == 's' || last == 'm' || last == 'h' || last == 'd') && n > 1 &&
            ls_parse_duration_ms(tok, &ms) == 0)
            *age = ms;
        else if (ls_parse_size(tok, &sz) == 0)
            *bytes = (int64_t)sz;
        else
            return -1;
    }
    return 0;
}

void
server_on_commit(struct server *srv, int64_t seq)
{
    fire_waiters(srv, seq, ls_mono_ms());
}

/* ---------------------------------------------------------------- start and stop */

/*
 * Stops taking work and answers everything in flight: the listener closes, the writer finishes
 * its queue (those writes are committed and acknowledged), waiting readers are answered and
 * streams end. The loop then runs a moment longer so the answers leave.
 */
static void
shutdown_begin(struct server *srv)
{
    if (srv->stopping) return;
    srv->stopping = 1;
    if (srv->http_socket) evhttp_del_accept_socket(srv->http, srv->http_socket);
    srv->http_socket = NULL;
    repl_up_stop(srv);
    repl_down_halt(srv);      /* no new work from the upstream while the writer drains */
    mirrors_stop(srv);        /* the runs' threads end before the writer they write through */
    readers_stop(srv->readers); /* before the writer: a finished upload commit submits a put */
    srv->readers = NULL;
    webhook_stop(srv);        /* its reads are back; its last acks are the messenger's */
    messenger_stop(srv);      /* the last acks go to the writer */
    pgmsg_stop(srv);          /* its threads end; long polls and streams are answered */
    forward_stop(srv);
    writer_stop(srv->writer); /* its last completions may still talk to the upstream link */
    srv->writer = NULL;
    repl_down_stop(srv);
    fire_waiters(srv, srv->pos.seq, -1);
    fire_ack_waiters(srv, INT64_MAX);
    http_followers_stop(srv);
    http_dashboard_stop(srv);
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct server *srv = arg;
    struct timeval flush = {0, 200000};
    log_info("signal %d: stopping", (int)sig);
    shutdown_begin(srv);
    event_base_loopexit(srv->base, &flush);
}

static int
log_level_of(const char *s)
{
    if (strcmp(s, "debug") == 0) return LS_LOG_DEBUG;
    if (strcmp(s, "warn") == 0) return LS_LOG_WARN;
    if (strcmp(s, "error") == 0) return LS_LOG_ERROR;
    return strcmp(s, "info") == 0 ? LS_LOG_INFO : -1;
}

/* An address flag: HOST:PORT or [V6]:PORT; a host is required where we connect (need_host). */
static int
check_addr(const char *flag, const char *addr, int need_host)
{
    char host[256];
    int port;
    if (net_split_hostport(addr, host, sizeof host, &port) || (need_host && !host[0]) ||
        (need_host && port == 0)) {
        fprintf(stderr, "lockstep serve: %s %s: expected HOST:PORT (or [IPV6]:PORT)%s\n", flag,
                addr, need_host ? ", with a port from 1 to 65535" : "");
        return -1;
    }
    return 0;
}

static int
check_config(struct config *c)
{
    struct ls_error err;
    if (!c->data || !*c->data) {
        fprintf(stderr, "lockstep serve: --data DIR is required\n");
        return -1;
    }
    if (strcmp(c->role, "primary") != 0 && strcmp(c->role, "replica") != 0 &&
        strcmp(c->role, "staging") != 0) {
        fprintf(stderr, "lockstep serve: --role must be primary, replica or staging\n");
        return -1;
    }
    if (strcmp(c->role, "primary") != 0 && (!c->upstream || !*c->upstream)) {
        fprintf(stderr, "lockstep serve: a %s needs --upstream HOST:PORT (the server it follows)\n",
                c->role);
        return -1;
    }
    if (c->upstream && check_addr("--upstream", c->upstream, 1)) return -1;
    if (check_addr("--http", c->http, 0) || check_addr("--listen", c->listen, 0)) return -1;
    /* HELLO takes a name of 1 to 63 bytes: another would start, then be refused for ever. */
    if (c->name && (!*c->name || strlen(c->name) > 63)) {
        fprintf(stderr, "lockstep serve: --name must be 1 to 63 bytes (got %zu)\n",
                strlen(c->name));
        return -1;
    }
    if (strcmp(c->role, "primary") == 0 && c->include.n > 0) {
        fprintf(stderr, "lockstep serve: --include is for replicas\n");
        return -1;
    }
    if (webhook_check(&c->webhook, &err)) {
        fprintf(stderr, "lockstep serve: %s\n", err.msg);
        return -1;
    }
    if (strcmp(c->compress, "zstd") != 0 && strcmp(c->compress, "none") != 0) {
        fprintf(stderr, "lockstep serve: --compress must be zstd or none\n");
        return -1;
    }
    if ((c->tls_cert != NULL) != (c->tls_key != NULL)) {
        fprintf(stderr, "lockstep serve: --tls-cert and --tls-key go together\n");
        return -1;
    }
    if (c->tls_ca && !c->tls_cert) {
        fprintf(stderr, "lockstep serve: --tls-ca needs --tls-cert and --tls-key\n");
        return -1;
    }
    if (c->heartbeat_timeout_ms < 1000) {
        fprintf(stderr, "lockstep serve: --heartbeat-timeout must be at least 1s\n");
        return -1;
    }
    if (c->max_versions < 1) {
        fprintf(stderr, "lockstep serve: --max-versions must be at least 1\n");
        return -1;
    }
    if (strcmp(c->sync, "full") != 0 && strcmp(c->sync, "normal") != 0) {
        fprintf(stderr, "lockstep serve: --sync must be full or normal\n");
        return -1;
    }
    if (c->messenger && strncmp(c->messenger, "postgres://", 11) != 0 &&
        strncmp(c->messenger, "postgresql://", 13) != 0 && strncmp(c->messenger, "sqlite:", 7)) {
        fprintf(stderr, "lockstep serve: --messenger takes a PostgreSQL URL "
                        "(postgres://USER@HOST:PORT/DATABASE) or sqlite:/ABSOLUTE/PATH\n");
        return -1;
    }
    if (c->messenger && strncmp(c->messenger, "sqlite:", 7) == 0 && c->messenger[7] != '/') {
        fprintf(stderr,
                "lockstep serve: --messenger sqlite:PATH needs an absolute path "
                "(got \"%s\")\n",
                c->messenger + 7);
        return -1;
    }
    if (c->messenger && c->webhook.n > 0) { /* webhook.c reads the store's log, not the database */
        fprintf(stderr, "lockstep serve: --webhook does not work with --messenger yet\n");
        return -1;
    }
    if (log_level_of(c->log_level) < 0) {
        fprintf(stderr, "lockstep serve: --log-level must be debug, info, warn or error\n");
        return -1;
    }
    if (!c->name) {
        char host[HOST_NAME_MAX + 1] = "lockstep";
        gethostname(host, sizeof host);
        host[63] = '\0'; /* HELLO takes at most 63 bytes */
        if (!(c->name = strdup(host))) {
            fprintf(stderr, "lockstep serve: out of memory\n");
            return -1;
        }
    }
    return 0;
}

static int
is_loopback(const char *addr)
{
    return strncmp(addr, "127.", 4) == 0 || strncmp(addr, "localhost:", 10) == 0 ||
           strncmp(addr, "[::1]:", 6) == 0;
}

/*
 * TLS contexts, tokens, allow-lists, and the secure default: a server reachable from other
 * machines must have TLS and tokens, unless the operator says --insecure.
 */
static int
security_setup(struct server *srv)
{
    struct config *c = &srv->cfg;
    struct ls_error err;
    const char *exposed = NULL;
    if (!(srv->auth = auth_new(srv->reader))) return -1;
    for (int i = 0; i < c->allow.n; i++)
        if (cidr_parse(c->allow.v[i], &srv->allow[srv->nallow++])) {
            log_error("--allow %s: expected an address or network such as 10.0.0.0/8",
                      c->allow.v[i]);
            return -1;
        }
    for (int i = 0; i < c->peer_allow.n; i++)
        if (cidr_parse(c->peer_allow.v[i], &srv->peer_allow[srv->npeer_allow++])) {
            log_error("--peer-allow %s: expected an address or network such as 10.0.0.0/8",
                      c->peer_allow.v[i]);
            return -1;
        }
    if (c->tls_cert) {
        if (!(srv->tls_server = tls_server_ctx(c->tls_cert, c->tls_key, c->tls_ca, &err)) ||
            !(srv->tls_client = tls_client_ctx(c->tls_cert, c->tls_key, c->tls_ca, &err))) {
            log_error("%s", err.msg);
            return -1;
        }
    }
    srv->upstream_token = c->upstream_token ? c->upstream_token : getenv("LOCKSTEP_UPSTREAM_TOKEN");
    if (!is_loopback(c->http)) exposed = c->http;
    else if (!is_loopback(c->listen)) exposed = c->listen;
    if (exposed && !c->insecure && (!c->tls_cert || !auth_enabled(srv->auth))) {
        log_error("refusing to listen on %s without %s: add %s, or pass --insecure to do it "
                  "anyway",
                  exposed,
                  !c->tls_cert && !auth_enabled(srv->auth) ? "TLS and tokens"
                  : !c->tls_cert                            ? "TLS"
                                                            : "tokens",
                  !c->tls_cert && !auth_enabled(srv->auth)
                      ? "--tls-cert FILE --tls-key FILE and a token (lockstep token create "
                        "--data DIR --role admin)"
                  : !c->tls_cert ? "--tls-cert FILE --tls-key FILE"
                                 : "a token (lockstep token create --data DIR --role admin)");
        return -1;
    }
    return 0;
}

/*
 * Takes the data directory's lock: an fcntl lock on DIR/lock, held for the life of the server, so
 * that a second server on the same directory refuses to start (two writers would hand out the
 * same seqs) instead of failing every write. The kernel drops the lock when its process dies, so
 * a lock file left by a kill -9 does not block the next start. The file holds the pid, for
 * people; the pid in the message comes from the lock itself when the kernel can say.
 * `lockstep token create --data` does not take it: it writes one row through SQLite's own locks,
 * which is safe beside a running server. Nothing else in the directory is touched before this.
 */
static int
lock_data_dir(struct server *srv)
{
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    char path[4200], buf[32];
    int fd, n;

    snprintf(path, sizeof path, "%s/lock", srv->cfg.data);
    if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644)) < 0) {
        log_error("cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (fd < 3) { /* 0 means "no lock" in struct server; stdin may have been closed */
        int hi = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        close(fd);
        if ((fd = hi) < 0) {
            log_error("cannot open %s: %s", path, strerror(errno));
            return -1;
        }
    }
    if (fcntl(fd, F_SETLK, &fl) < 0) {
        int e = errno;
        if (e == EACCES || e == EAGAIN) {
            struct flock who = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
            long pid = 0;
            if (fcntl(fd, F_GETLK, &who) == 0 && who.l_type != F_UNLCK) pid = (long)who.l_pid;
            /* l_pid is 0 when the holder is in another pid namespace: the file says */
            if (pid <= 0 && (n = (int)pread(fd, buf, sizeof buf - 1, 0)) > 0) {
                buf[n] = '\0';
                pid = strtol(buf, NULL, 10);
            }
            if (pid > 0)
                log_error("the data directory %s is in use by pid %ld: not starting a second "
                          "server on it",
                          srv->cfg.data, pid);
            else
                log_error("the data directory %s is in use by another process: not starting a "
                          "second server on it",
                          srv->cfg.data);
        } else {
            log_error("cannot lock %s: %s", path, strerror(e));
        }
        close(fd);
        return -1;
    }
    n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)n, 0) != n) {
        log_error("cannot write %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    srv->lock_fd = fd;
    return 0;
}

/*
 * Opens everything a configured server needs: stores, writer, ports, replication. On failure
 * it logs why and returns -1; server_close() releases whatever was opened either way.
 * srv->cfg must be filled in and checked. listen_peer: 0 leaves the peer port closed (tests).
 */
int
server_open(struct server *srv, int listen_peer)
{
    struct store_options opt;
    struct ls_error err;
    char path[4200];

    srv->started_ms = ls_mono_ms();
    srv->retention_interval_ms = 10000;
    {
        const char *ri = getenv("LOCKSTEP_RETENTION_INTERVAL_MS"); /* tests make it fast */
        int64_t v;
        if (ri && ls_parse_i64(ri, &v) == 0 && v > 0) srv->retention_interval_ms = v;
    }
    ls_error_clear(&err);
    memset(&opt, 0, sizeof opt);
    opt.max_versions = srv->cfg.max_versions;
    /* Staging keeps only the published version of each item. */
    if (strcmp(srv->cfg.role, "staging") == 0) opt.max_versions = 1;
    opt.sync_full = strcmp(srv->cfg.sync, "full") == 0;
    if (parse_retention(srv->cfg.log_retention, &srv->retention_age_ms, &srv->retention_bytes)) {
        log_error("--log-retention %s: expected an age (7d), a size (1G) or both (7d,1G)",
                  srv->cfg.log_retention);
        return -1;
    }
    if (parse_retention(srv->cfg.notify_retention, &srv->notify_age_ms, &srv->notify_bytes)) {
        log_error("--notify-retention %s: expected an age (2d), a size (1G) or both (2d,1G)",
                  srv->cfg.notify_retention);
        return -1;
    }
    if (srv->cfg.messenger && pgmsg_check(&srv->cfg, &err)) { /* before anything is created */
        log_error("%s", err.msg);
        return -1;
    }
    if (ls_mkdir_p(srv->cfg.data, 0755) < 0) {
        log_error("cannot create data directory %s", srv->cfg.data);
        return -1;
    }
    if (lock_data_dir(srv)) return -1;
    if (!(srv->wstore = store_open(srv->cfg.data, &opt, &err))) {
        log_error("cannot open the store in %s: %s", srv->cfg.data, err.msg);
        return -1;
    }
    store_clean_tmp(srv->wstore);
    if (!(srv->tail = tail_new(LOG_TAIL_BYTES))) {
        log_error("out of memory");
        return -1;
    }
    store_set_tail(srv->wstore, srv->tail);
    opt.readonly = 1;
    if (!(srv->reader = store_open(srv->cfg.data, &opt, &err))) {
        log_error("cannot open the store in %s: %s", srv->cfg.data, err.msg);
        return -1;
    }
    store_position(srv->reader, &srv->pos);
    if (security_setup(srv)) return -1;
    snprintf(path, sizeof path, "%s/uploads", srv->cfg.data);
    if (!(srv->uploads = uploads_new(path, srv->cfg.max_body))) {
        log_error("cannot create %s", path);
        return -1;
    }
    srv->base = event_base_new();
    srv->waiter_timer = evtimer_new(srv->base, on_waiter_timer, srv);
    if (!(srv->writer = writer_start(srv, srv->wstore, &err)) ||
        !(srv->readers = readers_start(srv, READER_THREADS, &err)) || messenger_start(srv, &err) ||
        (srv->cfg.messenger && pgmsg_start(srv, &err)) || webhook_start(srv, &err) ||
        forward_start(srv, &err) || mirrors_start(srv, &err) || http_api_start(srv, &err) ||
        (listen_peer && repl_up_start(srv, &err)) ||
        (!server_is_primary(srv) && repl_down_start(srv, &err))) {
        log_error("%s", err.msg);
        return -1;
    }
    srv->retention_timer = event_new(srv->base, -1, EV_PERSIST, on_retention_timer, srv);
    {
        struct timeval tv = {srv->retention_interval_ms / 1000,
                             (srv->retention_interval_ms % 1000) * 1000};
        event_add(srv->retention_timer, &tv);
    }
    return 0;
}

void
server_close(struct server *srv)
{
    auth_free(srv->auth);
    srv->auth = NULL;
    SSL_CTX_free(srv->tls_server);
    SSL_CTX_free(srv->tls_client);
    srv->tls_server = srv->tls_client = NULL;
    if (srv->base) shutdown_begin(srv);
    peer_linger_release_all();
    if (srv->http) evhttp_free(srv->http);
    http_api_stop(srv);
    http_conns_stop(srv);
    messenger_free(srv);
    mirrors_free(srv);
    pgmsg_free(srv);
    forward_free(srv);
    if (srv->waiter_timer) event_free(srv->waiter_timer);
    if (srv->retention_timer) event_free(srv->retention_timer);
    if (srv->sigint) event_free(srv->sigint);
    if (srv->sigterm) event_free(srv->sigterm);
    if (srv->base) event_base_free(srv->base);
    waiters_release(&srv->waiters);
    uploads_free(srv->uploads);
    store_free(srv->reader);
    store_free(srv->wstore);
    tail_free(srv->tail);
    srv->tail = NULL;
    if (srv->lock_fd > 0) close(srv->lock_fd); /* last: the store is closed, another may start */
    srv->lock_fd = 0;
    srv->http = NULL;
    srv->base = NULL;
    srv->uploads = NULL;
    srv->reader = srv->wstore = NULL;
}

int
serve_main(int argc, char **argv)
{
    struct server srv;
    int help = 0, rc = 1;

    memset(&srv, 0, sizeof srv);
    config_init(&srv.cfg);
    if (config_parse(&srv.cfg, argc, argv, &help)) {
        config_release(&srv.cfg);
        return 2;
    }
    if (help) {
        config_usage("lockstep");
        config_release(&srv.cfg);
        return 0;
    }
    if (check_config(&srv.cfg)) {
        config_release(&srv.cfg);
        return 2;
    }
    ls_log_setup(srv.cfg.name, log_level_of(srv.cfg.log_level));
    signal(SIGPIPE, SIG_IGN);
    evthread_use_pthreads();
    if (server_open(&srv, 1) == 0) {
        srv.sigint = evsignal_new(srv.base, SIGINT, on_signal, &srv);
        srv.sigterm = evsignal_new(srv.base, SIGTERM, on_signal, &srv);
        event_add(srv.sigint, NULL);
        event_add(srv.sigterm, NULL);
        /* --tls-cert serves both ports with TLS */
        log_info("lockstep %s %s serving %s on %s://%s, peers on %s (store %s, epoch %lld, "
                 "seq %lld)",
                 LS_VERSION, srv.cfg.role, srv.cfg.data, srv.cfg.tls_cert ? "https" : "http",
                 srv.cfg.http, srv.cfg.listen, srv.pos.store_id, (long long)srv.pos.epoch,
                 (long long)srv.pos.seq);
        event_base_dispatch(srv.base);
        rc = 0;
    }
    server_close(&srv);
    if (rc == 0) log_info("stopped");
    config_release(&srv.cfg);
    return rc;
}
