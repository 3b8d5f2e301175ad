/*
 * faultproxy.c - a TCP proxy for the cluster tests that can delay, stall and cut the traffic
 * between a replica and its upstream.
 *
 *   faultproxy --listen PORT --target HOST:PORT [--control FILE] [--delay-ms N] [--stall]
 *              [--max-runtime SECONDS]
 *
 * Listens on 127.0.0.1:PORT; every accepted connection gets its own connection to the target
 * and bytes are copied both ways. Faults, as set by the flags and then by the control file:
 *
 *   delay MS    every chunk read is held MS milliseconds before it is written on (both ways)
 *   stall 0|1   while 1, nothing is read or written on any connection: the bytes stay where they
 *               are, like a network that black-holes packets; connections stay open, so only the
 *               peers' own timeouts notice (new connections are accepted and held too)
 *   refuse 0|1  while 1, new connections are accepted and closed at once
 *   cut N       when N differs from the last value seen (0 at start): every open connection is
 *               reset (RST)
 *   gen N       echoed in the log line that confirms the file was applied
 *
 * The control file holds "key value" lines and is read again whenever it changes (tests write
 * a new one and rename it over the old); after applying it the proxy logs
 * "faultproxy: control gen N applied: ...". SIGUSR1 resets every open connection, SIGUSR2
 * toggles stall, SIGTERM/SIGINT stop the proxy (exit 0). It stops by itself after
 * --max-runtime seconds (default 900) so a test that dies cannot leave it behind for long.
 *
 * Bounded: at most MAX_CONNS connections, at most QUEUE_MAX bytes queued per direction (past
 * that the proxy stops reading that side, so TCP pushes back), one poll() loop, no threads.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 64
#define CHUNK 65536
#define QUEUE_MAX (1u << 20)
#define CONTROL_POLL_MS 50

struct chunk {
    struct chunk *next;
    int64_t due_ms;
    size_t len, off;
    char data[];
};

/* One direction of a connection: bytes read from `from` wait in the queue until written to `to`. */
struct dir {
    struct chunk *head, *tail;
    size_t queued;
    int eof;      /* `from` said it sends no more */
    int shut;     /* we passed the EOF on to `to` */
    int64_t bytes;
};

struct conn {
    int used;
    long id;
    int cfd, tfd;   /* client side, target side */
    int connecting; /* the target connection is in progress */
    struct dir up;  /* client -> target */
    struct dir down; /* target -> client */
};

static struct conn conns[MAX_CONNS];
static long next_id = 1;

/* the faults in force */
static int64_t delay_ms;
static int stalled, refusing;
static long cut_gen; /* the last "cut N" seen; starts at 0 */

static volatile sig_atomic_t sig_stop, sig_cut, sig_toggle_stall;

static void
logf_(const char *fmt, ...)
{
    va_list ap;
    struct timespec ts;
    struct tm tm;
    char when[32];
    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof when, "%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03ld faultproxy: ", when, ts.tv_nsec / 1000000);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
}

static int64_t
mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
on_signal(int sig)
{
    if (sig == SIGUSR1) sig_cut = 1;
    else if (sig == SIGUSR2) sig_toggle_stall = 1;
    else sig_stop = 1;
}

static int
set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void
dir_clear(struct dir *d)
{
    while (d->head) {
        struct chunk *c = d->head;
        d->head = c->next;
        free(c);
    }
    d->tail = NULL;
    d->queued = 0;
}

