/*
 * fuzz_http.c - libFuzzer target for the HTTP API (src/node/http_api.c on libevent's evhttp).
 *
 * One whole server is embedded (server_open in LLVMFuzzerInitialize: a fresh data directory
 * under /tmp, its own free port on 127.0.0.1). Each input is the raw bytes a client sends: the
 * target connects a TCP socket to the server, writes the bytes, shuts its side down (SHUT_WR)
 * and runs the server's event loop until the client has read the whole reply (EOF) or
 * INPUT_BUDGET_MS passed, discarding the reply. After every input the server must still answer
 * GET /v1/status with 200 within CHECK_BUDGET_MS: a crash, a hang (libFuzzer's -timeout) or a
 * wedged server is a failure of this target.
 *
 * Details that keep the fuzzer effective:
 *  - Pipelining: libevent drops the requests that follow the one during which the client
 *    half-closed. So when an input holds several requests (" HTTP/1." more than once), the
 *    half-close waits until no reply byte came for LINGER_QUIET_MS.
 *  - Tokens: at start-up the target creates an admin token (POST /v1/tokens, while the server is
 *    still open) under a random name. Once a token exists the server wants one on every
 *    request, so the target adds "Authorization: Bearer <token>" after each request line (a
 *    line holding " HTTP/1.") of every input without an Authorization header of its own; inputs
 *    with one exercise the 401/403 paths. The fuzzer cannot revoke the target's token: it never
 *    sees its name.
 *  - Addresses: each input comes from its own loopback address (127.1.x.y), since the server
 *    slows down its answers to an address after failed authentications.
 *  - Uploads: the 32 bytes UPLOAD_MARKER in an input are replaced by the id of a fresh upload
 *    session (same length, so Content-Length stays right), so appends, commits and
 *    POST /v1/batch?upload= are reachable. Sessions an input creates are deleted afterwards, so
 *    the limit of 256 sessions is not reached.
 *  - Leaks: libFuzzer's per-input leak check is off by default (see LLVMFuzzerInitialize);
 *    LeakSanitizer still checks at exit.
 *
 * Environment: LS_FUZZ_HTTP_LOG=debug|info|warn shows the server's log (default: errors only);
 * LS_FUZZ_HTTP_OPEN=1 skips the token (an open server); LS_FUZZ_HTTP_VERBOSE=1 prints each
 * reply (2: whole replies, 3: also the requests that got no complete reply);
 * LS_FUZZ_HTTP_KEEP=1 keeps the data directory.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "node/config.h"
#include "node/server.h"

#define INPUT_BUDGET_MS 200     /* per fuzz input */
#define CHECK_BUDGET_MS 10000   /* the liveness check after it */
#define REPLY_KEEP (256 * 1024) /* reply bytes kept for scanning; the rest is read and dropped */
#define LINGER_QUIET_MS 15      /* pipelined input: quiet this long, then half-close */
#define UPLOAD_MARKER "UPLOAD_ID_UPLOAD_ID_UPLOAD_ID_XX" /* 32 bytes, the length of an id */

static struct server srv;
static char datadir[256];
static char token[200]; /* the target's admin token; "" while the server is open */
static struct event *guard;
static int ready;
static int verbose; /* LS_FUZZ_HTTP_VERBOSE */

/* ---------------------------------------------------------------- one client exchange */

struct client {
    int fd;
    const uint8_t *out;
    size_t outlen, outpos;
    int wr_done, shut, eof;
    int linger;      /* pipelined: half-close only once the replies have stopped coming */
    int64_t last_ms; /* when bytes last moved */
    char *in;
    size_t inlen; /* bytes kept in in[] (at most REPLY_KEEP) */
    size_t total; /* bytes read */
    struct event *rev, *wev;
};

static void
client_write(evutil_socket_t fd, short what, void *arg)
{
    struct client *c = arg;
    while (c->outpos < c->outlen) {
        ssize_t n = send(fd, c->out + c->outpos, c->outlen - c->outpos, MSG_NOSIGNAL);
        if (n > 0) {
            c->outpos += (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return; /* the server has not read enough yet */
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            break; /* the server closed: it may have answered already */
        }
    }
    c->wr_done = 1;
    c->last_ms = ls_mono_ms();
    if (!c->linger) {
        shutdown(fd, SHUT_WR);
        c->shut = 1;
    }
    event_del(c->wev);
}

static void
client_read(evutil_socket_t fd, short what, void *arg)
{
    struct client *c = arg;
    char buf[16384];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n > 0) {
            size_t keep = c->inlen < REPLY_KEEP ? REPLY_KEEP - c->inlen : 0;
            if (keep > (size_t)n) keep = (size_t)n;
            memcpy(c->in + c->inlen, buf, keep);
            c->inlen += keep;
            c->in[c->inlen] = '\0';
            c->total += (size_t)n;
            c->last_ms = ls_mono_ms();
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n < 0 && errno == EINTR) continue;
        c->eof = 1; /* EOF, or a reset */
        event_del(c->rev);
        return;
    }
}

