// queue/connection_leases.h: shaping's connection_limit per (egress source, site) counted across
// every node that uses the same Redis (issue 19, "Shared limits in Redis"), as KumoMTA's
// configure_redis_throttles shares its connection limits. A connection is opened only under a
// lease: a member of a Redis sorted set per site key ("ringrelay:conn:<site key>"), scored by its
// expiry. Taking one is a Lua script run atomically (EVALSHA, EVAL on NOSCRIPT): drop the expired
// members, add ours if fewer than the limit remain. A node renews its leases (every ttl / 3)
// while their connections live and gives one back (ZREM) when a connection ends; a node that dies
// stops renewing, so its leases expire and its connections are given back within lease_ttl_ms.
//
// Fallback (issue 19): while Redis is unreachable, or answers with an error (NOAUTH, OOM, a script
// error), a node keeps at most limit / cluster_size connections of a site (at least one), and
// the change is logged once each way ("shared limits: ... until Redis answers" / "... counting
// connection_limit in Redis again"). So that the nodes together stay within the limit across
// the change:
//   - a node entering the fallback closes its connections beyond its share, each after its
//     current message (over_share()), and opens none for fallback_hold_ms (longer than a
//     delivery and the client's request timeout: the others notice and shed meanwhile); the
//     same hold applies at start-up, before Redis first answers;
//   - when Redis answers again (and when it first does), the node renews the leases it held and
//     registers a lease for each connection it opened under the fallback (without the limit's
//     check: the shares together are within the limit); for recovery_hold_ms (longer than the
//     client's longest reconnect back-off, so every live node is back and registered) it opens
//     a connection only within its share and under a lease; after that, under a lease alone.
// A node cut off from Redis while the others are not can still make the fleet exceed the limit
// by its share (documented in the README).
//
// The pool (queue/destination_pool.h) asks may_open() before opening a connection; when a lease
// was asked for, the answer comes later through lease_listener::lease_answer() (from the reactor
// loop, never inside may_open()). At most one request per site is in flight.
//
// Lifecycle: made by the shard when --redis is given, with the shard's redis_client; destroyed
// before it. Threading: shard-local (the owner shard of the sites it counts).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/redis_client.h"

namespace ringrelay::queue {

enum class lease_verdict : std::uint8_t {
    open,         // open one more connection now
    asked,        // a lease was asked for: lease_answer() comes
    retry_later,  // not now: ask again in a while (the pool wakes the site after lease_retry_ms)
};

// Told the answer to a lease request of a site.
class lease_listener {
public:
    // open: the site may open one more connection now (a lease was granted, or Redis failed and
    // the fallback share applies); retry_later: the limit is reached across the nodes.
    virtual void lease_answer(const std::string& site_key, lease_verdict verdict) noexcept = 0;

protected:
    ~lease_listener() = default;
};

struct lease_stats {
    std::uint64_t granted = 0;
    std::uint64_t refused = 0;   // the limit was reached across the nodes
    std::uint64_t released = 0;
    std::uint64_t errors = 0;    // error replies and failed requests
};


class connection_leases final : public core::redis_handler {
public:
    static constexpr std::int64_t default_lease_ttl_ms = 30'000;
    static constexpr std::int64_t default_recovery_hold_ms = 6'000;  // core::redis_client_config's backoff_max_ms + 1 s
    static constexpr std::int64_t fallback_hold_ms = 2'000;          // its request_timeout_ms + 1 s

    // `node_id` names this node and shard in the leases' members ("host:pid:shard").
    connection_leases(core::redis_client& redis, std::uint32_t cluster_size, std::string node_id,
                      std::int64_t lease_ttl_ms = default_lease_ttl_ms,
                      std::int64_t recovery_hold_ms = default_recovery_hold_ms);
    connection_leases(const connection_leases&) = delete;
    connection_leases& operator=(const connection_leases&) = delete;
    ~connection_leases();

    void set_listener(lease_listener* l) noexcept { _listener = l; }