/* Closes both sides; with rst, the peers see a reset rather than an orderly close. */
static void
conn_close(struct conn *c, int rst, const char *why)
{
    if (!c->used) return;
    if (rst) {
        struct linger l = {1, 0};
        setsockopt(c->cfd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        if (c->tfd >= 0) setsockopt(c->tfd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    close(c->cfd);
    if (c->tfd >= 0) close(c->tfd);
    logf_("conn %ld closed (%s): %lld bytes up, %lld bytes down", c->id, why,
          (long long)c->up.bytes, (long long)c->down.bytes);
    dir_clear(&c->up);
    dir_clear(&c->down);
    memset(c, 0, sizeof *c);
}

static void
cut_all(const char *why)
{
    int n = 0;
    for (int i = 0; i < MAX_CONNS; i++)
        if (conns[i].used) {
            conn_close(&conns[i], 1, why);
            n++;
        }
    logf_("cut: reset %d connection(s)", n);
}

/* ---------------------------------------------------------------- the control file */

static const char *control_path;
static struct stat control_st;
static int control_seen;

static void
control_check(void)
{
    struct stat st;
    FILE *f;
    char line[256];
    long gen = -1;
    if (!control_path || stat(control_path, &st) < 0) return;
    if (control_seen && st.st_ino == control_st.st_ino && st.st_size == control_st.st_size &&
        st.st_mtim.tv_sec == control_st.st_mtim.tv_sec &&
        st.st_mtim.tv_nsec == control_st.st_mtim.tv_nsec)
        return;
    if (!(f = fopen(control_path, "r"))) return;
    control_st = st;
    control_seen = 1;
    while (fgets(line, sizeof line, f)) {
        char key[32];
        long long v;
        if (sscanf(line, "%31s %lld", key, &v) != 2) continue;
        if (strcmp(key, "delay") == 0 && v >= 0 && v <= 600000) delay_ms = v;
        else if (strcmp(key, "stall") == 0) stalled = v != 0;
        else if (strcmp(key, "refuse") == 0) refusing = v != 0;
        else if (strcmp(key, "gen") == 0) gen = (long)v;
        else if (strcmp(key, "cut") == 0) {
            if (v != cut_gen) cut_all("cut by the control file");
            cut_gen = (long)v;
        }
    }
    fclose(f);
    logf_("control gen %ld applied: delay %lld stall %d refuse %d cut %ld", gen,
          (long long)delay_ms, stalled, refusing, cut_gen);
}

/* ---------------------------------------------------------------- connections */

static struct sockaddr_storage target;
static socklen_t target_len;

static void
on_accept(int lfd)
{
    struct conn *c = NULL;
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0) return;
    if (refusing) {
        logf_("refused a connection");
        close(fd);
        return;
    }
    for (int i = 0; i < MAX_CONNS; i++)
        if (!conns[i].used) {
            c = &conns[i];
            break;
        }
    if (!c || set_nonblock(fd) < 0) {
        logf_("too many connections: closing a new one");
        close(fd);
        return;
    }
    memset(c, 0, sizeof *c);
    c->used = 1;
    c->id = next_id++;
    c->cfd = fd;
    c->tfd = socket(target.ss_family, SOCK_STREAM, 0);
    if (c->tfd < 0 || set_nonblock(c->tfd) < 0) {
        conn_close(c, 0, "no socket");
        return;
    }
    {
        int one = 1;
        setsockopt(c->cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(c->tfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (connect(c->tfd, (struct sockaddr *)&target, target_len) < 0) {
        if (errno != EINPROGRESS) {
            conn_close(c, 1, strerror(errno));
            return;
        }
        c->connecting = 1;
    }
    logf_("conn %ld accepted%s", c->id, stalled ? " (stalled)" : "");
}

/* Reads what `from` has into the queue. Returns -1 when the connection must close. */
static int
dir_read(struct dir *d, int from, int64_t now)
{
    struct chunk *ch;
    ssize_t n;
    if (d->eof || d->queued >= QUEUE_MAX) return 0;
    if (!(ch = malloc(sizeof *ch + CHUNK))) return -1;
    n = read(from, ch->data, CHUNK);
    if (n < 0) {
        free(ch);
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
    }
    if (n == 0) {
        free(ch);
        d->eof = 1;
        return 0;
    }
    ch->next = NULL;
    ch->len = (size_t)n;
    ch->off = 0;
    ch->due_ms = now + delay_ms;
    /* never earlier than what is ahead of it: the order of bytes is kept */
    if (d->tail && ch->due_ms < d->tail->due_ms) ch->due_ms = d->tail->due_ms;
    if (d->tail) d->tail->next = ch;
    else d->head = ch;
    d->tail = ch;
    d->queued += (size_t)n;
    return 0;
}

/* Writes the due part of the queue to `to`. Returns -1 when the connection must close. */
static int
dir_write(struct dir *d, int to, int64_t now)
{
    while (d->head && d->head->due_ms <= now) {
        struct chunk *ch = d->head;
        ssize_t n = write(to, ch->data + ch->off, ch->len - ch->off);
        if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
        ch->off += (size_t)n;
        d->queued -= (size_t)n;
        d->bytes += n;
        if (ch->off < ch->len) return 0;
        d->head = ch->next;
        if (!d->head) d->tail = NULL;
        free(ch);
    }
    if (!d->head && d->eof && !d->shut) {
        shutdown(to, SHUT_WR);
        d->shut = 1;
    }
    return 0;
}

static int
parse_target(const char *s)
{
    char host[256];
    const char *colon = strrchr(s, ':');
    struct addrinfo hints, *res = NULL;
    if (!colon || colon == s || (size_t)(colon - s) >= sizeof host) return -1;
    snprintf(host, sizeof host, "%.*s", (int)(colon - s), s);
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0 || !res) return -1;
    memcpy(&target, res->ai_addr, res->ai_addrlen);
    target_len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static void
usage(void)
{
    fprintf(stderr, "usage: faultproxy --listen PORT --target HOST:PORT [--control FILE] "
                    "[--delay-ms N] [--stall] [--max-runtime SECONDS]\n");
}

int
main(int argc, char **argv)
{
    int port = -1, lfd, one = 1;
    int64_t max_runtime_ms = 900000, started;
    const char *target_s = NULL;
    struct sockaddr_in sin;
    struct sigaction sa;

    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--stall") == 0) {
            stalled = 1;
            continue;
        }
        if (!v) {
            usage();
            return 2;
        }
        if (strcmp(argv[i], "--listen") == 0) port = atoi(v);
        else if (strcmp(argv[i], "--target") == 0) target_s = v;
        else if (strcmp(argv[i], "--control") == 0) control_path = v;
        else if (strcmp(argv[i], "--delay-ms") == 0) delay_ms = atoll(v);
        else if (strcmp(argv[i], "--max-runtime") == 0) max_runtime_ms = atoll(v) * 1000;
        else {
            usage();
            return 2;
        }
        i++;
    }
    if (port <= 0 || port > 65535 || !target_s) {
        usage();
        return 2;
    }
    if (parse_target(target_s) < 0) {
        fprintf(stderr, "faultproxy: cannot resolve %s\n", target_s);
        return 2;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: poll() returns EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0) return 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(lfd, 64) < 0 ||
        set_nonblock(lfd) < 0) {
        fprintf(stderr, "faultproxy: cannot listen on 127.0.0.1:%d: %s\n", port, strerror(errno));
        return 1;
    }
    control_check();
    logf_("listening on 127.0.0.1:%d, forwarding to %s (delay %lld stall %d)", port, target_s,
          (long long)delay_ms, stalled);
    started = mono_now();

    while (!sig_stop) {
        struct pollfd pfd[1 + 2 * MAX_CONNS];
        int idx[1 + 2 * MAX_CONNS]; /* conn index of each pollfd (-1: the listener) */
        int np = 0, timeout = CONTROL_POLL_MS;
        int64_t now = mono_now();

        if (now - started > max_runtime_ms) {
            logf_("--max-runtime reached: stopping");
            break;
        }
        if (sig_cut) {
            sig_cut = 0;
            cut_all("SIGUSR1");
        }
        if (sig_toggle_stall) {
            sig_toggle_stall = 0;
            stalled = !stalled;
            logf_("SIGUSR2: stall %d", stalled);
        }
        control_check();

        pfd[np] = (struct pollfd){lfd, POLLIN, 0};
        idx[np++] = -1;
        for (int i = 0; i < MAX_CONNS; i++) {
            struct conn *c = &conns[i];
            short ce = 0, te = 0;
            if (!c->used) continue;
            if (c->connecting) {
                te = POLLOUT;
            } else if (!stalled) {
                if (!c->up.eof && c->up.queued < QUEUE_MAX) ce |= POLLIN;
                if (!c->down.eof && c->down.queued < QUEUE_MAX) te |= POLLIN;
                if (c->up.head && c->up.head->due_ms <= now) te |= POLLOUT;
                if (c->down.head && c->down.head->due_ms <= now) ce |= POLLOUT;
                for (int k = 0; k < 2; k++) {
                    struct dir *d = k ? &c->down : &c->up;
                    if (d->head && d->head->due_ms > now && d->head->due_ms - now < timeout)
                        timeout = (int)(d->head->due_ms - now);
                    if (!d->head && d->eof && !d->shut) timeout = 0;
                }
            }
            /* a stalled connection is left out of the poll entirely: even a hang-up waits */
            pfd[np] = (struct pollfd){stalled && !c->connecting ? -1 : c->cfd, ce, 0};
            idx[np++] = i;
            pfd[np] = (struct pollfd){stalled && !c->connecting ? -1 : c->tfd, te, 0};
            idx[np++] = i;
        }
        if (poll(pfd, (nfds_t)np, timeout) < 0) {
            if (errno == EINTR) continue;
            logf_("poll: %s", strerror(errno));
            break;
        }
        now = mono_now();
        if (pfd[0].revents & POLLIN) on_accept(lfd);
        for (int k = 1; k < np; k += 2) {
            struct conn *c = &conns[idx[k]];
            short cr = pfd[k].revents, tr = pfd[k + 1].revents;
            if (!c->used || pfd[k].fd < 0) continue; /* closed meanwhile, or stalled */
            if (c->connecting) {
                int err = 0;
                socklen_t len = sizeof err;
                if (!(tr & (POLLOUT | POLLERR | POLLHUP))) continue;
                getsockopt(c->tfd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err) {
                    logf_("conn %ld: cannot connect to %s: %s", c->id, target_s, strerror(err));
                    conn_close(c, 1, "target unreachable");
                    continue;
                }
                c->connecting = 0;
                continue;
            }
            if (stalled) continue;
            /* A hang-up without readable data (or an error) ends the connection; POLLHUP with
             * POLLIN still has bytes (or the EOF) to read first. */
            if ((cr & POLLERR) || (tr & POLLERR) || (cr & POLLNVAL) || (tr & POLLNVAL)) {
                conn_close(c, 1, "socket error");
                continue;
            }
            if ((cr & (POLLIN | POLLHUP)) && dir_read(&c->up, c->cfd, now) < 0) {
                conn_close(c, 1, "client read failed");
                continue;
            }
            if ((tr & (POLLIN | POLLHUP)) && dir_read(&c->down, c->tfd, now) < 0) {
                conn_close(c, 1, "target read failed");
                continue;
            }
            if (dir_write(&c->up, c->tfd, now) < 0) {
                conn_close(c, 1, "target write failed");
                continue;
            }
            if (dir_write(&c->down, c->cfd, now) < 0) {
                conn_close(c, 1, "client write failed");
                continue;
            }
            if (c->up.shut && c->down.shut) conn_close(c, 0, "both sides closed");
            else if ((c->up.eof && c->up.shut && (tr & POLLHUP) && !(tr & POLLIN)) ||
                     (c->down.eof && c->down.shut && (cr & POLLHUP) && !(cr & POLLIN)))
                conn_close(c, 0, "hung up");
        }
    }
    for (int i = 0; i < MAX_CONNS; i++)
        if (conns[i].used) conn_close(&conns[i], 0, "proxy stopping");
    close(lfd);
    logf_("stopped");
    return 0;
}
