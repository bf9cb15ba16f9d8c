// queue/delivery.h: a shard's outbound delivery (docs/ARCHITECTURE.md "Delivery"): the parts,
// wired together, and what flows between them. As Postfix's queue manager is split
// (qmgr_message / qmgr_queue / qmgr_feedback / qmgr_deliver):
//
//   message_store      what is queued, where each body is, recipient states, the journal
//   compactor          rewrites the oldest segment's live messages so old segments can go
//   scheduler          per-destination ready queues, retry timers
//   destination_pool   connections, limits and back-off per next hop (owner shard)
//   tls_client_policy  STARTTLS per destination, client contexts, session cache, TLS-broken memory
//   router             recipient -> destination (route key)
//   dsn_writer         DSNs for failed recipients, spooled before the original is released
//   shard_hop          jobs to the destination's owner shard and outcomes back
//
// The flow: a committed message (accept) or a due retry is grouped by route into jobs (one
// per destination, schedule()); each job goes to the destination's owner shard (shard_hop;
// hash(route key) % shards), whose pool runs it on a connection (queue/outbound.h); the
// outcome (one per recipient) comes back to the message's shard (job_finished -> the hop ->
// apply_outcome), where the store journals and logs it and the scheduler sets the next retry.
// Every part is given what it uses in its constructor; edges point one way (the pool reports
// to the delivery through pool_owner, a connection to the pool through outbound_owner, the
// DSN writer through dsn_sink, the store to the DSN writer through failure_reporter, the
// mailboxes to the consuming shard's delivery through cross_consumer).
//
// Timers: retries (the scheduler's wheel, Unix time) and back-off ends (the pool's wheel,
// monotonic) each wake the delivery through one io_uring timeout at the wheel's next expiry
// (core/timer_alarm.h), armed at the end of every turn that moved it earlier; nothing polls
// them.
//
// Threading: shard-local. The delivery is also the consumer of this shard's incoming mailboxes
// (handle(), called on this shard by its reactor).
#pragma once
#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <unordered_map>
#include <span>
#include <string>
#include <string_view>

#include "core/config.h"
#include "core/dns.h"
#include "core/log.h"
#include "core/reactor.h"
#include "core/stream.h"
#include "core/timer_alarm.h"
#include "protocol/bounce_class.h"
#include "protocol/server_session.h"
#include "queue/admin_request.h"
#include "queue/compactor.h"
#include "queue/delivery_job.h"
#include "queue/delivery_log.h"
#include "queue/destination_pool.h"
#include "queue/dsn_writer.h"
#include "queue/egress.h"
#include "queue/message_store.h"
#include "queue/operator_holds.h"
#include "queue/outbound.h"
#include "queue/retry_schedule.h"
#include "queue/router.h"
#include "queue/scheduler.h"
#include "queue/shard_links.h"
#include "queue/spool.h"
#include "queue/suppression.h"
#include "queue/tls_client_policy.h"
#include "queue/warmup.h"