static void
guard_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg; /* only wakes the loop */
}

/*
 * Sends req on a new connection and runs the server's loop until the reply is complete (EOF) or
 * budget_ms passed. *reply (NUL-terminated, owned by the caller) gets the first REPLY_KEEP bytes.
 * Returns 0 when the server closed the connection, -1 on timeout or when connecting failed.
 */
static int
exchange(const void *req, size_t n, int64_t budget_ms, int linger, uint32_t src, char **reply,
         size_t *reply_len)
{
    struct sockaddr_in sa;
    struct client c;
    int64_t deadline = ls_mono_ms() + budget_ms;
    memset(&c, 0, sizeof c);
    c.out = req;
    c.outlen = n;
    c.linger = linger;
    c.in = malloc(REPLY_KEEP + 1);
    if (!c.in) abort();
    c.in[0] = '\0';
    c.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c.fd < 0) {
        perror("fuzz_http: socket");
        abort();
    }
    if (src) {
        /* From another loopback address (all of 127/8 is local). */
        memset(&sa, 0, sizeof sa);
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(src);
        bind(c.fd, (struct sockaddr *)&sa, sizeof sa); /* failing that, from 127.0.0.1 */
    }
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    {
        const char *colon = strrchr(srv.cfg.http, ':');
        sa.sin_port = htons((uint16_t)atoi(colon + 1));
    }
    if (connect(c.fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
        c.eof = 1; /* refused: nobody listens */
    } else {
        c.rev = event_new(srv.base, c.fd, EV_READ | EV_PERSIST, client_read, &c);
        c.wev = event_new(srv.base, c.fd, EV_WRITE | EV_PERSIST, client_write, &c);
        event_add(c.rev, NULL);
        event_add(c.wev, NULL);
        /* EVLOOP_ONCE wakes for any of the server's events (sockets, the writer thread's
         * completions, timers) and for ours; the guard timer bounds the wait. */
        while (!c.eof) {
            int64_t now = ls_mono_ms(), left = deadline - now;
            struct timeval tv;
            if (left <= 0) break;
            if (c.wr_done && !c.shut) {
                /* Pipelined requests: libevent drops the requests that follow one during which
                 * the client half-closed, so half-close only when the replies have stopped. */
                if (now - c.last_ms >= LINGER_QUIET_MS) {
                    shutdown(c.fd, SHUT_WR);
                    c.shut = 1;
                } else if (c.last_ms + LINGER_QUIET_MS - now < left) {
                    left = c.last_ms + LINGER_QUIET_MS - now;
                }
            }
            tv.tv_sec = left / 1000;
            tv.tv_usec = (left % 1000) * 1000;
            evtimer_add(guard, &tv);
            event_base_loop(srv.base, EVLOOP_ONCE);
        }
        evtimer_del(guard);
        event_free(c.rev);
        event_free(c.wev);
    }
    close(c.fd);
    if (reply) {
        *reply = c.in;
        if (reply_len) *reply_len = c.inlen;
    } else {
        free(c.in);
    }
    return c.eof && c.total > 0 ? 0 : -1;
}

static int
exchange_str(const char *req, int64_t budget_ms, char **reply)
{
    return exchange(req, strlen(req), budget_ms, 0, 0, reply, NULL);
}

static const char *
auth_header(void)
{
    static char h[sizeof token + 40];
    if (!*token) return "";
    snprintf(h, sizeof h, "Authorization: Bearer %s\r\n", token);
    return h;
}

/* Copies the string value of "key":"..." (JSON, no escapes expected) out of text. */
static int
json_field(const char *text, const char *key, char *out, size_t n)
{
    char pat[64];
    const char *p, *q;
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    if (!(p = strstr(text, pat))) return -1;
    p += strlen(pat);
    if (!(q = strchr(p, '"')) || (size_t)(q - p) >= n) return -1;
    memcpy(out, p, (size_t)(q - p));
    out[q - p] = '\0';
    return 0;
}

