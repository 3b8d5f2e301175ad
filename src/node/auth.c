/*
 * auth.c - tokens, roles, failure slowdown and allow-lists (see auth.h).
 *
 * A token is "lst_" and 64 hex digits of randomness; the server keeps only its SHA-256 (a
 * token has 256 bits of entropy, so a fast hash is enough). Checking compares the hash with
 * every stored hash in constant time, never stopping early. Tokens are cached in memory and
 * re-read at most once a second, so one made with `lockstep token create --data` while the
 * server runs is honoured within a second.
 */
#include "node/auth.h"
#include "common/util.h"
#include "core/store.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RELOAD_MS 1000
#define FAIL_SLOTS 256
#define FAIL_FORGET_MS 60000
#define FAIL_DELAY_MAX_MS 5000

static const char *const roles[] = {"admin", "write", "read", "replicate", "notify", "report"};

int
role_valid(const char *role)
{
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
        if (strcmp(role, roles[i]) == 0) return 1;
    return 0;
}

/*
 * admin: everything. write: read and write items. read: read items. replicate: the peer port.
 * notify: notifications (the messenger). report: status, registry and figures. Every role but
 * replicate and notify may read the status.
 */
int
role_allows(const char *role, enum need need)
{
    if (strcmp(role, "admin") == 0) return 1;
    switch (need) {
    case NEED_READ: return strcmp(role, "write") == 0 || strcmp(role, "read") == 0;
    case NEED_WRITE: return strcmp(role, "write") == 0;
    case NEED_REPORT:
        return strcmp(role, "write") == 0 || strcmp(role, "read") == 0 ||
               strcmp(role, "report") == 0;
    case NEED_REPLICATE: return strcmp(role, "replicate") == 0;
    case NEED_NOTIFY: return strcmp(role, "notify") == 0 || strcmp(role, "write") == 0;
    case NEED_ADMIN: return 0;
    }
    return 0;
}

const char *
need_name(enum need need)
{
    static const char *const names[] = {"read", "write", "administer", "read reports",
                                        "replicate", "notify"};
    return names[need];
}

void
token_generate(char out[TOKEN_LEN + 1])
{
    memcpy(out, TOKEN_PREFIX, 4);
    ls_random_hex(out + 4, 32);
}

void
token_hash(const char *token, unsigned char out[32])
{
    ls_sha256(token, strlen(token), out);
}

void
token_default_name(const char *role, const unsigned char hash[32], char *out, size_t n)
{
    char hex[9];
    ls_hex_encode(hash, 4, hex); /* of the stored hash, never of the token */
    snprintf(out, n, "%s-%s", role, hex);
}

/* ---------------------------------------------------------------- the token cache */

struct cached {
    char role[16];
    unsigned char hash[32];
};

struct fail_slot {
    unsigned char addr[16];
    int family;
    int count;
    int64_t last_ms;
};

struct auth {
    struct store *reader;
    struct cached *tokens;
    int ntokens, cap;
    int64_t loaded_ms;
    struct fail_slot fails[FAIL_SLOTS];
};

static void
list_release(struct cached *v, int cap)
{
    if (v) OPENSSL_cleanse(v, (size_t)cap * sizeof *v);
    free(v);
}

struct auth *
auth_new(struct store *reader)
{
    struct auth *a = calloc(1, sizeof *a);
    if (a) a->reader = reader;
    return a;
}

void
auth_free(struct auth *a)
{
    if (!a) return;
    list_release(a->tokens, a->cap);
    free(a);
}

void
auth_invalidate(struct auth *a)
{
    a->loaded_ms = 0;
}

struct token_list {
    struct cached *v;
    int n, cap, failed;
};

static void
add_cached(void *arg, const char *name, const char *role, const unsigned char hash[32],
           int64_t created)
{
    struct token_list *l = arg;
    if (l->failed) return;
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 8;
        struct cached *p = realloc(l->v, (size_t)cap * sizeof *p);
        if (!p) {
            l->failed = 1;
            return;
        }
        l->v = p;
        l->cap = cap;
    }
    snprintf(l->v[l->n].role, sizeof l->v[0].role, "%s", role);
    memcpy(l->v[l->n].hash, hash, 32);
    l->n++;
}

/* A failed read keeps the tokens known before: a server never opens up because of an error. */
static void
reload(struct auth *a)
{
    int64_t now = ls_mono_ms();
    struct token_list l = {0};
    if (a->loaded_ms && now - a->loaded_ms < RELOAD_MS) return;
    a->loaded_ms = now;
    if (store_tokens(a->reader, add_cached, &l) < 0 || l.failed) {
        list_release(l.v, l.cap);
        return;
    }
    list_release(a->tokens, a->cap);
    a->tokens = l.v;
    a->ntokens = l.n;
    a->cap = l.cap;
}

