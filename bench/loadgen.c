/*
 * loadgen.c - an HTTP/1.1 keep-alive load generator for lockstep, on plain blocking sockets
 * (no libcurl, no event loop: what it measures is the server, not a client library). It talks
 * to 127.0.0.1 only. Every reply is parsed (Content-Length or chunked), its status must be 200
 * and its JSON must say what was written; anything else aborts the run loudly (exit 1).
 * Everything is bounded by a count and by --time-limit (exit 3 when the limit cut a run short;
 * the figures printed are then for what was done).
 *
 *   bench_loadgen batch  --port P [--docs 200000] [--batch 1000] [--conns 2] [--body 1024]
 *   bench_loadgen put    --port P [--count 5000] [--conns 1] [--warmup 50] [--body 1024]
 *   bench_loadgen status --port P                 wait until GET /v1/status answers 200
 *   bench_loadgen gen    --out FILE [--docs 100000] [--body 1024]   NDJSON for `lockstep import`
 *   bench_loadgen redis  --port P [--docs 200000] [--batch 64] [--conns 4] [--body 1024]
 *   common: --tag NAME (path prefix /bench/NAME, default: the pid) --time-limit SECONDS (120)
 *           --io-timeout SECONDS (60: one request) --random (each body its own pseudo-random
 *           bytes from a 64-letter alphabet: nothing to gain from compressing across documents;
 *           without it every body is one shared pattern behind "doc N ")
 *
 * batch: C connections POST /v1/batch bodies of B put operations (unique paths) until N docs
 *        were applied; reports docs/s and the latency of one batch request.
 * put:   C connections (1: strictly sequential) PUT /v1/items/... with a raw body, one request
 *        at a time each; reports p50/p90/p99/p99.9/max latency in ms and requests/s.
 * redis: the batch workload against a Redis server, in RESP: C connections each write a pipeline
 *        of B `SET bench:TAG:NNNNNNNNN BODY` commands in one send, then read the B replies (each
 *        must be +OK), until N keys were set; the same figures as batch (a "batch" is a pipeline).
 * Each mode ends with one machine-readable line: RESULT key=value ...
 */
#include "bench_common.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define HEADERS_MAX (64 * 1024)
#define REPLY_MAX (64u << 20)

/* ---------------------------------------------------------------- options */

static struct {
    int port;
    long long docs, batch, count, warmup, body;
    int conns, random, batch_set;
    double time_limit, io_timeout;
    char tag[64];
    const char *out;
} opt = {
    .docs = 200000, .batch = 1000, .count = 5000, .warmup = 50, .body = BENCH_BODY_DEFAULT,
    .conns = 0, .time_limit = 120, .io_timeout = 60,
};

static double deadline; /* bench_now() after which no new request starts */
static atomic_int timed_out;

/* ---------------------------------------------------------------- one connection */

struct conn {
    int fd;
    char *rbuf; /* unread reply bytes are rbuf[rpos..rlen) */
    size_t rpos, rlen, rcap;
    long long requests;
};

struct reply {
    int status;
    int close; /* the server will close the connection after this reply */
    struct dbuf body;
};

static int
conn_open(struct conn *c)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
    struct timeval tv = {(time_t)opt.io_timeout,
                         (suseconds_t)((opt.io_timeout - (double)(time_t)opt.io_timeout) * 1e6)};
    int one = 1;
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0) return -1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int e = errno;
        close(c->fd);
        c->fd = -1;
        errno = e;
        return -1;
    }
    c->rpos = c->rlen = 0;
    if (!c->rbuf) {
        c->rcap = 64 * 1024;
        if (!(c->rbuf = malloc(c->rcap))) bench_die("out of memory");
    }
    return 0;
}

static void
conn_close(struct conn *c)
{
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->rpos = c->rlen = 0;
}

static void
conn_connect_or_die(struct conn *c)
{
    if (conn_open(c) < 0) bench_die("cannot connect to 127.0.0.1:%d: %s", opt.port, strerror(errno));
}

