// tests/fuzz/fuzz_server_session.cc: libFuzzer target for the whole SMTP server session fed
// arbitrary bytes, with a fake host that commits ok / fails alternately and, when STARTTLS is
// offered, "completes the handshake" at once whenever the session asks (the bytes after it are
// fed on as if decrypted, so the transcript stays split-invariant); with AUTH offered it
// answers each complete attempt at once (alice:secret succeeds, users "temp" and "lock" get
// 454 and 421, anything else fails; a config bit makes it refuse AUTH per address). Checks the replies
// are well-formed CRLF lines with a 3-digit code, that feed() honours its consumption
// contract, and that the transcript does not depend on where the input is split.
// Input layout: [config byte][cut byte] dialogue...
// SECURITY: this is everything a network client can make the session do.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "protocol/server_session.h"

using namespace ringrelay::protocol;

namespace {

class fake_host final : public session_host {
public:
    bool locked = false;
    host_reply check_auth(const client_info&) noexcept override {
        return locked ? host_reply{reply_id::auth_throttled, "mx.example.net"} : host_reply{};
    }
    std::uint64_t next_queue_id() noexcept override { return ++_id; }
    std::string_view rfc5322_date() noexcept override { return "Sat, 28 Nov 2026 03:35:26 +0000"; }

private:
    std::uint64_t _id = 0;
};

void check_replies(std::string_view out) {
    while (!out.empty()) {
        const std::size_t end = out.find("\r\n");
        if (end == std::string_view::npos || end < 3) std::abort();
        for (std::size_t i = 0; i < 3; ++i) {
            if (out[i] < '0' || out[i] > '9') std::abort();
        }
        for (std::size_t i = 0; i < end; ++i) {
            if (out[i] == '\r' || out[i] == '\n') std::abort();
        }
        out.remove_prefix(end + 2);
    }
}

bool clean_field(std::string_view v) {
    return v.size() <= 255 && v.find_first_of(std::string_view("\0\r\n", 3)) == std::string_view::npos;
}

std::string run(const server_config& config, const client_info& client, std::string_view in, std::size_t cut,
                bool locked) {
    fake_host host;
    host.locked = locked;
    server_session s(config, client, host);
    std::string out;
    s.start(out);
    std::size_t commits = 0;
    const std::string_view pieces[2] = {in.substr(0, cut), in.substr(cut)};
    for (std::string_view piece : pieces) {
        while (!s.closed()) {
            const std::size_t n = s.feed(piece, out);
            if (n > piece.size()) std::abort();
            piece.remove_prefix(n);
            if (s.message_ready()) {
                const std::string_view m = s.message();
                if (m.substr(0, 15) != "Received: from ") std::abort();
                if (s.message_envelope().rcpt_to.empty()) std::abort();
                if (config.max_message_size != 0 && m.size() > config.max_message_size + 1024) std::abort();
                // ok, then a failure, alternately (the failures alternate no_space / io_error).
                const std::size_t k = commits++ % 4;
                const commit_result r = (k % 2 == 0) ? commit_result::ok
                                        : (k == 1)   ? commit_result::no_space
                                                     : commit_result::io_error;
                s.commit_done(r, out);
                if (s.message_ready()) std::abort();
                continue;
            }
            if (s.tls_requested()) {
                if (config.tls != tls_offer::starttls || s.tls_active()) std::abort();
                if (s.feed("NOOP\r\n", out) != 0) std::abort();  // nothing is read before the handshake
                s.on_tls_established(tls_info{"TLSv1.3", "TLS_AES_256_GCM_SHA384", 256, 256});
                if (s.tls_requested() || !s.tls_active()) std::abort();
                continue;
            }
            if (s.auth_pending()) {
                if (config.auth == auth_offer::none || locked || !s.authenticated_user().empty()) std::abort();
                if (config.auth == auth_offer::under_tls && !s.tls_active()) std::abort();
                if (s.feed("NOOP\r\n", out) != 0) std::abort();  // nothing is read during the check
                const auth_attempt a = s.pending_auth();
                if (a.well_formed && (!clean_field(a.user) || !clean_field(a.password) || a.user.empty())) std::abort();
                const bool ok = a.well_formed && a.authzid.empty() && a.user == "alice" && a.password == "secret";
                // Every verdict a host can give: users "temp" and "lock" get 454 and 421.
                const auth_result r = ok                 ? auth_result::ok
                                      : a.user == "temp" ? auth_result::temporary_failure
                                      : a.user == "lock" ? auth_result::throttled
                                                         : auth_result::failed;
                s.auth_done(r, out);
                if (s.auth_pending()) std::abort();
                if (ok && s.authenticated_user() != "alice") std::abort();
                if (r == auth_result::throttled && !s.closed()) std::abort();
                if (!ok && !s.authenticated_user().empty()) std::abort();
                continue;
            }
            if (!s.closed() && !piece.empty()) std::abort();  // must consume everything
            break;
        }
    }
    if (s.closed() && s.feed("NOOP\r\n", out) != 0) std::abort();
    s.shrink();
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) return 0;
    server_config config;
    config.hostname = "mx.example.net";
    config.max_message_size = (data[0] & 1) != 0 ? 64 : 0;
    config.max_recipients = (data[0] & 2) != 0 ? 2 : 1000;
    config.max_errors = (data[0] & 4) != 0 ? 3 : 20;
    config.relay_domains = {"example.org", ".example.com"};
    config.tls = (data[0] & 16) != 0 ? tls_offer::starttls : tls_offer::none;
    config.auth = (data[0] & 32) != 0 ? auth_offer::always : (data[0] & 64) != 0 ? auth_offer::under_tls : auth_offer::none;
    config.max_auth_failures = 3;
    const bool locked = (data[0] & 128) != 0;
    config.sync = pipelining_sync::off;  // the split-invariance check below needs it off
    const client_info client{"192.0.2.1", (data[0] & 8) != 0 ? relay_trust::trusted : relay_trust::untrusted};
    const std::string_view in(reinterpret_cast<const char*>(data + 2), size - 2);
    const std::size_t cut = in.empty() ? 0 : static_cast<std::size_t>(data[1]) * in.size() / 256;
    const std::string whole = run(config, client, in, 0, locked);
    check_replies(whole);
    if (run(config, client, in, cut, locked) != whole) std::abort();
    // With the RFC 2920 check on, replies depend on the split; they must still be well formed.
    config.sync = pipelining_sync::enforce;
    check_replies(run(config, client, in, cut, locked));
    return 0;
}
