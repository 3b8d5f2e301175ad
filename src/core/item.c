/*
 * item.c - path rules, meta canonicalisation and the JSON operation parser (see item.h).
 * Pure functions: no storage, no sockets; the fuzz targets call them directly.
 */
#include "core/item.h"
#include "common/util.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

static const char *op_names[] = {NULL, "put", "delete", "purge", "move", "publish", "unpublish",
                                 "notify"};

const char *
op_name(int type)
{
    if (type < LS_OP_PUT || type > LS_OP_NOTIFY) return "?";
    return op_names[type];
}

int
op_from_name(const char *name)
{
    for (int i = LS_OP_PUT; i <= LS_OP_UNPUBLISH; i++)
        if (strcmp(name, op_names[i]) == 0) return i;
    return 0;
}

void
op_init(struct ls_op *op)
{
    memset(op, 0, sizeof *op);
}

void
op_release(struct ls_op *op)
{
    if (!op) return;
    free(op->path);
    free(op->to);
    free(op->kind);
    free(op->meta);
    free(op->body_owned);
    free(op->body_file);
    op_init(op);
}

/* ---------------------------------------------------------------- names */

int
name_check(const char *what, const char *name, size_t len, struct ls_error *err)
{
    if (len == 0 || len > LS_CHANNEL_MAX)
        return ls_error_set(err, LS_EINVAL, "a %s name has 1 to %d characters", what,
                            LS_CHANNEL_MAX);
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)name[i];
        int alnum = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
        if (!alnum && (i == 0 || (ch != '.' && ch != '_' && ch != ':' && ch != '-')))
            return ls_error_set(err, LS_EINVAL,
                                "bad %s name: use A-Z a-z 0-9 . _ : -, starting with a letter or "
                                "a digit",
                                what);
    }
    return 0;
}

/* ---------------------------------------------------------------- paths */

int
path_check(const char *path, size_t len, struct ls_error *err)
{
    if (!path || len == 0) return ls_error_set(err, LS_EPATH, "path is empty");
    if (len > LS_PATH_MAX)
        return ls_error_set(err, LS_EPATH, "path is longer than %d bytes", LS_PATH_MAX);
    if (path[0] != '/')
        return ls_error_set(err, LS_EPATH, "path must be absolute (start with '/')");
    if (memchr(path, '\0', len)) return ls_error_set(err, LS_EPATH, "path contains a NUL byte");
    if (!ls_utf8_valid(path, len)) return ls_error_set(err, LS_EPATH, "path is not valid UTF-8");
    if (len == 1) return ls_error_set(err, LS_EPATH, "path '/' names no item");
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)path[i];
        if (c < 0x20 || c == 0x7f)
            return ls_error_set(err, LS_EPATH, "path contains a control character");
    }
    /* Walk the segments after the leading slash. */
    for (size_t start = 1; start <= len;) {
        const char *seg = path + start;
        const char *slash = memchr(seg, '/', len - start);
        size_t n = slash ? (size_t)(slash - seg) : len - start;
        if (n == 0) return ls_error_set(err, LS_EPATH, "path has an empty segment");
        if ((n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
            return ls_error_set(err, LS_EPATH, "path has a '.' or '..' segment");
        start += n + 1;
        if (!slash) break;
    }
    return 0;
}

/* ---------------------------------------------------------------- meta */

static int
json_depth_ok(const char *s, size_t n)
{
    /* jansson has its own depth limit (2048); ours is lower, checked before parsing. */
    int depth = 0, in_str = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\') i++;
            else if (c == '"') in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '{' || c == '[') {
            if (++depth > LS_JSON_DEPTH_MAX) return 0;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return 1;
}

static int
meta_from_json(json_t *obj, char **out, struct ls_error *err)
{
    char *text;
    if (!json_is_object(obj)) return ls_error_set(err, LS_EMETA, "meta must be a JSON object");
    text = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    if (!text) return ls_error_set(err, LS_ENOMEM, NULL);
    if (strlen(text) > LS_META_MAX) {
        free(text);
        return ls_error_set(err, LS_EMETA, "meta is larger than %d bytes", LS_META_MAX);
    }
    *out = text;
    return 0;
}

int
meta_canonical(const char *text, size_t len, char **out, struct ls_error *err)
{
    json_error_t jerr;
    json_t *obj;
    int rc;

    if (len > LS_META_MAX)
        return ls_error_set(err, LS_EMETA, "meta is larger than %d bytes", LS_META_MAX);
    /* JSON has no raw NUL (only \u0000 in strings), and jansson reads one as the end */
    if (memchr(text, '\0', len)) return ls_error_set(err, LS_EMETA, "meta contains a NUL byte");
    if (!json_depth_ok(text, len))
        return ls_error_set(err, LS_EMETA, "meta is nested deeper than %d levels",
                            LS_JSON_DEPTH_MAX);
    obj = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!obj) return ls_error_set(err, LS_EMETA, "meta is not valid JSON: %s", jerr.text);
    rc = meta_from_json(obj, out, err);
    json_decref(obj);
    return rc;
}