int
auth_enabled(struct auth *a)
{
    reload(a);
    return a->ntokens > 0;
}

int
auth_check(struct auth *a, const char *token, enum need need, const char **role)
{
    unsigned char hash[32];
    int found = -1;
    reload(a);
    *role = NULL;
    if (a->ntokens == 0) return 0; /* no tokens: an open server (loopback only by default) */
    if (!token || !*token) return LS_EAUTH;
    token_hash(token, hash);
    for (int i = 0; i < a->ntokens; i++) {
        /* Every stored hash is compared, in constant time, whatever matched before. */
        int same = CRYPTO_memcmp(hash, a->tokens[i].hash, 32) == 0;
        found = same ? i : found;
    }
    if (found < 0) return LS_EAUTH;
    *role = a->tokens[found].role;
    return role_allows(*role, need) ? 0 : LS_EDENIED;
}

/* ---------------------------------------------------------------- slowing down failures */

static int
addr_bytes(const struct sockaddr *sa, unsigned char out[16], int *family)
{
    memset(out, 0, 16);
    *family = sa->sa_family;
    if (sa->sa_family == AF_INET) {
        memcpy(out, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return 4;
    }
    if (sa->sa_family == AF_INET6) {
        memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        return 16;
    }
    return 0;
}

int64_t
auth_failed(struct auth *a, const struct sockaddr *sa)
{
    unsigned char key[16];
    int family, oldest = 0;
    int64_t now = ls_mono_ms(), delay;
    struct fail_slot *slot = NULL;
    addr_bytes(sa, key, &family);
    for (int i = 0; i < FAIL_SLOTS; i++) {
        struct fail_slot *f = &a->fails[i];
        if (f->count && f->family == family && memcmp(f->addr, key, 16) == 0) {
            slot = f;
            break;
        }
        if (f->last_ms < a->fails[oldest].last_ms) oldest = i;
    }
    if (!slot) {
        slot = &a->fails[oldest];
        memset(slot, 0, sizeof *slot);
        memcpy(slot->addr, key, 16);
        slot->family = family;
    }
    if (slot->count && now - slot->last_ms > FAIL_FORGET_MS) slot->count = 0;
    slot->count++;
    slot->last_ms = now;
    /* 0, 100, 200, 400 ... ms, at most 5 s: guessing becomes slow, mistakes stay cheap. */
    delay = slot->count <= 1 ? 0 : 100LL << (slot->count - 2 > 10 ? 10 : slot->count - 2);
    return delay > FAIL_DELAY_MAX_MS ? FAIL_DELAY_MAX_MS : delay;
}

/* ---------------------------------------------------------------- allow-lists */

int
cidr_parse(const char *s, struct cidr *out)
{
    char host[64];
    const char *slash = strchr(s, '/');
    int64_t bits;
    memset(out, 0, sizeof *out);
    snprintf(host, sizeof host, "%.*s", slash ? (int)(slash - s) : (int)strlen(s), s);
    if (inet_pton(AF_INET, host, out->addr) == 1) out->family = AF_INET, out->bits = 32;
    else if (inet_pton(AF_INET6, host, out->addr) == 1) out->family = AF_INET6, out->bits = 128;
    else return LS_EINVAL;
    if (slash) {
        if (ls_parse_i64(slash + 1, &bits) || bits < 0 || bits > out->bits) return LS_EINVAL;
        out->bits = (int)bits;
    }
    return 0;
}

static int
prefix_equal(const unsigned char *a, const unsigned char *b, int bits)
{
    int whole = bits / 8, rest = bits % 8;
    if (memcmp(a, b, (size_t)whole) != 0) return 0;
    if (rest == 0) return 1;
    return ((a[whole] ^ b[whole]) & (0xFF << (8 - rest))) == 0;
}

int
cidr_match(const struct cidr *list, int n, const struct sockaddr *sa)
{
    unsigned char key[16];
    int family;
    if (n == 0) return 1; /* no list: everyone */
    addr_bytes(sa, key, &family);
    /* An IPv4 client on a dual-stack socket arrives as ::ffff:a.b.c.d. */
    if (family == AF_INET6 && memcmp(key, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0) {
        memmove(key, key + 12, 4);
        family = AF_INET;
    }
    for (int i = 0; i < n; i++)
        if (list[i].family == family && prefix_equal(list[i].addr, key, list[i].bits)) return 1;
    return 0;
}