static int
is_upload_id(const char *s, size_t n)
{
    if (n != 32) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

static void
delete_upload(const char *id)
{
    char req[512];
    snprintf(req, sizeof req,
             "DELETE /v1/uploads/%s HTTP/1.1\r\nHost: fuzz\r\n%sConnection: close\r\n\r\n", id,
             auth_header());
    exchange_str(req, CHECK_BUDGET_MS, NULL);
}

static int
create_upload(char id[33])
{
    char req[512], *reply = NULL;
    int rc;
    snprintf(req, sizeof req,
             "POST /v1/uploads HTTP/1.1\r\nHost: fuzz\r\n%sContent-Length: 0\r\nConnection: "
             "close\r\n\r\n",
             auth_header());
    exchange_str(req, CHECK_BUDGET_MS, &reply);
    rc = json_field(reply, "id", id, 33) == 0 && is_upload_id(id, strlen(id)) ? 0 : -1;
    free(reply);
    return rc;
}

/* The server answers GET /v1/status; anything else (no answer, no 200) stops the fuzzer. */
static void
check_alive(const char *after)
{
    char req[512], *reply = NULL;
    int rc;
    snprintf(req, sizeof req,
             "GET /v1/status HTTP/1.1\r\nHost: fuzz\r\n%sConnection: close\r\n\r\n", auth_header());
    rc = exchange_str(req, CHECK_BUDGET_MS, &reply);
    if (rc != 0 || strncmp(reply, "HTTP/1.1 200 ", 13) != 0 || !strstr(reply, "\"seq\":")) {
        fprintf(stderr,
                "fuzz_http: the server did not answer GET /v1/status after %s (%s); reply:\n"
                "%.600s\n",
                after, rc ? "no complete reply" : "not 200", reply);
        abort();
    }
    free(reply);
}

/* ---------------------------------------------------------------- set-up */

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static void
cleanup(void)
{
    if (!ready) return;
    ready = 0;
    if (getenv("LS_FUZZ_HTTP_KEEP")) {
        fprintf(stderr, "fuzz_http: data kept in %s\n", datadir);
        return;
    }
    /* The server is left running (its memory stays reachable); only the data goes. */
    nftw(datadir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int
free_port(void)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

static void
set_str(char **field, const char *value)
{
    free(*field);
    *field = strdup(value);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *lv = getenv("LS_FUZZ_HTTP_LOG");
    char addr[64];
    int tries;

    /* libFuzzer's leak check after each input would run LeakSanitizer on nearly every input:
     * the server frees a closed connection's buffers in a once-a-second sweep (http_conns.c),
     * so an input's allocations outlive it. Leaks are still reported when the process exits
     * (LeakSanitizer's own check). -detect_leaks=1 on the command line turns it back on. */
    {
        static char flag[] = "-detect_leaks=0";
        int given = 0;
        char **args;
        for (int i = 1; i < *argc; i++)
            if (strncmp((*argv)[i], "-detect_leaks=", 14) == 0) given = 1;
        if (!given && (args = calloc((size_t)*argc + 2, sizeof *args))) {
            memcpy(args, *argv, (size_t)*argc * sizeof *args);
            args[(*argc)++] = flag;
            args[*argc] = NULL;
            *argv = args; /* kept for the life of the process */
        }
    }

    signal(SIGPIPE, SIG_IGN);
    if (getenv("LS_FUZZ_HTTP_VERBOSE")) verbose = atoi(getenv("LS_FUZZ_HTTP_VERBOSE"));
    evthread_use_pthreads();
    ls_log_setup("fuzz-http", !lv                        ? LS_LOG_ERROR
                           : strcmp(lv, "debug") == 0 ? LS_LOG_DEBUG
                           : strcmp(lv, "info") == 0  ? LS_LOG_INFO
                                                      : LS_LOG_WARN);
    snprintf(datadir, sizeof datadir, "/tmp/lockstep-fuzz-http.XXXXXX");
    if (!mkdtemp(datadir)) {
        perror("fuzz_http: mkdtemp");
        abort();
    }
    ready = 1;
    atexit(cleanup);

    memset(&srv, 0, sizeof srv);
    config_init(&srv.cfg);
    set_str(&srv.cfg.data, datadir);
    set_str(&srv.cfg.name, "fuzz");
    set_str(&srv.cfg.sync, "normal"); /* no fsync per commit: the fuzzer writes a lot */
    srv.cfg.idle_timeout_ms = 10000;
    {
        /* mirror jobs the fuzzer makes up may touch no directory: the only root is inside the
         * data directory, where no job may write */
        char root[4200];
        snprintf(root, sizeof root, "%s/mirrors", datadir);
        srv.cfg.mirror_root.v[0] = strdup(root);
        srv.cfg.mirror_root.n = srv.cfg.mirror_root.v[0] ? 1 : 0;
    }
    for (tries = 0; tries < 50; tries++) {
        int port = free_port();
        if (port <= 0) continue;
        snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
        set_str(&srv.cfg.http, addr);
        if (server_open(&srv, 0) == 0) break;
        {
            /* Probably a port taken meanwhile: release and try another. */
            struct config cfg;
            server_close(&srv);
            cfg = srv.cfg;
            memset(&srv, 0, sizeof srv);
            srv.cfg = cfg;
        }
    }
    if (tries == 50) {
        fprintf(stderr, "fuzz_http: cannot start a server in %s\n", datadir);
        abort();
    }
    guard = evtimer_new(srv.base, guard_cb, NULL);

    if (!getenv("LS_FUZZ_HTTP_OPEN")) {
        char req[512], name[40], *reply = NULL;
        ls_random_hex(name, 12);
        snprintf(req, sizeof req,
                 "POST /v1/tokens?role=admin&name=fuzz-%s HTTP/1.1\r\nHost: fuzz\r\n"
                 "Content-Length: 0\r\nConnection: close\r\n\r\n",
                 name);
        exchange_str(req, CHECK_BUDGET_MS, &reply);
        if (strncmp(reply, "HTTP/1.1 201 ", 13) != 0 ||
            json_field(reply, "token", token, sizeof token) != 0) {
            token[0] = '\0';
            fprintf(stderr, "fuzz_http: no admin token (the server stays open): %.200s\n", reply);
        }
        free(reply);
    }
    check_alive("start-up");
    fprintf(stderr, "fuzz_http: server on %s, data in %s, %s\n", srv.cfg.http, datadir,
            *token ? "with an admin token" : "open (no token)");
    return 0;
}

/* ---------------------------------------------------------------- one input */

static int
has_authorization(const uint8_t *p, size_t n)
{
    static const char h[] = "\nauthorization:";
    size_t k = sizeof h - 1;
    for (size_t i = 0; i + k <= n; i++)
        if (strncasecmp((const char *)p + i, h, k) == 0) return 1;
    return 0;
}

static size_t
count(const uint8_t *p, size_t n, const char *needle)
{
    size_t k = strlen(needle), found = 0;
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(p + i, needle, k) == 0) found++;
    return found;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *auth = auth_header();
    size_t alen = strlen(auth), n = 0, nreq = count(data, size, " HTTP/1.");
    uint8_t *req = malloc(size + (nreq + 1) * alen + 1);
    char upload[33] = "", *reply = NULL, *p;
    size_t reply_len = 0;

    if (!req) return 0;
    /* The input, with the target's token after each request line (a line with " HTTP/1."),
     * unless the input brings an Authorization header of its own. */
    if (alen && !has_authorization(data, size)) {
        size_t i = 0;
        while (i < size) {
            const uint8_t *v = memmem(data + i, size - i, " HTTP/1.", 8);
            const uint8_t *nl = v ? memchr(v, '\n', size - (size_t)(v - data)) : NULL;
            size_t upto = nl ? (size_t)(nl - data) + 1 : size;
            memcpy(req + n, data + i, upto - i);
            n += upto - i;
            if (nl) {
                memcpy(req + n, auth, alen);
                n += alen;
            }
            i = upto;
        }
    } else {
        memcpy(req, data, size);
        n = size;
    }
    /* A live upload session for the marker. */
    for (size_t i = 0; i + 32 <= n; i++) {
        if (memcmp(req + i, UPLOAD_MARKER, 32) != 0) continue;
        if (!*upload && create_upload(upload) != 0) break;
        memcpy(req + i, upload, 32);
        i += 31;
    }

    {
        int64_t t0 = ls_mono_ms();
        /* Each input from its own address, 127.1.0.1 to 127.1.255.254: the server slows down
         * answers to an address after failed authentications (auth_failed), which would
         * otherwise make every input with a bad token wait out INPUT_BUDGET_MS. */
        static uint32_t next_src;
        uint32_t src = 0x7f010000u | (1 + next_src++ % 0xfffeu);
        int rc = exchange(req, n, INPUT_BUDGET_MS, nreq > 1, src, &reply, &reply_len);
        if (verbose)
            fprintf(stderr, "fuzz_http: %s after %lld ms, %zu bytes:\n%.*s\n",
                    rc ? "no complete reply" : "reply", (long long)(ls_mono_ms() - t0), reply_len,
                    verbose > 1 ? (int)reply_len : 400, reply);
        if (verbose > 2 && rc)
            fprintf(stderr, "fuzz_http: the request was:\n%.*s\n", (int)(n < 600 ? n : 600), req);
    }

    /* Delete the sessions this input created, and ours. */
    for (p = reply; (p = strstr(p, "\"id\":\"")) != NULL; p += 6)
        if (p + 6 + 32 <= reply + reply_len && p[6 + 32] == '"' && is_upload_id(p + 6, 32)) {
            char id[33];
            memcpy(id, p + 6, 32);
            id[32] = '\0';
            if (strcmp(id, upload) != 0) delete_upload(id);
        }
    if (*upload) delete_upload(upload);
    free(reply);
    free(req);

    check_alive("an input");
    /* Let the server finish closing (libevent runs some of it in deferred callbacks). */
    for (int i = 0; i < 4; i++)
        event_base_loop(srv.base, EVLOOP_NONBLOCK);
    return 0;
}
