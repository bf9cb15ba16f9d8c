// core/ktls.cc: the kTLS parts of core/tls.h: the start-up probes (is the kernel's "tls" ULP
// there; does a real handshake on a socket end with the kernel holding the record layer both
// ways) and the decision a server takes from them.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>

#include "core/tls.h"

namespace ringrelay::core {

namespace {
// The first reason on this thread's OpenSSL error queue, then the queue is cleared.
std::string first_error() {
    const unsigned long first = ERR_get_error();
    ERR_clear_error();
    const char* reason = first != 0 ? ERR_reason_error_string(first) : nullptr;
    return reason != nullptr ? reason : "unknown error";
}
}  // namespace

// --- kTLS probe ----------------------------------------------------------------------------------

ktls_probe probe_ktls() noexcept {
    ktls_probe p;
#ifndef OPENSSL_NO_KTLS
    p.openssl_support = true;
#endif
    const std::string user_space = "; TLS in user space (OpenSSL)";
    const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    int client = -1;
    int server = -1;
    int err = 0;
    if (listener < 0 || ::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(listener, 1) != 0 || ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
        err = errno;
    } else {
        client = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (client < 0 || ::connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
            err = errno;
        } else {
            server = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
            if (server < 0) err = errno;
        }
    }
    if (err != 0) {
        p.detail =
            std::string("kTLS: not available (cannot test on loopback: ") + std::strerror(err) + ")" + user_space;
    } else {
        static constexpr char ulp[] = "tls";
        if (::setsockopt(server, SOL_TCP, TCP_ULP, ulp, sizeof ulp) == 0) {
            p.available = true;
            p.detail = std::string("kTLS: the kernel offers the 'tls' ULP") +
                       (p.openssl_support ? "" : " but OpenSSL was built without kTLS") +
                       " (whether sessions use it is decided with a handshake probe once a certificate is loaded)";
        } else if (errno == ENOENT) {
            p.detail = "kTLS: not available (no 'tls' ULP)" + user_space;
        } else {
            p.detail = std::string("kTLS: not available (TCP_ULP: ") + std::strerror(errno) + ")" + user_space;
        }
    }
    if (server >= 0) ::close(server);
    if (client >= 0) ::close(client);
    if (listener >= 0) ::close(listener);
    return p;
}

ktls_handshake_probe probe_ktls_handshake(const tls_credentials& credentials) noexcept {
    ktls_handshake_probe p;
    int fds[2] = {-1, -1};
    // A TCP pair on loopback (the ULP needs TCP), both ends non-blocking.
    const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (listener >= 0 && ::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
        ::listen(listener, 1) == 0 && ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
        fds[0] = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fds[0] >= 0 && ::connect(fds[0], reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0)
            fds[1] = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    }
    if (listener >= 0) ::close(listener);
    auto finish = [&](std::string detail) {
        for (int fd : fds)
            if (fd >= 0) ::close(fd);
        p.detail = std::move(detail);
        return p;
    };
    if (fds[0] < 0 || fds[1] < 0) return finish(std::string("kTLS handshake probe: no loopback pair: ") + std::strerror(errno));
    (void)::fcntl(fds[0], F_SETFL, ::fcntl(fds[0], F_GETFL) | O_NONBLOCK);
    auto server_ctx = tls_context::server(credentials);
    auto client_ctx = tls_context::client();
    if (!server_ctx || !client_ctx) return finish("kTLS handshake probe: no TLS context");
    auto server = tls_session::create_on_socket(*server_ctx, fds[1]);
    if (!server) return finish("kTLS handshake probe: " + server.error().text);
    std::unique_ptr<SSL, void (*)(SSL*)> client(SSL_new(client_ctx->native()), SSL_free);
    if (!client || SSL_set_fd(client.get(), fds[0]) != 1) return finish("kTLS handshake probe: client setup failed");
    SSL_set_connect_state(client.get());
    // Both ends in this thread, in turns, until both are done (bounded: a handshake is a few
    // round trips).
    bool server_done = false;
    bool client_done = false;
    for (int turn = 0; turn < 200 && !(server_done && client_done); ++turn) {
        if (!client_done) {
            ERR_clear_error();
            const int r = SSL_do_handshake(client.get());
            const int e = SSL_get_error(client.get(), r);
            if (r == 1) {
                client_done = true;
            } else if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                return finish("kTLS handshake probe: client failed: " + first_error());
            }
        }
        if (!server_done) {
            auto step = server->handshake_on_socket();
            if (!step) return finish("kTLS handshake probe: " + step.error().text);
            server_done = *step == tls_session::socket_step::done;
        }
        if (!(server_done && client_done)) ::usleep(1000);
    }
    if (!(server_done && client_done)) return finish("kTLS handshake probe: the handshake did not complete");
    p.sends = server->kernel_sends();
    p.receives = server->kernel_receives();
    return finish(std::string("kTLS handshake probe (") + std::string(server->protocol_name()) + " " +
                  std::string(server->cipher_name()) + "): kernel " + (p.sends ? "sends" : "does not send") +
                  " and " + (p.receives ? "receives" : "does not receive"));
}

ktls_decision decide_ktls(const ktls_probe& probe, bool enabled, const tls_credentials& credentials) noexcept {
    ktls_decision d;
    d.detail = probe.detail;
    if (!probe.available || !probe.openssl_support) return d;
    if (!enabled) {
        d.detail = "kTLS: the kernel offers it, off by --no-ktls; TLS in user space (OpenSSL)";
        return d;
    }
    const ktls_handshake_probe hp = probe_ktls_handshake(credentials);
    d.kernel = hp.sends && hp.receives;
    d.detail = d.kernel ? "kTLS: on: after each inbound handshake the kernel encrypts and decrypts the records (" +
                              hp.detail + ")"
                        : "kTLS: not used: " + hp.detail + "; TLS in user space (OpenSSL)";
    return d;
}

}  // namespace ringrelay::core
