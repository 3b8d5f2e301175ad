/* net.c - see net.h. Names are resolved here with getaddrinfo (blocking; only at start-up, for
 * the listening addresses); the names the server connects to later (its upstream, webhooks)
 * with the evdns resolver made here (net_dns_new). */
#include "node/net.h"
#include "common/err.h"
#include "common/log.h"
#include "common/util.h"

#include <arpa/inet.h>
#include <event2/dns.h>
#include <stdlib.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

int
net_split_hostport(const char *addr, char *host, size_t n, int *port)
{
    const char *colon = addr ? strrchr(addr, ':') : NULL;
    const char *h = addr;
    size_t hlen;
    int64_t p;
    if (!colon || ls_parse_i64(colon + 1, &p) || p < 0 || p > 65535) return LS_EINVAL;
    hlen = (size_t)(colon - addr);
    if (addr[0] == '[') {
        if (hlen < 2 || colon[-1] != ']') return LS_EINVAL;
        h++;
        hlen -= 2;
    } else if (memchr(addr, ':', hlen)) {
        return LS_EINVAL; /* a bare IPv6 address: its port is ambiguous, [V6]:PORT says it */
    }
    if (memchr(h, '[', hlen) || memchr(h, ']', hlen) || hlen >= n) return LS_EINVAL;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = (int)p;
    return 0;
}

int
parse_hostport(const char *addr, struct sockaddr_storage *ss, int *sslen)
{
    char host[256], port[8];
    struct addrinfo hints, *res = NULL;
    int p;
    if (net_split_hostport(addr, host, sizeof host, &p)) return LS_EINVAL;
    snprintf(port, sizeof port, "%d", p);
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
    char ha[256], hb[256];
    int pa, pb;
    if (net_split_hostport(a, ha, sizeof ha, &pa) || net_split_hostport(b, hb, sizeof hb, &pb))
        return strcmp(a, b) == 0;
    return strcmp(ha, hb) == 0;
}

/* evdns' own messages ("nameserver ... has failed"): into our log, not onto stderr. */
static void
dns_log(int is_warn, const char *msg)
{
    (void)is_warn;
    log_debug("dns: %s", msg);
}

struct evdns_base *
net_dns_new(struct event_base *base, struct ls_error *err)
{
    const char *conf = getenv("LOCKSTEP_RESOLV_CONF");
    struct evdns_base *dns;
    int rc;
    evdns_set_log_fn(dns_log);
    if (!conf || !*conf) {
        /* Not kept alive by its socket: an idle resolver must not hold the loop at exit. */
        dns = evdns_base_new(base,
                             EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (!dns) ls_error_set(err, LS_EIO, "cannot set up the DNS resolver (/etc/resolv.conf)");
        return dns;
    }
    if (!(dns = evdns_base_new(base, EVDNS_BASE_DISABLE_WHEN_INACTIVE))) {
        ls_error_set(err, LS_ENOMEM, NULL);
        return NULL;
    }
    if ((rc = evdns_base_resolv_conf_parse(dns, DNS_OPTIONS_ALL, conf)) != 0 && rc != 6) {
        /* 6: it names no nameserver (then evdns asks 127.0.0.1, as with no file at all) */
        evdns_base_free(dns, 0);
        ls_error_set(err, LS_EINVAL, "LOCKSTEP_RESOLV_CONF=%s: cannot read it (error %d)", conf,
                     rc);
        return NULL;
    }
    return dns;
}
