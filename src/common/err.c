/* err.c - the error table's accessors and the message-carrying error. */
#include "common/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

struct errinfo {
    const char *code;
    int status;
    const char *msg;
};

static const struct errinfo errtab[] = {
#define LS_ERR_ROW(name, code, status, msg) {code, status, msg},
    LS_ERRNO_MAP(LS_ERR_ROW)
#undef LS_ERR_ROW
};

static const struct errinfo *
lookup(int err)
{
    int i = err - LS_E_FIRST_ - 1;
    static const struct errinfo unknown = {"internal", 500, "unknown error"};
    if (i < 0 || i >= (int)(sizeof errtab / sizeof errtab[0])) return &unknown;
    return &errtab[i];
}

const char *
ls_strerror(int err)
{
    return err == 0 ? "success" : lookup(err)->msg;
}

const char *
ls_errcode(int err)
{
    return lookup(err)->code;
}

int
ls_errstatus(int err)
{
    return lookup(err)->status;
}

int
ls_error_set(struct ls_error *e, int code, const char *fmt, ...)
{
    if (!e) return code;
    e->code = code;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    } else {
        snprintf(e->msg, sizeof e->msg, "%s", ls_strerror(code));
    }
    return code;
}

void
ls_error_clear(struct ls_error *e)
{
    e->code = 0;
    e->msg[0] = '\0';
}

void
ls_error_prefix(struct ls_error *e, const char *fmt, ...)
{
    char prefix[128], msg[sizeof e->msg];
    size_t n;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    n = strlen(prefix);
    memcpy(msg, e->msg, sizeof msg);
    memcpy(e->msg, prefix, n < sizeof e->msg ? n : sizeof e->msg - 1);
    e->msg[sizeof e->msg - 1] = '\0';
    if (n < sizeof e->msg - 1) {
        size_t left = sizeof e->msg - 1 - n;
        size_t m = strnlen(msg, left);
        memcpy(e->msg + n, msg, m);
        e->msg[n + m] = '\0';
    }
}
