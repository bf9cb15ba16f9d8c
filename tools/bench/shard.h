// tools/bench/shard.h: one ringrelay-bench thread: its own io_uring (core::reactor) and buffer
// ring, its share of the connections, its share of the messages, and its own run_stats.
//
// Scheduling. Closed loop (default): a connection that gets an outcome takes the next message
// at once. Open loop (--rate R): message i of shard s of S is due at start + (i*S + s) / R
// seconds, so the shards' arrivals interleave into one stream of rate R; a due message goes
// to an idle connection, or waits (its latency keeps counting from the scheduled time) until
// one is free. A message whose connection closed before it started (greeting refused, 421
// before MAIL) is retried first, with its original scheduled time. Sequence numbers are
// i*S + s + 1: unique across shards, 1..M with --messages M.
//
// Threading: created by the main thread, then run() on its own thread, which alone touches
// everything except the members marked "read by the main thread". After run() returns, the
// main thread reads stats().
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/buffer_ring.h"
#include "core/reactor.h"
#include "core/stream.h"
#include "core/tls.h"
#include "protocol/client_session.h"
#include "tools/bench/connection.h"
#include "tools/bench/domain_picker.h"
#include "tools/bench/message_template.h"
#include "tools/bench/options.h"
#include "tools/bench/stats.h"

namespace ringrelay::bench {

// Written by the main thread, read by every shard.
struct run_control {
    std::atomic<bool> go{false};    // start_ns is set; start sending
    std::atomic<bool> stop{false};  // finish now: QUIT every connection, report
    std::int64_t start_ns = 0;      // steady clock; written before `go` (release)
};

// CLOCK_MONOTONIC in nanoseconds (std::chrono::steady_clock; IORING_TIMEOUT_ABS uses the same).
[[nodiscard]] std::int64_t now_ns() noexcept;

class shard final : core::turn_hook {
public:
    shard(const bench_options& options, const message_template& message, const core::kernel_features& features,
          run_control& control, unsigned index, unsigned count);
    shard(const shard&) = delete;
    shard& operator=(const shard&) = delete;
    ~shard();

    // The thread body: sets up the ring, reports readiness, waits for control.go, runs until
    // its messages are done (or the time is up, or control.stop), closes every connection.
    void run() noexcept;

    enum class phase : std::uint8_t { starting, ready, failed, finished };

    // Read by the main thread (acquire) while running.
    [[nodiscard]] phase current_phase() const noexcept { return _phase.load(std::memory_order_acquire); }
    [[nodiscard]] std::uint64_t progress_completed() const noexcept {
        return _completed_shared.load(std::memory_order_relaxed);
    }
    [[nodiscard]] std::uint64_t progress_failed() const noexcept {
        return _failed_shared.load(std::memory_order_relaxed);
    }
    [[nodiscard]] bool gave_up() const noexcept { return _gave_up_shared.load(std::memory_order_acquire); }
    // Valid once current_phase() is failed.
    [[nodiscard]] const std::string& init_error() const noexcept { return _init_error; }
    // Valid once current_phase() is finished.
    [[nodiscard]] const run_stats& stats() const noexcept { return _stats; }

