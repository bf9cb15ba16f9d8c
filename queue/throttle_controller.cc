// queue/throttle_controller.cc: see throttle_controller.h.
#include "queue/throttle_controller.h"

#include <algorithm>

#include "core/clock.h"
#include "core/log.h"

namespace ringrelay::queue {

namespace {

constexpr std::uint64_t bin_us = us_per_second;
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
    _bin_start = now_us;
    _rate_interval_start = now_us;
    _conn_interval_start = now_us;
    _last_rate_signal_us = now_us;
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

void throttle_controller::restart_window(std::uint64_t now_us) {
    _bin_start = now_us;
    _has_prev_bin = false;
    _bin = {};
    _prev_bin = {};
}

throttle_controller::counts throttle_controller::window(std::uint64_t now_us, std::uint64_t& length_us) {
    if (now_us >= _bin_start + bin_us) {
        const std::uint64_t bins = (now_us - _bin_start) / bin_us;
        _prev_bin = bins == 1 ? _bin : counts{};
        _has_prev_bin = true;
        _bin = {};
        _bin_start += bins * bin_us;
    }
    const std::uint64_t start = _has_prev_bin ? _bin_start - bin_us : _bin_start;
    length_us = now_us > start ? now_us - start : 1;
    return counts{_prev_bin.delivered + _bin.delivered, _prev_bin.attempts + _bin.attempts};
}

void throttle_controller::count(bool delivered, std::uint64_t now_us) {
    std::uint64_t length = 0;
    (void)window(now_us, length);  // rolls the bins
    ++_bin.attempts;
    if (delivered) ++_bin.delivered;
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

std::optional<shaping_change> throttle_controller::delivered(std::uint64_t /*started_us*/, std::uint64_t now_us) {
    count(true, now_us);
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
        _last_rate_signal_us = now_us;
        _rate_interval_start = now_us;  // growth needs a whole quiet interval
        _rate_limited = false;
        _delivered_in_interval = false;
        if (_rate_cut_ever && started_us < _last_rate_cut_us) return std::nullopt;  // sent before the cut
        return cut_rate(cause_of(stage, code, text), now_us);
    }
    _conn_interval_start = now_us;
    _conn_limited = false;
    _delivered_in_conn_interval = false;
    if (_conn_cut_ever && started_us < _last_conn_cut_us) return std::nullopt;  // opened before the cut
    return cut_connections(open, cause_of(stage, code, text), now_us);
}

std::optional<shaping_change> throttle_controller::cut_rate(std::string_view cause, std::uint64_t now_us) {
    std::uint64_t length = 1;
    const counts w = window(now_us, length);
    const std::uint64_t old = rate_milli();
    const std::uint64_t delivered_rate = milli_rate(w.delivered, length);
    const std::uint64_t current = _rate_milli != 0 ? _rate_milli : std::max(milli_rate(w.attempts, length), delivered_rate);
    const std::uint64_t beta = _params.decrease_percent;
    std::uint64_t next = 0;
    if (w.delivered >= _params.min_samples) {
        next = std::min(current, delivered_rate) / 100 * beta + std::min(current, delivered_rate) % 100 * beta / 100;
    } else if (w.attempts >= _params.min_samples) {
        next = std::min(current / 100 * beta, std::max(current / 2, delivered_rate));
    } else {
        next = current / 100 * beta + current % 100 * beta / 100;
    }
    next = std::clamp(next, _params.min_rate_milli, max_rate_count);
    if (const std::uint64_t cfg = configured_rate_milli(); cfg != 0) next = std::min(next, cfg);
    _rate_cut_ever = true;
    _last_rate_cut_us = now_us;
    _cut_base_milli = next;
    restart_window(now_us);
    set_rate(next, now_us);
    if (rate_milli() == old) return std::nullopt;
    return change(shaping_event::decrease, old, _connections, cause);
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
            const std::uint64_t old = rate_milli();
            const std::uint64_t step = std::max(_params.min_rate_milli, _cut_base_milli / 100 * _params.increase_percent);
            std::uint64_t next = std::min(_rate_milli + step, max_rate_count);
            if (cfg != 0) next = std::min(next, cfg);
            set_rate(next, now_us);
            if (rate_milli() != old) return change(shaping_event::increase, old, _connections, "quiet period");
        }
    }
    // A found rate is forgotten after a quiet period, but never while a throttle holds it.
    if (cfg == 0 && _rate_milli != 0 && _factor_until == 0 && now_us - _last_rate_signal_us >= _params.forget_after_us) {
        const std::uint64_t old = rate_milli();
        _rate_cut_ever = false;
        set_rate(0, now_us);
        return change(shaping_event::reset, old, _connections, "no rate signal for the forget period");
    }
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
        const counts w = window(now_us, length);
        _rate_milli = std::max(_params.min_rate_milli, milli_rate(w.attempts, length));
        _cut_base_milli = _rate_milli;
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