static void
send_all(struct conn *c, const char *head, size_t hlen, const char *body, size_t blen)
{
    struct iovec iov[2] = {{(void *)head, hlen}, {(void *)body, blen}};
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = blen ? 2 : 1};
    while (msg.msg_iovlen > 0) {
        ssize_t n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            bench_die("sending to 127.0.0.1:%d: %s", opt.port,
                      errno == EAGAIN ? "timed out" : strerror(errno));
        }
        while (n > 0 && msg.msg_iovlen > 0) {
            if ((size_t)n >= msg.msg_iov->iov_len) {
                n -= (ssize_t)msg.msg_iov->iov_len;
                msg.msg_iov++;
                msg.msg_iovlen--;
            } else {
                msg.msg_iov->iov_base = (char *)msg.msg_iov->iov_base + n;
                msg.msg_iov->iov_len -= (size_t)n;
                n = 0;
            }
        }
    }
}

/* Reads more bytes into rbuf; dies on error, timeout or an early close. */
static void
fill(struct conn *c)
{
    ssize_t n;
    if (c->rpos > 0 && c->rpos == c->rlen) c->rpos = c->rlen = 0;
    if (c->rlen == c->rcap) {
        if (c->rpos > 0) {
            memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
            c->rlen -= c->rpos;
            c->rpos = 0;
        } else {
            c->rcap *= 2;
            if (!(c->rbuf = realloc(c->rbuf, c->rcap))) bench_die("out of memory");
        }
    }
    do {
        n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        bench_die("reading from 127.0.0.1:%d: %s", opt.port,
                  errno == EAGAIN ? "no reply within --io-timeout" : strerror(errno));
    if (n == 0) bench_die("the server closed the connection before its reply was complete");
    c->rlen += (size_t)n;
}

/* Returns one line (without CRLF, NUL-terminated in place of the CR) from the buffer. */
static char *
read_line(struct conn *c, size_t max)
{
    for (;;) {
        char *start = c->rbuf + c->rpos;
        char *nl = memchr(start, '\n', c->rlen - c->rpos);
        if (nl) {
            char *line = start;
            c->rpos = (size_t)(nl - c->rbuf) + 1;
            if (nl > line && nl[-1] == '\r') nl--;
            *nl = '\0';
            return line;
        }
        if (c->rlen - c->rpos > max) bench_die("reply line longer than %zu bytes", max);
        fill(c);
    }
}

static void
read_bytes(struct conn *c, struct dbuf *into, size_t n)
{
    if (into->len + n > REPLY_MAX) bench_die("reply body larger than %u bytes", REPLY_MAX);
    while (n > 0) {
        size_t have = c->rlen - c->rpos, take;
        if (have == 0) {
            fill(c);
            continue;
        }
        take = have < n ? have : n;
        dbuf_add(into, c->rbuf + c->rpos, take);
        c->rpos += take;
        n -= take;
    }
}

static void
expect_crlf(struct conn *c)
{
    char *line = read_line(c, 16);
    if (*line) bench_die("malformed chunked reply: junk after a chunk");
}

/*
 * Reads one reply: status line, headers, then a body delimited by Content-Length, by chunked
 * transfer coding, or (no length, Connection: close) by the end of the connection.
 * Lines returned by read_line point into rbuf, which fill() may move, so each header is used
 * before the next read.
 */
static void
read_reply(struct conn *c, struct reply *r)
{
    long long length = -1;
    int chunked = 0, minor = 1;
    char *line;

    r->body.len = 0;
    if (r->body.p) r->body.p[0] = '\0';
    r->close = 0;
    for (;;) { /* skip interim 1xx replies */
        line = read_line(c, HEADERS_MAX);
        if (sscanf(line, "HTTP/1.%d %d", &minor, &r->status) != 2)
            bench_die("malformed status line: %.100s", line);
        if (r->status >= 200) break;
        while (*read_line(c, HEADERS_MAX)) {
        }
    }
    if (minor == 0) r->close = 1;
    for (;;) {
        char *colon, *v;
        line = read_line(c, HEADERS_MAX);
        if (!*line) break;
        if (!(colon = strchr(line, ':'))) bench_die("malformed header: %.100s", line);
        *colon = '\0';
        for (v = colon + 1; *v == ' ' || *v == '\t'; v++) {
        }
        if (!strcasecmp(line, "Content-Length")) {
            char *end;
            length = strtoll(v, &end, 10);
            if (end == v || length < 0) bench_die("bad Content-Length: %s", v);
        } else if (!strcasecmp(line, "Transfer-Encoding")) {
            chunked = strcasestr(v, "chunked") != NULL;
        } else if (!strcasecmp(line, "Connection")) {
            if (strcasestr(v, "close")) r->close = 1;
            else if (strcasestr(v, "keep-alive")) r->close = 0;
        }
    }
    if (r->status == 204 || r->status == 304) return;
    if (chunked) {
        for (;;) {
            char *end;
            unsigned long long n;
            line = read_line(c, 1024);
            n = strtoull(line, &end, 16);
            if (end == line) bench_die("malformed chunk size: %.40s", line);
            if (n == 0) {
                while (*read_line(c, HEADERS_MAX)) { /* trailers */
                }
                return;
            }
            read_bytes(c, &r->body, (size_t)n);
            expect_crlf(c);
        }
    } else if (length >= 0) {
        read_bytes(c, &r->body, (size_t)length);
    } else {
        /* no length: the body runs to the end of the connection */
        for (;;) {
            ssize_t n;
            if (c->rlen > c->rpos) dbuf_add(&r->body, c->rbuf + c->rpos, c->rlen - c->rpos);
            c->rpos = c->rlen = 0;
            n = recv(c->fd, c->rbuf, c->rcap, 0);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) bench_die("reading a reply: %s", strerror(errno));
            if (n == 0) break;
            c->rlen = (size_t)n;
            if (r->body.len > REPLY_MAX) bench_die("reply too large");
        }
        r->close = 1;
    }
}

