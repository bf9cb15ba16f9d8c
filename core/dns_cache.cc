// core/dns_cache.cc: see dns_cache.h.
#include "core/dns_cache.h"

#include <algorithm>
#include <utility>

namespace ringrelay::core {

std::string dns_cache::key(dns_type type, std::string_view name) {
    std::string k;
    k.reserve(name.size() + 2);
    const auto t = static_cast<std::uint16_t>(type);
    k.push_back(static_cast<char>(t >> 8));
    k.push_back(static_cast<char>(t & 0xFF));
    k.append(name);
    return k;
}

const dns_cache_entry* dns_cache::find(dns_type type, std::string_view name, std::int64_t now_ms) const {
    const auto it = _entries.find(key(type, name));
    if (it == _entries.end() || it->second.expires_ms <= now_ms) return nullptr;
    return &it->second;
}

void dns_cache::insert(dns_type type, std::string_view name, dns_cache_entry entry, std::int64_t now_ms) {
    if (entry.expires_ms <= now_ms) return;
    std::string k = key(type, name);
    const auto it = _entries.find(k);
    if (it != _entries.end()) {
        it->second = std::move(entry);
        return;
    }
    if (_entries.size() >= _capacity) make_room(now_ms);
    _entries.emplace(std::move(k), std::move(entry));
}

void dns_cache::expire(std::int64_t now_ms) {
    std::erase_if(_entries, [now_ms](const auto& kv) { return kv.second.expires_ms <= now_ms; });
}

void dns_cache::make_room(std::int64_t now_ms) {
    expire(now_ms);
    if (_entries.size() < _capacity) return;
    // Evict the eighth that expires soonest: amortized O(1) per insert.
    std::vector<std::pair<std::int64_t, std::string>> order;
    order.reserve(_entries.size());
    for (const auto& [k, e] : _entries) order.emplace_back(e.expires_ms, k);
    const std::size_t n = std::max<std::size_t>(1, _capacity / 8);
    std::nth_element(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(n - 1), order.end());
    for (std::size_t i = 0; i < n; ++i) _entries.erase(order[i].second);
}

}  // namespace ringrelay::core
