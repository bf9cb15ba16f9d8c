// core/dns_static.cc: the parts of core/dns.h that do not touch c-ares: delivering results
// from the reactor loop (detail::mx_delivery) and the table-driven static_mx_resolver.
#include <algorithm>
#include <utility>

#include "core/dns.h"

namespace ringrelay::core {

// ---- delivery -------------------------------------------------------------------------

namespace detail {

void mx_delivery::push(mx_waiter* w, mx_result result) {
    _ready.emplace_back(w, std::move(result));
    if (!_posted) {
        _posted = true;
        _reactor.post(this, 0);
    }
}

bool mx_delivery::remove(mx_waiter* w) noexcept {
    const auto it = std::find_if(_ready.begin(), _ready.end(), [w](const auto& p) { return p.first == w; });
    if (it == _ready.end()) return false;
    _ready.erase(it);
    return true;
}

void mx_delivery::complete(int, std::uint32_t) noexcept {
    _posted = false;
    // Only what was ready when the turn began: a waiter that resolves again is answered on a
    // later turn, which bounds the work of this one.
    for (std::size_t n = _ready.size(); n > 0 && !_ready.empty(); --n) {
        auto [waiter, result] = std::move(_ready.front());
        _ready.pop_front();
        waiter->resolved(std::move(result));
    }
    if (!_ready.empty() && !_posted) {
        _posted = true;
        _reactor.post(this, 0);
    }
}

}  // namespace detail

// ---- static_mx_resolver -----------------------------------------------------------------

void static_mx_resolver::set(std::string_view domain, mx_result result) {
    _table[normalize_dns_name(domain)] = std::move(result);
}

void static_mx_resolver::resolve_mx(std::string_view domain, mx_waiter* done) {
    ++_lookups;
    const auto it = _table.find(normalize_dns_name(domain));
    if (it == _table.end()) {
        _delivery.push(done, {dns_status::no_such_domain, {}, std::string(domain) + ": not in the static table"});
        return;
    }
    _delivery.push(done, it->second);
}

}  // namespace ringrelay::core