/* One request and its reply on a keep-alive connection; reconnects when the server closed it. */
static void
roundtrip(struct conn *c, const char *method, const char *target, const char *ctype,
          const char *body, size_t blen, struct reply *r)
{
    char head[2048];
    int n;
    if (c->fd < 0) conn_connect_or_die(c);
    n = snprintf(head, sizeof head,
                 "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: lockstep-loadgen\r\n"
                 "Content-Type: %s\r\nContent-Length: %zu\r\n\r\n",
                 method, target, opt.port, ctype, blen);
    if (n < 0 || (size_t)n >= sizeof head) bench_die("request target too long");
    send_all(c, head, (size_t)n, body, blen);
    read_reply(c, r);
    c->requests++;
    if (r->close) conn_close(c);
}

static void
fail_reply(const char *what, const struct reply *r)
{
    bench_die("%s: HTTP %d: %.500s", what, r->status, r->body.p ? r->body.p : "(no body)");
}

/* Parses the JSON reply and returns an integer member, dying when it is not there. */
static long long
reply_int(const char *what, const struct reply *r, const char *key)
{
    json_error_t jerr;
    json_t *o = json_loadb(r->body.p ? r->body.p : "", r->body.len, 0, &jerr), *v;
    long long x;
    if (!o) bench_die("%s: reply is not JSON (%s): %.300s", what, jerr.text, r->body.p);
    v = json_object_get(o, key);
    if (!json_is_integer(v)) bench_die("%s: reply has no integer \"%s\": %.300s", what, key, r->body.p);
    x = (long long)json_integer_value(v);
    json_decref(o);
    return x;
}

/* ---------------------------------------------------------------- batch mode */

struct worker {
    pthread_t thread;
    int id;
    double *lat; /* seconds, one per measured request */
    size_t nlat, cap;
    long long done; /* docs (batch) or requests (put) */
    double first_send, last_reply;
};

static void
lat_add(struct worker *w, double s)
{
    if (w->nlat == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 1024;
        if (!(w->lat = realloc(w->lat, w->cap * sizeof *w->lat))) bench_die("out of memory");
    }
    w->lat[w->nlat++] = s;
}

