// queue/shard_snapshot.cc: see shard_snapshot.h.
#include "queue/shard_snapshot.h"

#include <algorithm>

namespace ringrelay::queue {

namespace {
void add_into(site_depth& to, const site_depth& from) noexcept {
    to.messages += from.messages;
    if (from.oldest_arrival_us != 0 && (to.oldest_arrival_us == 0 || from.oldest_arrival_us < to.oldest_arrival_us))
        to.oldest_arrival_us = from.oldest_arrival_us;
}
}  // namespace

void keep_deepest(std::vector<site_depth>& sites, site_depth& rest, std::size_t limit) {
    std::sort(sites.begin(), sites.end(), [](const site_depth& a, const site_depth& b) { return a.site < b.site; });
    std::size_t kept = 0;
    for (std::size_t i = 0; i < sites.size(); ++i) {
        if (kept > 0 && sites[kept - 1].site == sites[i].site) {
            add_into(sites[kept - 1], sites[i]);
        } else {
            if (kept != i) sites[kept] = std::move(sites[i]);
            ++kept;
        }
    }
    sites.resize(kept);
    std::sort(sites.begin(), sites.end(), [](const site_depth& a, const site_depth& b) {
        return a.messages != b.messages ? a.messages > b.messages : a.site < b.site;
    });
    for (std::size_t i = limit; i < sites.size(); ++i) add_into(rest, sites[i]);
    if (sites.size() > limit) sites.resize(limit);
}

provider_outcomes& outcomes_for(std::vector<provider_outcomes>& table, std::string_view provider,
                                std::string_view source) {
    for (provider_outcomes& o : table)
        if (o.provider == provider && o.source == source) return o;
    provider_outcomes& o = table.emplace_back();
    o.provider = provider;
    o.source = source;
    return o;
}

}  // namespace ringrelay::queue
