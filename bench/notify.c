/*
 * notify.c - the cluster messenger's benchmark client (bench/notify.sh runs it). It publishes
 * notifications and receives them on every consumer in ONE process and ONE thread around one
 * epoll loop, so that a latency is the difference of two readings of the same CLOCK_MONOTONIC:
 * the publisher writes the time of the publish call into the payload ({"n":N,"t":NS}) and the
 * consumer subtracts it from the time its read() returned. The loop does little per message, so
 * a reading waits for nothing but the kernel and the servers. 127.0.0.1 only.
 *
 * The same workload on three systems (--system):
 *   lockstep  POST /v1/notify (docs/messenger.md) over keep-alive connections to --pub; every
 *             consumer is a named consumer on one --sub server, reading GET /v1/events (SSE,
 *             --read sse) or GET /v1/notifications?wait_ms= and POST /v1/consumers/NAME/ack
 *             (--read poll, what `lockstep watch` does)
 *   redis     PUBLISH, pipelined on one connection; SUBSCRIBE (RESP spoken on the socket)
 *   pg        NOTIFY over libpq connections (one transaction each); LISTEN (libpq, non-blocking)
 *
 * Publishing: --rate R a second on a fixed schedule (when the connection is busy with the last
 * request another one is used, up to --pub-conns; a publish sent over 1 ms late is counted as
 * `late`); or --rate 0: as fast as the server answers, --pub-conns requests in flight with
 * --batch notifications each (lockstep), for --seconds. Before the measured notifications,
 * warm-up ones (negative n) go out every 50 ms until every consumer has received one: from then
 * on each consumer is known to be subscribed and its server connected to the primary.
 *
 * --drop I: consumer I's connection is closed --drop-at seconds into the run and opened again
 * --drop-for seconds later (a lockstep SSE consumer sends Last-Event-ID then, as a browser's
 * EventSource does). What it never received is `lost_dropped`; the latencies printed are those
 * of the other consumers. Deliveries of an n a consumer already had are `dups`.
 *
 * --cpu-pid PID (repeatable): CPU seconds (utime + stime of /proc/PID/stat) of each process from
 * the first measured publish to the end of the delivery; reported per notification, the first
 * PID alone (the primary) and the average of the others; self_cpu_s is this program's own (the
 * measurer must not be what limits a throughput run).
 *
 * At the end, a lockstep run deletes its consumers (DELETE /v1/consumers/NAME).
 *
 * The run ends when every consumer has everything, or when nothing has arrived for --quiet
 * seconds and the only consumer still short is the dropped one, or --drain seconds after the
 * last publish. One machine-readable line at the end: RESULT key=value ... (times in ms).
 * Exit 1 on a protocol error, 3 when --time-limit cut the run short.
 */
#include "bench_common.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#ifdef BENCH_HAVE_LIBPQ
#include <libpq-fe.h>
#endif

#define MAX_PORTS 64
#define MAX_PUB_CONNS 64
#define HEAD_MAX (64 * 1024)
#define WARM_EVERY 0.05   /* seconds between warm-up notifications */
#define WARM_LIMIT 30.0   /* seconds the consumers have to come up */
#define SETTLE 0.2        /* seconds between the warm-up and the run */
#define LAT_MAX 50000000u /* latencies kept (floats): 200 MB at most */
#define RD_RING 256       /* PUBLISH commands in flight at most */

enum { SYS_LOCKSTEP, SYS_REDIS, SYS_PG };
enum { READ_SSE, READ_POLL };

static struct {
    int system, read;
    int pub_port;
    int sub_ports[MAX_PORTS], nsub_ports;
    int consumers;
    long long count;
    double rate, seconds;
    int pub_conns, batch;
    int drop;
    double drop_at, drop_for;
    int cpu_pids[MAX_PORTS], ncpu;
    double drain, quiet, time_limit;
    char tag[40];
    const char *channel, *pg_user, *pg_db;
} opt = {
    .system = -1, .read = READ_SSE, .count = 2000, .rate = 500, .seconds = 10, .pub_conns = 8,
    .batch = 1, .drop = -1, .drop_at = -1, .drop_for = 2, .drain = 20, .quiet = 2,
    .time_limit = 120, .channel = "bench", .pg_user = "postgres", .pg_db = "postgres",
};

static int64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---------------------------------------------------------------- latencies */

struct lats {
    float *v; /* milliseconds */
    size_t n, cap, skipped;
};

static void
lats_add(struct lats *l, double ms)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 65536;
        if (cap > LAT_MAX) cap = LAT_MAX;
        if (cap == l->n) {
            l->skipped++;
            return;
        }
        if (!(l->v = realloc(l->v, cap * sizeof *l->v))) bench_die("out of memory");
        l->cap = cap;
    }
    l->v[l->n++] = (float)ms;
}

static int
cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* Sorts l and returns its p-th quantile (nearest rank), 0 when empty. */
static double
lats_pct(struct lats *l, double p)
{
    size_t i;
    if (l->n == 0) return 0;
    qsort(l->v, l->n, sizeof *l->v, cmp_float);
    i = (size_t)(p * (double)l->n + 0.999999);
    if (i < 1) i = 1;
    if (i > l->n) i = l->n;
    return l->v[i - 1];
}

/* ---------------------------------------------------------------- state */

struct consumer;

/* An HTTP response being read: the head, then a body by length, by chunks or until EOF. */
enum { RX_HEAD, RX_LEN, RX_CHUNK_SIZE, RX_CHUNK_DATA, RX_CHUNK_CRLF, RX_TRAILER, RX_EOF, RX_DONE };
struct http_rx {
    int state, status;
    long long left;
    struct dbuf body;
};

enum { POLL_GET, POLL_ACK };

struct conn {
    bool is_pub;
    int fd, port;
    bool want_out;
    struct consumer *k; /* a consumer's connection */
    struct dbuf in, out;
    struct http_rx rx;
    int poll_phase;
    int inflight;     /* requests (Redis: PUBLISH commands) waiting for their reply */
    int64_t sent_ns;  /* the request in flight: when it was written */
    int64_t rd_sent[RD_RING]; /* Redis: when each PUBLISH in flight was written, a ring in order */
    unsigned rd_head;
    long long sent_n; /* and how many measured notifications it carries */
#ifdef BENCH_HAVE_LIBPQ
    PGconn *pg;
#endif
};

