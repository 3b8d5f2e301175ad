/*
 * config.c - `lockstep serve` flags and the INI config file, from one table (see config.h).
 */
#include "node/config.h"
#include "common/err.h"
#include "common/util.h"

#include <getopt.h>
#include <ini.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum opt_type { T_STR, T_INT, T_SIZE, T_DURATION, T_LIST, T_FLAG };

struct option_def {
    const char *name;
    enum opt_type type;
    size_t offset;
    const char *def;
    const char *arg;
    const char *help;
};

#define OFF(f) offsetof(struct config, f)
static const struct option_def defs[] = {
    {"data", T_STR, OFF(data), NULL, "DIR", "data directory (required)"},
    {"http", T_STR, OFF(http), "127.0.0.1:7070", "ADDR", "HTTP API address"},
    {"name", T_STR, OFF(name), NULL, "NAME", "this node's name (default: the host name)"},
    {"role", T_STR, OFF(role), "primary", "ROLE", "primary, replica or staging"},
    {"upstream", T_STR, OFF(upstream), NULL, "HOST:PORT", "the server to follow (replicas)"},
    {"listen", T_STR, OFF(listen), "127.0.0.1:7071", "ADDR", "peer (replication) address"},
    {"include", T_LIST, OFF(include), NULL, "PREFIX", "replicate only this subtree (repeatable)"},
    {"max-versions", T_INT, OFF(max_versions), "100", "N", "versions kept per item"},
    {"max-body", T_SIZE, OFF(max_body), "4G", "SIZE", "largest item body"},
    {"max-request", T_SIZE, OFF(max_request), "16M", "SIZE",
     "largest HTTP request body (larger bodies travel as upload sessions)"},
    {"sync", T_STR, OFF(sync), "full", "MODE", "full: fsync every commit; normal: at checkpoints"},
    {"log-level", T_STR, OFF(log_level), "info", "LEVEL", "debug, info, warn or error"},
    {"heartbeat-timeout", T_DURATION, OFF(heartbeat_timeout_ms), "10s", "DURATION",
     "a peer silent this long is down"},
    {"log-retention", T_STR, OFF(log_retention), "7d,1G", "AGE,SIZE",
     "keep the change log this long and at most this big"},
    {"mirror-root", T_LIST, OFF(mirror_root), NULL, "DIR",
     "mirror jobs may read and write directories under DIR only (repeatable; default: any)"},
    {"export", T_LIST, OFF(exports), NULL, "NAME=PATH",
     "serve directory PATH read-only as export NAME to mirror servers (repeatable)"},
    {"notify-retention", T_STR, OFF(notify_retention), "2d", "AGE,SIZE",
     "keep notifications this long (and within this much log)"},
    {"consumer-stall", T_DURATION, OFF(consumer_stall_ms), "60s", "DURATION",
     "a consumer with notifications waiting and no ack this long is stalled"},
    {"messenger", T_STR, OFF(messenger), NULL, "URL",
     "keep notifications and consumers in a shared database (postgres://... or sqlite:PATH)"},
    {"poll-interval", T_DURATION, OFF(poll_interval_ms), NULL, "DURATION",
     "with --messenger: how often to look for notifications a wake-up may have missed "
     "(default 1s; sqlite: 50ms)"},
    {"webhook", T_LIST, OFF(webhook), NULL, "NAME=URL[,channel=C]",
     "POST notifications to http://URL as consumer NAME (repeatable, as is channel=)"},
    {"sync-max-versions", T_INT, OFF(sync_max_versions), "0", "N",
     "versions per item a snapshot carries (0: all retained)"},
    {"snapshot-max-wal", T_SIZE, OFF(snapshot_max_wal), "256M", "SIZE",
     "drop the oldest snapshot being sent when it keeps the WAL from shrinking past this (0: never)"},
    {"compress", T_STR, OFF(compress), "zstd", "zstd|none", "compress the replication stream"},
    {"tls-cert", T_STR, OFF(tls_cert), NULL, "FILE", "TLS certificate (PEM) for both ports"},
    {"tls-key", T_STR, OFF(tls_key), NULL, "FILE", "its private key"},
    {"tls-ca", T_STR, OFF(tls_ca), NULL, "FILE",
     "CA that clients and peers must present a certificate from (mutual TLS)"},
    {"allow", T_LIST, OFF(allow), NULL, "CIDR", "accept HTTP clients only from here (repeatable)"},
    {"peer-allow", T_LIST, OFF(peer_allow), NULL, "CIDR",
     "accept downstream servers only from here (repeatable)"},
    {"upstream-token", T_STR, OFF(upstream_token), NULL, "TOKEN",
     "token (role replicate) sent to the upstream; or $LOCKSTEP_UPSTREAM_TOKEN"},
    {"insecure", T_FLAG, OFF(insecure), NULL, "",
     "allow non-loopback addresses without TLS and tokens"},
    {"replace-store", T_FLAG, OFF(replace_store), NULL, "",
     "a replica may replace a store holding another history (exported first) by its upstream's"},
    {"max-conns-per-addr", T_INT, OFF(max_conns_per_addr), "64", "N",
     "connections one address may hold open"},
    {"request-timeout", T_DURATION, OFF(request_timeout_ms), "60s", "DURATION",
     "a request must arrive whole within this long (against slow senders)"},
    {"idle-timeout", T_DURATION, OFF(idle_timeout_ms), "60s", "DURATION",
     "close idle HTTP connections after this long"},
};
#define NDEFS (sizeof defs / sizeof defs[0])

