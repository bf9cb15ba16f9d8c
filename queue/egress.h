// queue/egress.h: egress sources and pools (issue 17). A source is a local address outbound
// connections bind, with the EHLO name they greet with; a pool is a weighted set of sources; a
// selector picks a message's pool by its sender's domain or its AUTH user. Receivers judge each
// IP address on its own, so each (source, site) keeps its own limits and back-off.
//
//   --egress-source NAME=ADDRESS[,ehlo=HOSTNAME]   (repeatable)
//   --egress-pool NAME=SOURCE[:WEIGHT],...         (repeatable; weight a positive integer, default 1)
//   --pool-for SELECTOR=POOL                       (repeatable; first match wins)
//        SELECTOR: sender-domain:DOMAIN, auth-user:USER or *
//
// Without any --pool-for the system chooses the source address (no bind) and the EHLO name is
// --hostname. egress_table is immutable once loaded and shared by all shards; egress_chooser
// is a shard's own weighted round-robin state.
#pragma once
#include <cstdint>
#include <expected>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/net.h"

namespace ringrelay::queue {

struct egress_source {
    std::string name;
    core::endpoint address;  // port 0: the kernel picks the local port
    std::string address_text;
    std::string ehlo;  // the EHLO/HELO name; --hostname when none was given
};

struct egress_pool {
    std::string name;
    struct member {
        std::uint32_t source = 0;  // index into egress_table::sources()
        std::uint32_t weight = 1;
    };
    std::vector<member> members;
    std::uint64_t total_weight = 0;
};

class egress_table {
public:
    // Parses and checks the three flags: each source's address must be bindable here (a
    // test bind to ADDRESS:0), names are unique, pools name known sources with positive
    // integer weights, selectors name known pools. The error names the flag and the value.
    // `default_ehlo` is --hostname.
    [[nodiscard]] static std::expected<std::shared_ptr<const egress_table>, std::string> load(
        const std::vector<std::string>& egress_sources, const std::vector<std::string>& egress_pools,
        const std::vector<std::string>& pool_for, std::string_view default_ehlo);

    // The pool for a message: the first --pool-for whose selector matches (domain and user
    // compared without regard to case); null when none does (the system-chosen address).
    [[nodiscard]] const egress_pool* pool_for(std::string_view sender_domain, std::string_view auth_user) const noexcept;

    [[nodiscard]] const std::vector<egress_source>& sources() const noexcept { return _sources; }
    [[nodiscard]] const std::vector<egress_pool>& pools() const noexcept { return _pools; }
    [[nodiscard]] bool empty() const noexcept { return _selectors.empty(); }
    // One line for the start-up log: "egress: 2 sources (a=127.0.0.2, b=127.0.0.3), 1 pool, 1 selector".
    [[nodiscard]] std::string describe() const;

private:
    struct selector {
        enum class kind : std::uint8_t { any, sender_domain, auth_user } what = kind::any;
        std::string value;  // lower case
        std::uint32_t pool = 0;
    };
    std::vector<egress_source> _sources;
    std::vector<egress_pool> _pools;
    std::vector<selector> _selectors;
};

// A shard's choice among a pool's sources: smooth weighted round robin (as nginx's upstream
// balancer), so any run of total_weight choices gives each source exactly its weight, spread
// out rather than in bursts. Not thread-safe: one per shard.
class egress_chooser {
public:
    explicit egress_chooser(const egress_table& table);
    // The source index for the next connection of `pool` (a pool of `table`).
    [[nodiscard]] std::uint32_t next(const egress_pool& pool) noexcept;
    // The same among the members for which eligible(source index) holds (the others neither
    // gain weight nor are chosen: with every member eligible this is next()); none: nullopt,
    // and the state is as it was.
    template <typename Eligible>
    [[nodiscard]] std::optional<std::uint32_t> next_eligible(const egress_pool& pool, Eligible&& eligible) {
        std::vector<std::int64_t>& current = _current[index_of(pool)];
        std::int64_t total = 0;
        std::size_t best = current.size();
        for (std::size_t i = 0; i < current.size(); ++i) {
            if (!eligible(pool.members[i].source)) continue;
            current[i] += pool.members[i].weight;
            total += pool.members[i].weight;
            if (best == current.size() || current[i] > current[best]) best = i;
        }
        if (best == current.size()) return std::nullopt;
        current[best] -= total;
        return pool.members[best].source;
    }

private:
    [[nodiscard]] std::size_t index_of(const egress_pool& pool) const noexcept {
        return static_cast<std::size_t>(&pool - _table.pools().data());
    }
    const egress_table& _table;
    std::vector<std::vector<std::int64_t>> _current;  // per pool, per member
};

// "127.0.0.2", "::1" or "[::1]" -> an endpoint with port 0; nothing else (no names, no port).
[[nodiscard]] std::expected<core::endpoint, std::string> parse_bind_address(std::string_view text);

}  // namespace ringrelay::queue
