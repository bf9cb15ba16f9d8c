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
// Bodies: a job's body comes from its origin's cache (shared, never copied) or is read back
// from the origin's spool segment. Up to body_stream_threshold the whole record is read at once
// (one io_uring read, checked by decode_record) and the session copies the body into the
// stream's output. A larger body is never held whole by the connection nor copied whole into
// the output: the session takes it in pieces (protocol::body_source::pieces), each given when
// the stream's queued output has fallen below body_piece_size, from the cached copy or from
// reads of body_piece_size into one buffer per connection, the next read issued once the
// previous piece was given. That buffer is one of the shard's registered buffers
// (core::fixed_buffer_pool, the reactor's; IORING_OP_READ_FIXED: the pages were mapped once at
// start-up, not imported at every read), acquired when the body's first read is issued and kept until
// the body is done and no read into it is in flight; when none is free (or the kernel refused
// the registration) it is plain memory read with IORING_OP_READ, the same in every other
// respect. Each read is counted in the pool (fixed or plain). The whole read of a record up
// to body_stream_threshold stays a plain read into memory of its own: that memory becomes the
// job's shared message_body, which a registered buffer could only become by a copy. The record's CRC-32C is checked as the pieces come (record_stream_check)
// and the body's last piece, which ends the data, is given only once the whole record
// matched. A read error or a mismatch mid-body abandons the body (the session never ends the
// data) and aborts the connection, so the peer discards the partial message; the job gets the
// same local 451 4.3.0 as a failed whole read. Per connection this holds at most one piece
// read (256 KiB), the output queued below 256 KiB when a piece is given plus that piece
// encoded (at most twice its size: a bare LF or a leading '.' doubles), and one send of at
// most as much in the kernel: 1.75 MiB at worst, 1.25 MiB for a body of CRLF lines. The piece
// buffer goes back to the pool, or is freed, when the body is done.
// SECURITY: every byte received is the next hop's; the stream moves it and the session parses
// it (bounded reply lines). Output waits only behind our own commands. Spooled bytes are given
// to the peer only from a record whose header checked; the end of data only once its CRC did.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/fixed_buffer_pool.h"
#include "core/net.h"
#include "core/stream.h"
#include "core/tls.h"
#include "protocol/client_session.h"
#include "queue/outbound_link.h"
#include "queue/record.h"
#include "queue/tls_client_policy.h"

namespace ringrelay::queue {

// The piece of a large body read and given to the session at a time, and the mark: a piece is
// given only while less than this is queued in the stream's output.
inline constexpr std::size_t body_piece_size = 256 * 1024;
// A body larger than this (four pieces, 1 MiB) is sent in pieces; a smaller one whole (one
// read of its record: fewer round trips through the loop, and it is small anyway).
inline constexpr std::uint64_t body_stream_threshold = 4 * body_piece_size;
// The registered buffers a shard asks for (core::fixed_buffer_pool), each body_piece_size:
// one per connection streaming a large body at the same time, the rest read into plain
// memory. 16 (4 MiB per shard, pinned and resident for the shard's life): the default
// --max-connections-per-destination, so one destination's connections all get one. Bodies
// over 1 MiB are rare next to the connections a shard runs, so more would mostly sit idle.
// Root (CAP_IPC_LOCK) has no limit; an unprivileged user's RLIMIT_MEMLOCK (8 MiB by default
// since Linux 5.16, shared by all its processes, and on recent kernels charged for the rings
// too) fits one shard's pool, and later shards get fewer (the pool halves its request) or
// none: their streamed reads use plain memory, and the start-up line says so.
inline constexpr unsigned body_read_buffers = 16;

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
    [[nodiscard]] bool retirable() const noexcept override {
        return _closing && _stream.finished() && !_loading && !_piece_reading;
    }
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

    // A large body in pieces (see above). start_spool_body: the record's first piece is read
    // before the job is submitted (a record that fails at once costs no transaction);
    // pump_body gives pieces while the session wants them and the output has room, and reads
    // the next; a failure mid-body abandons it (fail_body).
    [[nodiscard]] bool streams_from_spool(const delivery_job& job) const noexcept;
    void start_spool_body() noexcept;
    void open_and_read() noexcept;
    void read_piece() noexcept;
    void piece_read(int res, std::uint32_t flags) noexcept;
    void pump_body() noexcept;
    void end_body_feed() noexcept;
    // The piece buffer: a registered one if the pool has one free, else plain memory; given
    // back (release_piece_buffer) only when no read into it is in flight.
    void take_piece_buffer() noexcept;
    void release_piece_buffer() noexcept;
    [[nodiscard]] std::string_view piece() const noexcept { return {_piece_data, _piece_length}; }
    void fail_body(delivery_job* job, const std::string& error) noexcept;
    [[nodiscard]] protocol::outcome_reply unreadable_reply(const delivery_job& job, const std::string& error) const;

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
    // A large body given in pieces (body_source::pieces), for _job.
    enum class body_feed : std::uint8_t { none, memory, spool };
    body_feed _feed = body_feed::none;
    bool _body_submitted = false;    // _job was given to the session
    std::string_view _feed_text;     // memory: the cached body (_job->body keeps it)
    std::uint64_t _feed_at = 0;      // memory: next octet of _feed_text; spool: of the record to read
    std::uint64_t _body_start = 0;   // spool: where the message starts in its record
    record_stream_check _check{0, 0};
    core::fixed_buffer_pool& _fixed_buffers;  // the reactor's: outlives the connection
    core::fixed_buffer _piece_fixed;  // spool: the registered buffer held, if any
    std::string _piece_plain;         // spool: else plain memory (body_piece_size)
    char* _piece_data = nullptr;      // the piece buffer (one of the two); null: none held
    std::size_t _piece_length = 0;    // of the piece read (or being read) into it
    std::size_t _piece_skip = 0;      // of the piece, the octets before the message (the envelope)
    bool _piece_full = false;         // the buffer holds a piece not yet given
    bool _piece_reading = false;      // a read into the buffer is in flight (or its failure posted)
    delivery_job* _piece_job = nullptr;  // the job that read is for
    int _piece_fd = -1;              // closed only when no read is in flight
    core::operation<&outbound::piece_read> _piece_op{*this};
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
    bool _tcp_connected = false;  // the TCP connection was made
    bool _local_failure = false;  // it failed on our side (close_report::local_failure)
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
    // Connections made so far (each a connect attempt).
    [[nodiscard]] std::uint64_t made() const noexcept { return _made; }

private:
    const core::stream_services _streams;
    std::uint64_t _made = 0;
    tls_client_policy& _tls;
};

}  // namespace ringrelay::queue