    // For the shard's connections (shard thread only).
    [[nodiscard]] core::reactor& reactor() noexcept { return _reactor; }
    [[nodiscard]] core::stream_services stream_services() noexcept { return {_reactor, _buffers, _streams, nullptr}; }
    [[nodiscard]] const bench_options& options() const noexcept { return _options; }
    [[nodiscard]] const message_template& message() const noexcept { return _message; }
    [[nodiscard]] const protocol::client_config& client_config() const noexcept { return _client_config; }
    // The shard's client TLS context (--starttls), else null.
    [[nodiscard]] core::tls_context* tls_context() noexcept { return _tls ? &*_tls : nullptr; }
    [[nodiscard]] run_stats& stats() noexcept { return _stats; }
    [[nodiscard]] std::size_t pick_domain() noexcept { return _picker.pick(); }
    // At the end of this turn: hand over `c`'s outcomes made outside a reply (local refusals).
    void want_flush(connection& c) noexcept;
    // The session greeted us and said EHLO: the target is alive.
    void session_up(std::int64_t now) noexcept { _last_alive_ns = now; }
    // `c` can take a message: give it one, park it, or tell it to QUIT.
    void connection_ready(connection& c, std::int64_t now) noexcept;
    // The outcome of `c`'s message `seq`. ack_ns / transaction_ns: latencies if accepted.
    void message_done(const protocol::message_outcome& outcome, std::int64_t scheduled_ns, std::int64_t ack_ns,
                      std::int64_t transaction_ns, std::int64_t now) noexcept;
    // `c` is down (socket closed, nothing in flight).
    void connection_down(connection& c, close_kind kind, std::int64_t now) noexcept;
    // Counts an error by its text; the first of each text is printed on stderr.
    void note_error(std::string_view text);

private:
    void on_turn_end() noexcept override;
    [[nodiscard]] std::string init();
    void loop() noexcept;
    void tick(std::int64_t now) noexcept;
    void check_finished(std::int64_t now) noexcept;
    void begin_finish(std::int64_t now) noexcept;
    void dispatch_parked(std::int64_t now) noexcept;
    void arm_arrival_timer() noexcept;
    [[nodiscard]] bool take_message(std::int64_t now, std::uint64_t& seq, std::int64_t& scheduled) noexcept;
    [[nodiscard]] std::int64_t scheduled_time(std::uint64_t index) const noexcept;
    [[nodiscard]] std::uint64_t due_count(std::int64_t now) const noexcept;  // open loop: messages due by now
    [[nodiscard]] bool all_down() const noexcept;
    void open_due_connections(std::int64_t now) noexcept;

    struct timer_op final : core::completion {
        shard* owner = nullptr;
        void complete(int res, std::uint32_t flags) noexcept override;
    };
    struct retry_item {
        std::uint64_t seq;
        std::int64_t scheduled_ns;
    };

    // Fixed after construction.
    const bench_options& _options;
    const message_template& _message;
    const core::kernel_features _features;
    run_control& _control;
    const unsigned _index;
    const unsigned _count;
    const std::uint32_t _connection_count;
    const std::uint64_t _quota;  // messages of this shard with --messages (may be 0); unused with --duration
    protocol::client_config _client_config;
    std::optional<core::tls_context> _tls;

    // Shard-local.
    core::reactor _reactor;
    core::buffer_ring _buffers;
    core::stream_batch _streams;  // the turn's receive re-arms and batched sends
    std::vector<std::unique_ptr<connection>> _connections;
    std::vector<connection*> _flush;  // connections with outcomes to hand over this turn
    std::vector<connection*> _flush_swap;
    std::vector<connection*> _parked;  // ready connections without a message
    std::vector<retry_item> _retry;    // not attempted: send again first
    domain_picker _picker;
    run_stats _stats;
    timer_op _timer;
    __kernel_timespec _timer_at{};
    bool _timer_armed = false;
    std::uint64_t _next_index = 0;  // next new message (local index i)
    std::uint64_t _completed = 0;
    std::int64_t _start_ns = 0;
    std::int64_t _end_ns = 0;  // --duration: no new message from then on
    std::int64_t _last_alive_ns = 0;
    std::int64_t _finish_started_ns = 0;
    std::int64_t _next_scan_ns = 0;
    std::uint64_t _backoff_random = 0;
    std::uint32_t _waiting_reopen = 0;  // down connections to open again
    bool _stderr_is_terminal = false;
    bool _finishing = false;
    bool _gave_up = false;
    std::string _init_error;

    // Read by the main thread: own cache lines so the shard's per-message stores do not
    // bounce the line the main thread reads, nor the shard's other hot members.
    alignas(64) std::atomic<std::uint64_t> _completed_shared{0};
    std::atomic<std::uint64_t> _failed_shared{0};
    alignas(64) std::atomic<phase> _phase{phase::starting};
    std::atomic<bool> _gave_up_shared{false};
};

}  // namespace ringrelay::bench