/* The body of document docno: the shared pattern, or with --random bytes of its own. */
static void
fill_body(char *out, long long docno)
{
    static const char alphabet[] =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
    uint64_t x = 0x9E3779B97F4A7C15ull ^ ((uint64_t)docno * 0xBF58476D1CE4E5B9ull);
    char num[32];
    int k;
    if (!opt.random) {
        bench_fill_body(out, (size_t)opt.body, (uint64_t)docno);
        return;
    }
    for (long long i = 0; i < opt.body; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        out[i] = alphabet[(x >> 20) & 63];
    }
    k = snprintf(num, sizeof num, "doc %lld ", docno);
    memcpy(out, num, (size_t)k < (size_t)opt.body ? (size_t)k : (size_t)opt.body);
}

/* The NDJSON line of document docno: {"op":"put","path":"/bench/TAG/dNNNNN/NNNNNNNNN","body":"..."} */
static void
add_doc_line(struct dbuf *b, long long docno)
{
    dbuf_printf(b, "{\"op\":\"put\",\"path\":\"/bench/%s/d%05lld/%09lld\",\"body\":\"", opt.tag,
                docno / 1000, docno);
    dbuf_reserve(b, (size_t)opt.body + 4);
    fill_body(b->p + b->len, docno);
    b->len += (size_t)opt.body;
    dbuf_add(b, "\"}\n", 3);
}

/*
 * The requests of a batch or redis run are all built before the clock starts (what is measured
 * is the server, not the making of bodies): pre[i] is batch i, documents i*B .. i*B+B-1; a worker
 * takes the next i and frees pre[i] once it is answered.
 */
static struct dbuf *pre;
static long long npre;
static atomic_llong next_batch;

static void
prebuild(void (*add)(struct dbuf *, long long))
{
    npre = (opt.docs + opt.batch - 1) / opt.batch;
    if (!(pre = calloc((size_t)npre, sizeof *pre))) bench_die("out of memory");
    for (long long i = 0; i < npre; i++) {
        long long end = (i + 1) * opt.batch < opt.docs ? (i + 1) * opt.batch : opt.docs;
        for (long long d = i * opt.batch; d < end; d++) add(&pre[i], d);
    }
}

/* Takes the next batch: its index, its documents [*start, *end); -1 when none is left. */
static long long
take_batch(long long *start, long long *end)
{
    long long i;
    if (bench_now() > deadline) {
        atomic_store(&timed_out, 1);
        return -1;
    }
    i = atomic_fetch_add(&next_batch, 1);
    if (i >= npre) return -1;
    *start = i * opt.batch;
    *end = *start + opt.batch < opt.docs ? *start + opt.batch : opt.docs;
    return i;
}

static void
drop_batch(long long i)
{
    free(pre[i].p);
    pre[i] = (struct dbuf){0};
}

static void *
batch_worker(void *arg)
{
    struct worker *w = arg;
    struct conn c = {.fd = -1};
    struct reply r = {0};
    char what[128];

    conn_connect_or_die(&c);
    for (;;) {
        long long start, end, applied, i;
        double t0, t1;
        if ((i = take_batch(&start, &end)) < 0) break;
        t0 = bench_now();
        if (!w->first_send) w->first_send = t0;
        roundtrip(&c, "POST", "/v1/batch", "application/x-ndjson", pre[i].p, pre[i].len, &r);
        drop_batch(i);
        t1 = bench_now();
        snprintf(what, sizeof what, "POST /v1/batch (docs %lld..%lld)", start, end - 1);
        if (r.status != 200) fail_reply(what, &r);
        applied = reply_int(what, &r, "applied");
        if (applied != end - start)
            bench_die("%s: applied %lld of %lld operations", what, applied, end - start);
        w->last_reply = t1;
        w->done += applied;
        lat_add(w, t1 - t0);
    }
    conn_close(&c);
    free(c.rbuf);
    free(r.body.p);
    return NULL;
}

/* ---------------------------------------------------------------- redis mode */