namespace ringrelay::queue {

class delivery final : public record_visitor,
                       public dsn_sink,
                       public pool_owner,
                       public cross_consumer,
                       public body_listener,
                       public admin_gateway {
public:
    // This shard's warm-up counts (queue/warmup.h): seeded at start, published at the tick.
    [[nodiscard]] warmup_ledger& warmup() noexcept { return _warmup; }
    // Everything given outlives the delivery. host: queue ids and dates for the DSNs;
    // streams: the shard's reactor, buffer ring and stream batch (outbound connections are
    // core::streams on them);
    // tls_generation: relay-owned, bumped by a SIGHUP whose --outbound-ca-file loaded;
    // links: the cross-shard mailboxes, complete before the shard's loop starts;
    // bounce_rules: the relay's one bounce classification table, shared read-only by every shard;
    // shaping: the relay's shaping rules (queue/shaping_table.h);
    // egress: the relay's egress sources, pools and selectors (queue/egress.h; empty: none);
    // suppressions: the shard's side of the suppression list, null with --no-suppression.
    delivery(core::reactor& r, spool& s, core::log_writer& log, const core::config& config,
             const retry_schedule& schedule, protocol::session_host& host, unsigned shard_index,
             const core::stream_services& streams, core::mx_resolver& resolver,
             const std::atomic<std::uint64_t>& tls_generation, const shard_links& links,
             const protocol::bounce_rules& bounce_rules, const shaping_table& shaping, const egress_table& egress,
             suppression_list* suppressions = nullptr);
    delivery(const delivery&) = delete;
    delivery& operator=(const delivery&) = delete;

    // Recovery: every intact record of the shard's spool, then finish_recovery().
    void on_record(std::uint64_t segment, const decoded_message& record) override;
    // Holds the segments of unfinished messages and schedules them (from the first tick, once
    // the mailboxes are connected). Returns how many.
    std::size_t finish_recovery();

    // A message just committed at `where`: take it over and start delivering. `campaign`: its
    // campaign (queue/campaign_header.h), "" for none.
    void accept(const protocol::envelope& env, std::string_view client, std::string_view message,
                const record_location& where, std::uint64_t received_us, std::string_view campaign = {});
    // The header field that names a message's campaign in the rules this shard runs with ("" for
    // none): read at a commit (queue/connection.h). Valid until the next tick.
    [[nodiscard]] std::string_view campaign_field() const noexcept { return _rules->campaign_field(); }

    // Once a second or so: mailboxes, DSN commits, idle connections, deadlines.
    void tick(std::int64_t now_ms) noexcept;
    // --redis (issue 19): the sites' connection_limit counted across nodes (destination_pool::
    // share_connections); `leases` outlives the delivery.
    void share_connections(connection_leases* leases) noexcept { _pool.share_connections(leases); }
    // Stop: no new connections or jobs; open connections QUIT after their current job.
    // force: drop them now (their jobs are deferred).
    void stop(bool force) noexcept;
    [[nodiscard]] bool idle() const noexcept {
        return _pool.idle() && _store.reads_in_flight() == 0 && _compactor.idle();
    }
    // Shutdown: what has arrived from other shards, handled now; then whether anything of this
    // shard's still waits to cross (queue/shard_links.h, shard_links::settle).
    void drain_incoming() noexcept { _hop.drain(); }
    [[nodiscard]] bool outgoing_idle() const noexcept { return _hop.idle(); }
    // No DSN waiting to be committed (draining: a report still only in memory is not done).
    [[nodiscard]] bool reports_idle() const noexcept { return _dsns.idle(); }
    [[nodiscard]] const compaction_counters& compaction() const noexcept { return _compactor.counters(); }
    void on_turn_end() noexcept;

    [[nodiscard]] delivery_counters counters() const noexcept;
    [[nodiscard]] std::size_t queued_messages() const noexcept { return _store.size(); }
    // Outbound connections made by this shard's destination pools.
    [[nodiscard]] std::uint64_t connections_opened() const noexcept { return _connections.made(); }

    // A mailbox message from another shard (called on this shard by its reactor): a job for a
    // destination this shard owns, or the outcome of one of this shard's jobs.
    void handle(cross_message&& msg) noexcept override;
    // dsn_sink: a DSN is durable; it is delivered like any other message.
    void dsn_committed(const protocol::envelope& env, std::string_view client, std::string_view body,
                       const record_location& where, std::uint64_t received_us) noexcept override;
    // body_listener: a body read back from the spool is there, or could not be read.
    void body_ready(stored_message& m, const std::string& error) noexcept override;
    [[nodiscard]] body_cache_counters cache_counters() const noexcept { return _store.cache_counters(); }
    // /metrics (queue/shard_snapshot.h): every part of `out` set: the depth of this shard's sites
    // (the deepest max_site_series, the rest summed) and its recipients' outcomes.
    void fill_snapshot(shard_snapshot& out) const;
    // pool_owner (owner side): the job is over; its outcome goes back to the origin shard.
    void job_finished(delivery_job* job, protocol::message_outcome&& outcome, const next_hop_ref& hop,
                      const std::string& why) noexcept override;
    // pool_owner (owner side): the job waits at its site past its --delay-warning time: the
    // origin shard is told (held_at_site()).
    void job_held(delivery_job* job, const next_hop_ref& hop, const std::string& why) noexcept override;
    // pool_owner: a job to its site's owner shard (this one's pool, or across the ring).
    void to_site(delivery_job* job) noexcept override;
    // pool_owner: a {"type":"Shaping",...} line in the delivery log.
    void shaping_changed(const site& s, const shaping_change& change) noexcept override;
    // pool_owner: a rule fired here; every other shard's pool applies it to its sites of the
    // same name or provider (cross_message::kind::automate).
    void automation_fired(const site& s, const automation_rule& rule, const std::string& subject) noexcept override;

    // admin_gateway (the queue control API, issue 18): the request goes to every shard's
    // delivery (this one's at once, the others' through the rings); `done` gets their reports
    // merged once all have answered. A shard that has left its loop never answers (shutdown):
    // `done` is then dropped with the delivery.
    void administer_all(std::shared_ptr<const admin_request> request,
                        std::function<void(admin_report&&)> done) noexcept override;
    // This shard's part of `request` (see queue/http_api.h for what each does).
    [[nodiscard]] admin_report administer(const admin_request& request) noexcept;

private:
    // The parts of administer().
    void report_queue(admin_report& out) const;
    void report_message(std::uint64_t queue_id, admin_report& out);
    void suspend(const admin_request& request, admin_report& out) noexcept;
    void resume(const admin_request& request, admin_report& out) noexcept;
    void flush(const admin_request& request, admin_report& out) noexcept;
    void bounce(const admin_request& request, admin_report& out) noexcept;
    // An admin_done report: merged into its ticket, which answers once every shard has.
    void admin_answered(std::uint64_t ticket, admin_report&& report) noexcept;
    // What a recipient's last attempt met, kept for GET /api/v1/messages/ID and the queue's
    // deferred mail by site: set by apply_outcome, forgotten once the message is finished.
    void remember(const stored_message& m, std::uint32_t i, const next_hop_ref& hop, const std::string& reply);
    void forget_if_done(const stored_message& m) noexcept;

    // Groups the message's pending recipients that are not in flight by destination, one job
    // per destination, gives each job its egress source (the message's pool by --pool-for,
    // the source by this shard's chooser; for a pool with a warm-up, once the site is known:
    // choose_source()), and sends each to its owner shard.
    void schedule(stored_message& m, std::int64_t now_ms);
    // Origin side, a job of a pool with a warm-up whose site (and provider) is known: its source
    // by the round robin among those with allowance left today (queue/warmup.h), then to the
    // site; with none left it waits here (_warmup_held) for the next day.
    void choose_source(delivery_job* job) noexcept;
    // The jobs waiting for a source's allowance: on a new UTC day or new rules, each is made again
    // (no attempt counted: not_attempted); past --max-age, each expires.
    void tick_warmup_held(std::int64_t now_ms) noexcept;
    void release_warmup_held() noexcept;
    // Origin side: m's recipients `rcpt_index` wait at a site past --delay-warning: the sender's
    // delay notice (its diagnostic `why`, which names the site), unless one was sent
    // (m.delay_warned).
    void held_at_site(stored_message& m, std::span<const std::uint32_t> rcpt_index, const std::string& why) noexcept;
    // Origin side: apply a job's outcome to its message.
    void apply_outcome(delivery_job* job, const protocol::message_outcome& outcome, const next_hop_ref& hop,
                       const std::string& why) noexcept;
    // A failed attempt (or none possible): the next retry, or expiry.
    void defer(stored_message& m, std::uint32_t i, const outcome_note& note);
    // The alarms: retries due, back-offs over; then arm each for its wheel's next expiry.
    void on_retry_alarm() noexcept;
    void on_backoff_alarm() noexcept;
    void arm_alarms() noexcept;
    // Recipient `i` of m has just been finished as bounced (a 5xx, or refused locally) and
    // classified as `verdict` (the verdict its Bounce record carries): the seam where a bounce
    // of class invalid-recipient or inactive-mailbox puts the recipient on the sender's
    // suppression list (queue/suppression.h, suppresses()).
    void bounced(const stored_message& m, std::uint32_t i, const protocol::bounce_verdict& verdict,
                 std::uint64_t now_us) noexcept;

    // Fixed after construction.
    const unsigned _shard;
    const bool _flush_recovered;  // --drain: recovered mail is due now, not at its journaled time
    const unsigned _shards;
    const std::string _spool_dir;  // jobs point at it (their connections read bodies from there)
    const router _router;
    suppression_list* const _suppressions;  // null: --no-suppression
    core::log_writer& _shaping_log;         // the delivery log, for Shaping records
    const egress_table& _egress;            // the relay's
    const shaping_table& _shaping;          // the relay's (warm-up schedules)
    // The parts, in construction order.
    operator_holds _holds;  // the operator's suspensions (shard-local; the pool reads them)
    tls_client_policy _tls;
    delivery_log _log;
    dsn_writer _dsns;
    message_store _store;
    compactor _compactor;
    scheduler _scheduler;
    outbound_factory _connections;
    destination_pool _pool;
    shard_hop _hop;
    core::timer_alarm<&delivery::on_retry_alarm> _retry_alarm;
    core::timer_alarm<&delivery::on_backoff_alarm> _backoff_alarm;
    std::uint64_t _delay_warning_us = 0;  // --delay-warning; 0 = off
    std::uint64_t _max_age_us = 0;        // --max-age: a delay notice's Will-Retry-Until
    // Shard-local.
    egress_chooser _egress_chooser;  // this shard's weighted round robin over each pool's sources
    warmup_ledger _warmup;           // this shard's share of each source's daily allowance
    std::shared_ptr<const shaping_rules> _rules;  // _shaping's, taken at a tick when it changed
    std::uint64_t _rules_generation = 0;
    ready_queue* _warmup_held = nullptr;  // the scheduler's: jobs no source of their pool may take today
    std::int64_t _warmup_held_day = 0;    // the UTC day the last of them was held
    std::int64_t _next_held_sweep_ms = 0;
    std::vector<warmup_used_up> _used_up;  // choose_source()'s, reused
    std::vector<delivery_job*> _taken;     // tick_warmup_held()'s, reused
    // /metrics: outcomes of this shard's recipients by the site's provider and the job's source,
    // bounces by class (apply_outcome).
    std::vector<provider_outcomes> _outcomes;
    std::array<std::uint64_t, protocol::bounce_class_count> _bounced_by_class{};
    // The queue control API: requests this shard asked every shard (by ticket), and the last
    // reply and site of recipients attempted (by queue id; a message with none has no entry).
    struct admin_ticket {
        std::shared_ptr<const admin_request> request;
        std::function<void(admin_report&&)> done;
        unsigned waiting = 0;  // shards yet to answer
        admin_report report;
    };
    std::unordered_map<std::uint64_t, admin_ticket> _tickets;
    std::uint64_t _next_ticket = 0;
    struct recipient_memo {
        std::string site;
        std::string reply;
    };
    std::unordered_map<std::uint64_t, std::vector<recipient_memo>> _memos;
    bool _stopping = false;
};

}  // namespace ringrelay::queue
