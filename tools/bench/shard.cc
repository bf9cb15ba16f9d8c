// tools/bench/shard.cc: see shard.h.
#include "tools/bench/shard.h"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>

#include <unistd.h>

#include "core/invariant.h"

namespace ringrelay::bench {
namespace {

constexpr std::uint16_t receive_group = 1;
constexpr unsigned receive_buffer_size = 4096;         // replies are small; EHLO ~200 octets
constexpr std::int64_t scan_interval_ns = 50'000'000;  // timeouts, reopen, give-up
constexpr std::int64_t backoff_base_ns = 50'000'000;
constexpr std::int64_t backoff_max_ns = 2'000'000'000;

std::uint64_t split_quota(std::uint64_t total, unsigned index, unsigned count) {
    return total / count + (index < total % count ? 1 : 0);
}

}  // namespace

std::int64_t now_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

shard::shard(const bench_options& options, const message_template& message, const core::kernel_features& features,
             run_control& control, unsigned index, unsigned count)
    : _options(options),
      _message(message),
      _features(features),
      _control(control),
      _index(index),
      _count(count),
      _connection_count(static_cast<std::uint32_t>(split_quota(options.connections, index, count))),
      _quota(options.mode == run_mode::messages ? split_quota(options.messages, index, count) : 0),
      _picker(options.domains, options.seed * 0x9e3779b97f4a7c15ull + index) {
    _client_config.helo_name = options.helo;
    _client_config.pipelining = options.pipelining;
    _client_config.chunking = options.chunking;
    _client_config.starttls = options.starttls ? protocol::tls_use::required : protocol::tls_use::never;
    _client_config.auth_user = options.auth_user;
    _client_config.auth_password = options.auth_password;
    // Without --starttls the operator asked for AUTH in clear (a test server with --auth-plaintext).
    _client_config.auth_without_tls = options.starttls ? protocol::auth_plaintext::refuse : protocol::auth_plaintext::allow;
    _timer.owner = this;
    _backoff_random = options.seed + index * 7919;
    _stderr_is_terminal = ::isatty(STDERR_FILENO) == 1;
}

shard::~shard() {
    _connections.clear();  // sockets close before the ring goes
}

std::string shard::init() {
    const unsigned entries = std::clamp(std::bit_ceil(_connection_count * 2 + 16), 256u, 4096u);
    if (auto ec = _reactor.init(entries, _features); ec) return "io_uring setup failed: " + ec.message();
    const unsigned buffers = std::clamp(std::bit_ceil(_connection_count * 2), 64u, 4096u);
    if (auto ec = _buffers.init(_reactor, receive_group, buffers, receive_buffer_size); ec)
        return "receive buffer ring: " + ec.message();
    _reactor.add_turn_hook(this);
    if (_options.starttls) {
        auto context = core::tls_context::client();  // no verification: a benchmark, not a delivery
        if (!context) return "TLS: " + context.error().text;
        _tls.emplace(std::move(*context));
    }
    _connections.reserve(_connection_count);
    for (std::uint32_t i = 0; i < _connection_count; ++i) _connections.push_back(std::make_unique<connection>(*this));
    _flush.reserve(_connection_count);
    _flush_swap.reserve(_connection_count);
    _parked.reserve(_connection_count);
    return {};
}

void shard::run() noexcept {
    _init_error = init();
    if (!_init_error.empty()) {
        _phase.store(phase::failed, std::memory_order_release);
        return;
    }
    _phase.store(phase::ready, std::memory_order_release);
    _control.go.wait(false, std::memory_order_acquire);
    loop();
    _phase.store(phase::finished, std::memory_order_release);
}

void shard::loop() noexcept {
    _start_ns = _control.start_ns;
    _last_alive_ns = _start_ns;
    if (_options.mode == run_mode::duration)
        _end_ns = _start_ns + static_cast<std::int64_t>(_options.duration_seconds * 1e9);
    std::int64_t now = now_ns();
    if ((_options.mode == run_mode::messages && _quota == 0) || _control.stop.load(std::memory_order_relaxed)) {
        _finishing = true;  // more shards than messages, or stopped before the start
    } else {
        for (auto& c : _connections) c->open(now);
    }
    _next_scan_ns = now + scan_interval_ns;
    while (true) {
        int wait_ms = 100;
        if (_end_ns != 0 && !_finishing) {
            const std::int64_t left = (_end_ns - now) / 1'000'000 + 1;
            wait_ms = static_cast<int>(std::clamp<std::int64_t>(left, 0, wait_ms));
        }
        wait_ms = static_cast<int>(std::clamp<std::int64_t>((_next_scan_ns - now) / 1'000'000 + 1, 0, wait_ms));
        if (!_reactor.run_once(wait_ms)) {
            note_error("io_uring wait failed");
            break;
        }
        now = now_ns();
        tick(now);
        if (_finishing && all_down()) break;
    }
    if (_options.rate > 0) {
        // Scheduled before the end, never sent: the backlog a slow server left.
        const std::uint64_t due = due_count(_end_ns != 0 ? std::min(now, _end_ns) : now);
        const std::uint64_t limit = _options.mode == run_mode::messages ? std::min(due, _quota) : due;
        _stats.unsent += (limit > _next_index ? limit - _next_index : 0) + _retry.size();
    }
    // Let cancellations and the last sends complete before the sockets and buffers go.
    for (int i = 0; i < 10 && _reactor.run_once(0); ++i) {
    }
}

// Once per turn (after the completions and the turn hooks).
void shard::tick(std::int64_t now) noexcept {
    if (!_finishing) {
        const bool time_up = _end_ns != 0 && now >= _end_ns;
        const bool all_done = _options.mode == run_mode::messages && _completed >= _quota;
        if (time_up || all_done || _control.stop.load(std::memory_order_relaxed)) begin_finish(now);
    }
    open_due_connections(now);
    if (now < _next_scan_ns) return;
    _next_scan_ns = now + scan_interval_ns;
    const auto timeout = static_cast<std::int64_t>(_options.timeout_seconds * 1e9);
    bool alive = false;
    for (auto& c : _connections) {
        const connection_state s = c->state();
        if (s == connection_state::ready || s == connection_state::busy) alive = true;
        if (s == connection_state::connecting && now - c->state_since_ns() > timeout) {
            _stats.timeouts++;
            c->abort("timed out", now);
        } else if (c->waiting_for_peer() && s != connection_state::connecting &&
                   now - c->last_activity_ns() > timeout) {
            _stats.timeouts++;
            char why[64];
            std::snprintf(why, sizeof why, "no reply within %g s", _options.timeout_seconds);
            c->abort(why, now);
        }
    }
    if (!_finishing && !alive && now - _last_alive_ns > timeout) {
        char why[160];
        std::snprintf(why, sizeof why, "gave up: no SMTP session with %s within %g s", _options.target_text.c_str(),
                      _options.timeout_seconds);
        std::fprintf(stderr, "%sringrelay-bench: shard %u: %s\n", _stderr_is_terminal ? "\r\033[K" : "", _index, why);
        _gave_up = true;
        _gave_up_shared.store(true, std::memory_order_release);
        begin_finish(now);
    }
    if (_finishing && now - _finish_started_ns > timeout) {
        for (auto& c : _connections) c->abort("no reply to QUIT", now);
    }
}

void shard::begin_finish(std::int64_t now) noexcept {
    _finishing = true;
    _finish_started_ns = now;
    for (connection* c : _parked) c->parked = false;
    _parked.clear();
    for (auto& c : _connections) {
        if (c->state() == connection_state::down) continue;
        c->quit(now);
    }
}

bool shard::all_down() const noexcept {
    return std::all_of(_connections.begin(), _connections.end(),
                       [](const auto& c) { return c->state() == connection_state::down; });
}

void shard::open_due_connections(std::int64_t now) noexcept {
    if (_finishing || _waiting_reopen == 0) return;
    for (auto& c : _connections) {
        if (c->state() == connection_state::down && c->reopen_at_ns <= now) {
            --_waiting_reopen;
            c->open(now);
        }
    }
}

void shard::want_flush(connection& c) noexcept {
    if (c.in_flush_list) return;
    c.in_flush_list = true;
    _flush.push_back(&c);
}

void shard::on_turn_end() noexcept {
    const std::int64_t now = now_ns();
    if (!_parked.empty() && (_options.rate > 0 || !_retry.empty())) dispatch_parked(now);
    // A flush may queue a connection again (a local refusal's next message): next turn.
    _flush_swap.swap(_flush);
    for (connection* c : _flush_swap) {
        c->in_flush_list = false;
        c->flush(now);
    }
    _flush_swap.clear();
    // Then every connection's output of the turn, one send each.
    _streams.run();
    if (_options.rate > 0 && !_parked.empty() && !_timer_armed) arm_arrival_timer();
}

std::int64_t shard::scheduled_time(std::uint64_t index) const noexcept {
    const double global = static_cast<double>(index) * _count + _index;
    return _start_ns + static_cast<std::int64_t>(global * 1e9 / _options.rate);
}

std::uint64_t shard::due_count(std::int64_t now) const noexcept {
    // Messages i with scheduled_time(i) <= now: i*S + s <= (now - start) * R / 1e9.
    if (now < _start_ns) return 0;
    const double global = std::floor(static_cast<double>(now - _start_ns) * _options.rate / 1e9);
    if (global < _index) return 0;
    auto due = static_cast<std::uint64_t>((global - _index) / _count) + 1;
    // Guard the float rounding at the boundary.
    while (due > 0 && scheduled_time(due - 1) > now) --due;
    while (scheduled_time(due) <= now) ++due;
    return due;
}

bool shard::take_message(std::int64_t now, std::uint64_t& seq, std::int64_t& scheduled) noexcept {
    if (!_retry.empty()) {
        seq = _retry.back().seq;
        scheduled = _retry.back().scheduled_ns;
        _retry.pop_back();
        return true;
    }
    if (_options.mode == run_mode::messages && _next_index >= _quota) return false;
    if (_options.rate > 0) {
        if (_next_index >= due_count(_end_ns != 0 ? std::min(now, _end_ns - 1) : now)) return false;
        scheduled = scheduled_time(_next_index);
    } else {
        scheduled = now;
    }
    seq = _next_index * _count + _index + 1;
    ++_next_index;
    return true;
}

void shard::connection_ready(connection& c, std::int64_t now) noexcept {
    if (_finishing) {
        c.quit(now);
        return;
    }
    std::uint64_t seq = 0;
    std::int64_t scheduled = 0;
    if (take_message(now, seq, scheduled)) {
        c.send_message(seq, scheduled, now);
        return;
    }
    if (!c.parked) {
        c.parked = true;
        _parked.push_back(&c);
    }
}

void shard::dispatch_parked(std::int64_t now) noexcept {
    while (!_parked.empty() && !_finishing) {
        connection* c = _parked.back();
        if (!c->can_take_message()) {  // closed or quitting since it was parked
            c->parked = false;
            _parked.pop_back();
            continue;
        }
        std::uint64_t seq = 0;
        std::int64_t scheduled = 0;
        if (!take_message(now, seq, scheduled)) return;
        c->parked = false;
        _parked.pop_back();
        c->send_message(seq, scheduled, now);
    }
}

void shard::arm_arrival_timer() noexcept {
    if (_options.mode == run_mode::messages && _next_index >= _quota) return;
    const std::int64_t at = scheduled_time(_next_index);
    if (_end_ns != 0 && at >= _end_ns) return;
    _timer_at.tv_sec = at / 1'000'000'000;
    _timer_at.tv_nsec = at % 1'000'000'000;
    io_uring_prep_timeout(_reactor.sqe(&_timer), &_timer_at, 0, IORING_TIMEOUT_ABS);
    _timer_armed = true;
}

void shard::timer_op::complete(int, std::uint32_t) noexcept { owner->_timer_armed = false; }

void shard::message_done(const protocol::message_outcome& o, std::int64_t scheduled_ns, std::int64_t ack_ns,
                         std::int64_t transaction_ns, std::int64_t now) noexcept {
    using protocol::outcome_kind;
    if (o.kind == outcome_kind::not_attempted) {
        if (!_finishing || _options.mode == run_mode::messages) _retry.push_back({o.tag, scheduled_ns});
        return;
    }
    ++_completed;
    _stats.last_outcome_ns = now;
    _last_alive_ns = now;
    const std::uint16_t code = o.reply.code < reply_code_slots ? o.reply.code : 0;
    switch (o.kind) {
    case outcome_kind::accepted:
        _stats.accepted++;
        _stats.replies[code]++;
        _stats.ack_ns.record(static_cast<std::uint64_t>(std::max<std::int64_t>(ack_ns, 0)));
        _stats.transaction_ns.record(static_cast<std::uint64_t>(std::max<std::int64_t>(transaction_ns, 0)));
        break;
    case outcome_kind::transient_failure:
    case outcome_kind::permanent_failure:
        if (o.reply.origin == protocol::reply_origin::local) {
            _stats.local_refusals++;
            note_error("refused locally: " + std::to_string(o.reply.code) + " " + o.reply.text);
        } else {
            (o.kind == outcome_kind::transient_failure ? _stats.transient_failures : _stats.permanent_failures)++;
            _stats.replies[code]++;
            if (_stats.reply_texts.find(code) == _stats.reply_texts.end()) {
                std::string text = o.reply.text;
                std::replace(text.begin(), text.end(), '\n', ' ');
                _stats.reply_texts.emplace(code, std::move(text));
            }
        }
        break;
    default:
        _stats.lost_in_transaction++;
        break;
    }
    _completed_shared.store(_completed, std::memory_order_relaxed);
    _failed_shared.store(_stats.failed(), std::memory_order_relaxed);
}

void shard::connection_down(connection& c, close_kind kind, std::int64_t now) noexcept {
    if (c.parked) {
        c.parked = false;
        std::erase(_parked, &c);
    }
    if (_finishing) return;
    ++_waiting_reopen;
    if (kind == close_kind::normal) {
        c.reopen_at_ns = now;
        return;
    }
    // Jittered exponential back-off: 50 ms, 100 ms, ... 2 s, +-25%.
    const std::uint32_t f = std::min<std::uint32_t>(c.failures++, 10);
    const std::int64_t base = std::min(backoff_base_ns << f, backoff_max_ns);
    _backoff_random = _backoff_random * 6364136223846793005ull + 1442695040888963407ull;
    const auto jitter = static_cast<std::int64_t>((_backoff_random >> 33) % 1000);  // 0..999
    c.reopen_at_ns = now + base * (750 + jitter / 2) / 1000;
}

void shard::note_error(std::string_view text) {
    auto [it, inserted] = _stats.errors.try_emplace(std::string(text), 0);
    if (++it->second == 1) {
        // The first of each kind at once (a progress line, if any, is erased first and redrawn
        // within a second); the counts are in the summary.
        std::fprintf(stderr, "%sringrelay-bench: shard %u: %s\n", _stderr_is_terminal ? "\r\033[K" : "", _index,
                     it->first.c_str());
    }
}

}  // namespace ringrelay::bench
