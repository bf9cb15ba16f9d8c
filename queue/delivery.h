// queue/delivery.h: a shard's outbound delivery: the messages it has spooled and not yet
// finished, their recipients grouped by next hop into jobs, a ready queue and a connection
// pool per destination, retries on a timer heap, and every outcome journaled to the spool and
// written to the delivery log (docs/ARCHITECTURE.md "Delivery").
//
// Routing: static routes and the smarthost from the config (core::config::route_table) first,
// else the recipient domain's MX records through the shard's resolver (core/dns.h).
//
// The owner hop (docs/ARCHITECTURE.md): a job (one message's recipients for one destination) goes to
// the shard that owns the destination, hash(destination) % shards, through a core::mailbox
// (SPSC ring + MSG_RING); that shard runs the destination's connection pool, limits and DNS,
// and sends the outcome back the same way to the message's shard, which journals it. The
// message stays in its shard's memory; the owner only reads its envelope and body.
//
// Outbound TLS (RFC 3207, issue 5): each recipient domain's policy is
// config::tls_policy_for(domain) and is part of its destination (a static route shared by
// domains of different policies is two destinations). disabled: no STARTTLS; opportunistic:
// STARTTLS when offered, with any certificate; required: TLS or defer (4.7.x), never a MAIL in
// clear; verify: required, and the certificate must chain to --outbound-ca-file (else
// OpenSSL's default paths) and name the MX host (or the static route's address). An
// opportunistic handshake that fails is logged and the destination's address is remembered as
// TLS-broken for tls_fallback_ms: the next connection there (at once, the jobs are not
// deferred) and those within that time go in plaintext, as Postfix does after a failed
// handshake. The per-shard client contexts (one without, one with verification) are made here
// on first use; successful deliveries log the TLS protocol and cipher.
//
// Threading: shard-local. stored messages are owned here; jobs point into them and live
// until their outcome is handled.
#pragma once
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <queue>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/buffer_ring.h"
#include "core/config.h"
#include "core/dns.h"
#include "core/mailbox.h"
#include "core/log.h"
#include "core/reactor.h"
#include "core/tls.h"
#include "protocol/client_session.h"
#include "protocol/server_session.h"
#include "queue/delivery_job.h"
#include "queue/delivery_log.h"
#include "queue/dsn_writer.h"
#include "queue/message_store.h"
#include "queue/retry_schedule.h"
#include "queue/scheduler.h"
#include "queue/spool.h"
#include "queue/tls_client_policy.h"

namespace ringrelay::queue {

class outbound;
class delivery;

// A next hop: a static route (one fixed endpoint) or a domain delivered by MX lookup
// (RFC 5321 §5.1: its exchangers' addresses in preference order, tried in turn).
struct destination final : core::mx_waiter {
    delivery* owner = nullptr;
    std::string name;    // "127.0.0.1:2526" for a static route, the domain for MX delivery
    bool by_mx = false;
    core::config::tls_policy tls = core::config::tls_policy::opportunistic;
    // The addresses to try, in order, with the host name each belongs to.
    std::vector<core::endpoint> targets;
    std::vector<std::string> target_hosts;
    std::size_t next_target = 0;
    bool resolving = false;
    std::int64_t resolved_until_ms = 0;  // re-resolve after this (the resolver caches by TTL)
    void resolved(core::mx_result result) noexcept override;
    ready_queue* ready = nullptr;  // the scheduler's, for this destination
    std::vector<outbound*> connections;
    std::int64_t backoff_until_ms = 0;
    std::uint32_t connect_failures = 0;
};

class delivery final : public record_visitor, public dsn_sink {
public:
    // host: queue ids and dates for the DSNs this shard generates.
    // tls_generation: relay-owned, bumped by a SIGHUP whose --outbound-ca-file loaded
    // (queue/tls_client_policy.h).
    delivery(core::reactor& r, spool& s, core::log_writer& log, const core::config& config,
             const retry_schedule& schedule, protocol::session_host& host, unsigned shard_index,
             const std::atomic<std::uint64_t>& tls_generation);
    delivery(const delivery&) = delete;
    delivery& operator=(const delivery&) = delete;
    ~delivery();

    // Recovery: every intact record of the shard's spool, then finish_recovery().
    void on_record(std::uint64_t segment, const decoded_message& record) override;
    // Holds the segments of unfinished messages and schedules them. Returns how many.
    std::size_t finish_recovery();

    // A message just committed to `segment`: take it over and start delivering.
    void accept(const protocol::envelope& env, std::string_view client, std::string_view message,
                std::uint64_t segment, std::uint64_t received_us);