/* ---------------------------------------------------------------- NDJSON operations */

static int
decode_base64(const char *in, size_t n, void **out, size_t *outlen, struct ls_error *err)
{
    unsigned char *buf;
    int len, pad = 0;
    /* Strict RFC 4648: the alphabet only, '=' only as the last one or two characters.
     * (EVP_DecodeBlock alone takes '=' anywhere as zero bits and skips whitespace.) */
    if (n % 4) return ls_error_set(err, LS_EBATCH, "\"body_base64\" is not valid base64");
    if (n >= 1 && in[n - 1] == '=') pad++;
    if (n >= 2 && in[n - 2] == '=') pad++;
    for (size_t i = 0; i < n - (size_t)pad; i++) {
        char c = in[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/'))
            return ls_error_set(err, LS_EBATCH, "\"body_base64\" is not valid base64");
    }
    buf = malloc(n / 4 * 3 + 1);
    if (!buf) return ls_error_set(err, LS_ENOMEM, NULL);
    len = n ? EVP_DecodeBlock(buf, (const unsigned char *)in, (int)n) : 0;
    if (len < 0) {
        free(buf);
        return ls_error_set(err, LS_EBATCH, "\"body_base64\" is not valid base64");
    }
    *out = buf;
    *outlen = (size_t)len - (size_t)pad;
    return 0;
}

/*
 * A reader for the flat JSON objects of operation lines. Imports are millions of lines of
 * mostly body text, and a general JSON parser spends most of its time building values we copy
 * out again; this one decodes strings straight into the op. Only "meta" (any JSON object) is
 * handed to jansson, through meta_canonical. Strict: UTF-8 is checked, control characters
 * must be escaped, duplicate and unknown keys are refused.
 */
struct jr {
    const char *p, *end;
    struct ls_error *err;
};

static int
jr_fail(struct jr *r, const char *what)
{
    return ls_error_set(r->err, LS_EBATCH, "not valid JSON: %s", what);
}

static void
jr_ws(struct jr *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
        r->p++;
}

static int
hex4(const char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

/* Decodes a JSON string at r->p (at its opening quote) into a new NUL-terminated buffer. */
static int
jr_string(struct jr *r, char **out, size_t *outlen)
{
    const char *p = r->p + 1, *run;
    char *buf, *o;
    if (r->p >= r->end || *r->p != '"') return jr_fail(r, "expected a string");
    /* Decoded text is never longer than the raw text. */
    {
        /* The closing quote: the first one after an even number of backslashes (memchr is
         * much faster than a loop over a body's bytes). */
        const char *q = p, *b;
        for (;;) {
            if (!(q = memchr(q, '"', (size_t)(r->end - q)))) return jr_fail(r, "unterminated string");
            for (b = q; b > p && b[-1] == '\\'; b--) {
            }
            if (((q - b) & 1) == 0) break;
            q++;
        }
        if (!(buf = malloc((size_t)(q - p) + 1))) return ls_error_set(r->err, LS_ENOMEM, NULL);
    }
    o = buf;
    for (;;) {
        int ascii = 1;
        run = p;
        /* Eight bytes at a time while they are plain printable ASCII (no quote, backslash,
         * control character or high bit): the common case of body text. */
        while (r->end - p >= 8) {
            uint64_t w, quote, bslash, low;
            memcpy(&w, p, 8);
            quote = w ^ 0x2222222222222222ULL;
            bslash = w ^ 0x5c5c5c5c5c5c5c5cULL;
            low = w - 0x2020202020202020ULL; /* sets the high bit of bytes below 0x20 */
            if (((quote - 0x0101010101010101ULL) & ~quote) & 0x8080808080808080ULL) break;
            if (((bslash - 0x0101010101010101ULL) & ~bslash) & 0x8080808080808080ULL) break;
            if ((low | w) & 0x8080808080808080ULL) break;
            p += 8;
        }
        while (p < r->end && *p != '"' && *p != '\\' && (unsigned char)*p >= 0x20) {
            if ((unsigned char)*p >= 0x80) ascii = 0;
            p++;
        }
        if (!ascii && !ls_utf8_valid(run, (size_t)(p - run))) {
            free(buf);
            return jr_fail(r, "invalid UTF-8 in a string");
        }
        memcpy(o, run, (size_t)(p - run));
        o += p - run;
        if (p >= r->end || (unsigned char)*p < 0x20) {
            free(buf);
            return jr_fail(r, p >= r->end ? "unterminated string" : "control character in a string");
        }
        if (*p == '"') break;
        /* an escape */
        if (++p >= r->end) break;
        switch (*p++) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (r->end - p < 4 || hex4(p, &cp)) goto bad_escape;
            p += 4;
            if (cp == 0) { /* as jansson: text has no NUL; binary bodies use body_base64 */
                free(buf);
                return jr_fail(r, "\\u0000 in a string (send binary bodies as body_base64)");
            }
            if (cp >= 0xD800 && cp <= 0xDBFF) { /* a surrogate pair */
                if (r->end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, &lo) ||
                    lo < 0xDC00 || lo > 0xDFFF)
                    goto bad_escape;
                p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                goto bad_escape;
            }
            if (cp < 0x80) *o++ = (char)cp;
            else if (cp < 0x800) *o++ = (char)(0xC0 | cp >> 6), *o++ = (char)(0x80 | (cp & 0x3F));
            else if (cp < 0x10000)
                *o++ = (char)(0xE0 | cp >> 12), *o++ = (char)(0x80 | ((cp >> 6) & 0x3F)),
                *o++ = (char)(0x80 | (cp & 0x3F));
            else
                *o++ = (char)(0xF0 | cp >> 18), *o++ = (char)(0x80 | ((cp >> 12) & 0x3F)),
                *o++ = (char)(0x80 | ((cp >> 6) & 0x3F)), *o++ = (char)(0x80 | (cp & 0x3F));
            break;
        }
        default:
            goto bad_escape;
        }
    }
    *o = '\0';
    r->p = p + 1;
    *out = buf;
    *outlen = (size_t)(o - buf);
    return 0;
