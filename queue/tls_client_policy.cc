// queue/tls_client_policy.cc: see tls_client_policy.h.
#include "queue/tls_client_policy.h"

#include <utility>

namespace ringrelay::queue {

tls_client_policy::tls_client_policy(const core::config& config, const std::atomic<std::uint64_t>& generation,
                                     const core::time_source& clock) noexcept
    : _config(config),
      _reload(generation),
      _clock(clock),
      _generation(generation.load(std::memory_order_acquire)),
      _ca_file(config.outbound_ca_file) {}

tls_client_policy::connection_tls tls_client_policy::for_connection(core::config::tls_policy policy,
                                                                    std::string_view address) noexcept {
    connection_tls out;
    switch (policy) {
    case core::config::tls_policy::disabled:
        out.starttls = protocol::tls_use::never;
        break;
    case core::config::tls_policy::opportunistic: {
        out.starttls = protocol::tls_use::when_offered;
        if (address.empty()) break;
        const auto it = _broken_until.find(std::string(address));
        if (it == _broken_until.end()) break;
        if (_clock.monotonic_ms() < it->second) {
            out.starttls = protocol::tls_use::never;  // its handshake failed lately
        } else {
            _broken_until.erase(it);
        }
        break;
    }
    case core::config::tls_policy::verify:
        out.verify = core::tls_verify::peer;
        out.starttls = protocol::tls_use::required;
        break;
    case core::config::tls_policy::required:
        out.starttls = protocol::tls_use::required;
        break;
    }
    return out;
}

void tls_client_policy::mark_broken(const std::string& address) {
    const std::int64_t now = _clock.monotonic_ms();
    if (_broken_until.size() >= 4096) std::erase_if(_broken_until, [now](const auto& e) { return e.second <= now; });
    _broken_until[address] = now + tls_fallback_ms;
}

core::tls_context* tls_client_policy::client_context(core::tls_verify verify, std::string& error) noexcept {
    std::optional<core::tls_context>& slot = verify == core::tls_verify::peer ? _verify : _any;
    if (slot) return &*slot;
    if (verify == core::tls_verify::peer && !_verify_error.empty()) {
        error = _verify_error;
        return nullptr;
    }
    auto made = core::tls_context::client(core::tls_client_options{verify, _config.outbound_ca_file});
    if (!made) {
        error = made.error().text;
        if (verify == core::tls_verify::peer) _verify_error = error;  // a CA file does not heal by itself
        return nullptr;
    }
    slot.emplace(std::move(*made));
    return &*slot;
}

std::optional<tls_client_policy::resumption> tls_client_policy::take_session(const std::string& key) noexcept {
    const auto it = _sessions.find(key);
    if (it == _sessions.end()) return std::nullopt;
    resumption r = std::move(it->second);
    _sessions.erase(it);
    if (!r.session.resumable() || r.generation != _generation ||
        _clock.monotonic_ms() - r.verified_ms >= tls_session_lifetime_ms)
        return std::nullopt;
    return r;
}

void tls_client_policy::keep_session(const std::string& key, resumption r) {
    if (!r.session.resumable() || r.generation != _generation) return;  // made before a reload
    // A few thousand next hops' worth; beyond that start again (a full handshake costs one
    // round trip more, nothing else).
    constexpr std::size_t max_sessions = 4096;
    if (_sessions.size() >= max_sessions && !_sessions.contains(key)) _sessions.clear();
    _sessions.insert_or_assign(key, std::move(r));
}

void tls_client_policy::tick() noexcept {
    // A SIGHUP that changed --outbound-ca-file is seen by the path (the shard's config took it
    // at the same tick, maybe after the generation moved) as well as by the generation.
    const std::uint64_t g = _reload.load(std::memory_order_acquire);
    if (g == _generation && _config.outbound_ca_file == _ca_file) return;
    _generation = g;
    _ca_file = _config.outbound_ca_file;
    _any.reset();
    _verify.reset();
    _verify_error.clear();
    _sessions.clear();
}

}  // namespace ringrelay::queue
