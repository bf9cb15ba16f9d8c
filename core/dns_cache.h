// core/dns_cache.h: the resolver's answer cache: one entry per (type, name) RRset, positive
// or negative, kept for its TTL (RFC 1035 §3.2.1, negative answers RFC 2308 §5) and capped in
// size: when full, expired entries go first, then the eighth that expires soonest.
//
// Threading: shard-local (one cache per dns_resolver). Time is whatever the caller passes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/dns_message.h"

namespace ringrelay::core {

enum class dns_outcome : std::uint8_t {
    records,         // NOERROR with records of the type
    no_data,         // NOERROR without them (RFC 2308 §2.2)
    no_such_domain,  // NXDOMAIN (RFC 2308 §2.1)
};

struct dns_cache_entry {
    dns_outcome outcome = dns_outcome::records;
    std::vector<dns_mx_record> mx;
    std::vector<dns_address_record> addresses;
    std::int64_t expires_ms = 0;
};

class dns_cache {
public:
    explicit dns_cache(std::size_t capacity) : _capacity(capacity == 0 ? 1 : capacity) {}

    // The live entry for (type, name) (`name` normalized, see normalize_dns_name), or null.
    // The pointer is valid until the next insert() or expire().
    [[nodiscard]] const dns_cache_entry* find(dns_type type, std::string_view name, std::int64_t now_ms) const;
    // Stores `entry` unless it has already expired; replaces an older one.
    void insert(dns_type type, std::string_view name, dns_cache_entry entry, std::int64_t now_ms);
    // Drops every entry expired at `now_ms`.
    void expire(std::int64_t now_ms);

    [[nodiscard]] std::size_t size() const noexcept { return _entries.size(); }
    [[nodiscard]] std::size_t capacity() const noexcept { return _capacity; }

private:
    [[nodiscard]] static std::string key(dns_type type, std::string_view name);
    void make_room(std::int64_t now_ms);

    const std::size_t _capacity;
    std::unordered_map<std::string, dns_cache_entry> _entries;
};

}  // namespace ringrelay::core
