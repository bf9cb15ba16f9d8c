// queue/tls_client_policy.h: a shard's outbound TLS (RFC 3207) as its destination pool applies
// it (docs/ARCHITECTURE.md "Delivery", TLS policy): what each new connection does about
// STARTTLS, the shard's client contexts, the session cache for resumption, and the memory of
// next-hop addresses whose handshake failed.
//
// Policy (core::config::tls_policy_for(domain), carried by the destination): disabled: no
// STARTTLS; opportunistic: STARTTLS when offered, any certificate; required: TLS or defer
// (4.7.x), never a MAIL in clear; verify: required, and the certificate must chain to
// --outbound-ca-file (else OpenSSL's default paths) and name the MX host (or the static
// route's address). An opportunistic handshake that fails on TLS itself marks the address
// TLS-broken for tls_fallback_ms: connections to it go in plaintext until then, as Postfix
// does after a failed handshake.
//
// Sessions (RFC 8446 §2.2, RFC 5077): the last resumable session per key (SNI name, next-hop
// address and verification mode, made by queue/outbound.cc) is handed out once (a TLS 1.3
// ticket is for one connection, RFC 8446 §C.4), never when its full handshake is an hour old
// or older (the certificate is verified again), nor when it was made under an older CA file.
//
// Reload: `generation` (relay-owned) is bumped by a SIGHUP whose --outbound-ca-file loaded; at
// its next tick() the policy drops its contexts and saved sessions, so the new CA file is what
// verifies from then on (connections already in TLS keep theirs; their sessions are not kept).
//
// Threading: shard-local (one per shard: no OpenSSL context shared between shard threads);
// only `generation` is written by another thread.
#pragma once
#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "core/clock.h"
#include "core/config.h"
#include "core/tls.h"
#include "protocol/client_types.h"

namespace ringrelay::queue {

// How long an address whose TLS handshake failed gets plaintext (opportunistic policy only).
inline constexpr std::int64_t tls_fallback_ms = 60 * 60 * 1000;
// How long a full handshake's verification stands for the sessions resumed from it
// (Postfix's smtp_tls_session_cache_timeout default).
inline constexpr std::int64_t tls_session_lifetime_ms = 60 * 60 * 1000;

class tls_client_policy {
public:
    // `generation` (relay-owned) and `clock` outlive the policy.
    tls_client_policy(const core::config& config, const std::atomic<std::uint64_t>& generation,
                      const core::time_source& clock) noexcept;
    tls_client_policy(const tls_client_policy&) = delete;
    tls_client_policy& operator=(const tls_client_policy&) = delete;

    // What a new connection under `policy` to `address` ("ADDR:PORT"; "" when not known yet)
    // does: STARTTLS never, when offered or required, and whether it verifies the peer.
    struct connection_tls {
        protocol::tls_use starttls = protocol::tls_use::when_offered;
        core::tls_verify verify = core::tls_verify::none;
    };
    [[nodiscard]] connection_tls for_connection(core::config::tls_policy policy, std::string_view address) noexcept;
    // An opportunistic handshake with `address` failed on TLS itself: plaintext there for
    // tls_fallback_ms, starting with the next connection.
    void mark_broken(const std::string& address);

    // The shard's client context, without or with peer verification, made on first use; null
    // (and `error` says why, e.g. an unreadable --outbound-ca-file) if it cannot be.
    [[nodiscard]] core::tls_context* client_context(core::tls_verify verify, std::string& error) noexcept;

    struct resumption {
        core::tls_saved_session session;
        std::int64_t verified_ms = 0;  // the full handshake's time (monotonic)
        std::uint64_t generation = 0;  // of the contexts it was made with
    };
    [[nodiscard]] std::optional<resumption> take_session(const std::string& key) noexcept;
    void keep_session(const std::string& key, resumption r);
    [[nodiscard]] std::uint64_t generation() const noexcept { return _generation; }

    // Once a second: a reloaded CA file (a new generation) drops the contexts and sessions.
    void tick() noexcept;

private:
    // Fixed after construction.
    const core::config& _config;
    const std::atomic<std::uint64_t>& _reload;  // written by the relay (SIGHUP)
    const core::time_source& _clock;
    // Shard-local.
    std::optional<core::tls_context> _any;     // verify none (opportunistic, required)
    std::optional<core::tls_context> _verify;  // verify peer (verify)
    std::string _verify_error;                 // why _verify could not be made
    // Next-hop addresses ("ADDR:PORT") whose handshake failed, until when (monotonic ms).
    std::unordered_map<std::string, std::int64_t> _broken_until;
    std::unordered_map<std::string, resumption> _sessions;
    std::uint64_t _generation = 0;  // of _reload when the contexts were made
    std::string _ca_file;           // --outbound-ca-file when they were made
};

}  // namespace ringrelay::queue
