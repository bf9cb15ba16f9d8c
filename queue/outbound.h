// queue/outbound.h: one outbound SMTP connection of a shard's delivery: a core::stream (io_uring
// connect, multishot receive from the shard's buffer ring, one batched send per loop turn, TLS
// underneath; the transport the inbound engine, the sink and the bench use too) wired to a
// protocol::client_session that runs one transaction at a time for its destination, reusing
// the connection for many messages (RFC 5321 §3.3; PIPELINING/CHUNKING when offered).
//
// STARTTLS (RFC 3207): when the session asks for TLS (client_config::starttls, set by the
// pool from the destination's policy), the stream starts a client TLS session (the shard's
// client context from queue/tls_client_policy.h; SNI and, under `verify`, the checked name =
// the target's host; a saved session offered for resumption) and from then on carries records
// both ways. The rest of the read that carried the 220 is discarded, never read as SMTP
// (response injection). A failed handshake is logged (peer, reason) and ends the connection;
// the pool then decides between deferring and a plaintext retry (close_report).
//
// Interface (queue/outbound_link.h): made by the destination pool through outbound_factory
// with its target, client settings and TLS policy; it is given one job at a time (assign())
// and reports to its outbound_owner: ready, each job's outcome (one per recipient), closed.
// What to do next comes back from the report and is done here, after the report returned.
// Output waiting is the stream's to send (the shard's stream_batch, at the turn's end), so
// this connection never asks the pool for want_flush; an outcome the session made without the
// peer (a message refused locally) is handed over from the stream's turn-end call
// (on_stream_flush, before its send, so the next job's commands leave in the same write), never
// from inside the report whose answer gave the job. flush() does the same for a pool that
// calls it.
//
// Lifecycle: made by the pool -> start() (connect) -> jobs -> quit or failure -> closed (the
// stream sends the last words, close_notify under TLS, and finishes) -> freed by the pool at
// the end of the turn once retirable() (the stream finished: nothing in flight). Shard-local
// (the destination's owner shard).
// SECURITY: every byte received is the next hop's; the stream moves it and the session parses
// it (bounded reply lines). Output waits only behind our own commands.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/net.h"
#include "core/stream.h"
#include "core/tls.h"
#include "protocol/client_session.h"
#include "queue/outbound_link.h"
#include "queue/tls_client_policy.h"

namespace ringrelay::queue {

class outbound final : public outbound_link, private core::stream_owner {
public:
    // `config.starttls` says whether to use STARTTLS; `verify`: check the peer's certificate
    // and name (the policy's verifying context) rather than accept any. The stream services
    // (the shard's reactor, buffer ring and stream batch), tls and owner outlive the
    // connection.
    outbound(const core::stream_services& streams, tls_client_policy& tls, outbound_owner& owner,
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
    [[nodiscard]] bool retirable() const noexcept override { return _closing && _stream.finished() && !_loading; }
    [[nodiscard]] std::int64_t last_activity_ms() const noexcept override { return _last_activity_ms; }
    [[nodiscard]] bool busy() const noexcept override { return _job != nullptr; }
    [[nodiscard]] std::uint32_t messages_sent() const noexcept override { return _messages; }
    [[nodiscard]] bool connected() const noexcept override { return _connected; }
    [[nodiscard]] bool closing() const noexcept override { return _closing; }
    [[nodiscard]] bool quitting() const noexcept override { return _quit_requested; }

private:
    // core::stream_owner
    void on_stream_data(std::string_view data) noexcept override;
    void on_stream_end(core::stream_end why, std::string_view detail) noexcept override;
    void on_stream_finished() noexcept override {}  // the pool sees retirable() at the turn's end
    void on_stream_connected() noexcept override;
    void on_stream_tls_ready() noexcept override;
    void on_stream_sent(std::uint8_t marks) noexcept override;
    void on_stream_progress() noexcept override;
    void on_stream_flush() noexcept override { hand_over_refusals(); }

    // The job's body: its origin's cached copy if it is still cached, else read back from the
    // origin's spool segment (a synchronous open, an io_uring read, checked by the record's
    // CRC); then the job is submitted. A body that cannot be read fails the attempt as a
    // transient failure with the reason (the recipients are deferred, never bounced).
    void load_body() noexcept;
    void body_loaded(int res) noexcept;
    void submit_job() noexcept;
    struct load_done final : core::completion {
        outbound* owner = nullptr;
        void complete(int res, std::uint32_t) noexcept override { owner->body_loaded(res); }
    };

    void after_step() noexcept;
    void lost(std::string_view why) noexcept;
    // The stream closes: what is queued leaves (close_notify under TLS), then the socket.
    void begin_close() noexcept;
    void deliver_outcomes() noexcept;
    // A job's outcome made without the peer (refused locally), handed over at the turn's end.
    void hand_over_refusals() noexcept;
    // Does what the owner answered to a report: QUIT, or run the job it gave.
    void follow(const next_step& next) noexcept;
    void report_closed(bool before_greeting, std::string why) noexcept;
    [[nodiscard]] next_hop_ref hop() const;
    void start_tls() noexcept;
    // Hands a resumable TLS session to the policy for the next connection to this address.
    void remember_tls_session() noexcept;
    [[nodiscard]] std::string tls_resumption_key() const;
    void fail_tls(std::string_view reason) noexcept;
    [[nodiscard]] bool session_usable() const noexcept;
    [[nodiscard]] std::string closed_reason() const;
    [[nodiscard]] std::string peer_text() const;

    tls_client_policy& _tls_policy;
    outbound_owner& _owner;
    const connection_target _target;
    const std::string _target_address;  // "ADDR:PORT"
    protocol::client_session _session;
    core::stream _stream;  // keeps its send buffer: messages are sent over and over
    delivery_job* _job = nullptr;
    // A body being read back (for _load_job; the job may have been given back meanwhile).
    core::reactor& _reactor;
    load_done _load_done;
    bool _loading = false;
    int _load_fd = -1;
    std::string _load_error;          // a failure found before the read was submitted
    delivery_job* _load_job = nullptr;
    std::string _load_buffer;
    std::vector<protocol::message_outcome> _done;  // outcomes being handed over (reused)
    std::string _tls_text;    // "TLSv1.3 TLS_AES_256_GCM_SHA384" once established
    std::string _tls_failure; // why the handshake failed
    std::int64_t _tls_verified_ms = 0;  // the full handshake this session descends from
    std::uint64_t _tls_generation = 0;  // of the policy's contexts at start_tls
    bool _tls_protocol_failure = false;
    const protocol::tls_use _tls_use;
    const core::tls_verify _verify;
    std::uint32_t _messages = 0;
    std::int64_t _last_activity_ms = 0;
    bool _connected = false;  // has reported connection_ready
    bool _closing = false;
    bool _quit_requested = false;
};

// Makes queue::outbound connections for a destination pool.
class outbound_factory final : public link_factory {
public:
    // `streams`: the shard's; outlive every connection made.
    outbound_factory(const core::stream_services& streams, tls_client_policy& tls) noexcept
        : _streams(streams), _tls(tls) {}
    [[nodiscard]] std::unique_ptr<outbound_link> make(const connection_target& target,
                                                      const protocol::client_config& config, core::tls_verify verify,
                                                      outbound_owner& owner) override;

private:
    const core::stream_services _streams;
    tls_client_policy& _tls;
};

}  // namespace ringrelay::queue
