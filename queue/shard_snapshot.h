// queue/shard_snapshot.h: what one shard publishes for /metrics once a tick that lives in its
// shard-local structures and has labels (queue/metrics.h): its sites' queue depth (owner side:
// the destination pools) and its recipients' outcomes by provider and egress source and by
// bounce class (origin side: delivery::apply_outcome). The shard fills it in place at its tick
// (core::snapshot_slot: no lock, no allocation once the vectors have grown); the scraping shard
// reads it without waiting.
//
// Cardinality: at most max_site_series sites per shard, the deepest; the others are summed in
// `rest`. Providers are bounded by the shaping rules (queue/shaping_rules.h,
// max_shaping_providers), sources by --egress-source, classes by protocol::bounce_class.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/snapshot_slot.h"
#include "protocol/bounce_class.h"

namespace ringrelay::queue {

// Sites a shard publishes by name (and /metrics renders by name, over all shards); the rest
// go to one site="_other" series.
inline constexpr std::size_t max_site_series = 50;

// The mail waiting at one site (by site name: queue/site_name.h; the splits of a site by
// egress source or domain rule summed) on the shard that owns it: jobs in its ready queue,
// held by a tenant limit, or on a connection. One job is one message's recipients there.
struct site_depth {
    std::string site;
    std::uint64_t messages = 0;
    std::uint64_t oldest_arrival_us = 0;  // Unix: arrival of the oldest of them; 0: none
};

// Recipients' outcomes at sites of one provider ("" none matched) through one egress source
// ("default": the system-chosen address). Counters since the shard started.
struct provider_outcomes {
    std::string provider;
    std::string source;
    std::uint64_t delivered = 0;
    std::uint64_t deferred = 0;  // attempts that failed temporarily
    std::uint64_t bounced = 0;
    std::uint64_t expired = 0;   // expired after such an attempt (--max-age)
};

struct shard_snapshot {
    std::vector<site_depth> sites;  // at most max_site_series, deepest first
    site_depth rest;                // the sites not in `sites`, summed (site empty)
    std::vector<provider_outcomes> outcomes;
    std::array<std::uint64_t, protocol::bounce_class_count> bounced_by_class{};  // recipients
};

// Merges the entries of equal site names (messages summed, the oldest arrival kept), keeps the
// `limit` deepest (most messages first, then by name) and adds the others into `rest`.
void keep_deepest(std::vector<site_depth>& sites, site_depth& rest, std::size_t limit);

// The entry of (provider, source) in `table`, added (zero) if missing. Linear: the table holds
// providers times sources.
provider_outcomes& outcomes_for(std::vector<provider_outcomes>& table, std::string_view provider,
                                std::string_view source);

using shard_snapshot_slot = core::snapshot_slot<shard_snapshot>;

}  // namespace ringrelay::queue
