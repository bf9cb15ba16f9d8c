// queue/metrics.h: the relay's counters in the Prometheus text exposition format (version
// 0.0.4), for GET /metrics (issue 18). Names follow Prometheus' conventions and are an
// interface: `ringrelay_` prefix, counters end in `_total`, sizes in bytes, one `shard` label
// per series. README's "HTTP endpoint" lists them.
//
// How the numbers get here: every shard writes its own queue::shard_counters (relaxed atomics,
// own cache line); the shard serving the scrape reads every shard's directly. No lock, no
// message to the other shards, nothing on their hot path: a scrape costs them nothing, and
// it never waits for a busy shard. The price: a value copied at a shard's tick may be up to a
// second old (delivered, deferred, bounced, expired, DSNs, outbound connections, spool size);
// those counted as they happen (received, connections in, bytes, DKIM signatures) are not.
//
// Threading: metrics_sources is filled by the relay before the shards run (their go signal
// orders the writes before every read) and read-only after.
#pragma once
#include <span>
#include <string>
#include <vector>

#include "queue/shard_counters.h"

namespace ringrelay::queue {

class metrics_sources {
public:
    explicit metrics_sources(unsigned shards) : _shards(shards, nullptr) {}
    // Relay only, before the shards run. `counters` outlives every reader.
    void set(unsigned shard, const shard_counters* counters) noexcept { _shards[shard] = counters; }
    // Indexed by shard; null for a shard not set.
    [[nodiscard]] std::span<const shard_counters* const> shards() const noexcept { return _shards; }

private:
    std::vector<const shard_counters*> _shards;
};

// The media type of render_metrics()' text.
inline constexpr std::string_view metrics_content_type = "text/plain; version=0.0.4; charset=utf-8";

// Appends every metric of every shard set in `sources` to `out`.
void render_metrics(const metrics_sources& sources, std::string& out);

}  // namespace ringrelay::queue