/* The RESP command SET bench:TAG:NNNNNNNNN BODY of document docno. */
static void
add_doc_set(struct dbuf *b, long long docno)
{
    char key[128];
    int k = snprintf(key, sizeof key, "bench:%s:%09lld", opt.tag, docno);
    dbuf_printf(b, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%lld\r\n", k, key, opt.body);
    dbuf_reserve(b, (size_t)opt.body + 4);
    fill_body(b->p + b->len, docno);
    b->len += (size_t)opt.body;
    dbuf_add(b, "\r\n", 2);
}

/* Reads the replies of pipeline i (documents [start, end)): each must be +OK. */
static void
redis_replies(struct conn *c, long long start, long long end)
{
    for (long long d = start; d < end; d++) {
        const char *line = read_line(c, 4096);
        if (strcmp(line, "+OK"))
            bench_die("SET bench:%s:%09lld: Redis replied %.200s", opt.tag, d, line);
    }
}

/*
 * Two pipelines in flight on each connection, as a pipelined loader keeps them: pipeline i+1 is
 * sent before the replies of pipeline i are read, so that Redis never waits for the client's
 * round trip. The replies are tiny (5 bytes each): the send never waits on unread replies.
 */
static void *
redis_worker(void *arg)
{
    struct worker *w = arg;
    struct conn c = {.fd = -1};
    long long prev = -1, pstart = 0, pend = 0;
    double pt0 = 0;

    conn_connect_or_die(&c);
    for (;;) {
        long long start = 0, end = 0, i = take_batch(&start, &end);
        double t0 = bench_now();
        if (i >= 0) {
            if (!w->first_send) w->first_send = t0;
            send_all(&c, pre[i].p, pre[i].len, NULL, 0);
        }
        if (prev >= 0) {
            double t1;
            redis_replies(&c, pstart, pend);
            t1 = bench_now();
            drop_batch(prev);
            w->last_reply = t1;
            w->done += pend - pstart;
            lat_add(w, t1 - pt0);
        }
        if (i < 0) break;
        prev = i, pstart = start, pend = end, pt0 = t0;
    }
    conn_close(&c);
    free(c.rbuf);
    return NULL;
}

/* ---------------------------------------------------------------- put mode */

static atomic_llong next_put, next_warm;

static void *
put_worker(void *arg)
{
    struct worker *w = arg;
    struct conn c = {.fd = -1};
    struct reply r = {0};
    char *body = malloc((size_t)opt.body + 1);
    char target[256], what[300];

    if (!body) bench_die("out of memory");
    conn_connect_or_die(&c);
    for (long long i = 0; i < opt.warmup; i++) { /* not measured: warms caches, pages, TCP */
        long long k = atomic_fetch_add(&next_warm, 1);
        snprintf(target, sizeof target, "/v1/items/bench/%s/warm/%09lld", opt.tag, k);
        bench_fill_body(body, (size_t)opt.body, (uint64_t)k);
        roundtrip(&c, "PUT", target, "application/octet-stream", body, (size_t)opt.body, &r);
        if (r.status != 200) fail_reply(target, &r);
    }
    for (;;) {
        long long k;
        double t0, t1;
        if (bench_now() > deadline) {
            atomic_store(&timed_out, 1);
            break;
        }
        k = atomic_fetch_add(&next_put, 1);
        if (k >= opt.count) break;
        snprintf(target, sizeof target, "/v1/items/bench/%s/p%05lld/%09lld", opt.tag, k / 1000, k);
        bench_fill_body(body, (size_t)opt.body, (uint64_t)k);
        t0 = bench_now();
        if (!w->first_send) w->first_send = t0;
        roundtrip(&c, "PUT", target, "application/octet-stream", body, (size_t)opt.body, &r);
        t1 = bench_now();
        snprintf(what, sizeof what, "PUT %s", target);
        if (r.status != 200) fail_reply(what, &r);
        if (reply_int(what, &r, "version") != 1)
            bench_die("%s: expected version 1 of a new path: %.300s", what, r.body.p);
        w->last_reply = t1;
        w->done++;
        lat_add(w, t1 - t0);
    }
    conn_close(&c);
    free(c.rbuf);
    free(r.body.p);
    free(body);
    return NULL;
}

/* ---------------------------------------------------------------- running workers */

static int
run_workers(const char *mode, void *(*fn)(void *))
{
    struct worker *ws = calloc((size_t)opt.conns, sizeof *ws);
    double first = 0, last = 0, wall, *all;
    size_t n = 0;
    long long done = 0;

    if (!ws) bench_die("out of memory");
    deadline = bench_now() + opt.time_limit;
    for (int i = 0; i < opt.conns; i++) {
        ws[i].id = i;
        if (pthread_create(&ws[i].thread, NULL, fn, &ws[i])) bench_die("pthread_create failed");
    }
    for (int i = 0; i < opt.conns; i++) {
        pthread_join(ws[i].thread, NULL);
        done += ws[i].done;
        n += ws[i].nlat;
        if (ws[i].first_send && (!first || ws[i].first_send < first)) first = ws[i].first_send;
        if (ws[i].last_reply > last) last = ws[i].last_reply;
    }
    if (!(all = malloc((n ? n : 1) * sizeof *all))) bench_die("out of memory");
    n = 0;
    for (int i = 0; i < opt.conns; i++) {
        memcpy(all + n, ws[i].lat, ws[i].nlat * sizeof *all);
        n += ws[i].nlat;
        free(ws[i].lat);
    }
    qsort(all, n, sizeof *all, bench_cmp_dbl);
    wall = last > first ? last - first : 0;
    if (n == 0 || wall <= 0) bench_die("%s: nothing was measured", mode);
    double p50 = bench_pct(all, n, .50) * 1e3, p90 = bench_pct(all, n, .90) * 1e3,
           p99 = bench_pct(all, n, .99) * 1e3, p999 = bench_pct(all, n, .999) * 1e3,
           max = all[n - 1] * 1e3, mean = 0;
    for (size_t i = 0; i < n; i++) mean += all[i];
    mean = mean / (double)n * 1e3;
    if (!strcmp(mode, "batch") || !strcmp(mode, "redis")) {
        printf("%s: %lld docs of %lld B in batches of %lld over %d connection(s): %.2f s, "
               "%.0f docs/s; batch request latency p50 %.1f ms, p99 %.1f ms, max %.1f ms%s\n",
               mode, done, opt.body, opt.batch, opt.conns, wall, (double)done / wall, p50, p99, max,
               timed_out ? " (TIME LIMIT: partial)" : "");
        printf("RESULT mode=%s docs=%lld secs=%.4f docs_per_s=%.1f batch_p50_ms=%.3f "
               "batch_p99_ms=%.3f batch_max_ms=%.3f conns=%d batch=%lld partial=%d\n",
               mode, done, wall, (double)done / wall, p50, p99, max, opt.conns, opt.batch,
               (int)timed_out);
    } else {
        printf("put: %lld PUTs of %lld B over %d connection(s): %.2f s, %.0f req/s; latency ms: "
               "p50 %.3f p90 %.3f p99 %.3f p99.9 %.3f max %.3f mean %.3f%s\n",
               done, opt.body, opt.conns, wall, (double)done / wall, p50, p90, p99, p999, max,
               mean, timed_out ? " (TIME LIMIT: partial)" : "");
        printf("RESULT mode=put count=%lld secs=%.4f req_per_s=%.1f p50_ms=%.3f p90_ms=%.3f "
               "p99_ms=%.3f p999_ms=%.3f max_ms=%.3f mean_ms=%.3f conns=%d partial=%d\n",
               done, wall, (double)done / wall, p50, p90, p99, p999, max, mean, opt.conns,
               (int)timed_out);
    }
    free(all);
    free(ws);
    return timed_out ? 3 : 0;
}

/* ---------------------------------------------------------------- status and gen */

static int
wait_status(void)
{
    double end = bench_now() + opt.time_limit;
    struct reply r = {0};
    for (;;) {
        struct conn c = {.fd = -1};
        if (conn_open(&c) == 0) {
            roundtrip(&c, "GET", "/v1/status", "text/plain", NULL, 0, &r);
            conn_close(&c);
            free(c.rbuf);
            if (r.status == 200) {
                printf("%s", r.body.p ? r.body.p : "");
                free(r.body.p);
                return 0;
            }
            fail_reply("GET /v1/status", &r);
        }
        free(c.rbuf);
        if (bench_now() > end) {
            fprintf(stderr, "nothing answers on 127.0.0.1:%d after %.0f s\n", opt.port,
                    opt.time_limit);
            return 3;
        }
        usleep(50 * 1000);
    }
}

static int
gen_file(void)
{
    FILE *f = fopen(opt.out, "w");
    struct dbuf b = {0};
    if (!f) bench_die("cannot create %s: %s", opt.out, strerror(errno));
    for (long long d = 0; d < opt.docs; d++) {
        b.len = 0;
        add_doc_line(&b, d);
        if (fwrite(b.p, 1, b.len, f) != b.len) bench_die("writing %s: %s", opt.out, strerror(errno));
    }
    if (fclose(f)) bench_die("writing %s: %s", opt.out, strerror(errno));
    free(b.p);
    printf("RESULT mode=gen docs=%lld file=%s\n", opt.docs, opt.out);
    return 0;
}

/* ---------------------------------------------------------------- main */

static void
usage(void)
{
    fprintf(stderr,
            "usage: bench_loadgen batch|put|status|gen|redis --port P [--docs N] [--batch N] [--count N]\n"
            "       [--conns N] [--warmup N] [--body BYTES] [--tag NAME] [--time-limit S]\n"
            "       [--io-timeout S] [--out FILE] [--random]\n");
    exit(2);
}

int
main(int argc, char **argv)
{
    const char *mode;
    if (argc < 2) usage();
    mode = argv[1];
    snprintf(opt.tag, sizeof opt.tag, "lg%d", (int)getpid());
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--port")) opt.port = (int)bench_num(a, v, 1, 65535), i++;
        else if (!strcmp(a, "--docs")) opt.docs = bench_num(a, v, 1, 100000000), i++;
        else if (!strcmp(a, "--batch")) opt.batch = bench_num(a, v, 1, 1000000), opt.batch_set = 1, i++;
        else if (!strcmp(a, "--count")) opt.count = bench_num(a, v, 1, 100000000), i++;
        else if (!strcmp(a, "--warmup")) opt.warmup = bench_num(a, v, 0, 1000000), i++;
        else if (!strcmp(a, "--conns")) opt.conns = (int)bench_num(a, v, 1, 256), i++;
        else if (!strcmp(a, "--body")) opt.body = bench_num(a, v, 0, BENCH_BODY_MAX), i++;
        else if (!strcmp(a, "--time-limit")) opt.time_limit = bench_dbl(a, v, 0.1, 86400), i++;
        else if (!strcmp(a, "--io-timeout")) opt.io_timeout = bench_dbl(a, v, 0.1, 86400), i++;
        else if (!strcmp(a, "--out") && v) opt.out = v, i++;
        else if (!strcmp(a, "--random")) opt.random = 1;
        else if (!strcmp(a, "--tag") && v) {
            for (const char *p = v; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                      (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
                    bench_die("--tag takes letters, digits, - and _");
            snprintf(opt.tag, sizeof opt.tag, "%s", v), i++;
        } else usage();
    }
    signal(SIGPIPE, SIG_IGN);
    bench_fill_body((char[1]){0}, 1, 0); /* builds the body pattern before threads start */
    if (!strcmp(mode, "gen")) {
        if (!opt.out) usage();
        return gen_file();
    }
    if (!opt.port) usage();
    if (!strcmp(mode, "status")) return wait_status();
    if (!strcmp(mode, "batch")) {
        if (!opt.conns) opt.conns = 2;
        prebuild(add_doc_line);
        return run_workers("batch", batch_worker);
    }
    if (!strcmp(mode, "redis")) {
        if (!opt.conns) opt.conns = 4;
        if (!opt.batch_set) opt.batch = 64;
        prebuild(add_doc_set);
        return run_workers("redis", redis_worker);
    }
    if (!strcmp(mode, "put")) {
        if (!opt.conns) opt.conns = 1;
        return run_workers("put", put_worker);
    }
    usage();
}