    // Once a second or so: retries that are due, idle connections, deadlines.
    void tick(std::int64_t now_ms) noexcept;
    // Stop: no new connections or jobs; open connections QUIT after their current job.
    // force: drop them now (their jobs are deferred).
    void stop(bool force) noexcept;
    [[nodiscard]] bool idle() const noexcept { return _connections.empty(); }
    void on_turn_end() noexcept;

    [[nodiscard]] delivery_counters counters() const noexcept;
    [[nodiscard]] std::size_t queued_messages() const noexcept { return _store.size(); }

    // From outbound connections.
    core::reactor& reactor() noexcept { return _reactor; }
    core::buffer_ring* buffers() noexcept { return _buffers; }
    void set_buffers(core::buffer_ring* b) noexcept { _buffers = b; }
    void connection_ready(outbound& c) noexcept;
    void mx_resolved(destination& d, core::mx_result result) noexcept;
    void set_resolver(core::mx_resolver* r) noexcept { _resolver = r; }
    [[nodiscard]] tls_client_policy& tls_policy() noexcept { return _tls; }
    void job_done(outbound& c, delivery_job* job, const protocol::message_outcome& outcome) noexcept;

    // Cross-shard: the owner hop (docs/ARCHITECTURE.md). shard_count and one outgoing mailbox per other
    // shard are set before the shard's loop starts.
    void set_shards(unsigned count) {
        _shard_count = count;
        _outgoing.assign(count, nullptr);
        _cross_pending.resize(count);
    }
    void set_outgoing(unsigned shard, core::mailbox<cross_message>* box) noexcept { _outgoing[shard] = box; }
    // Mailboxes this shard consumes: drained on every tick as well, so a MSG_RING wake-up that
    // failed (the target's CQ overflowed) delays a message by a second instead of losing it.
    void add_incoming(core::mailbox<cross_message>* box) { _incoming.push_back(box); }
    // A mailbox message from another shard (called on this shard by its reactor).
    void handle(cross_message&& msg) noexcept;
    void connection_closed(outbound& c, bool failed_before_greeting, const std::string& why) noexcept;
    [[nodiscard]] std::int64_t destination_backoff_ms(std::uint32_t failures) const noexcept;
    void want_flush(outbound* c) { _flush.push_back(c); }
    [[nodiscard]] std::int64_t command_timeout_ms() const noexcept;

    // dsn_sink: a DSN is durable; it is delivered like any other message.
    void dsn_committed(const protocol::envelope& env, std::string_view client, std::string_view body,
                       std::uint64_t segment, std::uint64_t received_us) noexcept override;

private:
    void schedule(stored_message& m, std::int64_t now_ms);
    [[nodiscard]] bool route_of(std::string_view rcpt, route_key& out) const;
    void with_tls_policy(route_key& r, std::string_view domain) const;
    destination& destination_for(const route_key& r);
    void enqueue_local(delivery_job* job) noexcept;
    // Owner side: the job is over; its outcome goes back to the origin shard.
    void return_job(delivery_job* job, protocol::message_outcome&& outcome, const next_hop_ref& hop,
                    const std::string& why) noexcept;
    // Origin side: apply a job's outcome to its message.
    void apply_outcome(delivery_job* job, const protocol::message_outcome& outcome, const next_hop_ref& hop,
                       const std::string& why) noexcept;
    void send_cross(unsigned shard, cross_message&& msg) noexcept;
    void flush_cross() noexcept;
    void dispatch(destination& d) noexcept;
    // The client settings for a new connection to d's next target: STARTTLS per d's policy
    // (and the TLS-broken memory), and whether to verify the peer.
    [[nodiscard]] protocol::client_config connection_config(const destination& d, core::tls_verify& verify);
    void fail_ready_jobs(destination& d, recipient_status status, const std::string& why, const char* enhanced);
    void defer(stored_message& m, std::uint32_t i, const outcome_note& note);

    core::reactor& _reactor;
    const core::config& _config;
    const retry_schedule& _schedule;
    const unsigned _shard;
    core::buffer_ring* _buffers = nullptr;
    core::mx_resolver* _resolver = nullptr;
    protocol::client_config _client_config;
    tls_client_policy _tls;
    delivery_log _log;
    dsn_writer _dsns;
    message_store _store;

    std::unordered_map<std::string, std::unique_ptr<destination>> _destinations;
    std::vector<outbound*> _connections;  // owned
    std::vector<outbound*> _flush;
    std::vector<outbound*> _graveyard;
    scheduler _scheduler;
    unsigned _shard_count = 1;
    std::vector<core::mailbox<cross_message>*> _outgoing;
    std::vector<core::mailbox<cross_message>*> _incoming;
    std::vector<std::deque<cross_message>> _cross_pending;  // the target's ring was full
    bool _stopping = false;
};

}  // namespace ringrelay::queue
