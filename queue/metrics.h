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
// Series with labels other than `shard` (sites, providers and sources, bounce classes) come
// from each shard's queue::shard_snapshot, which the shard publishes at its tick into a
// core::snapshot_slot: the scrape reads the last one published, without a lock and without
// waiting (a shard publishing under a slow scrape skips a tick instead). They are summed over
// the shards. Cardinality is bounded: sites by max_site_series (the deepest by name; every
// other site in one site="_other" series), providers by the shaping rules, sources by
// --egress-source, classes by protocol::bounce_class. Per site there are gauges only (a site
// leaving the top moves its depth into "_other"); counters are by provider and source, whose
// series live as long as the process.
//
// Threading: metrics_sources is filled by the relay before the shards run (their go signal
// orders the writes before every read) and read-only after.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "queue/shard_counters.h"
#include "queue/shard_snapshot.h"

namespace ringrelay::queue {

class metrics_sources {
public:
    explicit metrics_sources(unsigned shards) : _shards(shards, nullptr), _snapshots(shards, nullptr) {}
    // Relay only, before the shards run. `counters` and `snapshot` outlive every reader;
    // snapshot may be null (no labelled series from that shard).
    void set(unsigned shard, const shard_counters* counters, const shard_snapshot_slot* snapshot = nullptr) noexcept {
        _shards[shard] = counters;
        _snapshots[shard] = snapshot;
    }
    // Indexed by shard; null for a shard not set.
    [[nodiscard]] std::span<const shard_counters* const> shards() const noexcept { return _shards; }
    [[nodiscard]] std::span<const shard_snapshot_slot* const> snapshots() const noexcept { return _snapshots; }

private:
    std::vector<const shard_counters*> _shards;
    std::vector<const shard_snapshot_slot*> _snapshots;
};

// The media type of render_metrics()' text.
inline constexpr std::string_view metrics_content_type = "text/plain; version=0.0.4; charset=utf-8";

// Appends every metric of every shard set in `sources` to `out`; ages are counted to
// `now_unix_us` (the two-argument form: now).
void render_metrics(const metrics_sources& sources, std::string& out);
void render_metrics(const metrics_sources& sources, std::string& out, std::uint64_t now_unix_us);

}  // namespace ringrelay::queue
