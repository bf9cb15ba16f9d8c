// queue/destination_pool.h: the next hops a shard owns and their connections
// (docs/ARCHITECTURE.md "Delivery"), as Postfix's qmgr_queue and qmgr_feedback keep a
// destination's concurrency and back-off: per destination, the addresses to try (a static
// route's one, or the MX plan), the open connections (at most
// --max-connections-per-destination, each used for up to --max-messages-per-connection
// messages, QUIT after --idle-connection-timeout unused, aborted after --command-timeout
// without progress), and the back-off after failures. This is where traffic shaping will live.
//
// A destination is a next hop for one route key (queue/router.h): "mx:<domain>" or a static
// route's ADDR:PORT, with "|tls=<policy>" when the domain's TLS policy is not the default.
// Jobs wait in the destination's ready queue (queue/scheduler.h) and are given to an idle
// connection in order; a new connection is opened only for jobs that no connection being
// opened will take, and not while the destination backs off.
//
// MX (RFC 5321 §5.1; core/dns.h): the plan is the exchangers' addresses by preference, less
// any at or below our own preference (if we are an exchanger), reused for 60 s. Null MX,
// NXDOMAIN and no address bounce every waiting job; a temporary DNS failure, or no usable
// address, defers them; none left because we are the best exchanger bounces (5.4.6).
//
// Failures: a connection that fails before the greeting moves to the next address; when the
// last one failed, the destination backs off (1 s, 2 s, 4 s ... capped at 60 s and at the
// first retry interval) and its waiting jobs are deferred. A 421 also starts a back-off; an
// accepted message ends it. Each back-off's end is a timer on the pool's core::timer_wheel
// (monotonic milliseconds): the delivery sleeps until next_backoff_end_ms() and calls
// run_timers(), which dispatches the destination's waiting jobs then. An opportunistic TLS handshake that failed on TLS itself marks the
// address TLS-broken (queue/tls_client_policy.h) and a plaintext connection starts at once.
//
// Edges: the pool makes connections through a link_factory and drives them; they report to
// it (queue/outbound_link.h). Every job it ends goes to its pool_owner (the delivery), once.
//
// Threading: shard-local (the owner shard of its destinations). Connections are owned here
// and freed at the end of a turn once nothing is in flight (retirable()).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/clock.h"
#include "core/config.h"
#include "core/dns.h"
#include "core/timer_wheel.h"
#include "queue/delivery_job.h"
#include "queue/outbound_link.h"
#include "queue/record.h"
#include "queue/retry_schedule.h"
#include "queue/scheduler.h"
#include "queue/tls_client_policy.h"

namespace ringrelay::queue {

class destination_pool;

// A next hop: a static route (one fixed endpoint) or a domain delivered by MX lookup
// (its exchangers' addresses in preference order, tried in turn).
struct destination final : core::mx_waiter {
    destination_pool* pool = nullptr;
    std::string name;  // "127.0.0.1:2526" for a static route, the domain for MX delivery
    bool by_mx = false;
    core::config::tls_policy tls = core::config::tls_policy::opportunistic;
    // The addresses to try, in order, with the host name each belongs to.
    std::vector<core::endpoint> targets;
    std::vector<std::string> target_hosts;
    std::size_t next_target = 0;
    bool resolving = false;
    std::int64_t resolved_until_ms = 0;  // re-resolve after this (the resolver caches by TTL)
    ready_queue* ready = nullptr;        // the scheduler's, for this destination
    std::vector<outbound_link*> connections;
    std::int64_t backoff_until_ms = 0;
    core::timer_handle backoff_end;  // the pool's timer for backoff_until_ms, while it runs
    std::uint32_t connect_failures = 0;
    void resolved(core::mx_result result) noexcept override;
};

// Hears about every job the pool ends.
class pool_owner {
public:
    // The job is over (attempted, or refused before any attempt): its outcome goes to the
    // message's shard. `why`: a local reason (connection or DNS failure), else "".
    virtual void job_finished(delivery_job* job, protocol::message_outcome&& outcome, const next_hop_ref& hop,
                              const std::string& why) noexcept = 0;

protected:
    ~pool_owner() = default;
};

class destination_pool final : public outbound_owner {
public:
    // Everything given outlives the pool. schedule: its first interval caps the back-off.
    destination_pool(const core::config& config, const retry_schedule& schedule, scheduler& queues,
                     tls_client_policy& tls, core::mx_resolver& resolver, link_factory& links, pool_owner& owner,
                     const core::time_source& clock);
    destination_pool(const destination_pool&) = delete;
    destination_pool& operator=(const destination_pool&) = delete;
    ~destination_pool();

