// queue/throttle_controller.cc: see throttle_controller.h.
#include "queue/throttle_controller.h"

#include <algorithm>

#include "core/clock.h"
#include "core/log.h"

namespace ringrelay::queue {

namespace {

constexpr std::uint64_t bin_us = us_per_second;

std::uint64_t minus(std::uint64_t a, std::uint64_t b) noexcept { return a > b ? a - b : 0; }

// `v` * `percent` / 100 without overflow for any v <= max_rate_count.
std::uint64_t percent_of(std::uint64_t v, std::uint64_t percent) noexcept { return v / 100 * percent + v % 100 * percent / 100; }
constexpr std::size_t max_cause = 512;

// Events per second * 1000 for `n` events in `length_us` (>= 1), capped at max_rate_count.
std::uint64_t milli_rate(std::uint64_t n, std::uint64_t length_us) noexcept {
    const double r = static_cast<double>(n) * 1e9 / static_cast<double>(length_us);
    return r >= static_cast<double>(max_rate_count) ? max_rate_count : static_cast<std::uint64_t>(r);
}

// The reply as one line ("421 4.7.0 ..."), or what failed when there was none.
std::string cause_of(attempt_stage stage, std::uint16_t code, std::string_view text) {
    std::string out;
    if (code != 0) {
        out = std::to_string(code) + " ";
    } else if (text.empty()) {
        return stage == attempt_stage::connect ? "connection failed" : "connection lost before the greeting";
    }
    for (const char c : text) {
        if (out.size() >= max_cause) break;
        out.push_back(c == '\n' || c == '\r' ? ' ' : c);
    }
    return out;
}

void append_rate(std::string& line, std::uint64_t milli) {
    if (milli == 0) {
        line += "null";
        return;
    }
    line += std::to_string(milli / 1000);
    line.push_back('.');
    const std::uint64_t frac = milli % 1000;
    line.push_back(static_cast<char>('0' + frac / 100));
    line.push_back(static_cast<char>('0' + frac / 10 % 10));
    line.push_back(static_cast<char>('0' + frac % 10));
}

}  // namespace

std::string_view to_string(shaping_event e) noexcept {
    switch (e) {
    case shaping_event::decrease: return "decrease";
    case shaping_event::increase: return "increase";
    case shaping_event::reset: return "reset";
    case shaping_event::suspend: return "suspend";
    case shaping_event::throttle: return "throttle";
    case shaping_event::resume: return "resume";
    }
    return "decrease";
}

throttle_controller::throttle_controller(const resolved_shaping& limits, std::uint64_t now_us, controller_params params)
    : _params(params), _limits(limits) {
    _connections = std::max<std::uint32_t>(1, limits.connection_limit);
    _rate_milli = configured_rate_milli();
    if (limits.max_message_rate) _messages.emplace(*limits.max_message_rate, now_us, bucket_start::full);
    if (limits.max_connection_rate) _connection_rate.emplace(*limits.max_connection_rate, now_us, bucket_start::full);
    _ring_second = now_us / bin_us;
    _start_us = now_us;
    _rate_interval_start = now_us;
    _conn_interval_start = now_us;
    _last_rate_signal_us = now_us;
    _forget_from_us = now_us;
    _episode_from_us = now_us;
}

std::uint64_t throttle_controller::configured_rate_milli() const noexcept {
    if (!_limits.max_message_rate) return 0;
    return std::max<std::uint64_t>(1, _limits.max_message_rate->milli_per_second());
}

std::uint64_t throttle_controller::rate_milli() const noexcept {
    if (_rate_milli == 0) return 0;
    if (_factor_until == 0) return _rate_milli;
    const auto r = static_cast<std::uint64_t>(static_cast<double>(_rate_milli) * _factor);
    return std::max(r, _params.min_rate_milli);
}

void throttle_controller::set_rate(std::uint64_t milli, std::uint64_t now_us) {
    _rate_milli = milli;
    const std::uint64_t eff = rate_milli();
    if (eff == 0) {
        _messages.reset();
        return;
    }
    const bool configured = _limits.max_message_rate && _factor_until == 0 && _rate_milli == configured_rate_milli();
    const shaping_rate want = configured ? *_limits.max_message_rate : rate_from_milli(eff);
    if (!_messages) {
        _messages.emplace(want, now_us, bucket_start::empty);
    } else if (_messages->rate() != want) {
        _messages->set_rate(want, now_us);
    }
}

shaping_change throttle_controller::change(shaping_event e, std::uint64_t old_rate, std::uint32_t old_conns,
                                           std::string_view cause) const {
    shaping_change c;
    c.event = e;
    c.old_rate_milli = old_rate;
    c.new_rate_milli = rate_milli();
    c.old_connections = old_conns;
    c.new_connections = _connections;
    c.cause = std::string(cause.substr(0, max_cause));
    return c;
}

void throttle_controller::roll(std::uint64_t now_us) {
    const std::uint64_t second = now_us / bin_us;
    if (second <= _ring_second) return;
    const std::uint64_t clear = std::min<std::uint64_t>(second - _ring_second, ring_seconds);
    for (std::uint64_t s = second - clear + 1; s <= second; ++s) _ring[s % ring_seconds] = {};
    _ring_second = second;
}

throttle_controller::counts throttle_controller::window(std::uint64_t from_us, std::uint64_t now_us,
                                                        std::uint64_t& length_us) {
    roll(now_us);
    const std::uint64_t first = std::max(from_us / bin_us, minus(_ring_second + 1, ring_seconds));
    counts sum;
    for (std::uint64_t s = first; s <= _ring_second; ++s) {
        sum.delivered += _ring[s % ring_seconds].delivered;
        sum.attempts += _ring[s % ring_seconds].attempts;
    }
    length_us = std::max<std::uint64_t>(1, minus(now_us, std::max(first * bin_us, _start_us)));
    return sum;
}

void throttle_controller::count(bool delivered, std::uint64_t now_us) {
    roll(now_us);
    counts& bin = _ring[(now_us / bin_us) % ring_seconds];
    ++bin.attempts;
    if (delivered) ++bin.delivered;
}

bool throttle_controller::may_open_connection(std::uint32_t open, std::uint64_t now_us) {
    if (suspended(now_us)) return false;
    if (open >= _connections) {
        _conn_limited = true;
        return false;
    }
    return !_connection_rate || _connection_rate->try_take(now_us);
}

std::uint64_t throttle_controller::connection_wait_us(std::uint64_t now_us) {
    if (suspended(now_us)) return _suspended_until - now_us;
    return _connection_rate ? _connection_rate->wait_us(now_us) : 0;
}

bool throttle_controller::take_message(std::uint64_t now_us) {
    if (suspended(now_us)) return false;
    if (!_messages || _messages->try_take(now_us)) return true;
    _rate_limited = true;
    _held_since_forget = true;
    return false;
}

std::uint64_t throttle_controller::message_wait_us(std::uint64_t now_us) {
    if (suspended(now_us)) return _suspended_until - now_us;
    return _messages ? _messages->wait_us(now_us) : 0;
}

std::uint64_t throttle_controller::message_tokens(std::uint64_t now_us) {
    if (suspended(now_us)) return 0;
    return _messages ? _messages->tokens(now_us) : UINT64_MAX;
}

std::optional<shaping_change> throttle_controller::delivered(std::uint64_t started_us, std::uint64_t now_us) {
    count(true, now_us);
    if (_rate_cut_ever && started_us >= _last_rate_cut_us) {
        ++_cut_delivered;
        if (_blocked) return unblock(now_us);
    }
    _delivered_in_interval = true;
    _delivered_in_conn_interval = true;
    return advance(now_us);
}

std::optional<shaping_change> throttle_controller::failed(attempt_stage stage, std::uint16_t code, std::string_view text,
                                                          std::uint64_t started_us, std::uint64_t now_us,
                                                          std::uint32_t open) {
    if (stage == attempt_stage::command) count(false, now_us);
    const throttle_kind kind = classify_throttle(stage, code, text);
    if (kind == throttle_kind::none || !_limits.adaptive) return advance(now_us);
    if (kind == throttle_kind::rate) {
        // The first signal after a quiet episode_gap starts an episode: its measurement begins
        // lookback before it (the sending that led to it), not in the quiet time.
        if (now_us - _last_rate_signal_us >= _params.episode_gap_us) _episode_from_us = minus(now_us, _params.lookback_us);
        _last_rate_signal_us = now_us;
        _forget_from_us = now_us;
        _held_since_forget = false;
        _rate_interval_start = now_us;  // growth needs a whole quiet interval
        _rate_limited = false;
        _delivered_in_interval = false;
        if (!_rate_cut_ever) return cut_rate(cause_of(stage, code, text), now_us);
        // Refusals of attempts sent before the last cut say nothing about the new rate (as TCP
        // ignores losses of segments sent before its window was cut).
        if (started_us < _last_rate_cut_us || _blocked) return std::nullopt;
        ++_cut_refused;
        // Every attempt since the cut refused: the receiver takes nothing now, whatever the rate
        // (a fixed window, as Postfix's anvil, used up): probe until it accepts again.
        if (_cut_delivered == 0 && _cut_refused >= _params.min_samples) return block(cause_of(stage, code, text), now_us);
        // One cut per measurement: the next needs min_samples deliveries at the new rate over
        // min_measure_us, or min_samples refusals, mostly_refused times the deliveries.
        const bool measured = _cut_delivered >= _params.min_samples && now_us - _last_rate_cut_us >= _params.min_measure_us;
        const bool mostly = _cut_refused >= _params.min_samples && _cut_refused >= _params.mostly_refused * _cut_delivered;
        if (!measured && !mostly) return std::nullopt;
        return cut_rate(cause_of(stage, code, text), now_us);
    }
    _conn_interval_start = now_us;
    _conn_limited = false;
    _delivered_in_conn_interval = false;
    if (_conn_cut_ever && started_us < _last_conn_cut_us) return std::nullopt;  // opened before the cut
    return cut_connections(open, cause_of(stage, code, text), now_us);
}

void throttle_controller::mark_cut(std::uint64_t now_us) {
    _rate_cut_ever = true;
    _last_rate_cut_us = now_us;
    _cut_delivered = 0;
    _cut_refused = 0;
    _probe_steps = 0;
}

std::optional<shaping_change> throttle_controller::cut_rate(std::string_view cause, std::uint64_t now_us) {
    // The estimate: the delivered rate since the last cut (within the last lookback_us; the
    // caller saw min_samples deliveries), else over the last lookback_us.
    const std::uint64_t old = rate_milli();
    std::uint64_t length = 1;
    counts w;
    if (_rate_cut_ever && now_us - _last_rate_cut_us <= _params.lookback_us) {
        w = counts{_cut_delivered, _cut_delivered + _cut_refused};
        length = std::max<std::uint64_t>(1, now_us - _last_rate_cut_us);
    } else {
        w = window(minus(now_us, _params.lookback_us), now_us, length);
    }
    const std::uint64_t delivered_rate = milli_rate(w.delivered, length);
    const std::uint64_t current = _rate_milli != 0 ? _rate_milli : std::max(milli_rate(w.attempts, length), delivered_rate);
    const std::uint64_t beta = _params.decrease_percent;
    std::uint64_t good = current;  // what the receiver allows, as far as this window tells
    std::uint64_t next = percent_of(current, beta);
    if (w.delivered >= _params.min_samples) {
        good = std::min(current, delivered_rate);
        next = percent_of(good, beta);
    } else if (w.attempts >= _params.min_samples) {  // most were refused
        next = std::min(next, std::max(current / 2, delivered_rate));
        good = next;
    }
    next = std::clamp(next, _params.min_rate_milli, max_rate_count);
    if (const std::uint64_t cfg = configured_rate_milli(); cfg != 0) {
        next = std::min(next, cfg);
        good = std::min(good, cfg);
    }
    mark_cut(now_us);
    _good_milli = std::max(good, next);
    set_rate(next, now_us);
    if (rate_milli() == old) return std::nullopt;
    return change(shaping_event::decrease, old, _connections, cause);
}

std::optional<shaping_change> throttle_controller::block(std::string_view cause, std::uint64_t now_us) {
    const std::uint64_t old = rate_milli();
    _blocked = true;
    _rate_before_block = _rate_milli;
    mark_cut(now_us);
    set_rate(std::max(_params.min_rate_milli, std::min(_rate_milli, _params.block_probe_milli)), now_us);
    if (rate_milli() == old) return std::nullopt;
    return change(shaping_event::decrease, old, _connections, cause);
}

// The first delivery of a probe: the receiver's allowance is what it let through over the
// episode (a fixed window's burst and its refusals alike; at most horizon_us back), and the
// rate becomes that.
std::optional<shaping_change> throttle_controller::unblock(std::uint64_t now_us) {
    const std::uint64_t old = rate_milli();
    _blocked = false;
    std::uint64_t length = 1;
    const counts w = window(std::max(_episode_from_us, minus(now_us, _params.horizon_us)), now_us, length);
    // No `decrease`: the measurement spans refusals and the probe's lag already, and a window
    // used up early costs a few refusals where one never filled costs throughput.
    std::uint64_t good = std::min(std::max(milli_rate(w.delivered, length), _params.min_rate_milli), _rate_before_block);
    std::uint64_t next = good;
    if (const std::uint64_t cfg = configured_rate_milli(); cfg != 0) {
        next = std::min(next, cfg);
        good = std::min(good, cfg);
    }
    mark_cut(now_us);
    _good_milli = std::max(good, next);
    _rate_interval_start = now_us;
    _rate_limited = false;
    _delivered_in_interval = false;
    set_rate(next, now_us);
    if (rate_milli() == old) return std::nullopt;
    return change(shaping_event::increase, old, _connections, "accepted again after refusing every attempt");
}

std::optional<shaping_change> throttle_controller::cut_connections(std::uint32_t open, std::string_view cause,
                                                                   std::uint64_t now_us) {
    const std::uint32_t old = _connections;
    const auto cut = static_cast<std::uint32_t>(static_cast<std::uint64_t>(old) * _params.decrease_percent / 100);
    _connections = std::max<std::uint32_t>(1, std::min(cut, open));
    _conn_cut_ever = true;
    _last_conn_cut_us = now_us;
    if (_connections == old) return std::nullopt;
    return change(shaping_event::decrease, rate_milli(), old, cause);
}

std::optional<shaping_change> throttle_controller::advance(std::uint64_t now_us) {
    if (_suspended_until != 0 && now_us >= _suspended_until) {
        _suspended_until = 0;
        const std::uint32_t old = _connections;
        if (_limits.adaptive) {
            _connections = 1;  // resume on one connection
            _conn_cut_ever = true;
            _last_conn_cut_us = now_us;
        }
        _conn_interval_start = now_us;
        _conn_limited = false;
        return change(shaping_event::resume, rate_milli(), old, "suspension ended");
    }
    if (_factor_until != 0 && now_us >= _factor_until) {
        const std::uint64_t old = rate_milli();
        _factor_until = 0;
        _factor = 1.0;
        // A rate the throttle made up (the site had none) ends with it, unless the loop has
        // since found one of its own.
        const bool made_up = _rate_from_throttle && !_rate_cut_ever;
        _rate_from_throttle = false;
        set_rate(made_up ? 0 : _rate_milli, now_us);
        return change(shaping_event::resume, old, _connections, "throttle ended");
    }
    if (!_limits.adaptive) return std::nullopt;
    const std::uint64_t cfg = configured_rate_milli();
    if (_rate_milli != 0 && now_us - _rate_interval_start >= _params.increase_interval_us) {
        const bool grow = _rate_limited && _delivered_in_interval && (cfg == 0 || _rate_milli < cfg);
        _rate_interval_start = now_us;
        _rate_limited = false;
        _delivered_in_interval = false;
        if (grow) {
            // Back to the good rate multiplicatively, then a slow probe above it.
            const std::uint64_t old = rate_milli();
            std::uint64_t next = 0;
            if (_rate_milli < _good_milli) {
                next = std::min(_good_milli, _rate_milli + std::max(_params.min_rate_milli,
                                                                     percent_of(_rate_milli, _params.increase_percent)));
            } else {
                ++_probe_steps;  // slowly near the good rate, faster the longer it holds
                next = _rate_milli + std::max(_params.min_rate_milli,
                                              percent_of(_good_milli, _params.probe_percent) * _probe_steps);
            }
            next = std::min(next, max_rate_count);
            if (cfg != 0) next = std::min(next, cfg);
            set_rate(next, now_us);
            if (rate_milli() != old) return change(shaping_event::increase, old, _connections, "quiet period");
        }
    }
    if (auto f = forget(now_us); f) return f;
    if (now_us - _conn_interval_start >= _params.connection_increase_interval_us) {
        const bool grow = _conn_limited && _delivered_in_conn_interval && _connections < _limits.connection_limit;
        _conn_interval_start = now_us;
        _conn_limited = false;
        _delivered_in_conn_interval = false;
        if (grow) {
            const std::uint32_t old = _connections;
            ++_connections;
            return change(shaping_event::increase, rate_milli(), old, "quiet period");
        }
    }
    return std::nullopt;
}

// A found rate grows back gradually after quiet periods, never while a throttle holds it: each
// forget_after without a rate signal doubles it (up to the configured rate); without a
// configured rate, a period in which it held no message back drops it (the site has no rate
// limit again).
std::optional<shaping_change> throttle_controller::forget(std::uint64_t now_us) {
    const std::uint64_t cfg = configured_rate_milli();
    if (_rate_milli == 0 || _factor_until != 0 || (cfg != 0 && _rate_milli >= cfg)) return std::nullopt;
    if (now_us - _forget_from_us < _params.forget_after_us) return std::nullopt;
    const std::uint64_t old = rate_milli();
    const bool held = _held_since_forget;
    _forget_from_us = now_us;
    _held_since_forget = false;
    if (cfg == 0 && !held) {
        _rate_cut_ever = false;
        set_rate(0, now_us);
        return change(shaping_event::reset, old, _connections, "no rate signal and no message held back for the forget period");
    }
    std::uint64_t next = std::min(_rate_milli * 2, max_rate_count);
    if (cfg != 0) next = std::min(next, cfg);
    _good_milli = std::max(_good_milli, next);
    set_rate(next, now_us);
    return change(shaping_event::increase, old, _connections, "no rate signal for the forget period: doubled");
}

bool throttle_controller::settled() const noexcept {
    return _suspended_until == 0 && _factor_until == 0 && !_blocked && _rate_milli == configured_rate_milli() &&
           _connections == std::max<std::uint32_t>(1, _limits.connection_limit);
}

bool throttle_controller::at_rest(std::uint64_t now_us) {
    if (_suspended_until != 0 || _factor_until != 0) return false;
    if (_messages && !_messages->full(now_us)) return false;
    if (_connection_rate && !_connection_rate->full(now_us)) return false;
    if (settled()) return true;
    const std::uint64_t last = std::max(_last_rate_signal_us, _conn_cut_ever ? _last_conn_cut_us : 0);
    return now_us >= last && now_us - last >= _params.forget_after_us;
}

std::uint64_t throttle_controller::next_event_us() const noexcept {
    std::uint64_t next = UINT64_MAX;
    if (_suspended_until != 0) next = std::min(next, _suspended_until);
    if (_factor_until != 0) next = std::min(next, _factor_until);
    return next;
}

std::optional<shaping_change> throttle_controller::automate(const automation_rule& rule, std::string_view reply,
                                                            std::uint64_t now_us) {
    const std::uint64_t old_rate = rate_milli();
    const std::uint32_t old_conns = _connections;
    const auto until = now_us + static_cast<std::uint64_t>(rule.duration.count()) * 1000;
    std::string cause = "automation";
    if (!rule.name.empty()) cause += " " + rule.name;
    cause += ": ";
    cause.append(reply.substr(0, max_cause));
    if (rule.action == automation_action::suspend) {
        _suspended_until = std::max(_suspended_until, until);
        shaping_change c = change(shaping_event::suspend, old_rate, old_conns, cause);
        c.until_us = _suspended_until;
        return c;
    }
    if (_rate_milli == 0) {  // no limit yet: the factor applies to what is being attempted
        std::uint64_t length = 1;
        const counts w = window(minus(now_us, _params.lookback_us), now_us, length);
        _rate_milli = std::max(_params.min_rate_milli, milli_rate(w.attempts, length));
        _good_milli = _rate_milli;
        _rate_from_throttle = true;
    }
    _factor = rule.factor;
    _factor_until = until;
    set_rate(_rate_milli, now_us);
    shaping_change c = change(shaping_event::throttle, old_rate, old_conns, cause);
    c.until_us = until;
    return c;
}

std::optional<shaping_change> throttle_controller::reconfigure(const resolved_shaping& limits, std::uint64_t now_us) {
    const std::uint64_t old_rate = rate_milli();
    const std::uint32_t old_conns = _connections;
    _limits = limits;
    if (!limits.adaptive) {  // the loop is off: the configured limits, whatever it had cut
        _conn_cut_ever = false;
        _rate_cut_ever = false;
        _rate_from_throttle = false;
        _rate_milli = 0;
    }
    const std::uint32_t conn_cap = std::max<std::uint32_t>(1, limits.connection_limit);
    _connections = _conn_cut_ever ? std::min(_connections, conn_cap) : conn_cap;
    if (limits.max_connection_rate) {
        if (!_connection_rate || _connection_rate->rate() != *limits.max_connection_rate)
            _connection_rate.emplace(*limits.max_connection_rate, now_us, bucket_start::full);
    } else {
        _connection_rate.reset();
    }
    const std::uint64_t cfg = configured_rate_milli();
    std::uint64_t next = cfg;
    if (_rate_cut_ever && _rate_milli != 0) next = cfg == 0 ? _rate_milli : std::min(_rate_milli, cfg);
    _messages.reset();  // rebuilt at the new rate
    set_rate(next, now_us);
    if (_messages && next == cfg && !_rate_cut_ever) _messages.emplace(*limits.max_message_rate, now_us);
    if (rate_milli() == old_rate && _connections == old_conns) return std::nullopt;
    return change(shaping_event::reset, old_rate, old_conns, "shaping rules reloaded");
}

void append_shaping_record(std::string& line, std::string_view site, std::string_view source, const shaping_change& c,
                           std::int64_t unix_us, std::int64_t until_unix_us) {
    line += "{\"type\":\"Shaping\",\"time\":\"";
    line += core::iso8601_us(unix_us);
    line += "\",\"site\":\"";
    core::append_json_escaped(line, site);
    line += "\",\"source\":\"";
    core::append_json_escaped(line, source);
    line += "\",\"event\":\"";
    line += to_string(c.event);
    line += "\",\"rate\":{\"old\":";
    append_rate(line, c.old_rate_milli);
    line += ",\"new\":";
    append_rate(line, c.new_rate_milli);
    line += "},\"connections\":{\"old\":";
    line += std::to_string(c.old_connections);
    line += ",\"new\":";
    line += std::to_string(c.new_connections);
    line += "}";
    if (until_unix_us != 0 && (c.event == shaping_event::suspend || c.event == shaping_event::throttle)) {
        line += ",\"until\":\"";
        line += core::iso8601_us(until_unix_us);
        line += "\"";
    }
    line += ",\"cause\":\"";
    core::append_json_escaped(line, c.cause);
    line += "\"}\n";
}

}  // namespace ringrelay::queue