struct consumer {
    int index, port;
    char name[64];
    bool is_drop;        /* the --drop consumer: its latencies are not in the figures */
    struct conn *c;      /* NULL while disconnected */
    uint8_t *seen;       /* bit n: notification n arrived */
    long long distinct, dups, warm, resets, misordered, max_n, unexpected;
    long long last_id;   /* lockstep: the last id handled (Last-Event-ID, ack) */
    long long acked;     /* lockstep poll: the last id acknowledged */
    int64_t reconnect_ns; /* > 0: connect again then */
    int64_t ack_retry_ns; /* > 0: send the refused ack again then */
    long long ack_refused;
    int64_t lat_sum_ns;   /* its deliveries' latencies: the mean per consumer tells servers apart */
    long long ev_id;     /* the SSE event being read */
    char ev_type[32];
    struct dbuf ev_data;
};

static int epfd;
static struct consumer *cons;
static struct conn *pubs[MAX_PUB_CONNS];
static int npubs;
static long long cap_n;      /* n goes from 0 to cap_n - 1 */
static long long published;  /* measured notifications sent (n = 0 .. published - 1) */
static long long replied;    /* measured notifications the server confirmed */
static long long warm_sent, late;
static int64_t last_rx_ns, drop_lat_max_ns;
static struct lats lat, pub_lat;

static const char *
sys_name(void)
{
    return opt.system == SYS_LOCKSTEP ? "lockstep" : opt.system == SYS_REDIS ? "redis" : "pg";
}

/* ---------------------------------------------------------------- sockets */

static void
ep_set(struct conn *c, int fd, bool out)
{
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev) < 0 && epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        bench_die("epoll_ctl: %s", strerror(errno));
    c->want_out = out;
}

/* A blocking TCP socket connected to 127.0.0.1:port, Nagle off. On loopback the connect is over
 * at once (or refused at once). */
static int
tcp_connect(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) bench_die("socket: %s", strerror(errno));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        bench_die("connect 127.0.0.1:%d: %s", port, strerror(errno));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* A connection of the loop: tcp_connect's socket, non-blocking, registered. */
static struct conn *
conn_open(int port, bool is_pub)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c) bench_die("out of memory");
    c->is_pub = is_pub;
    c->port = port;
    c->fd = tcp_connect(port);
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    ep_set(c, c->fd, false);
    return c;
}

static void
conn_free(struct conn *c)
{
    if (!c) return;
#ifdef BENCH_HAVE_LIBPQ
    if (c->pg) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, PQsocket(c->pg), NULL);
        PQfinish(c->pg);
        c->fd = -1;
    }
#endif
    if (c->fd >= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    free(c->in.p);
    free(c->out.p);
    free(c->rx.body.p);
    free(c);
}

/* Writes what it can now and keeps the rest for EPOLLOUT. A write error is left for the read
 * side to see (epoll reports it as readable: the read gets the error or EOF). */
static void
conn_send(struct conn *c, const char *p, size_t n)
{
    ssize_t w = 0;
    if (c->out.len == 0) {
        w = write(c->fd, p, n);
        if (w < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) return;
            w = 0;
        }
    }
    if ((size_t)w < n) {
        dbuf_add(&c->out, p + w, n - (size_t)w);
        if (!c->want_out) ep_set(c, c->fd, true);
    }
}

static void
conn_flush(struct conn *c)
{
    ssize_t w;
    if (c->out.len) {
        w = write(c->fd, c->out.p, c->out.len);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            c->out.len = 0;
        } else {
            dbuf_consume(&c->out, (size_t)w);
        }
    }
    if (c->out.len == 0) ep_set(c, c->fd, false);
}

