// tools/bench/connection.h: one SMTP client connection of ringrelay-bench: a core::stream (io_uring
// connect, multishot receive from the shard's buffer ring, one batched send per loop turn, TLS
// underneath) and a protocol::client_session (PIPELINING/CHUNKING as configured) that carries
// up to two messages at a time; the connection is reused for many messages and reopened after
// it closes (the same stream connects again).
//
// Lifecycle: down -> open() -> connecting -> greeting (220, EHLO) -> ready <-> busy (one
// message: MAIL .. end of data) -> quit() or failure -> closing (the last command leaves, the
// stream finishes: nothing in flight) -> down, reported to the shard, which reopens it (after
// a back-off if it failed) or lets it rest once the run is over.
//
// --starttls: when the session asks for TLS, the stream starts a client TLS session (the rest
// of the read carrying the 220 is discarded; then records both ways).
//
// Ownership: created and driven by one shard (its thread, its reactor and buffer ring). The
// message body and recipient strings are the connection's own, rewritten only when the
// session has no message (client_session's lifetime rule for outbound_message).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/stream.h"
#include "protocol/client_session.h"

namespace ringrelay::bench {

class shard;

enum class connection_state : std::uint8_t { down, connecting, greeting, ready, busy, closing };

// How a connection ended, for the shard's reopen policy.
enum class close_kind : std::uint8_t {
    normal,  // our QUIT was answered (or we closed it at the end of the run)
    failed,  // connect error, refused greeting, 421, protocol error, lost, timeout
};

class connection final : public core::stream_owner {
public:
    explicit connection(shard& owner);
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;
    ~connection() = default;

    // down -> connecting.
    void open(std::int64_t now_ns) noexcept;
    // ready -> busy: sends message `seq` (scheduled at `scheduled_ns`, = now in closed loop).
    void send_message(std::uint64_t seq, std::int64_t scheduled_ns, std::int64_t now_ns) noexcept;
    // No more messages: QUIT once the current one (if any) has its outcome; a connection not
    // yet greeted is simply closed.
    void quit(std::int64_t now_ns) noexcept;
    // Gives up on the connection (timeout, end of run): its message, if any, is lost.
    void abort(std::string_view why, std::int64_t now_ns) noexcept;
    // Turn end: hands over outcomes made outside a reply (local refusals); the stream sends
    // what the session wrote this turn, in one send.
    void flush(std::int64_t now_ns) noexcept;

    [[nodiscard]] connection_state state() const noexcept { return _state; }
    // Has a session that can take a message now.
    [[nodiscard]] bool can_take_message() const noexcept {
        return (_state == connection_state::ready || (_state == connection_state::busy && _in_flight < 2)) &&
               !_quit_requested;
    }
    // Waiting for the peer: connect, a reply, or the reply to QUIT.
    [[nodiscard]] bool waiting_for_peer() const noexcept;
    [[nodiscard]] std::int64_t last_activity_ns() const noexcept { return _last_activity_ns; }
    [[nodiscard]] std::int64_t state_since_ns() const noexcept { return _state_since_ns; }

    // Shard-owned bookkeeping.
    std::int64_t reopen_at_ns = 0;  // down: when to open() again
    std::uint32_t failures = 0;     // consecutive failed connections (back-off)
    bool parked = false;            // in the shard's list of idle connections
    bool in_flush_list = false;     // in the shard's list for the turn-end flush

private:
    // core::stream_owner
    void on_stream_data(std::string_view data) noexcept override;
    void on_stream_end(core::stream_end why, std::string_view detail) noexcept override;
    void on_stream_finished() noexcept override;
    void on_stream_connected() noexcept override;
    void on_stream_tls_ready() noexcept override;
    void on_stream_sent(std::uint8_t marks) noexcept override;
    void on_stream_progress() noexcept override;

    void start_tls() noexcept;
    void tls_failed(std::string_view reason) noexcept;
    [[nodiscard]] bool has_output() const noexcept { return _stream.unsent() != 0; }
    // After the session consumed input or a message: outcomes, state changes, next message.
    void after_input(std::int64_t now_ns) noexcept;
    void take_outcomes(std::int64_t now_ns) noexcept;
    void on_session_closed(std::int64_t now_ns) noexcept;
    void lost(std::string_view why, std::int64_t now_ns) noexcept;
    void begin_close(close_kind kind, std::int64_t now_ns) noexcept;
    void set_state(connection_state s, std::int64_t now_ns) noexcept {
        _state = s;
        _state_since_ns = now_ns;
    }

    shard& _owner;
    std::optional<protocol::client_session> _session;  // one per TCP connection
    core::stream _stream;  // keeps its send buffer: messages are sent over and over
    struct slot {
        std::string body;
        std::vector<std::string> rcpts;
        std::uint64_t seq = 0;
        std::int64_t scheduled_ns = 0;
        std::int64_t submitted_ns = 0;
    };
    slot _slots[2];
    std::uint8_t _oldest = 0;
    std::uint8_t _in_flight = 0;
    connection_state _state = connection_state::down;
    close_kind _close_kind = close_kind::normal;
    std::int64_t _last_send_done_ns = 0;
    std::int64_t _last_activity_ns = 0;
    std::int64_t _state_since_ns = 0;
    std::uint32_t _messages_here = 0;
    bool _quit_requested = false;
};

}  // namespace ringrelay::bench