static int
set_value(struct config *c, const struct option_def *d, const char *value)
{
    char *field = (char *)c + d->offset;
    switch (d->type) {
    case T_STR: {
        char **s = (char **)field;
        char *v = strdup(value);
        if (!v) return LS_ENOMEM;
        free(*s);
        *s = v;
        return 0;
    }
    case T_LIST: {
        struct strlist *list = (struct strlist *)field;
        if (list->n >= LS_LIST_MAX) return LS_EINVAL;
        if (!(list->v[list->n] = strdup(value))) return LS_ENOMEM;
        list->n++;
        return 0;
    }
    case T_FLAG: { /* set: "yes"; unset: NULL. A bare flag or an empty value sets it. */
        char **s = (char **)field;
        static const char *const yes[] = {"", "yes", "true", "on", "1"};
        static const char *const no[] = {"no", "false", "off", "0"};
        int set = -1;
        for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
            if (strcasecmp(value ? value : "", yes[i]) == 0) set = 1;
        for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
            if (value && strcasecmp(value, no[i]) == 0) set = 0;
        char *v = set > 0 ? strdup("yes") : NULL;
        if (set < 0) return LS_EINVAL;
        if (set && !v) return LS_ENOMEM;
        free(*s);
        *s = v;
        return 0;
    }
    case T_INT: return ls_parse_i64(value, (int64_t *)field);
    case T_SIZE: return ls_parse_size(value, (uint64_t *)field);
    case T_DURATION: return ls_parse_duration_ms(value, (int64_t *)field);
    }
    return LS_EINVAL;
}

void
config_init(struct config *c)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < NDEFS; i++)
        if (defs[i].def) set_value(c, &defs[i], defs[i].def);
}

void
config_release(struct config *c)
{
    for (size_t i = 0; i < NDEFS; i++) {
        void *field = (char *)c + defs[i].offset;
        if (defs[i].type == T_STR || defs[i].type == T_FLAG) free(*(char **)field);
        if (defs[i].type == T_LIST)
            for (int k = 0; k < ((struct strlist *)field)->n; k++)
                free(((struct strlist *)field)->v[k]);
    }
    memset(c, 0, sizeof *c);
}

static const struct option_def *
find(const char *name)
{
    for (size_t i = 0; i < NDEFS; i++)
        if (strcmp(defs[i].name, name) == 0) return &defs[i];
    return NULL;
}

