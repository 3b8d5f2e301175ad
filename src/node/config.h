/*
 * config.h - the server's settings: one table names every flag, its INI key (the same name),
 * its type, default and help. `--config FILE` loads the INI file first; flags override it.
 */
#ifndef LS_CONFIG_H
#define LS_CONFIG_H

#include <stdint.h>

#define LS_LIST_MAX 16

struct strlist {
    char *v[LS_LIST_MAX];
    int n;
};

struct config {
    char *data;
    char *http;
    char *name;
    char *role;
    char *upstream;
    char *listen;
    struct strlist include;
    int64_t max_versions;
    uint64_t max_body;
    uint64_t max_request;
    char *sync;
    char *log_level;
    int64_t idle_timeout_ms;
    int64_t heartbeat_timeout_ms;
    char *log_retention;
    char *notify_retention;
    struct strlist mirror_root; /* mirror jobs' directories must be within one (empty: any) */
    struct strlist exports;     /* NAME=PATH: directories served read-only (http/export.c) */
    int64_t consumer_stall_ms;
    char *messenger;           /* postgres://...: the shared-database messenger (pgmsg.c) */
    int64_t poll_interval_ms;  /* its polling, when a wake-up from the database is missed */
    struct strlist webhook; /* NAME=URL[,channel=C]... (webhook.c checks them) */
    int64_t sync_max_versions;
    uint64_t snapshot_max_wal; /* a snapshot pinning a -wal file larger than this is dropped */
    char *compress;
    char *tls_cert, *tls_key, *tls_ca;
    struct strlist allow, peer_allow;
    char *upstream_token;
    char *insecure;
    char *replace_store; /* a replica may replace a store holding another history */
    int64_t max_conns_per_addr;
    int64_t request_timeout_ms;
};

void config_init(struct config *c);
void config_release(struct config *c);
/* Parses argv (after the subcommand); 0, or LS_EINVAL after printing one line to stderr. */
int config_parse(struct config *c, int argc, char **argv, int *want_help);
void config_usage(const char *prog);

#endif