    // May the site `site_key`, with `open` connections open or being opened, open one more under
    // a shared limit of `limit`? Shared: yes while it holds more leases than `open`; otherwise a
    // lease is asked for (unless one is already) and the answer comes by lease_answer(). In the
    // recovery hold, only within the share as well. Fallback: open < max(1, limit / cluster_size),
    // after the fallback hold.
    [[nodiscard]] lease_verdict may_open(const std::string& site_key, std::uint32_t open, std::uint32_t limit,
                                         std::int64_t now_ms);
    // Should a connection of the site, which has `open`, end after its current message? Shared:
    // when it has more connections than leases; fallback: more than its share.
    [[nodiscard]] bool over_share(const std::string& site_key, std::uint32_t open, std::uint32_t limit) const noexcept;
    // A connection of the site ended; `open` are those left. A lease beyond them goes back.
    void connection_ended(const std::string& site_key, std::uint32_t open);
    // Renews the leases held (every ttl / 3) and probes Redis again after an error.
    void tick(std::int64_t now_ms);
    // Leases held or a request in flight for the site (it must not be forgotten).
    [[nodiscard]] bool busy(const std::string& site_key) const noexcept;
    // Counting in Redis (false: the fallback share).
    [[nodiscard]] bool shared() const noexcept { return _redis.up() && !_erring; }
    // Shared, and past the hold after Redis came back: new connections take leases.
    [[nodiscard]] bool leasing(std::int64_t now_ms) const noexcept {
        return shared() && _reported_shared && now_ms >= _hold_until_ms;
    }
    [[nodiscard]] const lease_stats& stats() const noexcept { return _stats; }
    [[nodiscard]] std::uint32_t held(const std::string& site_key) const noexcept;
    // Sites with an entry (leases held or asked, or connections open): tests, inspection.
    [[nodiscard]] std::size_t sites() const noexcept { return _sites.size(); }

    void redis_reply(std::uint64_t tag, const redisReply* reply, std::string_view failure) noexcept override;

private:
    // may_open()'s verdict, before an empty refused site's entry is dropped.
    [[nodiscard]] lease_verdict decide(const std::string& site_key, std::uint32_t open, std::uint32_t limit,
                                       std::int64_t now_ms);
    struct site_leases {
        std::vector<std::string> members;  // held, oldest first
        std::uint32_t open = 0;            // connections open or being opened, as last told
        bool asking = false;
        std::string asked_member;
    };
    enum class request_kind : std::uint8_t { acquire, renew, release, enroll };
    struct request {
        request_kind kind;
        std::string site_key;
    };

    void report(bool shared_now, std::string_view reason);
    // Back to shared counting: the hold starts, and the connections opened under the fallback get leases.
    void recovered();
    // Leaving shared counting: the fallback hold starts.
    void fell_back(std::string_view reason);
    void failed(std::string_view reason);
    void succeeded();
    [[nodiscard]] static std::string redis_key(std::string_view site_key);

    // Fixed after construction.
    core::redis_client& _redis;
    const std::uint32_t _cluster_size;
    const std::string _node_id;
    const std::int64_t _ttl_ms;
    const std::int64_t _hold_ms;
    const core::redis_script _acquire;
    const core::redis_script _enroll;
    const core::redis_script _renew;

    // Shard-local.
    lease_listener* _listener = nullptr;
    std::unordered_map<std::string, site_leases> _sites;
    std::unordered_map<std::uint64_t, request> _requests;
    std::uint64_t _next_tag = 1;
    std::uint64_t _next_member = 1;
    std::int64_t _now_ms = 0;
    std::int64_t _next_renew_ms = 0;
    bool _erring = false;          // the last answer was an error (Redis up but refusing)
    std::int64_t _retry_after_ms = 0;  // while erring: one request after this
    bool _reported_shared = false;  // what the log last said (start-up: not yet shared)
    std::int64_t _hold_until_ms = 0;
    std::int64_t _fallback_since_ms = -1;  // -1: not yet (set at the first time seen: start-up)
    lease_stats _stats;
};

}  // namespace ringrelay::queue