/* One read into c->in: >0 bytes read, 0 EOF or error, -1 nothing to read now. */
static ssize_t
conn_read(struct conn *c)
{
    ssize_t r;
    dbuf_reserve(&c->in, 65536);
    r = read(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len - 1);
    if (r < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -1 : 0;
    c->in.len += (size_t)r;
    c->in.p[c->in.len] = '\0';
    return r;
}

/* ---------------------------------------------------------------- payloads */

/* The integer after "key": in s (JSON text; NUL-terminated). */
static bool
json_int(const char *s, const char *key, long long *out)
{
    char pat[16];
    const char *p;
    char *end;
    snprintf(pat, sizeof pat, "\"%s\"", key);
    if (!(p = strstr(s, pat))) return false;
    p += strlen(pat);
    while (*p == ' ') p++;
    if (*p++ != ':') return false;
    errno = 0;
    *out = strtoll(p, &end, 10);
    return end != p && !errno;
}

static int
payload_fmt(char *buf, size_t cap, long long n, int64_t t)
{
    return snprintf(buf, cap, "{\"n\":%lld,\"t\":%lld}", n, (long long)t);
}

/* ---------------------------------------------------------------- delivery */

static void
deliver(struct consumer *k, long long n, long long t, int64_t now)
{
    if (n < 0) {
        k->warm++;
        return;
    }
    if (n >= published) bench_die("consumer %s received n=%lld, never published", k->name, n);
    last_rx_ns = now;
    if (k->seen[n >> 3] & (1u << (n & 7))) {
        k->dups++;
        return;
    }
    k->seen[n >> 3] |= (uint8_t)(1u << (n & 7));
    k->distinct++;
    if (n < k->max_n) k->misordered++;
    else k->max_n = n;
    if (k->is_drop) {
        if (now - t > drop_lat_max_ns) drop_lat_max_ns = now - t;
    } else {
        lats_add(&lat, (double)(now - t) / 1e6);
    }
    k->lat_sum_ns += now - t;
}

/* The payload {"n":..,"t":..} of one notification (found inside the SSE data, or alone). */
static void
deliver_text(struct consumer *k, const char *json, int64_t now)
{
    long long n, t;
    if (!json_int(json, "n", &n) || !json_int(json, "t", &t))
        bench_die("consumer %s: a notification without n and t: %.200s", k->name, json);
    deliver(k, n, t, now);
}

static void sub_start(struct consumer *k);

static void
sub_close(struct consumer *k)
{
    conn_free(k->c);
    k->c = NULL;
    k->ack_retry_ns = 0;
    k->ev_data.len = 0;
    k->ev_id = 0;
    k->ev_type[0] = '\0';
}

/* The server ended a consumer's connection: it comes back 50 ms later, like any client would. */
static void
sub_lost(struct consumer *k, const char *why)
{
    k->unexpected++;
    fprintf(stderr, "consumer %s: connection lost (%s): reconnecting\n", k->name, why);
    sub_close(k);
    k->reconnect_ns = now_ns() + 50000000;
}

/* ---------------------------------------------------------------- HTTP responses */

static void
http_rx_reset(struct http_rx *rx)
{
    rx->state = RX_HEAD;
    rx->status = 0;
    rx->left = 0;
    rx->body.len = 0;
    if (rx->body.p) rx->body.p[0] = '\0';
}

static void
http_head(struct http_rx *rx, const char *p, size_t n)
{
    const char *line = p, *end = p + n;
    bool chunked = false;
    long long len = -1;
    if (sscanf(p, "HTTP/1.%*d %d", &rx->status) != 1) rx->status = -1;
    while (line < end) {
        const char *eol = memmem(line, (size_t)(end - line), "\r\n", 2);
        if (!eol) eol = end;
        if (eol - line > 15 && !strncasecmp(line, "content-length:", 15))
            len = strtoll(line + 15, NULL, 10);
        else if (eol - line > 18 && !strncasecmp(line, "transfer-encoding:", 18) &&
                 memmem(line, (size_t)(eol - line), "chunked", 7))
            chunked = true;
        line = eol + 2;
    }
    if (chunked) rx->state = RX_CHUNK_SIZE;
    else if (len > 0) rx->state = RX_LEN, rx->left = len;
    else if (len == 0) rx->state = RX_DONE;
    else rx->state = RX_EOF;
}

/* Moves what it can of in into rx (the body de-chunked into rx->body): 1 when a response is
 * complete, 0 when it needs more bytes, -1 on a protocol error. */
static int
http_rx_run(struct http_rx *rx, struct dbuf *in)
{
    size_t off = 0;
    int rc = 0;
    while (rc == 0) {
        const char *p = in->p + off, *e;
        size_t avail = in->len - off, take;
        switch (rx->state) {
        case RX_HEAD:
            if (!(e = memmem(p, avail, "\r\n\r\n", 4))) {
                if (avail > HEAD_MAX) rc = -1;
                goto out;
            }
            http_head(rx, p, (size_t)(e - p) + 2);
            off += (size_t)(e - p) + 4;
            break;
        case RX_LEN:
        case RX_CHUNK_DATA:
            take = avail < (size_t)rx->left ? avail : (size_t)rx->left;
            dbuf_add(&rx->body, p, take);
            off += take;
            rx->left -= (long long)take;
            if (rx->left > 0) goto out;
            rx->state = rx->state == RX_LEN ? RX_DONE : RX_CHUNK_CRLF;
            break;
        case RX_CHUNK_SIZE:
            if (!(e = memmem(p, avail, "\r\n", 2))) goto out;
            rx->left = strtoll(p, NULL, 16);
            off += (size_t)(e - p) + 2;
            if (rx->left < 0) rc = -1;
            rx->state = rx->left ? RX_CHUNK_DATA : RX_TRAILER;
            break;
        case RX_CHUNK_CRLF:
            if (avail < 2) goto out;
            if (memcmp(p, "\r\n", 2)) rc = -1;
            off += 2;
            rx->state = RX_CHUNK_SIZE;
            break;
        case RX_TRAILER:
            if (!(e = memmem(p, avail, "\r\n", 2))) goto out;
            off += (size_t)(e - p) + 2;
            if (e == p) rx->state = RX_DONE;
            break;
        case RX_EOF:
            dbuf_add(&rx->body, p, avail);
            off += avail;
            goto out;
        case RX_DONE:
            rc = 1;
            break;
        }
    }
out:
    dbuf_consume(in, off);
    return rc;
}

/* ---------------------------------------------------------------- lockstep consumers */

static void
ls_sub_request(struct consumer *k)
{
    char req[1024];
    int n;
    if (opt.read == READ_SSE) {
        char last[64] = "";
        if (k->last_id > 0) snprintf(last, sizeof last, "Last-Event-ID: %lld\r\n", k->last_id);
        n = snprintf(req, sizeof req,
                     "GET /v1/events?consumer=%s&channel=%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                     "Accept: text/event-stream\r\n%s\r\n",
                     k->name, opt.channel, k->port, last);
    } else if (k->c->poll_phase == POLL_GET) {
        n = snprintf(req, sizeof req,
                     "GET /v1/notifications?consumer=%s&channel=%s&limit=1000&wait_ms=25000 HTTP/1.1\r\n"
                     "Host: 127.0.0.1:%d\r\n\r\n",
                     k->name, opt.channel, k->port);
    } else {
        n = snprintf(req, sizeof req,
                     "POST /v1/consumers/%s/ack?id=%lld HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                     "Content-Length: 0\r\n\r\n",
                     k->name, k->last_id, k->port);
    }
    conn_send(k->c, req, (size_t)n);
}

/* Dispatches the SSE event read so far (a blank line ended it). */
static void
sse_dispatch(struct consumer *k, int64_t now)
{
    const char *type = k->ev_type[0] ? k->ev_type : "message";
    if (k->ev_data.len == 0 && !k->ev_type[0]) return;
    if (!strcmp(type, "notification") || !strcmp(type, "message")) {
        long long id;
        if (k->ev_id <= 0 && json_int(k->ev_data.p, "id", &id)) k->ev_id = id;
        if (k->ev_id > 0 && k->ev_id <= k->last_id) k->dups++; /* at least once: seen */
        else deliver_text(k, k->ev_data.p, now);
    } else if (!strcmp(type, "reset")) {
        k->resets++;
    } else if (!strcmp(type, "error")) {
        bench_die("consumer %s: error event: %.300s", k->name, k->ev_data.p ? k->ev_data.p : "");
    }
    if (k->ev_id > k->last_id) k->last_id = k->ev_id;
    k->ev_data.len = 0;
    if (k->ev_data.p) k->ev_data.p[0] = '\0';
    k->ev_id = 0;
    k->ev_type[0] = '\0';
}

/* Every complete line of the SSE stream decoded so far. */
static void
sse_feed(struct consumer *k, int64_t now)
{
    struct dbuf *b = &k->c->rx.body;
    size_t off = 0;
    char *nl;
    while (off < b->len && (nl = memchr(b->p + off, '\n', b->len - off))) {
        char *line = b->p + off, *val;
        size_t len = (size_t)(nl - line);
        off += len + 1;
        if (len && line[len - 1] == '\r') len--;
        line[len] = '\0';
        if (len == 0) {
            sse_dispatch(k, now);
            continue;
        }
        if (line[0] == ':') continue; /* a comment: ": ping" */
        if ((val = strchr(line, ':'))) {
            *val++ = '\0';
            if (*val == ' ') val++;
        } else {
            val = line + len;
        }
        if (!strcmp(line, "id")) {
            k->ev_id = strtoll(val, NULL, 10);
        } else if (!strcmp(line, "event")) {
            snprintf(k->ev_type, sizeof k->ev_type, "%s", val);
        } else if (!strcmp(line, "data")) {
            if (k->ev_data.len) dbuf_add(&k->ev_data, "\n", 1);
            dbuf_add(&k->ev_data, val, strlen(val));
        }
    }
    dbuf_consume(b, off);
}

/* A page of GET /v1/notifications: its notifications, then the ack of "next" (or the next GET). */
static void
poll_page(struct consumer *k, int64_t now)
{
    json_error_t jerr;
    json_t *root = json_loadb(k->c->rx.body.p, k->c->rx.body.len, 0, &jerr), *arr, *it;
    size_t i;
    long long next;
    if (!root) bench_die("consumer %s: the page is not JSON: %s", k->name, jerr.text);
    arr = json_object_get(root, "notifications");
    if (!json_is_array(arr)) bench_die("consumer %s: a page without notifications", k->name);
    json_array_foreach(arr, i, it) {
        json_t *p = json_object_get(it, "payload"), *n = json_object_get(p, "n"), *t = json_object_get(p, "t");
        long long id = json_integer_value(json_object_get(it, "id"));
        if (id > 0 && id <= k->last_id) {
            k->dups++;
            continue;
        }
        if (!json_is_integer(n) || !json_is_integer(t))
            bench_die("consumer %s: a notification without n and t (id %lld)", k->name, id);
        deliver(k, json_integer_value(n), json_integer_value(t), now);
        if (id > k->last_id) k->last_id = id;
    }
    if (json_object_get(root, "reset")) k->resets++;
    next = json_integer_value(json_object_get(root, "next"));
    if (next > k->last_id) k->last_id = next;
    json_decref(root);
    k->c->poll_phase = k->last_id > k->acked ? POLL_ACK : POLL_GET;
    ls_sub_request(k);
}

/* An ack refused as "beyond this server's seq" although the id came from this server's own page:
 * the page was read (on a reader thread) before the loop counted the commit it saw. Counted, and
 * sent again 1 ms later; any other refusal ends the run. */
static bool
ack_refused(struct consumer *k)
{
    struct conn *c = k->c;
    if (c->poll_phase != POLL_ACK || c->rx.status != 400 || !c->rx.body.p ||
        !strstr(c->rx.body.p, "beyond this server's seq"))
        return false;
    k->ack_refused++;
    if (k->ack_refused == 1)
        fprintf(stderr, "consumer %s: ack of %lld refused: %.200s\n", k->name, k->last_id, c->rx.body.p);
    k->ack_retry_ns = now_ns() + 1000000;
    http_rx_reset(&c->rx);
    return true;
}

static void
ls_sub_input(struct consumer *k, int64_t now)
{
    struct conn *c = k->c;
    int rc;
    while ((rc = http_rx_run(&c->rx, &c->in)) != 0 || opt.read == READ_SSE) {
        if (rc < 0) bench_die("consumer %s: malformed HTTP from port %d", k->name, k->port);
        if (c->rx.state != RX_HEAD && c->rx.status != 200) {
            if (rc == 0) return; /* the error's body is on its way */
            if (ack_refused(k)) continue;
            bench_die("consumer %s: HTTP %d: %.300s", k->name, c->rx.status, c->rx.body.p ? c->rx.body.p : "");
        }
        if (opt.read == READ_SSE) {
            sse_feed(k, now);
            if (rc == 1) sub_lost(k, "the server ended the event stream");
            return;
        }
        if (c->poll_phase == POLL_GET) {
            poll_page(k, now);
        } else {
            k->acked = k->last_id;
            c->poll_phase = POLL_GET;
            ls_sub_request(k);
        }
        http_rx_reset(&c->rx);
    }
}

/* DELETE /v1/consumers/NAME of every consumer, after the run: a consumer left behind would cost
 * the next runs (a server counts every consumer's backlog, up to 100,000, every few seconds).
 * Returns how many were not deleted. */
static int
ls_forget_consumers(void)
{
    int failed = 0;
    for (int i = 0; i < opt.consumers; i++) {
        struct consumer *k = &cons[i];
        struct http_rx rx = {0};
        struct dbuf in = {0};
        struct timeval tv = {.tv_sec = 5};
        char req[256];
        int fd, n, rc = 0;
        ssize_t r;
        sub_close(k);
        fd = tcp_connect(k->port);
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        n = snprintf(req, sizeof req, "DELETE /v1/consumers/%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                                      "Connection: close\r\n\r\n", k->name, k->port);
        if (write(fd, req, (size_t)n) == n) {
            while (rc == 0) {
                dbuf_reserve(&in, 4096);
                if ((r = read(fd, in.p + in.len, in.cap - in.len - 1)) <= 0) break;
                in.len += (size_t)r;
                in.p[in.len] = '\0';
                rc = http_rx_run(&rx, &in);
            }
        }
        if (rc != 1 || rx.status / 100 != 2) failed++;
        close(fd);
        free(in.p);
        free(rx.body.p);
    }
    return failed;
}

/* ---------------------------------------------------------------- Redis (RESP) */

struct resp_val {
    char type;
    const char *s;
    long long len; /* bulk length, or the integer */
};

/* One RESP value at p: its size in bytes, 0 when incomplete, -1 when malformed. An array's
 * elements (scalars only: pub/sub sends no deeper ones) go to items. */
static long
resp_parse(const char *p, const char *end, struct resp_val *v, struct resp_val *items, int max, int *nitems)
{
    const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2), *q;
    long long num;
    long used;
    if (!eol) return 0;
    v->type = *p;
    v->s = p + 1;
    v->len = eol - p - 1;
    q = eol + 2;
    switch (*p) {
    case '+':
    case '-':
        return q - p;
    case ':':
        v->len = strtoll(p + 1, NULL, 10);
        return q - p;
    case '$':
        num = strtoll(p + 1, NULL, 10);
        if (num < 0) return q - p; /* null */
        if (end - q < num + 2) return 0;
        v->s = q;
        v->len = num;
        return q + num + 2 - p;
    case '*':
        num = strtoll(p + 1, NULL, 10);
        *nitems = 0;
        for (long long i = 0; i < num; i++) {
            struct resp_val tmp, *dst = i < max ? &items[i] : &tmp;
            int dummy;
            if (q >= end) return 0;
            if (*q == '*') return -1;
            used = resp_parse(q, end, dst, NULL, 0, &dummy);
            if (used <= 0) return used;
            q += used;
            if (i < max) *nitems = (int)i + 1;
        }
        return q - p;
    }
    return -1;
}

static void
resp_send(struct conn *c, int argc, const char **argv)
{
    struct dbuf b = {0};
    dbuf_printf(&b, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++) dbuf_printf(&b, "$%zu\r\n%s\r\n", strlen(argv[i]), argv[i]);
    conn_send(c, b.p, b.len);
    free(b.p);
}

static void
rd_sub_input(struct consumer *k, int64_t now)
{
    struct conn *c = k->c;
    size_t off = 0;
    long used;
    struct resp_val v, it[3];
    int n;
    while (off < c->in.len && (used = resp_parse(c->in.p + off, c->in.p + c->in.len, &v, it, 3, &n)) != 0) {
        if (used < 0) bench_die("consumer %s: malformed RESP", k->name);
        off += (size_t)used;
        if (v.type == '-') bench_die("consumer %s: redis error %.*s", k->name, (int)v.len, v.s);
        if (v.type == '*' && n == 3 && it[0].len == 7 && !memcmp(it[0].s, "message", 7)) {
            char payload[256];
            snprintf(payload, sizeof payload, "%.*s", (int)it[2].len, it[2].s);
            deliver_text(k, payload, now);
        }
    }
    dbuf_consume(&c->in, off);
}

/* ---------------------------------------------------------------- consumers: (re)connecting */

#ifdef BENCH_HAVE_LIBPQ
static PGconn *
pg_connect(int port)
{
    char info[256];
    PGconn *pg;
    snprintf(info, sizeof info, "host=127.0.0.1 port=%d dbname=%s user=%s connect_timeout=10",
             port, opt.pg_db, opt.pg_user);
    pg = PQconnectdb(info);
    if (PQstatus(pg) != CONNECTION_OK) bench_die("postgresql on port %d: %s", port, PQerrorMessage(pg));
    return pg;
}

static struct conn *
pg_conn(PGconn *pg, int port, bool is_pub)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c) bench_die("out of memory");
    c->pg = pg;
    c->is_pub = is_pub;
    c->port = port;
    c->fd = PQsocket(pg);
    if (PQsetnonblocking(pg, 1) != 0) bench_die("PQsetnonblocking: %s", PQerrorMessage(pg));
    ep_set(c, c->fd, false);
    return c;
}
#endif