bad_escape:
    free(buf);
    return jr_fail(r, "invalid escape in a string");
}

/* Skips any JSON value, returning its raw span (for meta, which jansson then checks). */
static int
jr_skip(struct jr *r)
{
    int depth = 0;
    do {
        jr_ws(r);
        if (r->p >= r->end) return jr_fail(r, "unexpected end");
        switch (*r->p) {
        case '{':
        case '[':
            if (++depth > LS_JSON_DEPTH_MAX - 1) /* the operation's own object is one level */
                return ls_error_set(r->err, LS_EBATCH, "nested deeper than %d levels",
                                    LS_JSON_DEPTH_MAX);
            r->p++;
            break;
        case '}':
        case ']':
            if (depth == 0) return jr_fail(r, "expected a value");
            depth--;
            r->p++;
            break;
        case '"': {
            const char *q = r->p + 1;
            while (q < r->end && *q != '"') q += (*q == '\\') ? 2 : 1;
            if (q >= r->end) return jr_fail(r, "unterminated string");
            r->p = q + 1;
            break;
        }
        case ',':
        case ':':
            if (depth == 0) return jr_fail(r, "expected a value");
            r->p++;
            break;
        default: { /* a number or a literal: jansson checks it */
            /* memchr, not strchr: strchr would find a NUL byte in the set's terminator */
            static const char stop[] = ",:{}[]\" \t\r\n";
            while (r->p < r->end && !memchr(stop, *r->p, sizeof stop - 1)) r->p++;
            break;
        }
        }
    } while (depth > 0);
    return 0;
}