/*
 * The INI file. The library (inih) splits lines into key and value, drops whole-line comments
 * and cuts a value at " ;" (a ';' after a space or tab, even inside quotes: its rule). The rest
 * is done here, so that the file means what it looks like:
 *  - a UTF-8 byte order mark on the first line is skipped;
 *  - " # comment" after a value is cut like " ; comment", but not inside quotes;
 *  - a value in one pair of double or single quotes loses them ("a b" is a b);
 *  - a key given twice is an error (the repeatable ones, include, allow, peer-allow and webhook,
 *    add up);
 *  - the file has no sections: a `[server]` line is allowed (it changes nothing), any other
 *    `[section]` is an error, as are continuation lines (an indented line after a key) and
 *    lines longer than the library's line buffer (it would split them silently).
 * Every error is one line naming the file and the line; parsing stops at the first.
 */
struct ini_ctx {
    struct config *c;
    const char *file;
    FILE *fp;
    int line;        /* of the line the library is looking at */
    int indented;    /* that line starts with a space or a tab */
    int failed;      /* an error was printed: read no further */
    int any_key;     /* a key was seen: an indented line now continues it */
    int seen[NDEFS]; /* line where each key was set, 0 if not yet */
};

static void
ini_error(struct ini_ctx *x, const char *fmt, const char *a, const char *b)
{
    if (x->failed) return;
    fprintf(stderr, "lockstep: %s:%d: ", x->file, x->line);
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
    x->failed = 1;
}

/* inih's line reader (fgets-like): counts lines and looks at each before the library does. */
static char *
ini_read(char *str, int num, void *arg)
{
    struct ini_ctx *x = arg;
    char *p;
    size_t len;
    if (x->failed || !fgets(str, num, x->fp)) return NULL;
    x->line++;
    len = strlen(str);
    if (len == (size_t)num - 1 && str[len - 1] != '\n' && !feof(x->fp)) {
        char max[32];
        snprintf(max, sizeof max, "%d", num - 2);
        ini_error(x, "line longer than %s characters%s", max, "");
        return NULL;
    }
    if (x->line == 1 && memcmp(str, "\xEF\xBB\xBF", 3) == 0) memmove(str, str + 3, len - 2);
    x->indented = str[0] == ' ' || str[0] == '\t';
    for (p = str; *p == ' ' || *p == '\t'; p++) {}
    if (*p == '[') {
        char *end = strchr(p, ']');
        size_t n = end ? (size_t)(end - p - 1) : 0;
        if (!end || n != strlen("server") || strncmp(p + 1, "server", n) != 0) {
            if (end) *end = '\0';
            ini_error(x,
                      "sections are not supported (%s]): the file holds only keys, "
                      "optionally under [server]",
                      p, "");
            return NULL;
        }
        x->any_key = 0; /* an indented line after [server] is no continuation */
    }
    return str;
}

/* Cuts an inline comment and one pair of surrounding quotes from v (a copy the caller owns):
 * 0, or -1 after printing the error. */
static int
ini_value(struct ini_ctx *x, const char *key, char *v)
{
    size_t n;
    if (v[0] == '"' || v[0] == '\'') {
        char *close = strchr(v + 1, v[0]), *rest;
        if (!close) {
            ini_error(x, "'%s': the value's quote is not closed%s", key, "");
            return -1;
        }
        for (rest = close + 1; *rest == ' ' || *rest == '\t'; rest++) {}
        if (*rest && *rest != '#' && *rest != ';') {
            ini_error(x, "'%s': text after the closing quote: %s", key, rest);
            return -1;
        }
        n = (size_t)(close - v - 1);
        memmove(v, v + 1, n);
        v[n] = '\0';
        return 0;
    }
    for (char *p = v; *p; p++)
        if ((*p == '#' || *p == ';') && (p == v || p[-1] == ' ' || p[-1] == '\t')) {
            *p = '\0';
            break;
        }
    n = strlen(v);
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t')) v[--n] = '\0';
    return 0;
}