    // A job for a destination this shard owns: it joins the ready queue and is dispatched.
    void submit(delivery_job* job) noexcept;
    // Once a second: destinations with waiting jobs (a connection may have room), idle
    // connections (QUIT), connections without progress (abort).
    void tick(std::int64_t now_ms) noexcept;
    // Back-offs over by now_ms (monotonic) end: their destinations' waiting jobs are dispatched.
    void run_timers(std::int64_t now_ms) noexcept;
    // When the next back-off ends (monotonic ms; a lower bound, see core/timer_wheel.h), or
    // no_backoff.
    [[nodiscard]] std::int64_t next_backoff_end_ms() const noexcept;
    static constexpr std::int64_t no_backoff = INT64_MAX;
    // No new connections or jobs; open connections QUIT after their current job. force: abort
    // them now (their jobs are deferred).
    void stop(bool force) noexcept;
    // Sends what connections have waiting, and frees closed connections with nothing in flight.
    void on_turn_end() noexcept;
    [[nodiscard]] bool idle() const noexcept { return _connections.empty(); }
    [[nodiscard]] std::size_t connections() const noexcept { return _connections.size(); }
    // The destination for `key`, if it exists (tests, inspection).
    [[nodiscard]] const destination* find(const std::string& key) const noexcept;

    // The back-off after `failures` consecutive failures.
    [[nodiscard]] std::int64_t backoff_ms(std::uint32_t failures) const noexcept;

    // outbound_owner
    next_step connection_ready(outbound_link& c) noexcept override;
    next_step job_done(outbound_link& c, delivery_job* job, const protocol::message_outcome& outcome,
                       const next_hop_ref& hop) noexcept override;
    void connection_closed(outbound_link& c, const close_report& report) noexcept override;
    void want_flush(outbound_link& c) noexcept override { _flush.push_back(&c); }

    // The destination's MX lookup answered (destination::resolved).
    void mx_resolved(destination& d, core::mx_result result) noexcept;

private:
    destination& destination_for(const route_key& r);
    void dispatch(destination& d) noexcept;
    // Every job waiting for `d` ends without an attempt on the wire (DNS): bounced or deferred.
    void fail_ready_jobs(destination& d, recipient_status status, const std::string& why, const char* enhanced);
    void retire(destination& d, outbound_link& c);
    // One more consecutive failure: the destination backs off until its timer ends it.
    void back_off(destination& d) noexcept;

    // Fixed after construction.
    const core::config& _config;
    const retry_schedule& _schedule;
    scheduler& _queues;
    tls_client_policy& _tls;
    core::mx_resolver& _resolver;
    link_factory& _links;
    pool_owner& _owner;
    const core::time_source& _clock;
    protocol::client_config _client_config;  // EHLO name; STARTTLS per connection
    // Shard-local.
    std::unordered_map<std::string, std::unique_ptr<destination>> _destinations;
    std::vector<std::unique_ptr<outbound_link>> _connections;
    std::vector<outbound_link*> _flush;      // output waiting, this turn
    std::vector<outbound_link*> _graveyard;  // closed, freed once retirable()
    core::timer_wheel<destination*> _backoff_ends;  // monotonic ms
    bool _stopping = false;
};

}  // namespace ringrelay::queue
