// cserve/impl/tls.ipp -- the TLS context from the config, ALPN, tickets, the ASGI "tls" extension
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_IMPL_TLS_IPP
#define CSERVE_IMPL_TLS_IPP

#include <cserve/detail/text.hpp>
#include <cserve/detail/tls.hpp>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <boost/asio/ssl/error.hpp>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

namespace cserve::detail {

namespace tls_impl {

// The reasons in OpenSSL's error queue, the root cause first, and the queue emptied.
inline std::string
openssl_reason()
{
    std::string text;
    while (unsigned long e = ERR_get_error()) {
        char const* reason = ERR_reason_error_string(e);
        std::string r = reason ? reason : "error " + std::to_string(e);
        if (text.find(r) != std::string::npos)
            continue;
        if (!text.empty())
            text += ": ";
        text += r;
    }
    return text.empty() ? "unknown error" : text;
}

// A file OpenSSL is about to read, checked first so that a missing or unreadable one is
// named with the system's reason (OpenSSL's own would be "system lib").
inline void
check_readable(std::string_view what, std::string const& path)
{
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        throw tls_config_error("cannot read " + std::string(what) + " '" + http1::printable(path) + "': " + std::strerror(errno));
    ::close(fd);
}

// Whether a PEM key file holds an encrypted key (PKCS #8 "ENCRYPTED PRIVATE KEY", or the
// traditional format's "Proc-Type: 4,ENCRYPTED"). Asked only after loading failed: a wrong
// password does not always fail as "bad decrypt" (the padding can check out by chance, and the
// decoder then fails on garbage), so the reason alone cannot say.
inline bool
pem_key_is_encrypted(std::string const& path)
{
    std::ifstream in(path);
    std::string line;
    for (int i = 0; i < 200 && std::getline(in, line); ++i)
        if (line.find("ENCRYPTED PRIVATE KEY") != std::string::npos || line.find("Proc-Type: 4,ENCRYPTED") != std::string::npos)
            return true;
    return false;
}

// ALPN (RFC 7301): the server's preference among what the client offers, h2 first when HTTP/2
// is on (`arg` non-null). A client that offers only protocols we do not speak gets the
// no_application_protocol alert.
inline int
select_alpn(SSL*, unsigned char const** out, unsigned char* outlen, unsigned char const* in, unsigned inlen, void* arg)
{
    static constexpr unsigned char with_h2[] = {2, 'h', '2', 8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    static constexpr unsigned char http11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    unsigned char const* ours = arg ? with_h2 : http11;
    unsigned ours_len = arg ? sizeof with_h2 : sizeof http11;
    unsigned char* chosen = nullptr;
    // SSL_select_next_proto walks the server's list in order and takes the first the client has.
    if (SSL_select_next_proto(&chosen, outlen, ours, ours_len, in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = chosen;
    return SSL_TLSEXT_ERR_OK;
}

// With ssl_cert_reqs optional: a certificate that fails verification does not fail the
// handshake; SSL_get_verify_result() keeps the reason for tls_info::client_cert_error.
inline int
accept_unverified(int, X509_STORE_CTX*)
{
    return 1;
}

inline std::string
to_pem(X509* cert)
{
    std::string pem;
    BIO* bio = BIO_new(BIO_s_mem());
    if (!bio)
        return pem;
    if (PEM_write_bio_X509(bio, cert) == 1) {
        char* data = nullptr;
        long n = BIO_get_mem_data(bio, &data);
        if (n > 0)
            pem.assign(data, static_cast<std::size_t>(n));
    }
    BIO_free(bio);
    return pem;
}

// RFC 4514 (RFC 2253's successor, the same string): most specific RDN first, escaped.
inline std::string
rfc4514_name(X509_NAME const* name)
{
    std::string text;
    BIO* bio = BIO_new(BIO_s_mem());
    if (!bio)
        return text;
    if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) >= 0) {
        char* data = nullptr;
        long n = BIO_get_mem_data(bio, &data);
        if (n > 0)
            text.assign(data, static_cast<std::size_t>(n));
    }
    BIO_free(bio);
    return text;
}

// The BIO under every tls_stream: the socket's descriptor, read with recv and written with
// send(MSG_NOSIGNAL) (a peer that left is EPIPE, not SIGPIPE, in programs that keep the
// default disposition). It reads the descriptor from the socket at each call, so once the
// connection closed its socket OpenSSL writes to nothing (EBADF), not to a reused descriptor.
inline int
socket_fd(BIO* b) noexcept
{
    auto* s = static_cast<socket_type*>(BIO_get_data(b));
    return s->is_open() ? s->native_handle() : -1;
}

inline int
bio_write(BIO* b, char const* data, int len)
{
    BIO_clear_retry_flags(b);
    ssize_t n = ::send(socket_fd(b), data, static_cast<std::size_t>(len), MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        BIO_set_retry_write(b);
    return static_cast<int>(n);
}

inline int
bio_read(BIO* b, char* data, int len)
{
    BIO_clear_retry_flags(b);
    ssize_t n = ::recv(socket_fd(b), data, static_cast<std::size_t>(len), 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        BIO_set_retry_read(b);
    return static_cast<int>(n);
}

inline long
bio_ctrl(BIO*, int cmd, long, void*)
{
    return cmd == BIO_CTRL_FLUSH ? 1 : 0; // nothing is buffered here
}

inline BIO_METHOD*
socket_bio_method()
{
    static BIO_METHOD* const method = [] {
        BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "cserve socket");
        if (m) {
            BIO_meth_set_write(m, bio_write);
            BIO_meth_set_read(m, bio_read);
            BIO_meth_set_ctrl(m, bio_ctrl);
            BIO_meth_set_create(m, [](BIO* b) {
                BIO_set_init(b, 1);
                return 1;
            });
        }
        return m;
    }();
    return method;
}

// What an SSL call that failed means: 0 with `ec` set, or the socket it waits for.
inline int
ssl_failure(SSL* ssl, int r, boost::system::error_code& ec) noexcept
{
    int const saved = errno;
    int const err = SSL_get_error(ssl, r);
    switch (err) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return err; // the error queue is empty: SSL_get_error() says so only then
    case SSL_ERROR_ZERO_RETURN: // the peer's close_notify
        ec = net::error::eof;
        break;
    case SSL_ERROR_SYSCALL:
        if (unsigned long e = ERR_get_error())
            ec.assign(static_cast<int>(e), net::error::get_ssl_category());
        else if (saved != 0)
            ec.assign(saved, boost::system::system_category());
        else
            ec = net::ssl::error::stream_truncated; // the end of the stream, no close_notify
        break;
    default: {
        unsigned long e = ERR_peek_last_error();
        if (ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
            ec = net::ssl::error::stream_truncated;
        else
            ec.assign(static_cast<int>(e ? e : ERR_PACK(ERR_LIB_SSL, 0, ERR_R_INTERNAL_ERROR)),
                      net::error::get_ssl_category());
        break;
    }
    }
    ERR_clear_error();
    return 0;
}

} // namespace tls_impl

tls_stream::tls_stream(socket_type s, net::ssl::context& ctx)
    : socket_(std::move(s))
    , ssl_(SSL_new(ctx.native_handle()))
{
    if (!ssl_)
        throw std::bad_alloc();
    BIO* bio = BIO_new(tls_impl::socket_bio_method());
    if (!bio) {
        SSL_free(ssl_);
        throw std::bad_alloc();
    }
    BIO_set_data(bio, &socket_);
    SSL_set_bio(ssl_, bio, bio);
    SSL_set_mode(ssl_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
    SSL_set_accept_state(ssl_);
}

tls_stream::~tls_stream()
{
    SSL_free(ssl_);
}

int
tls_stream::handshake_step(std::size_t& n, boost::system::error_code& ec)
{
    n = 0;
    ec = {};
    ERR_clear_error();
    int r = SSL_do_handshake(ssl_);
    return r == 1 ? 0 : tls_impl::ssl_failure(ssl_, r, ec);
}

int
tls_stream::read_step(net::mutable_buffer b, std::size_t& n, boost::system::error_code& ec)
{
    // As much as OpenSSL has or the socket gives now, a record at a time.
    n = 0;
    ec = {};
    // The error queue must be empty before an SSL call (SSL_get_error(3)); a call that
    // succeeds or waits leaves it so, one that fails is cleared in ssl_failure().
    ERR_clear_error();
    while (n < b.size()) {
        std::size_t got = 0;
        int r = SSL_read_ex(ssl_, static_cast<char*>(b.data()) + n, b.size() - n, &got);
        if (r != 1) {
            boost::system::error_code rec;
            int want = tls_impl::ssl_failure(ssl_, r, rec);
            if (n != 0)
                return 0; // what was read is the result; the end or error comes with the next call
            ec = rec;
            return want;
        }
        n += got;
    }
    return 0;
}

int
tls_stream::write_piece(net::const_buffer b, std::size_t& n, boost::system::error_code& ec)
{
    n = 0;
    ec = {};
    ERR_clear_error();
    int r = SSL_write_ex(ssl_, b.data(), b.size(), &n);
    return r == 1 ? 0 : tls_impl::ssl_failure(ssl_, r, ec);
}

void
tls_stream::close_notify() noexcept
{
    if (!socket_.is_open() || !SSL_is_init_finished(ssl_))
        return;
    ERR_clear_error();
    (void)SSL_shutdown(ssl_);
    ERR_clear_error();
}

ticket_key
make_ticket_key()
{
    using namespace tls_impl;
    ticket_key k{};
    if (RAND_bytes(k.bytes, sizeof k.bytes) != 1)
        throw tls_config_error("cannot make a session ticket key: " + openssl_reason());
    return k;
}

void
prepare_tls_context(net::ssl::context& ctx, bool http2)
{
    using namespace tls_impl;
    SSL_CTX* c = ctx.native_handle();
    // An idle keep-alive connection gives its record buffers back (about 34 KiB).
    SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
    // Renegotiation is a denial-of-service lever and useless to HTTP/1.1 (RFC 9113 forbids it
    // under HTTP/2).
    SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    static char h2_on = 1;
    SSL_CTX_set_alpn_select_cb(c, select_alpn, http2 && CSERVE_HTTP2 ? &h2_on : nullptr);
    // Read what the socket has, up to a record's worth, with one recv instead of two per record
    // (header, then body).
    SSL_CTX_set_read_ahead(c, 1);
}

std::shared_ptr<net::ssl::context>
make_tls_context(config const& cfg, ticket_key const& key)
{
    using namespace tls_impl;
    ERR_clear_error();
    auto ctx = std::make_shared<net::ssl::context>(net::ssl::context::tls_server);
    SSL_CTX* c = ctx->native_handle();
    SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
    if (SSL_CTX_set_cipher_list(c, cfg.ssl_ciphers.c_str()) != 1)
        throw tls_config_error("invalid --ssl-ciphers '" + http1::printable(cfg.ssl_ciphers) + "': " + openssl_reason());

    // Never OpenSSL's default password prompt on the terminal: an encrypted key without a
    // password is an error like a wrong one.
    ctx->set_password_callback([password = cfg.ssl_keyfile_password](std::size_t, net::ssl::context::password_purpose) {
        return password;
    });

    check_readable("certificate file", cfg.ssl_certfile);
    if (SSL_CTX_use_certificate_chain_file(c, cfg.ssl_certfile.c_str()) != 1)
        throw tls_config_error("cannot load certificate file '" + http1::printable(cfg.ssl_certfile) + "': " + openssl_reason());
    std::string const& keyfile = cfg.ssl_keyfile.empty() ? cfg.ssl_certfile : cfg.ssl_keyfile;
    check_readable("key file", keyfile);
    if (SSL_CTX_use_PrivateKey_file(c, keyfile.c_str(), SSL_FILETYPE_PEM) != 1) {
        auto reason = openssl_reason();
        if (reason.find("mismatch") != std::string::npos)
            throw tls_config_error("key file '" + http1::printable(keyfile) + "' does not match certificate file '" + http1::printable(cfg.ssl_certfile) +
                                   "'");
        bool encrypted = pem_key_is_encrypted(keyfile);
        std::string hint;
        if (encrypted)
            hint = cfg.ssl_keyfile_password.empty() ? " (the key is encrypted: give --ssl-keyfile-password)"
                                                    : " (wrong --ssl-keyfile-password?)";
        else if (cfg.ssl_keyfile.empty())
            hint = " (no --ssl-keyfile: the key was looked for in the certificate file)";
        else
            hint = " (no PEM private key in it?)";
        throw tls_config_error("cannot load key file '" + http1::printable(keyfile) + "': " + reason + hint);
    }
    if (SSL_CTX_check_private_key(c) != 1)
        throw tls_config_error("key file '" + http1::printable(keyfile) + "' does not match certificate file '" + http1::printable(cfg.ssl_certfile) +
                               "': " + openssl_reason());

    if (!cfg.ssl_ca_certs.empty()) {
        check_readable("CA file", cfg.ssl_ca_certs);
        if (SSL_CTX_load_verify_locations(c, cfg.ssl_ca_certs.c_str(), nullptr) != 1)
            throw tls_config_error("cannot load CA file '" + http1::printable(cfg.ssl_ca_certs) + "': " + openssl_reason());
        // The CAs a client is told it may present a certificate of.
        if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(cfg.ssl_ca_certs.c_str()))
            SSL_CTX_set_client_CA_list(c, names);
        ERR_clear_error();
    }
    switch (cfg.ssl_cert_reqs) {
    case cert_reqs::none:
        SSL_CTX_set_verify(c, SSL_VERIFY_NONE, nullptr);
        break;
    case cert_reqs::optional:
        SSL_CTX_set_verify(c, SSL_VERIFY_PEER, accept_unverified);
        break;
    case cert_reqs::required:
        if (cfg.ssl_ca_certs.empty())
            throw tls_config_error("--ssl-cert-reqs 2 needs --ssl-ca-certs: the CAs that client certificates are checked against");
        SSL_CTX_set_verify(c, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
        break;
    }
    // A session resumed with a client certificate needs a context id (SSL_CTX_set_verify(3)).
    static constexpr unsigned char sid[] = "cserve";
    SSL_CTX_set_session_id_context(c, sid, sizeof sid - 1);
    // Stateless tickets with the key every worker shares. No session cache of our own: a
    // cache is per process, the ticket works in any worker.
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
    if (SSL_CTX_set_tlsext_ticket_keys(c, const_cast<unsigned char*>(key.bytes), sizeof key.bytes) != 1)
        throw tls_config_error("cannot set the session ticket key: " + openssl_reason());

    prepare_tls_context(*ctx, cfg.http2);
    return ctx;
}

std::shared_ptr<net::ssl::context>
load_tls_context(config const& cfg, ticket_key const& key)
{
    if (!cfg.ssl_context_factory)
        return make_tls_context(cfg, key);
    std::shared_ptr<net::ssl::context> ctx;
    try {
        ctx = cfg.ssl_context_factory();
    } catch (std::exception const& e) {
        throw tls_config_error(std::string("ssl_context_factory failed: ") + e.what());
    }
    if (!ctx)
        throw tls_config_error("ssl_context_factory returned no context");
    prepare_tls_context(*ctx, cfg.http2);
    return ctx;
}

std::string_view
alpn_protocol(SSL const* ssl) noexcept
{
    unsigned char const* p = nullptr;
    unsigned n = 0;
    SSL_get0_alpn_selected(ssl, &p, &n);
    return p ? std::string_view(reinterpret_cast<char const*>(p), n) : std::string_view{};
}

tls_info
make_tls_info(SSL* ssl)
{
    using namespace tls_impl;
    tls_info info;
    if (X509* own = SSL_get_certificate(ssl))
        info.server_cert = to_pem(own);
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    X509* leaf = SSL_get1_peer_certificate(ssl);
#else
    X509* leaf = SSL_get_peer_certificate(ssl);
#endif
    if (leaf) {
        info.client_cert_chain.push_back(to_pem(leaf));
        info.client_cert_name = rfc4514_name(X509_get_subject_name(leaf));
        // A server's peer chain leaves the leaf out (SSL_get_peer_cert_chain(3)).
        if (STACK_OF(X509)* chain = SSL_get_peer_cert_chain(ssl)) {
            for (int i = 0; i < sk_X509_num(chain); ++i) {
                X509* c = sk_X509_value(chain, i);
                if (X509_cmp(c, leaf) != 0)
                    info.client_cert_chain.push_back(to_pem(c));
            }
        }
        long v = SSL_get_verify_result(ssl);
        if (v != X509_V_OK)
            info.client_cert_error = X509_verify_cert_error_string(v);
        X509_free(leaf);
    }
    info.tls_version = static_cast<std::uint16_t>(SSL_version(ssl));
    if (SSL_CIPHER const* cipher = SSL_get_current_cipher(ssl))
        info.cipher_suite = SSL_CIPHER_get_protocol_id(cipher);
    return info;
}

} // namespace cserve::detail

#endif
