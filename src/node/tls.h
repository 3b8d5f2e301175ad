/* tls.h - OpenSSL contexts for the HTTP and peer ports, and for following an upstream. */
#ifndef LS_TLS_H
#define LS_TLS_H

#include <openssl/ssl.h>

#include "common/err.h"

/* Server side: cert and key; with ca, clients must present a certificate signed by it. */
SSL_CTX *tls_server_ctx(const char *cert, const char *key, const char *ca, struct ls_error *err);
/* Client side (a replica to its upstream): verifies the upstream against ca and presents
 * cert/key (both may be NULL). */
SSL_CTX *tls_client_ctx(const char *cert, const char *key, const char *ca, struct ls_error *err);
/* Makes an SSL for a connection to host (name or address), checked against the certificate. */
SSL *tls_client_ssl(SSL_CTX *ctx, const char *host);
/* The last OpenSSL error as text. */
const char *tls_error(void);

#endif
