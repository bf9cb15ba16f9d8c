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
constexpr unsigned ring_entries = 4096;
constexpr unsigned receive_buffers = 1024;          // power of two
constexpr unsigned receive_buffer_size = 16 * 1024;
constexpr std::uint16_t receive_group = 1;
constexpr int listen_backlog = 4096;
// After a stop request, pending answers (saves, delays) and last replies get this long.
constexpr std::int64_t stop_grace_ms = 3000;
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
      _deadlines(static_cast<std::int64_t>(shared.options.command_timeout) * 1000),
      _faults(fault_rates{shared.options.defer_rate, shared.options.reject_rate, shared.options.disconnect_rate},
              shared.options.seed ^ (0x9e3779b97f4a7c15ULL * (index + 1))) {
    _stop.owner = this;
}

shard::~shard() {
    for (connection* c : _connections) delete c;
    for (auto& a : _accepts)
        if (a->fd >= 0) ::close(a->fd);
}

std::string shard::init() {
    if (auto ec = _reactor.init(ring_entries, _features); ec) return "io_uring setup failed: " + ec.message();
    _ring_fd.store(_reactor.ring_fd(), std::memory_order_release);
    if (auto ec = _buffers.init(_reactor, receive_group, receive_buffers, receive_buffer_size); ec)
        return "receive buffer ring: " + ec.message();
    _reactor.add_turn_hook(this);
    if (_shared.tls != nullptr) {
        auto context = core::tls_context::server(*_shared.tls);
        if (!context) return "TLS: " + context.error().text;
        _tls.emplace(std::move(*context));
    }
    for (const core::endpoint& e : _listen) {
        auto fd = core::listen_reuseport(e, listen_backlog);
        if (!fd) return "cannot listen on " + core::to_string(e) + ": " + fd.error().message();
        auto a = std::make_unique<accept_op>();
        a->owner = this;
        a->fd = *fd;
        _accepts.push_back(std::move(a));
    }
    // Queue ids: microseconds at start, the shard index in the low 8 bits.
    _next_id = (static_cast<std::uint64_t>(core::unix_us()) << 8) | _index;
    return {};
}

