// tools/sink/shard.h: one shard of ringrelay-sink: its thread's reactor, SO_REUSEPORT
// listeners (core::listener: multishot accept, the per-IP connection limit with its 421
// before the banner), receive buffer ring, and SMTP connections (connection.h: the relay's
// inbound engine, queue::server_connection, with the sink's commit). Unlike the relay's shard
// there is no spool: a finished message is counted (and with --save written), then answered. Everything here runs on the shard's own thread;
// the ways in from outside are request_stop() (an io_uring MSG_RING wake-up) and the atomics
// marked below.
//
// Lifecycle: construct (any thread) -> run() on the shard thread: init, report through
// `ready`, loop, drain, return. After a stop request it stops accepting, (after an optional
// linger) says 421 4.3.2 to idle sessions, lets messages being saved or delayed finish
// (their reply goes out first), and after a grace period cuts off whatever is left.
#pragma once
#include <atomic>
#include <cstdint>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/address_counter.h"
#include "core/buffer_ring.h"
#include "core/clock.h"
#include "core/deadline_list.h"
#include "core/net.h"
#include "core/reactor.h"
#include "core/stream.h"
#include "core/tls.h"
#include "protocol/server_session.h"
#include "queue/server_connection.h"
#include "queue/server_front.h"
#include "tools/sink/faults.h"
#include "tools/sink/ip_limits.h"
#include "tools/sink/options.h"
#include "tools/sink/stats.h"

namespace ringrelay::sink {

class connection;

// What every shard and the main thread share. Owned by main; outlives the shards.
struct sink_shared {
    sink_shared(const sink_options& o, int save_fd)
        : options(o), rate(o.max_rate_per_ip), save_dir_fd(save_fd) {}

    // Fixed after construction.
    const sink_options& options;
    core::address_counter per_ip;  // connections per client (IPv4 /32, IPv6 /64), shared by every shard
    per_ip_rate rate;              // --max-rate-per-ip, in per_ip's slots
    const int save_dir_fd;         // --save directory, -1 without --save
    const core::tls_credentials* tls = nullptr;  // with --tls: the certificate (each shard makes its context)
    bool kernel_tls = false;       // handshakes on the socket, records in the kernel (kTLS probe passed)

    // Written by every shard (only with --expect), read by main: own cache line.
    alignas(64) std::atomic<std::uint64_t> received_total{0};
};

struct shard_init_result {
    std::string error;                  // empty on success
    std::vector<core::endpoint> bound;  // the endpoints really bound (port 0 resolved)
};

class shard final : public core::turn_hook, public queue::server_host, public queue::front_owner {
public:
    // shared, server and features must outlive the shard. listen: the endpoints to bind (port
    // 0 picks one; main passes shard 0's result to the others).
    shard(unsigned index, sink_shared& shared, const protocol::server_config& server,
          const core::kernel_features& features, std::vector<core::endpoint> listen);
    shard(const shard&) = delete;
    shard& operator=(const shard&) = delete;
    ~shard();

    // The shard thread's body. Sets `ready` after init; returns when stopped and drained.
    void run(std::promise<shard_init_result>& ready);

    // Any thread, with the caller's own reactor (for MSG_RING). Safe to call more than once.
    // The shard stops accepting at once; idle sessions get 421 4.3.2 after `linger_ms`
    // (clients that finished, like a load generator after --expect was met, may QUIT first).
    void request_stop(core::reactor& from, std::uint32_t linger_ms = 0) noexcept;
    [[nodiscard]] bool finished() const noexcept { return _finished.load(std::memory_order_acquire); }
    [[nodiscard]] const shard_stats& stats() const noexcept { return _stats; }
    // CLOCK_MONOTONIC ns of the first accepted connection and the last 250 (0: none yet).
    [[nodiscard]] std::int64_t first_connection_ns() const noexcept {
        return _first_connection_ns.load(std::memory_order_relaxed);
    }
    [[nodiscard]] std::int64_t last_message_ns() const noexcept {
        return _last_message_ns.load(std::memory_order_relaxed);
    }