static int
jr_int(struct jr *r, int64_t *v, const char *key)
{
    const char *start = r->p;
    int neg = 0;
    uint64_t n = 0;
    if (r->p < r->end && *r->p == '-') neg = 1, r->p++;
    if (r->p >= r->end || *r->p < '0' || *r->p > '9') goto bad;
    /* JSON has no leading zeros: 01 is not a number */
    if (*r->p == '0' && r->p + 1 < r->end && r->p[1] >= '0' && r->p[1] <= '9') goto bad;
    while (r->p < r->end && *r->p >= '0' && *r->p <= '9') {
        if (n > (uint64_t)INT64_MAX / 10) goto bad;
        n = n * 10 + (uint64_t)(*r->p++ - '0');
    }
    if (r->p < r->end && (*r->p == '.' || *r->p == 'e' || *r->p == 'E')) goto bad;
    if (n > (uint64_t)INT64_MAX) goto bad;
    *v = neg ? -(int64_t)n : (int64_t)n;
    return 0;
bad:
    r->p = start;
    return ls_error_set(r->err, LS_EBATCH, "\"%s\" must be a positive integer", key);
}

/* "seq" is informational: the seq a line had in the history it was exported from (a fork
 * export); an import checks it and otherwise ignores it. */
enum {
    K_OP, K_PATH, K_TO, K_BODY, K_B64, K_KIND, K_META, K_STATUS, K_VERSION, K_IFVERSION, K_SEQ,
    K_N
};
static const char *const keys[K_N] = {"op",   "path", "to",     "body",    "body_base64", "kind",
                                      "meta", "status", "version", "if_version", "seq"};

