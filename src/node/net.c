/* net.c - see net.h. Names are resolved with getaddrinfo (blocking; only at start-up). */
#include "node/net.h"
#include "common/err.h"
#include "common/util.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

int
parse_hostport(const char *addr, struct sockaddr_storage *ss, int *sslen)
{
    char host[256], port[8];
    const char *colon = addr ? strrchr(addr, ':') : NULL;
    struct addrinfo hints, *res = NULL;
    int64_t p;
    if (!colon || parse_i64(colon + 1, &p) || p < 0 || p > 65535) return LS_EINVAL;
    if (addr[0] == '[') {
        if (colon - addr < 2 || colon[-1] != ']') return LS_EINVAL;
        snprintf(host, sizeof host, "%.*s", (int)(colon - addr - 2), addr + 1);
    } else {
        snprintf(host, sizeof host, "%.*s", (int)(colon - addr), addr);
    }
    snprintf(port, sizeof port, "%d", (int)p);
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host[0] ? host : NULL, port, &hints, &res) || !res) return LS_EINVAL;
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sslen = (int)res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

void
format_sockaddr(const struct sockaddr *sa, char *out, size_t n)
{
    char host[64] = "?";
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        snprintf(out, n, "%s:%d", host, ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        snprintf(out, n, "[%s]:%d", host, ntohs(in6->sin6_port));
    } else {
        snprintf(out, n, "?");
    }
}

int
same_host(const char *a, const char *b)
{
    const char *ca = strrchr(a, ':'), *cb = strrchr(b, ':');
    size_t na = ca ? (size_t)(ca - a) : strlen(a), nb = cb ? (size_t)(cb - b) : strlen(b);
    return na == nb && memcmp(a, b, na) == 0;
}