    // Shard-thread API used by connections.
    [[nodiscard]] core::reactor& reactor() noexcept { return _reactor; }
    [[nodiscard]] sink_shared& shared() noexcept { return _shared; }
    [[nodiscard]] const sink_options& options() const noexcept { return _shared.options; }
    [[nodiscard]] fault_picker& faults() noexcept { return _faults; }
    [[nodiscard]] shard_stats& mutable_stats() noexcept { return _stats; }
    [[nodiscard]] std::uint64_t next_queue_id() noexcept;
    [[nodiscard]] std::string_view rfc5322_date() noexcept { return _dates.now(); }
    // A message was answered 250: counts it, and signals main once --expect is reached.
    void message_received() noexcept;
    // A --save step failed: counted, and said on stderr once per shard.
    void report_save_error(const char* step, int error) noexcept;

    // queue::server_host (the inbound engine)
    core::stream_services stream_services() noexcept override { return {_reactor, _buffers, _streams, &_deadlines}; }
    const protocol::server_config& server_config() const noexcept override { return _server; }
    const queue::server_settings& settings() const noexcept override { return _settings; }
    // The shard's server TLS context; null without --tls.
    core::tls_context* tls_context() noexcept override { return _tls ? &*_tls : nullptr; }
    bool kernel_tls() const noexcept override { return _shared.kernel_tls; }
    bool stopping() const noexcept override { return _stopping; }
    void count(queue::server_event event, std::uint64_t n) noexcept override;
    bool may_report(queue::server_report kind) noexcept override;
    void write_report(queue::server_report kind, std::string_view text) noexcept override;
    void retire(queue::server_connection& c) noexcept override { _front.retire(c); }

    // queue::front_owner
    queue::server_connection* make_connection(int fd, const queue::inbound_peer& from,
                                              queue::listener_kind kind) noexcept override;
    void on_refused(const sockaddr* peer, core::refusal why, std::string_view refusal_line) noexcept override;
    void on_connection_gone() noexcept override;

    void on_turn_end() noexcept override;

private:
    // The stop request (a MSG_RING from request_stop; res: the linger in ms).
    void on_stop_request(int res, std::uint32_t flags) noexcept;

    std::string init();
    // Counts a connection, accepted or refused.
    void count_connection() noexcept;
    void begin_stop(int linger_ms) noexcept;
    // 421 4.3.2 to idle sessions now, the others after their pending answer.
    void close_sessions() noexcept;
    void tick() noexcept;
    [[nodiscard]] bool drained() const noexcept;

    // Fixed after construction.
    const unsigned _index;
    sink_shared& _shared;
    const protocol::server_config& _server;
    const core::kernel_features& _features;
    std::vector<core::endpoint> _listen;
    const queue::server_settings _settings;
    const std::string _refusal;  // 421 4.7.0 over --max-connections-per-ip, before the banner

    // Shard-local.
    core::reactor _reactor;
    core::buffer_ring _buffers;
    core::stream_batch _streams;  // the turn's receive re-arms and batched sends
    core::deadline_list _deadlines;
    core::date_cache _dates;
    fault_picker _faults;
    std::optional<core::tls_context> _tls;
    std::uint64_t _next_id = 0;
    std::uint64_t _received_at_turn_start = 0;
    std::int64_t _next_tick_ms = 0;
    std::int64_t _stop_deadline_ms = 0;
    std::int64_t _linger_until_ms = 0;
    bool _stop_requested = false;  // not accepting any more
    bool _stopping = false;        // sessions are being closed
    bool _save_error_reported = false;
    std::uint8_t _reported = 0;  // report kinds said since the last tick (one per kind a second)
    core::operation<&shard::on_stop_request> _stop{*this};

    // Written by this shard, read by other threads.
    std::atomic<int> _ring_fd{-1};
    std::atomic<bool> _finished{false};
    std::atomic<bool> _stop_sent{false};
    std::atomic<std::int64_t> _first_connection_ns{0};
    std::atomic<std::int64_t> _last_message_ns{0};
    shard_stats _stats;

    // Listeners (--max-connections-per-ip) and connections. Last: destroyed first, while
    // everything the connections use is still there.
    queue::server_front _front;
};

// CLOCK_MONOTONIC in nanoseconds (the per-IP rate limit's and the summary's clock).
[[nodiscard]] std::int64_t monotonic_ns() noexcept;

}  // namespace ringrelay::sink