int
op_parse_json(const char *line, size_t len, struct ls_op *op, struct ls_error *err)
{
    struct jr r = {line, line + len, err};
    char *str[K_N] = {NULL};
    size_t slen[K_N] = {0};
    const char *meta_at = NULL;
    size_t meta_len = 0;
    int64_t num[K_N] = {0};
    unsigned seen = 0;
    int rc = 0;

    op_init(op);
    jr_ws(&r);
    if (r.p >= r.end || *r.p != '{') {
        rc = r.p < r.end && *r.p == '['
                 ? ls_error_set(err, LS_EBATCH, "an operation must be a JSON object")
                 : jr_fail(&r, "expected a JSON object");
        goto out;
    }
    r.p++;
    jr_ws(&r);
    if (r.p < r.end && *r.p == '}') r.p++;
    else
        for (;;) {
            char *key;
            size_t klen;
            int k;
            jr_ws(&r);
            if ((rc = jr_string(&r, &key, &klen))) goto out;
            for (k = 0; k < K_N; k++)
                if (strcmp(key, keys[k]) == 0) break;
            if (k == K_N) {
                rc = ls_error_set(err, LS_EBATCH, "unknown field \"%.64s\"", key);
                free(key);
                goto out;
            }
            free(key);
            if (seen & (1u << k)) {
                rc = ls_error_set(err, LS_EBATCH, "duplicate field \"%s\"", keys[k]);
                goto out;
            }
            seen |= 1u << k;
            jr_ws(&r);
            if (r.p >= r.end || *r.p++ != ':') {
                rc = jr_fail(&r, "expected ':'");
                goto out;
            }
            jr_ws(&r);
            if (k == K_META) {
                meta_at = r.p;
                if ((rc = jr_skip(&r))) goto out;
                meta_len = (size_t)(r.p - meta_at);
            } else if (k == K_VERSION || k == K_IFVERSION || k == K_SEQ) {
                if ((rc = jr_int(&r, &num[k], keys[k]))) goto out;
                if (num[k] < 1) {
                    rc = ls_error_set(err, LS_EBATCH, "\"%s\" must be a positive integer",
                                      keys[k]);
                    goto out;
                }
            } else {
                if (r.p >= r.end || *r.p != '"') {
                    rc = ls_error_set(err, LS_EBATCH, "\"%s\" must be a string", keys[k]);
                    goto out;
                }
                if ((rc = jr_string(&r, &str[k], &slen[k]))) goto out;
            }
            jr_ws(&r);
            if (r.p < r.end && *r.p == ',') {
                r.p++;
                continue;
            }
            if (r.p < r.end && *r.p == '}') {
                r.p++;
                break;
            }
            rc = jr_fail(&r, "expected ',' or '}'");
            goto out;
        }
    jr_ws(&r);
    if (r.p != r.end) {
        rc = jr_fail(&r, "text after the object");
        goto out;
    }

    if (!str[K_OP] || !(op->type = op_from_name(str[K_OP]))) {
        rc = ls_error_set(err, LS_EBATCH,
                          "\"op\" must be one of put, delete, purge, move, publish, unpublish");
        goto out;
    }
    if (!str[K_PATH]) {
        rc = ls_error_set(err, LS_EBATCH, "missing \"path\"");
        goto out;
    }
    if ((rc = path_check(str[K_PATH], slen[K_PATH], err))) goto out;
    op->path = str[K_PATH], str[K_PATH] = NULL;
    if (op->type == LS_OP_MOVE) {
        if (!str[K_TO]) {
            rc = ls_error_set(err, LS_EBATCH, "missing \"to\"");
            goto out;
        }
        if ((rc = path_check(str[K_TO], slen[K_TO], err))) goto out;
        op->to = str[K_TO], str[K_TO] = NULL;
    }
    if (op->type == LS_OP_PUT) {
        if (str[K_BODY] && str[K_B64]) {
            rc = ls_error_set(err, LS_EBATCH, "give \"body\" or \"body_base64\", not both");
            goto out;
        }
        if (str[K_B64]) {
            if ((rc = decode_base64(str[K_B64], slen[K_B64], &op->body_owned, &op->body_len,
                                    err)))
                goto out;
        } else if (str[K_BODY]) {
            op->body_owned = str[K_BODY], str[K_BODY] = NULL;
            op->body_len = slen[K_BODY];
        }
        op->body = op->body_owned ? op->body_owned : "";
        if (str[K_KIND]) {
            if (slen[K_KIND] == 0 || slen[K_KIND] > LS_KIND_MAX ||
                strlen(str[K_KIND]) != slen[K_KIND]) {
                rc = ls_error_set(err, LS_EBATCH, "\"kind\" must be a string of 1 to %d bytes",
                                  LS_KIND_MAX);
                goto out;
            }
            op->kind = str[K_KIND], str[K_KIND] = NULL;
        }
        if (str[K_STATUS]) {
            if (strcmp(str[K_STATUS], "published") == 0) op->publish = 1;
            else if (strcmp(str[K_STATUS], "draft") != 0) {
                rc = ls_error_set(err, LS_EBATCH, "\"status\" must be \"draft\" or \"published\"");
                goto out;
            }
        }
    }
    /* Checked whatever the operation (a line is valid JSON or refused), kept only by a put. */
    if (meta_at && (rc = meta_canonical(meta_at, meta_len, &op->meta, err))) goto out;
    if (op->type != LS_OP_PUT) {
        free(op->meta);
        op->meta = NULL;
    }
    if (op->type == LS_OP_PUBLISH) op->version = num[K_VERSION];
    op->if_version = num[K_IFVERSION];
out:
    for (int k = 0; k < K_N; k++) free(str[k]);
    if (rc) {
        /* Whatever was wrong inside it, the line is a malformed batch line. */
        if (rc != LS_ENOMEM) rc = LS_EBATCH;
        if (err) err->code = rc;
        op_release(op);
    }
    return rc;
}
