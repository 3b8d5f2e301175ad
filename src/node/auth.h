/*
 * auth.h - who may do what: bearer tokens with roles, per-address slowdown after failures,
 * and allow-lists of networks. The HTTP dispatcher and the peer handshake are the only callers.
 */
#ifndef LS_AUTH_H
#define LS_AUTH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/err.h"

struct store;

/* What a request needs; a token's role grants some of these (auth.c, role_allows). */
enum need { NEED_READ, NEED_WRITE, NEED_ADMIN, NEED_REPORT, NEED_REPLICATE, NEED_NOTIFY };

int role_valid(const char *role);
int role_allows(const char *role, enum need need);
const char *need_name(enum need need);

#define TOKEN_PREFIX "lst_"
#define TOKEN_LEN (4 + 64)
void token_generate(char out[TOKEN_LEN + 1]);
void token_hash(const char *token, unsigned char out[32]);
/* "ROLE-" and the first 8 hex digits of the token's hash: a name that reveals nothing. */
void token_default_name(const char *role, const unsigned char hash[32], char *out, size_t n);

struct auth;
struct auth *auth_new(struct store *reader);
void auth_free(struct auth *a);
void auth_invalidate(struct auth *a); /* tokens changed: reload before the next check */
int auth_enabled(struct auth *a);     /* does this server have tokens at all? */
/*
 * Checks a token (NULL: none given) against what the request needs. 0, LS_EAUTH (missing or
 * unknown token) or LS_EDENIED (valid, but its role does not allow this). *role is the token's.
 */
int auth_check(struct auth *a, const char *token, enum need need, const char **role);
/* Records a failure from addr and returns how long to wait before answering (ms). */
int64_t auth_failed(struct auth *a, const struct sockaddr *addr);

/* ---- allow-lists ---- */
struct cidr {
    int family;
    unsigned char addr[16];
    int bits;
};
int cidr_parse(const char *s, struct cidr *out);
int cidr_match(const struct cidr *list, int n, const struct sockaddr *sa);

#endif
