// queue/outbound.h: one outbound SMTP connection of a shard's delivery: io_uring connect,
// multishot recv from the shard's buffer ring, batched sends, and a protocol::client_session
// that runs one transaction at a time for its destination, reusing the connection for many
// messages (RFC 5321 §3.3; PIPELINING/CHUNKING when offered).
//
// STARTTLS (RFC 3207): when the session asks for TLS (client_config::starttls, set by the
// delivery from the destination's policy), a core::tls_session (the delivery's per-shard
// client context; SNI and, under `verify`, the checked name = the target's host) sits between
// the socket and the session: received ciphertext -> plaintext -> session.feed(); commands ->
// records -> send. The rest of the read that carried the 220 is discarded, never read as SMTP
// (response injection); everything after it is handshake input. All socket I/O stays on the
// shard's io_uring. A failed handshake is logged (peer, reason) and ends the connection; the
// delivery then decides between deferring and a plaintext retry (tls_failed()).
//
// Lifecycle: created by delivery for a destination -> start() (connect) -> jobs ->
// quit or failure -> closed -> retired by delivery at the end of the turn once no operation
// is in flight. Owned by its shard's delivery; shard-local.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <optional>

#include "core/net.h"
#include "core/reactor.h"
#include "core/tls.h"
#include "protocol/client_session.h"

namespace ringrelay::queue {

class delivery;
struct destination;
struct delivery_job;

class outbound final {
public:
    // `config.starttls` says whether to use STARTTLS; `verify`: check the peer's certificate
    // and name (the delivery's verifying context) rather than accept any.
    outbound(delivery& owner, destination& dest, const protocol::client_config& config, core::tls_verify verify);
    outbound(const outbound&) = delete;
    outbound& operator=(const outbound&) = delete;
    ~outbound();

    void start() noexcept;
    // Gives the connection a job; it must be ready_for_job().
    void assign(delivery_job* job) noexcept;
    [[nodiscard]] bool ready_for_job() const noexcept;
    // No more jobs: say QUIT once idle.
    void finish() noexcept;
    // Deadline passed (connect, reply, or idle): give up on the connection.
    void abort(const char* why) noexcept;
    void flush() noexcept;

    [[nodiscard]] bool retirable() const noexcept;
    [[nodiscard]] destination& dest() noexcept { return _dest; }
    [[nodiscard]] std::int64_t last_activity_ms() const noexcept { return _last_activity_ms; }
    [[nodiscard]] bool busy() const noexcept { return _job != nullptr; }
    [[nodiscard]] std::uint32_t messages_sent() const noexcept { return _messages; }
    [[nodiscard]] bool connected() const noexcept { return _connected; }
    [[nodiscard]] bool closing() const noexcept { return _closing; }
    [[nodiscard]] bool quitting() const noexcept { return _quit_requested; }
    [[nodiscard]] protocol::close_reason why_closed() const noexcept { return _session.why_closed(); }
    // The exchanger this connection goes to: its host name and "ADDR:PORT".
    [[nodiscard]] const std::string& target_host() const noexcept { return _target_host; }
    [[nodiscard]] const std::string& target_address() const noexcept { return _target_address; }
    // "TLSv1.3 TLS_AES_256_GCM_SHA384" once TLS is up; "" in plaintext.
    [[nodiscard]] const std::string& tls_text() const noexcept { return _tls_text; }
    // The session closed because the TLS handshake failed (tls_failure() says why).
    [[nodiscard]] bool tls_failed() const noexcept {
        return _session.why_closed() == protocol::close_reason::tls_failed;
    }
    [[nodiscard]] const std::string& tls_failure() const noexcept { return _tls_failure; }
    // The handshake failed on TLS itself (an alert, a bad answer, a local setup error), not
    // because the connection was lost during it: only then is a plaintext retry justified.
    [[nodiscard]] bool tls_protocol_failure() const noexcept { return _tls_protocol_failure; }
    [[nodiscard]] protocol::tls_use tls_use() const noexcept { return _tls_use; }

    std::size_t slot = 0;  // index in the delivery's connection list

private:
    struct op final : core::completion {
        outbound* owner = nullptr;
        void (outbound::*handler)(int, std::uint32_t) noexcept = nullptr;
        void complete(int res, std::uint32_t flags) noexcept override { (owner->*handler)(res, flags); }
    };
    void on_connect(int res, std::uint32_t flags) noexcept;
    void on_recv(int res, std::uint32_t flags) noexcept;
    void on_send(int res, std::uint32_t flags) noexcept;
    void arm_recv() noexcept;
    void after_step() noexcept;
    void lost(const char* why) noexcept;
    void deliver_outcomes() noexcept;
    void on_input(std::string_view data) noexcept;
    void start_tls() noexcept;
    // Hands a resumable TLS session to the delivery for the next connection to this address.
    void remember_tls_session() noexcept;
    [[nodiscard]] std::string tls_resumption_key() const;
    std::int64_t _tls_verified_ms = 0;     // the full handshake this session descends from
    std::uint64_t _tls_generation = 0;     // of the delivery's contexts at start_tls
    void fail_tls(std::string_view reason) noexcept;
    [[nodiscard]] bool session_usable() const noexcept;
    [[nodiscard]] std::string closed_reason() const;
    [[nodiscard]] std::string peer_text() const;

    delivery& _owner;
    destination& _dest;
    protocol::client_session _session;
    int _fd = -1;
    core::endpoint _target;
    std::string _target_host;
    std::string _target_address;
    op _connect_op;
    op _recv_op;
    op _send_op;
    std::string _out;      // session output (plaintext) not yet on the wire
    std::string _wire;     // bytes for the kernel: _out before TLS, TLS records after
    std::string _sending;  // bytes the kernel is sending (untouched until completion)
    std::size_t _sent = 0;
    delivery_job* _job = nullptr;
    std::vector<protocol::message_outcome> _done;  // outcomes being handed over (reused)
    std::optional<core::tls_session> _tls;
    std::string _plain;       // decrypted input of one receive (reused)
    std::string _tls_text;    // "TLSv1.3 TLS_AES_256_GCM_SHA384" once established
    std::string _tls_failure; // why the handshake failed
    bool _tls_protocol_failure = false;
    const protocol::tls_use _tls_use;
    const core::tls_verify _verify;
    std::uint32_t _messages = 0;
    std::int64_t _last_activity_ms = 0;
    bool _connect_in_flight = false;
    bool _connected = false;
    bool _recv_armed = false;
    bool _send_in_flight = false;
    bool _closing = false;
    bool _quit_requested = false;
    bool _retired = false;
};

}  // namespace ringrelay::queue
