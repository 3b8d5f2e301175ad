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
        free(*s);
        *s = strdup(value);
        return 0;
    }
    case T_LIST: {
        struct strlist *list = (struct strlist *)field;
        if (list->n >= LS_LIST_MAX) return LS_EINVAL;
        list->v[list->n++] = strdup(value);
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
        if (set < 0) return LS_EINVAL;
        free(*s);
        *s = set ? strdup("yes") : NULL;
        return 0;
    }
    case T_INT: return parse_i64(value, (int64_t *)field);
    case T_SIZE: return parse_size(value, (uint64_t *)field);
    case T_DURATION: return parse_duration_ms(value, (int64_t *)field);
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

struct ini_ctx {
    struct config *c;
    const char *file;
    int failed;
};

static int
ini_cb(void *arg, const char *section, const char *key, const char *value)
{
    struct ini_ctx *x = arg;
    const struct option_def *d = find(key);
    (void)section;
    if (!d) {
        fprintf(stderr, "lockstep: %s: unknown key '%s'\n", x->file, key);
        x->failed = 1;
        return 0;
    }
    if (set_value(x->c, d, value)) {
        fprintf(stderr, "lockstep: %s: bad value for '%s': %s\n", x->file, key, value);
        x->failed = 1;
        return 0;
    }
    return 1;
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
        struct ini_ctx x = {c, config_file, 0};
        int rc = ini_parse(config_file, ini_cb, &x);
        if (rc < 0) {
            fprintf(stderr, "lockstep: cannot read config file %s\n", config_file);
            return LS_EINVAL;
        }
        if (rc > 0 && !x.failed)
            fprintf(stderr, "lockstep: %s:%d: syntax error\n", config_file, rc);
        if (rc > 0 || x.failed) return LS_EINVAL;
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