static int
ini_cb(void *arg, const char *section, const char *key, const char *value)
{
    struct ini_ctx *x = arg;
    const struct option_def *d;
    char *v = NULL;
    int ok = 0;
    (void)section; /* only [server] gets this far (ini_read) */
    if (x->failed) return 0;
    if (x->indented && x->any_key) {
        ini_error(x, "an indented line continues the value of '%s': not supported%s", key, "");
        return 0;
    }
    x->any_key = 1;
    if (!(d = find(key))) {
        ini_error(x, "unknown key '%s'%s", key, "");
        return 0;
    }
    if (d->type != T_LIST && x->seen[d - defs]) {
        char first[32];
        snprintf(first, sizeof first, "%d", x->seen[d - defs]);
        ini_error(x, "duplicate key '%s' (first set on line %s)", key, first);
        return 0;
    }
    x->seen[d - defs] = x->line;
    if (!(v = strdup(value))) {
        ini_error(x, "out of memory%s%s", "", "");
        return 0;
    }
    if (ini_value(x, key, v)) goto out;
    if (set_value(x->c, d, v)) {
        ini_error(x, "bad value for '%s': %s", key, v);
        goto out;
    }
    ok = 1;
out:
    free(v);
    return ok;
}

void
config_usage(const char *prog)
{
    printf("usage: %s serve --data DIR [options]\n\nStarts a lockstep server.\n\noptions:\n", prog);
    for (size_t i = 0; i < NDEFS; i++) {
        char left[64];
        snprintf(left, sizeof left, "--%s %s", defs[i].name, defs[i].arg);
        printf("  %-28s %s", left, defs[i].help);
        if (defs[i].def) printf(" [%s]", defs[i].def);
        printf("\n");
    }
    printf("  %-28s %s\n", "--config FILE", "INI file; every flag has a key of the same name");
    printf("  %-28s %s\n", "--help", "this text");
}

int
config_parse(struct config *c, int argc, char **argv, int *want_help)
{
    struct option longopts[NDEFS + 3];
    const char *config_file = NULL;
    int ch, idx;

    /* First pass: find --config and --help, so the file is read before the flags. */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            *want_help = 1;
            return 0;
        }
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) config_file = argv[i + 1];
        else if (strncmp(argv[i], "--config=", 9) == 0) config_file = argv[i] + 9;
    }
    if (config_file) {
        struct ini_ctx x = {.c = c, .file = config_file};
        int rc;
        if (!(x.fp = fopen(config_file, "r"))) {
            fprintf(stderr, "lockstep: cannot read config file %s\n", config_file);
            return LS_EINVAL;
        }
        rc = ini_parse_stream(ini_read, &x, ini_cb, &x);
        fclose(x.fp);
        if (rc > 0 && !x.failed)
            fprintf(stderr, "lockstep: %s:%d: syntax error\n", config_file, rc);
        else if (rc < 0 && !x.failed)
            fprintf(stderr, "lockstep: %s: out of memory\n", config_file);
        if (rc != 0 || x.failed) return LS_EINVAL;
    }
    for (size_t i = 0; i < NDEFS; i++) {
        longopts[i].name = defs[i].name;
        longopts[i].has_arg = defs[i].type == T_FLAG ? no_argument : required_argument;
        longopts[i].flag = NULL;
        longopts[i].val = 1000 + (int)i;
    }
    longopts[NDEFS] = (struct option){"config", required_argument, NULL, 'c'};
    longopts[NDEFS + 1] = (struct option){"help", no_argument, NULL, 'h'};
    longopts[NDEFS + 2] = (struct option){NULL, 0, NULL, 0};
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":", longopts, &idx)) != -1) {
        if (ch == 'c' || ch == 'h') continue;
        if (ch == '?' || ch == ':') {
            fprintf(stderr, "lockstep serve: %s '%s' (see lockstep serve --help)\n",
                    ch == ':' ? "missing value for" : "unknown option", argv[optind - 1]);
            return LS_EINVAL;
        }
        if (set_value(c, &defs[ch - 1000], optarg ? optarg : "yes")) {
            fprintf(stderr, "lockstep serve: bad value for --%s: %s\n", defs[ch - 1000].name,
                    optarg);
            return LS_EINVAL;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "lockstep serve: unexpected argument '%s'\n", argv[optind]);
        return LS_EINVAL;
    }
    return 0;
}