static void
sub_start(struct consumer *k)
{
    k->reconnect_ns = 0;
    if (opt.system == SYS_LOCKSTEP) {
        k->c = conn_open(k->port, false);
        k->c->poll_phase = POLL_GET;
        ls_sub_request(k);
    } else if (opt.system == SYS_REDIS) {
        const char *argv[] = {"SUBSCRIBE", opt.channel};
        k->c = conn_open(k->port, false);
        resp_send(k->c, 2, argv);
    } else {
#ifdef BENCH_HAVE_LIBPQ
        char q[128];
        PGconn *pg = pg_connect(k->port);
        PGresult *r;
        snprintf(q, sizeof q, "LISTEN %s", opt.channel);
        r = PQexec(pg, q);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) bench_die("LISTEN: %s", PQerrorMessage(pg));
        PQclear(r);
        k->c = pg_conn(pg, k->port, false);
#endif
    }
    k->c->k = k;
}

static void
sub_input(struct consumer *k)
{
    int64_t now;
#ifdef BENCH_HAVE_LIBPQ
    if (k->c->pg) {
        PGnotify *nt;
        if (!PQconsumeInput(k->c->pg)) {
            sub_lost(k, PQerrorMessage(k->c->pg));
            return;
        }
        now = now_ns();
        while ((nt = PQnotifies(k->c->pg))) {
            deliver_text(k, nt->extra, now);
            PQfreemem(nt);
        }
        return;
    }
#endif
    ssize_t r = conn_read(k->c);
    if (r < 0) return;
    now = now_ns(); /* the receipt: right after read() returned */
    if (r == 0) {
        sub_lost(k, "EOF");
        return;
    }
    if (opt.system == SYS_LOCKSTEP) ls_sub_input(k, now);
    else rd_sub_input(k, now);
}