void shard::run(std::promise<shard_init_result>& ready) {
    shard_init_result result;
    result.error = init();
    if (result.error.empty()) {
        for (auto& a : _accepts) {
            if (auto e = core::local_endpoint(a->fd)) result.bound.push_back(*e);
        }
    }
    const bool ok = result.error.empty();
    ready.set_value(std::move(result));
    if (!ok) {
        _finished.store(true, std::memory_order_release);
        return;
    }
    for (auto& a : _accepts) arm_accept(*a);
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

void shard::arm_accept(accept_op& a) noexcept {
    io_uring_prep_multishot_accept(_reactor.sqe(&a), a.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    a.armed = true;
}

void shard::accept_op::complete(int res, std::uint32_t flags) noexcept { owner->on_accept(*this, res, flags); }

void shard::on_accept(accept_op& a, int res, std::uint32_t flags) noexcept {
    if ((flags & IORING_CQE_F_MORE) == 0) a.armed = false;
    if (res >= 0) {
        a.failing = false;
        admit(res);
    } else if (res != -ECANCELED && !_stop_requested) {
        // EMFILE/ENFILE and the like: retry on the next tick instead of spinning, and say so
        // once per failure streak.
        if (!a.failing)
            core::diag("ringrelay-sink: shard " + std::to_string(_index) + ": accept failed: " + std::strerror(-res));
        a.failing = true;
        if (!a.armed) {
            a.rearm_on_tick = true;
            return;
        }
    }
    if (!a.armed) {
        if (_stop_requested) {
            if (a.fd >= 0) ::close(a.fd);
            a.fd = -1;
        } else {
            arm_accept(a);
        }
    }
}

void shard::admit(int fd) noexcept {
    sockaddr_storage peer{};
    socklen_t len = sizeof peer;
    auto* sa = reinterpret_cast<sockaddr*>(&peer);
    if (_stop_requested || ::getpeername(fd, sa, &len) < 0) {
        ::close(fd);
        return;
    }
    if (_first_connection_ns.load(std::memory_order_relaxed) == 0)
        _first_connection_ns.store(monotonic_ns(), std::memory_order_relaxed);
    bump(_stats.connections);
    ip_slot* slot = nullptr;
    per_ip_limits& limits = _shared.limits;
    if (limits.enabled()) {
        slot = &limits.slot(address_key(sa));
        if (!limits.acquire_connection(*slot)) {
            // Over --max-connections-per-ip: the banner says why, then the connection closes.
            // A fresh socket's send buffer takes the one line without blocking.
            const std::string_view banner = protocol::reply_for(protocol::reply_id::connection_limit).prefix;
            const iovec lines[2] = {{const_cast<char*>(banner.data()), banner.size()},
                                    {const_cast<char*>("\r\n"), 2}};
            msghdr msg{};
            msg.msg_iov = const_cast<iovec*>(lines);
            msg.msg_iovlen = 2;
            (void)::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
            (void)::shutdown(fd, SHUT_WR);
            ::close(fd);
            bump(_stats.refused_connections);
            return;
        }
    }
    auto* c = new connection(*this, fd, sa, slot);
    c->shard_slot = _connections.size();
    _connections.push_back(c);
    bump(_stats.open_connections);
    c->start();
}

void shard::request_stop(core::reactor& from, std::uint32_t linger_ms) noexcept {
    if (_stop_sent.exchange(true)) return;
    const int fd = _ring_fd.load(std::memory_order_acquire);
    if (fd < 0) return;
    from.wake(fd, &_stop, static_cast<int>(linger_ms));
}

void shard::stop_op::complete(int res, std::uint32_t) noexcept { owner->begin_stop(res); }

void shard::begin_stop(int linger_ms) noexcept {
    if (_stop_requested) return;
    _stop_requested = true;
    for (auto& a : _accepts) {
        // Stop listening now: shutdown() moves a listening socket out of LISTEN at once.
        if (a->fd >= 0) (void)::shutdown(a->fd, SHUT_RDWR);
        if (a->armed) {
            io_uring_prep_cancel64(_reactor.sqe_ignored(), reinterpret_cast<std::uint64_t>(a.get()), 0);
        } else if (a->fd >= 0) {
            ::close(a->fd);
            a->fd = -1;
        }
    }
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
    for (connection* c : _connections) c->on_stop(false);
}

void shard::tick() noexcept {
    const std::int64_t now = core::monotonic_ms();
    if (now < _next_tick_ms) return;
    _next_tick_ms = now + 1000;
    _deadlines.expire(now);
    if (_stop_requested && !_stopping && now >= _linger_until_ms) close_sessions();
    if (_stopping && now >= _stop_deadline_ms) {
        for (connection* c : _connections) c->on_stop(true);
    }
    for (auto& a : _accepts) {
        if (a->rearm_on_tick && !_stop_requested) {
            a->rearm_on_tick = false;
            arm_accept(*a);
        }
    }
}

bool shard::drained() const noexcept {
    return _connections.empty() &&
           std::none_of(_accepts.begin(), _accepts.end(), [](const auto& a) { return a->fd >= 0; });
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

void shard::want_flush(connection* c) { _flush.push_back(c); }
void shard::want_rearm(connection* c) { _rearm.push_back(c); }
void shard::retire(connection* c) { _graveyard.push_back(c); }

void shard::on_turn_end() noexcept {
    if (!_rearm.empty()) {
        std::vector<connection*> rearm;
        rearm.swap(_rearm);
        for (connection* c : rearm) c->rearm();
    }
    // Batched sends: every connection that produced replies this turn sends them in one write.
    // A connection may appear more than once; flush() is idempotent.
    for (std::size_t i = 0; i < _flush.size(); ++i) _flush[i]->flush();
    _flush.clear();
    const std::uint64_t received = _stats.received.load(std::memory_order_relaxed);
    if (received != _received_at_turn_start) {
        _received_at_turn_start = received;
        _last_message_ns.store(monotonic_ns(), std::memory_order_relaxed);
    }
    if (!_graveyard.empty()) {
        std::sort(_graveyard.begin(), _graveyard.end());
        _graveyard.erase(std::unique(_graveyard.begin(), _graveyard.end()), _graveyard.end());
        for (connection* c : _graveyard) {
            const std::size_t slot = c->shard_slot;
            RR_ASSERT(slot < _connections.size() && _connections[slot] == c);
            _connections[slot] = _connections.back();
            _connections[slot]->shard_slot = slot;
            _connections.pop_back();
            _stats.open_connections.store(_stats.open_connections.load(std::memory_order_relaxed) - 1,
                                          std::memory_order_relaxed);
            delete c;
        }
        _graveyard.clear();
    }
}

}  // namespace ringrelay::sink
