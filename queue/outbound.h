// queue/outbound.h: one outbound SMTP connection of a shard's delivery: io_uring connect,
// multishot recv from the shard's buffer ring, batched sends, and a protocol::client_session
// that runs one transaction at a time for its destination, reusing the connection for many
// messages (RFC 5321 §3.3; PIPELINING/CHUNKING when offered).
//
// STARTTLS (RFC 3207): when the session asks for TLS (client_config::starttls, set by the
// pool from the destination's policy), a core::tls_session (the shard's client context from
// queue/tls_client_policy.h; SNI and, under `verify`, the checked name = the target's host) sits between
// the socket and the session: received ciphertext -> plaintext -> session.feed(); commands ->
// records -> send. The rest of the read that carried the 220 is discarded, never read as SMTP
// (response injection); everything after it is handshake input. All socket I/O stays on the
// shard's io_uring. A failed handshake is logged (peer, reason) and ends the connection; the
// pool then decides between deferring and a plaintext retry (close_report).
//
// Interface (queue/outbound_link.h): made by the destination pool through outbound_factory
// with its target, client settings and TLS policy; it is given one job at a time (assign())
// and reports to its outbound_owner: ready, each job's outcome (one per recipient), closed,
// output waiting. What to do next comes back from the report and is done here, after the
// report returned.
//
// Lifecycle: made by the pool -> start() (connect) -> jobs -> quit or failure -> closed ->
// freed by the pool at the end of the turn once no operation is in flight. Shard-local (the
// destination's owner shard).
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/buffer_ring.h"
#include "core/net.h"
#include "core/reactor.h"
#include "core/tls.h"
#include "protocol/client_session.h"
#include "queue/outbound_link.h"
#include "queue/tls_client_policy.h"

namespace ringrelay::queue {

class outbound final : public outbound_link {
public:
    // `config.starttls` says whether to use STARTTLS; `verify`: check the peer's certificate
    // and name (the policy's verifying context) rather than accept any. reactor, buffers, tls
    // and owner outlive the connection.
    outbound(core::reactor& reactor, core::buffer_ring& buffers, tls_client_policy& tls, outbound_owner& owner,
             connection_target target, const protocol::client_config& config, core::tls_verify verify);
    outbound(const outbound&) = delete;
    outbound& operator=(const outbound&) = delete;
    ~outbound() override;

    // outbound_link
    void start() noexcept override;
    void assign(delivery_job* job) noexcept override;
    [[nodiscard]] bool ready_for_job() const noexcept override;
    void finish() noexcept override;
    void abort(const char* why) noexcept override;
    void flush() noexcept override;
    [[nodiscard]] bool retirable() const noexcept override;
    [[nodiscard]] std::int64_t last_activity_ms() const noexcept override { return _last_activity_ms; }
    [[nodiscard]] bool busy() const noexcept override { return _job != nullptr; }
    [[nodiscard]] std::uint32_t messages_sent() const noexcept override { return _messages; }
    [[nodiscard]] bool connected() const noexcept override { return _connected; }
    [[nodiscard]] bool closing() const noexcept override { return _closing; }
    [[nodiscard]] bool quitting() const noexcept override { return _quit_requested; }

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
    // Does what the owner answered to a report: QUIT, or run the job it gave.
    void follow(const next_step& next) noexcept;
    void report_closed(bool before_greeting, std::string why) noexcept;
    [[nodiscard]] next_hop_ref hop() const;
    void on_input(std::string_view data) noexcept;
    void start_tls() noexcept;
    // Hands a resumable TLS session to the policy for the next connection to this address.
    void remember_tls_session() noexcept;
    [[nodiscard]] std::string tls_resumption_key() const;
    std::int64_t _tls_verified_ms = 0;     // the full handshake this session descends from
    std::uint64_t _tls_generation = 0;     // of the policy's contexts at start_tls
    void fail_tls(std::string_view reason) noexcept;
    [[nodiscard]] bool session_usable() const noexcept;
    [[nodiscard]] std::string closed_reason() const;
    [[nodiscard]] std::string peer_text() const;

    core::reactor& _reactor;
    core::buffer_ring& _buffers;
    tls_client_policy& _tls_policy;
    outbound_owner& _owner;
    const connection_target _target;
    const std::string _target_address;  // "ADDR:PORT"
    protocol::client_session _session;
    int _fd = -1;
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

// Makes queue::outbound connections for a destination pool.
class outbound_factory final : public link_factory {
public:
    outbound_factory(core::reactor& reactor, core::buffer_ring& buffers, tls_client_policy& tls) noexcept
        : _reactor(reactor), _buffers(buffers), _tls(tls) {}
    [[nodiscard]] std::unique_ptr<outbound_link> make(const connection_target& target,
                                                      const protocol::client_config& config, core::tls_verify verify,
                                                      outbound_owner& owner) override;

private:
    core::reactor& _reactor;
    core::buffer_ring& _buffers;
    tls_client_policy& _tls;
};

}  // namespace ringrelay::queue