/* ---------------------------------------------------------------- publishing */

static struct conn *
pub_open(void)
{
    struct conn *c;
    if (opt.system == SYS_PG) {
#ifdef BENCH_HAVE_LIBPQ
        c = pg_conn(pg_connect(opt.pub_port), opt.pub_port, true);
#else
        bench_die("built without libpq");
#endif
    } else {
        c = conn_open(opt.pub_port, true);
    }
    pubs[npubs++] = c;
    return c;
}

/* An idle publisher connection (a new one while there are fewer than --pub-conns), or NULL.
 * Redis takes every PUBLISH on one connection: its replies come back in order. */
static struct conn *
pub_idle(void)
{
    if (opt.system == SYS_REDIS) return npubs ? pubs[0] : pub_open();
    for (int i = 0; i < npubs; i++)
        if (pubs[i]->inflight == 0) return pubs[i];
    return npubs < opt.pub_conns ? pub_open() : NULL;
}

/* Publishes nn notifications n0, n0+1, ... (n0 < 0: one warm-up notification) on c. The time in
 * each payload is taken right before the request is written. */
static void
pub_send(struct conn *c, long long n0, long long nn)
{
    char one[96];
    int64_t t = now_ns();
    c->sent_ns = t;
    c->sent_n = n0 < 0 ? 0 : nn;
    c->inflight++;
    if (opt.system == SYS_LOCKSTEP) {
        struct dbuf body = {0}, req = {0};
        for (long long i = 0; i < nn; i++) {
            payload_fmt(one, sizeof one, n0 + i, t);
            dbuf_printf(&body, "%s{\"channel\":\"%s\",\"payload\":%s}", i ? "," : nn > 1 ? "[" : "",
                        opt.channel, one);
        }
        if (nn > 1) dbuf_add(&body, "]", 1);
        dbuf_printf(&req, "POST /v1/notify HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                          "Content-Length: %zu\r\n\r\n%s", opt.pub_port, body.len, body.p);
        conn_send(c, req.p, req.len);
        free(body.p);
        free(req.p);
    } else if (opt.system == SYS_REDIS) {
        const char *argv[] = {"PUBLISH", opt.channel, one};
        if (c->inflight > RD_RING) bench_die("redis: over %d PUBLISH commands waiting for their reply", RD_RING);
        c->rd_sent[(c->rd_head + (unsigned)c->inflight - 1) % RD_RING] = n0 < 0 ? -1 : t;
        payload_fmt(one, sizeof one, n0, t);
        resp_send(c, 3, argv);
    } else {
#ifdef BENCH_HAVE_LIBPQ
        char q[192];
        payload_fmt(one, sizeof one, n0, t);
        snprintf(q, sizeof q, "NOTIFY %s, '%s'", opt.channel, one);
        if (!PQsendQuery(c->pg, q)) bench_die("NOTIFY: %s", PQerrorMessage(c->pg));
        if (PQflush(c->pg) == 1) ep_set(c, c->fd, true);
#endif
    }
    if (n0 >= 0) published += nn;
}

static void
pub_done(struct conn *c, int64_t now)
{
    c->inflight--;
    replied += c->sent_n;
    if (c->sent_n && opt.system != SYS_REDIS) lats_add(&pub_lat, (double)(now - c->sent_ns) / 1e6);
    c->sent_n = 0;
}

static void
pub_input(struct conn *c)
{
    int64_t now;
#ifdef BENCH_HAVE_LIBPQ
    if (c->pg) {
        PGresult *r;
        if (!PQconsumeInput(c->pg)) bench_die("publisher: %s", PQerrorMessage(c->pg));
        now = now_ns();
        while (c->inflight && !PQisBusy(c->pg)) {
            while ((r = PQgetResult(c->pg))) {
                if (PQresultStatus(r) != PGRES_COMMAND_OK) bench_die("NOTIFY: %s", PQresultErrorMessage(r));
                PQclear(r);
            }
            pub_done(c, now);
        }
        return;
    }
#endif
    ssize_t r = conn_read(c);
    if (r < 0) return;
    now = now_ns();
    if (r == 0) {
        if (c->inflight) bench_die("publisher: port %d closed the connection with a request in flight", c->port);
        for (int i = 0; i < npubs; i++) /* an idle keep-alive connection the server closed */
            if (pubs[i] == c) pubs[i] = pubs[--npubs];
        conn_free(c);
        return;
    }
    if (opt.system == SYS_REDIS) {
        size_t off = 0;
        long used;
        struct resp_val v;
        int n;
        while (off < c->in.len && (used = resp_parse(c->in.p + off, c->in.p + c->in.len, &v, NULL, 0, &n)) != 0) {
            if (used < 0 || v.type != ':') bench_die("PUBLISH: unexpected reply %.80s", c->in.p + off);
            off += (size_t)used;
            if (c->rd_sent[c->rd_head] >= 0) lats_add(&pub_lat, (double)(now - c->rd_sent[c->rd_head]) / 1e6);
            c->rd_head = (c->rd_head + 1) % RD_RING;
            c->inflight--;
        }
        dbuf_consume(&c->in, off);
        return;
    }
    int rc;
    while ((rc = http_rx_run(&c->rx, &c->in)) == 1) {
        if (c->rx.status != 200 || !strstr(c->rx.body.p ? c->rx.body.p : "", "\"ids\""))
            bench_die("POST /v1/notify: HTTP %d: %.300s", c->rx.status, c->rx.body.p ? c->rx.body.p : "");
        pub_done(c, now);
        http_rx_reset(&c->rx);
    }
    if (rc < 0) bench_die("publisher: malformed HTTP");
}

/* Requests (Redis: PUBLISH commands) in flight on all the publisher connections. */
static int
pubs_inflight(void)
{
    int n = 0;
    for (int i = 0; i < npubs; i++) n += pubs[i]->inflight;
    return n;
}

/* ---------------------------------------------------------------- CPU */

static double
proc_cpu(int pid)
{
    char path[64], buf[2048], *p;
    unsigned long long ut, st;
    FILE *f;
    size_t n;
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    if (!(f = fopen(path, "r"))) return -1;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* after "(comm) ": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (!(p = strrchr(buf, ')')) ||
        sscanf(p + 2, "%*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* ---------------------------------------------------------------- the run */

static bool
consumer_complete(const struct consumer *k)
{
    return k->distinct == published;
}

static void
ports_parse(const char *v)
{
    char *copy = strdup(v ? v : ""), *save = NULL, *tok;
    for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (opt.nsub_ports == MAX_PORTS) bench_die("--sub: at most %d ports", MAX_PORTS);
        opt.sub_ports[opt.nsub_ports++] = (int)bench_num("--sub", tok, 1, 65535);
    }
    free(copy);
}

static void
usage(void)
{
    fprintf(stderr,
            "usage: bench_notify --system lockstep|redis|pg --pub PORT --sub PORT[,PORT...]\n"
            "  [--consumers N (one per --sub port)] [--read sse|poll] [--count 2000] [--rate 500]\n"
            "  [--rate 0 --seconds 10 --pub-conns 8 --batch 1] [--drop I --drop-at S --drop-for 2]\n"
            "  [--cpu-pid PID]... [--drain 20] [--quiet 2] [--time-limit 120] [--tag NAME]\n"
            "  [--channel bench] [--pg-user postgres] [--pg-db postgres]\n");
#ifndef BENCH_HAVE_LIBPQ
    fprintf(stderr, "(built without libpq: no --system pg)\n");
#endif
    exit(2);
}

static void
options(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help")) usage();
        if (!v) bench_die("%s wants a value", a);
        i++;
        if (!strcmp(a, "--system")) {
            opt.system = !strcmp(v, "lockstep") ? SYS_LOCKSTEP : !strcmp(v, "redis") ? SYS_REDIS
                         : !strcmp(v, "pg")     ? SYS_PG : -1;
            if (opt.system < 0) bench_die("--system: lockstep, redis or pg");
        } else if (!strcmp(a, "--read")) {
            if (strcmp(v, "sse") && strcmp(v, "poll")) bench_die("--read: sse or poll");
            opt.read = !strcmp(v, "sse") ? READ_SSE : READ_POLL;
        } else if (!strcmp(a, "--pub")) opt.pub_port = (int)bench_num(a, v, 1, 65535);
        else if (!strcmp(a, "--sub")) ports_parse(v);
        else if (!strcmp(a, "--consumers")) opt.consumers = (int)bench_num(a, v, 1, 10000);
        else if (!strcmp(a, "--count")) opt.count = bench_num(a, v, 1, 100000000);
        else if (!strcmp(a, "--rate")) opt.rate = bench_dbl(a, v, 0, 1e6);
        else if (!strcmp(a, "--seconds")) opt.seconds = bench_dbl(a, v, 0.1, 3600);
        else if (!strcmp(a, "--pub-conns")) opt.pub_conns = (int)bench_num(a, v, 1, MAX_PUB_CONNS);
        else if (!strcmp(a, "--batch")) opt.batch = (int)bench_num(a, v, 1, 1000);
        else if (!strcmp(a, "--drop")) opt.drop = (int)bench_num(a, v, 0, 9999);
        else if (!strcmp(a, "--drop-at")) opt.drop_at = bench_dbl(a, v, 0, 3600);
        else if (!strcmp(a, "--drop-for")) opt.drop_for = bench_dbl(a, v, 0, 3600);
        else if (!strcmp(a, "--cpu-pid")) {
            if (opt.ncpu == MAX_PORTS) bench_die("--cpu-pid: at most %d", MAX_PORTS);
            opt.cpu_pids[opt.ncpu++] = (int)bench_num(a, v, 1, 1 << 30);
        } else if (!strcmp(a, "--drain")) opt.drain = bench_dbl(a, v, 0, 3600);
        else if (!strcmp(a, "--quiet")) opt.quiet = bench_dbl(a, v, 0.1, 3600);
        else if (!strcmp(a, "--time-limit")) opt.time_limit = bench_dbl(a, v, 1, 86400);
        else if (!strcmp(a, "--tag")) snprintf(opt.tag, sizeof opt.tag, "%s", v);
        else if (!strcmp(a, "--channel")) opt.channel = v;
        else if (!strcmp(a, "--pg-user")) opt.pg_user = v;
        else if (!strcmp(a, "--pg-db")) opt.pg_db = v;
        else bench_die("unknown option %s (--help)", a);
    }
    if (opt.system < 0 || !opt.pub_port || !opt.nsub_ports) usage();
#ifndef BENCH_HAVE_LIBPQ
    if (opt.system == SYS_PG) bench_die("--system pg: this program was built without libpq (libpq-dev)");
#endif
    if (!opt.consumers) opt.consumers = opt.nsub_ports;
    if (opt.drop >= opt.consumers) bench_die("--drop %d: there are %d consumers", opt.drop, opt.consumers);
    if (opt.drop >= 0 && opt.drop_at < 0) /* centred in the run */
        opt.drop_at = opt.rate > 0 ? ((double)opt.count / opt.rate - opt.drop_for) / 2 : (opt.seconds - opt.drop_for) / 2;
    if (opt.drop_at < 0) opt.drop_at = 0;
    if (!opt.tag[0]) snprintf(opt.tag, sizeof opt.tag, "nb%d", (int)getpid());
    if (opt.system != SYS_LOCKSTEP) opt.batch = 1;
    if (opt.system == SYS_REDIS) opt.pub_conns = 1;
}

static double cpu0[MAX_PORTS];

/* CPU microseconds per notification since cpu0: the first --cpu-pid, and the others' mean. */
static double
cpu_per_notification(double *others)
{
    double sum = 0, mine = -1;
    int n = 0;
    for (int i = 0; i < opt.ncpu; i++) {
        double c = proc_cpu(opt.cpu_pids[i]);
        if (c < 0 || cpu0[i] < 0 || published == 0) continue;
        if (i == 0) mine = (c - cpu0[0]) * 1e6 / (double)published;
        else sum += (c - cpu0[i]) * 1e6 / (double)published, n++;
    }
    *others = n ? sum / n : -1;
    return mine;
}

/* epoll_wait to the nanosecond (epoll_pwait2, Linux 5.11), so that the publish schedule does
 * not slip by the rounding of a millisecond timeout; epoll_wait on older kernels. */
static int
loop_wait(struct epoll_event *evs, int max, int64_t ns)
{
    static bool old_kernel;
    if (!old_kernel) {
        struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
        int n = epoll_pwait2(epfd, evs, max, &ts, NULL);
        if (n >= 0 || errno != ENOSYS) return n;
        old_kernel = true;
    }
    return epoll_wait(epfd, evs, max, (int)((ns + 999999) / 1000000));
}

int
main(int argc, char **argv)
{
    enum { WARMUP, SETTLE_P, RUN, DRAIN } phase = WARMUP;
    int64_t t0, t_phase, t_start = 0, t_pub_end = 0, t_end, next_warm = 0, deadline, drop_ns = 0;
    bool dropped = false, timed_out = false;
    double cpu_p = -1, cpu_o = -1;
    int n_forget_failed = 0;
    double self_cpu0 = 0;

    options(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    if ((epfd = epoll_create1(EPOLL_CLOEXEC)) < 0) bench_die("epoll_create1: %s", strerror(errno));
    cap_n = opt.count; /* with --rate 0, a cap */
    if (!(cons = calloc((size_t)opt.consumers, sizeof *cons))) bench_die("out of memory");
    t0 = now_ns();
    deadline = t0 + (int64_t)(opt.time_limit * 1e9);
    for (int i = 0; i < opt.consumers; i++) {
        struct consumer *k = &cons[i];
        k->index = i;
        k->port = opt.sub_ports[i % opt.nsub_ports];
        k->is_drop = i == opt.drop;
        k->max_n = -1;
        snprintf(k->name, sizeof k->name, "%s-c%03d", opt.tag, i);
        if (!(k->seen = calloc((size_t)(cap_n / 8 + 1), 1))) bench_die("out of memory");
        sub_start(k);
    }
    t_phase = now_ns();
    for (;;) {
        struct epoll_event evs[64];
        int64_t now = now_ns(), wake = now + 10000000;
        int nev;
        if (now > deadline) {
            timed_out = true;
            fprintf(stderr, "time limit (%g s) reached\n", opt.time_limit);
            break;
        }
        if (phase == WARMUP) {
            bool all = true;
            for (int i = 0; i < opt.consumers; i++) all = all && cons[i].warm > 0;
            if (all) {
                phase = SETTLE_P;
                t_phase = now;
            } else if (now - t_phase > (int64_t)(WARM_LIMIT * 1e9)) {
                for (int i = 0; i < opt.consumers; i++)
                    if (!cons[i].warm) fprintf(stderr, "consumer %s (port %d) received nothing\n", cons[i].name, cons[i].port);
                bench_die("the consumers did not come up within %g s", WARM_LIMIT);
            } else if (now >= next_warm) {
                struct conn *c = pub_idle();
                if (c) pub_send(c, -(++warm_sent), 1);
                next_warm = now + (int64_t)(WARM_EVERY * 1e9);
            }
        }
        if (phase == SETTLE_P && now - t_phase >= (int64_t)(SETTLE * 1e9)) {
            phase = RUN;
            t_start = now_ns();
            drop_ns = t_start + (int64_t)(opt.drop_at * 1e9);
            for (int i = 0; i < opt.ncpu; i++) cpu0[i] = proc_cpu(opt.cpu_pids[i]);
            self_cpu0 = bench_cpu();
        }
        if (phase == RUN) {
            bool more;
            if (opt.rate > 0) {
                while (published < opt.count) {
                    int64_t due = t_start + (int64_t)((double)published * 1e9 / opt.rate);
                    struct conn *c;
                    now = now_ns();
                    if (due > now) {
                        if (due < wake) wake = due;
                        break;
                    }
                    if (!(c = pub_idle())) break; /* all busy: the next reply frees one */
                    if (now - due > 1000000) late++;
                    pub_send(c, published, 1);
                }
                more = published < opt.count;
            } else {
                struct conn *c;
                more = published < opt.count && now - t_start < (int64_t)(opt.seconds * 1e9);
                while (more && (c = pub_idle())) {
                    long long nn = opt.count - published < opt.batch ? opt.count - published : opt.batch;
                    pub_send(c, published, nn);
                    if (opt.system == SYS_REDIS && pubs_inflight() >= 1) break;
                }
            }
            if (opt.drop >= 0 && !dropped && now >= drop_ns) {
                struct consumer *k = &cons[opt.drop];
                dropped = true;
                sub_close(k);
                k->reconnect_ns = now + (int64_t)(opt.drop_for * 1e9);
            }
            if (!more && pubs_inflight() == 0) {
                phase = DRAIN;
                t_pub_end = now_ns();
            }
        }
        if (phase == DRAIN) {
            bool others = true, all, quiet;
            for (int i = 0; i < opt.consumers; i++)
                if (!cons[i].is_drop) others = others && consumer_complete(&cons[i]);
            all = others && (opt.drop < 0 || consumer_complete(&cons[opt.drop]));
            /* the dropped consumer, back and silent for --quiet: what it lacks is lost */
            quiet = others && opt.drop >= 0 && cons[opt.drop].c && now - last_rx_ns > (int64_t)(opt.quiet * 1e9);
            if (all || quiet || now - t_pub_end > (int64_t)(opt.drain * 1e9)) break;
        }
        for (int i = 0; i < opt.consumers; i++) {
            struct consumer *k = &cons[i];
            if (!k->c && k->reconnect_ns) {
                if (now >= k->reconnect_ns) sub_start(k);
                else if (k->reconnect_ns < wake) wake = k->reconnect_ns;
            }
            if (k->c && k->ack_retry_ns) {
                if (now >= k->ack_retry_ns) {
                    k->ack_retry_ns = 0;
                    ls_sub_request(k);
                } else if (k->ack_retry_ns < wake) {
                    wake = k->ack_retry_ns;
                }
            }
        }
        nev = loop_wait(evs, 64, wake > now ? wake - now : 0);
        if (nev < 0 && errno != EINTR) bench_die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < nev; i++) {
            struct conn *c = evs[i].data.ptr;
            if (evs[i].events & EPOLLOUT) {
#ifdef BENCH_HAVE_LIBPQ
                if (c->pg) {
                    if (PQflush(c->pg) == 0) ep_set(c, c->fd, false);
                } else
#endif
                    conn_flush(c);
            }
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                if (c->is_pub) pub_input(c); /* each may free c: epoll reports a fd once a batch */
                else sub_input(c->k);
            }
        }
    }
    t_end = now_ns();
    if (opt.ncpu) cpu_p = cpu_per_notification(&cpu_o);
    if (opt.system == SYS_LOCKSTEP && (n_forget_failed = ls_forget_consumers()))
        fprintf(stderr, "%d consumers could not be deleted (DELETE /v1/consumers/NAME)\n", n_forget_failed);

    /* ---- figures */
    long long missing = 0, dups = 0, resets = 0, unexpected = 0, misordered = 0, lost_drop = 0, dups_drop = 0;
    long long refused = 0;
    for (int i = 0; i < opt.consumers; i++) {
        struct consumer *k = &cons[i];
        if (k->is_drop) {
            lost_drop = published - k->distinct;
            dups_drop = k->dups;
        } else {
            missing += published - k->distinct;
        }
        dups += k->dups;
        resets += k->resets;
        unexpected += k->unexpected;
        misordered += k->misordered;
        refused += k->ack_refused;
    }
    double secs = (double)(t_pub_end ? t_pub_end - t_start : t_end - t_start) / 1e9;
    double e2e = (double)(t_end - t_start) / 1e9;
    size_t nlat = lat.n;
    double p50 = lats_pct(&lat, .5), p90 = lats_pct(&lat, .9), p99 = lats_pct(&lat, .99),
           p999 = lats_pct(&lat, .999), mx = lats_pct(&lat, 1);
    double pp50 = lats_pct(&pub_lat, .5), pp99 = lats_pct(&pub_lat, .99);
    printf("%s%s: %lld notifications to %d consumers in %.2f s (%.0f/s published, %.0f/s delivered to all), "
           "latency p50 %.3f p99 %.3f max %.3f ms; missing %lld, dups %lld",
           sys_name(), opt.system == SYS_LOCKSTEP ? (opt.read == READ_SSE ? " (sse)" : " (poll)") : "", published,
           opt.consumers, secs, secs > 0 ? (double)published / secs : 0, e2e > 0 ? (double)published / e2e : 0,
           p50, p99, mx, missing, dups);
    if (opt.drop >= 0) printf("; dropped consumer lost %lld (dups %lld)", lost_drop, dups_drop);
    if (cpu_p >= 0) printf("; CPU/notification %.1f us (first pid)", cpu_p);
    if (refused) printf("; %lld acks refused", refused);
    printf("\n");
    if (opt.consumers <= 16) { /* which servers are slower: the mean by consumer (= by server) */
        fprintf(stderr, "mean ms by consumer:");
        for (int i = 0; i < opt.consumers; i++)
            fprintf(stderr, " %.2f", cons[i].distinct ? (double)cons[i].lat_sum_ns / 1e6 / (double)cons[i].distinct : 0);
        fprintf(stderr, "\n");
    }
    printf("RESULT system=%s read=%s consumers=%d published=%lld replied=%lld secs=%.3f pub_rate=%.1f "
           "e2e_secs=%.3f e2e_rate=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f n_lat=%zu "
           "pub_p50_ms=%.3f pub_p99_ms=%.3f late=%lld missing=%lld lost_dropped=%lld dups_dropped=%lld "
           "drop_max_ms=%.1f dups=%lld resets=%lld misordered=%lld unexpected=%lld pub_conns=%d "
           "cpu_primary_us=%.2f cpu_other_us=%.2f self_cpu_s=%.2f drain_s=%.3f ack_refused=%lld timed_out=%d\n",
           sys_name(), opt.system == SYS_LOCKSTEP ? (opt.read == READ_SSE ? "sse" : "poll") : "-", opt.consumers,
           published, opt.system == SYS_REDIS ? published : replied, secs, secs > 0 ? (double)published / secs : 0,
           e2e, e2e > 0 ? (double)published / e2e : 0, p50, p90, p99, p999, mx, nlat, pp50, pp99, late, missing,
           lost_drop, dups_drop, (double)drop_lat_max_ns / 1e6, dups, resets, misordered, unexpected, npubs,
           cpu_p, cpu_o, bench_cpu() - self_cpu0, t_pub_end ? (double)(t_end - t_pub_end) / 1e9 : 0, refused, timed_out);
    return timed_out ? 3 : 0;
}
