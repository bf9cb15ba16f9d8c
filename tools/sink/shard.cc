// tools/sink/shard.cc: see shard.h.
#include "tools/sink/shard.h"

#include <signal.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <ctime>

#include "core/invariant.h"
#include "core/log.h"
#include "protocol/reply.h"
#include "tools/sink/connection.h"

namespace ringrelay::sink {

namespace {
// After a stop request, pending answers (saves, delays) and last replies get this long.
constexpr std::int64_t stop_grace_ms = 3000;
// The relay's default --min-data-rate: message content at this rate keeps the deadline off.
constexpr std::uint32_t min_data_rate = 500;
// A message body buffer larger than this is freed after its answer instead of being kept for
// the next message (which normally needs the same size: no allocation per message).
constexpr std::size_t keep_body_capacity = 1024 * 1024;
}  // namespace

std::int64_t monotonic_ns() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

shard::shard(unsigned index, sink_shared& shared, const protocol::server_config& server,
             const core::kernel_features& features, std::vector<core::endpoint> listen)
    : _index(index),
      _shared(shared),
      _server(server),
      _features(features),
      _listen(std::move(listen)),
      // The relay's engine settings, but a message buffer up to 1 MiB is kept for the next
      // message (no allocation per message at benchmark rates).
      _settings{min_data_rate, keep_body_capacity, "--timeout"},
      _refusal(std::string(protocol::reply_for(protocol::reply_id::connection_limit).prefix) + "\r\n"),
      _deadlines(static_cast<std::int64_t>(shared.options.command_timeout) * 1000),
      _faults(fault_rates{shared.options.defer_rate, shared.options.reject_rate, shared.options.disconnect_rate},
              shared.options.seed ^ (0x9e3779b97f4a7c15ULL * (index + 1))),
      _front(_reactor, *this,
             core::connection_limits(nullptr, 0, shared.per_ip, shared.options.max_connections_per_ip, _refusal,
                                     _refusal),
             "ringrelay-sink: shard " + std::to_string(index)) {
}

shard::~shard() = default;

std::string shard::init() {
    if (auto ec = _reactor.init(queue::server_ring_entries, _features); ec)
        return "io_uring setup failed: " + ec.message();
    _ring_fd.store(_reactor.ring_fd(), std::memory_order_release);
    if (auto ec = _buffers.init(_reactor, queue::server_receive_group, queue::server_receive_buffers,
                                queue::server_receive_buffer_size); ec)
        return "receive buffer ring: " + ec.message();
    _reactor.add_turn_hook(this);
    if (_shared.tls != nullptr) {
        auto context = core::tls_context::server(*_shared.tls);
        if (!context) return "TLS: " + context.error().text;
        _tls.emplace(std::move(*context));
    }
    for (const core::endpoint& e : _listen) {
        if (std::string error = _front.listen(e, queue::listener_kind::plain); !error.empty()) return error;
    }
    // Queue ids: microseconds at start, the shard index in the low 8 bits.
    _next_id = (static_cast<std::uint64_t>(core::unix_us()) << 8) | _index;
    return {};
}

void shard::run(std::promise<shard_init_result>& ready) {
    shard_init_result result;
    result.error = init();
    if (result.error.empty()) {
        result.bound = _front.bound();
    }
    const bool ok = result.error.empty();
    ready.set_value(std::move(result));
    if (!ok) {
        _finished.store(true, std::memory_order_release);
        return;
    }
    _front.start();
    _next_tick_ms = core::monotonic_ms() + 1000;
    while (true) {
        if (!_reactor.run_once(1000)) {
            core::diag("ringrelay-sink: shard " + std::to_string(_index) + ": io_uring wait failed; stopping");
            break;
        }
        tick();
        if (_stop_requested && drained()) break;
    }
    _finished.store(true, std::memory_order_release);
}

void shard::count_connection() noexcept {
    if (_first_connection_ns.load(std::memory_order_relaxed) == 0)
        _first_connection_ns.store(monotonic_ns(), std::memory_order_relaxed);
    bump(_stats.connections);
}

queue::server_connection* shard::make_connection(int fd, const queue::inbound_peer& from,
                                                 queue::listener_kind) noexcept {
    count_connection();
    bump(_stats.open_connections);
    return new connection(*this, fd, from.client);
}

// Over --max-connections-per-ip: the banner said why (core::listener), the connection closed.
void shard::on_refused(const sockaddr*, core::refusal, std::string_view) noexcept {
    count_connection();
    bump(_stats.refused_connections);
}

void shard::on_connection_gone() noexcept {
    _stats.open_connections.store(_stats.open_connections.load(std::memory_order_relaxed) - 1,
                                  std::memory_order_relaxed);
}

void shard::request_stop(core::reactor& from, std::uint32_t linger_ms) noexcept {
    if (_stop_sent.exchange(true)) return;
    const int fd = _ring_fd.load(std::memory_order_acquire);
    if (fd < 0) return;
    from.wake(fd, &_stop, static_cast<int>(linger_ms));
}

void shard::on_stop_request(int linger_ms, std::uint32_t) noexcept { begin_stop(linger_ms); }

void shard::begin_stop(int linger_ms) noexcept {
    if (_stop_requested) return;
    _stop_requested = true;
    _front.stop();
    if (linger_ms > 0) {
        _linger_until_ms = core::monotonic_ms() + linger_ms;
    } else {
        close_sessions();
    }
}

void shard::close_sessions() noexcept {
    if (_stopping) return;
    _stopping = true;
    _stop_deadline_ms = core::monotonic_ms() + stop_grace_ms;
    // on_stop may retire connections (which edits _connections at the turn's end only).
    _front.stop_connections(false);
}

void shard::tick() noexcept {
    const std::int64_t now = core::monotonic_ms();
    if (now < _next_tick_ms) return;
    _next_tick_ms = now + 1000;
    _reported = 0;
    _deadlines.expire(now);
    if (_stop_requested && !_stopping && now >= _linger_until_ms) close_sessions();
    if (_stopping && now >= _stop_deadline_ms) {
        _front.stop_connections(true);
    }
    _front.tick();
}

bool shard::drained() const noexcept {
    return _front.drained();
}

std::uint64_t shard::next_queue_id() noexcept {
    const std::uint64_t id = _next_id;
    _next_id += 256;  // the low 8 bits are the shard index
    return id;
}

void shard::message_received() noexcept {
    bump(_stats.received);
    const std::uint64_t expect = _shared.options.expect;
    if (expect == 0) return;
    if (_shared.received_total.fetch_add(1, std::memory_order_acq_rel) + 1 == expect) {
        // Main waits in sigtimedwait() with SIGUSR1 blocked everywhere: this wakes it at once.
        (void)::kill(::getpid(), SIGUSR1);
    }
}

void shard::report_save_error(const char* step, int error) noexcept {
    bump(_stats.save_errors);
    if (_save_error_reported) return;
    _save_error_reported = true;
    core::diag("ringrelay-sink: shard " + std::to_string(_index) + ": --save: " + step + " failed: " +
               std::strerror(error) + " (the message gets 451 4.3.0; further errors are only counted)");
}

void shard::count(queue::server_event event, std::uint64_t n) noexcept {
    switch (event) {
    case queue::server_event::tls_handshake: bump(_stats.tls_handshakes, n); return;
    case queue::server_event::tls_failure: bump(_stats.tls_failures, n); return;
    case queue::server_event::input_bytes: bump(_stats.bytes, n); return;
    case queue::server_event::tls_discarded_bytes:
    case queue::server_event::early_talker: return;  // said on stderr (write_report), not counted
    }
}

bool shard::may_report(queue::server_report kind) noexcept {
    const auto bit = static_cast<std::uint8_t>(1U << static_cast<unsigned>(kind));
    if ((_reported & bit) != 0) return false;
    _reported |= bit;
    return true;
}

void shard::write_report(queue::server_report, std::string_view text) noexcept {
    core::diag("ringrelay-sink: " + std::string(text) + " (one report per second)");
}

void shard::on_turn_end() noexcept {
    // Receives re-armed after -ENOBUFS, then batched sends: every connection that produced
    // replies this turn sends them in one write.
    _streams.run();
    const std::uint64_t received = _stats.received.load(std::memory_order_relaxed);
    if (received != _received_at_turn_start) {
        _received_at_turn_start = received;
        _last_message_ns.store(monotonic_ns(), std::memory_order_relaxed);
    }
    _front.end_turn();
}

}  // namespace ringrelay::sink
