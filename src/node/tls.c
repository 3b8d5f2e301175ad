/*
 * tls.c - TLS contexts (OpenSSL 3). TLS 1.2 at least; certificate checks are OpenSSL's own,
 * with host name or IP address verification on the client side.
 */
#include "node/tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

const char *
tls_error(void)
{
    static char buf[256];
    unsigned long e = ERR_get_error();
    if (!e) return "unknown TLS error";
    ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    return buf;
}

static int
load_pair(SSL_CTX *ctx, const char *cert, const char *key, struct ls_error *err)
{
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
        return ls_error_set(err, LS_EINVAL, "cannot load certificate %s: %s", cert, tls_error());
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
        return ls_error_set(err, LS_EINVAL, "cannot load key %s: %s", key, tls_error());
    if (SSL_CTX_check_private_key(ctx) != 1)
        return ls_error_set(err, LS_EINVAL, "%s does not match %s", key, cert);
    return 0;
}

SSL_CTX *
tls_server_ctx(const char *cert, const char *key, const char *ca, struct ls_error *err)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        ls_error_set(err, LS_ENOMEM, "TLS: %s", tls_error());
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    if (load_pair(ctx, cert, key, err)) goto fail;
    if (ca) {
        if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
            ls_error_set(err, LS_EINVAL, "cannot load CA %s: %s", ca, tls_error());
            goto fail;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        SSL_CTX_set_client_CA_list(ctx, SSL_load_client_CA_file(ca));
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

SSL_CTX *
tls_client_ctx(const char *cert, const char *key, const char *ca, struct ls_error *err)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        ls_error_set(err, LS_ENOMEM, "TLS: %s", tls_error());
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (cert && key && load_pair(ctx, cert, key, err)) goto fail;
    if (ca ? SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1
           : SSL_CTX_set_default_verify_paths(ctx) != 1) {
        ls_error_set(err, LS_EINVAL, "cannot load CA %s: %s", ca ? ca : "(system)", tls_error());
        goto fail;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

SSL *
tls_client_ssl(SSL_CTX *ctx, const char *host)
{
    SSL *ssl = SSL_new(ctx);
    unsigned char buf[16];
    if (!ssl) return NULL;
    if (inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host);
    } else {
        SSL_set_tlsext_host_name(ssl, host);
        SSL_set1_host(ssl, host);
    }
    return ssl;
}
