// queue/destination_pool.h: the next hops a shard owns and their connections
// (docs/ARCHITECTURE.md "Delivery"), as Postfix's qmgr_queue and qmgr_feedback keep a
// destination's concurrency and back-off, shaped per site (issue 17) as KumoMTA shapes its
// queues.
//
// Two kinds of object, each on the shard that owns it (queue/shard_links.h):
//   - a destination: a recipient domain delivered by MX, on the owner of its route key
//     ("mx:<domain>"). It only resolves: the MX plan (RFC 5321 §5.1; core/dns.h) is the
//     exchangers' addresses by preference, less any at or below our own preference (if we are
//     an exchanger), reused for 60 s. Null MX, NXDOMAIN and no address bounce every waiting
//     job; a temporary DNS failure, or no usable address, defers them; none left because we
//     are the best exchanger bounces (5.4.6). Otherwise each job is given its site (the plan's
//     host names: queue/site_name.h) and goes to the site's owner (pool_owner::to_site), on
//     this shard or another.
//   - a site: the set of MX hosts (domains sharing them share it: "MX rollup"), or a static
//     route's HOST:PORT, on the owner of its key (site name, plus "|domain=D" for a domain with
//     a rule of its own, plus the route's "|tls=P", plus "|src=NAME" for a job with an egress
//     source: each (source, site) is a site of its own, whose connections bind the source's
//     address, to the plan's addresses of its family, and greet with its EHLO name;
//     queue/egress.h). A static route's jobs go there directly.
//     The site holds one ready queue (queue/scheduler.h), the connections, and the limits the
//     shaping rules resolve for it (queue/shaping_rules.h): connection_limit,
//     max_deliveries_per_connection, idle_timeout, max_connection_rate and max_message_rate,
//     kept by its throttle_controller (queue/throttle_controller.h) with the closed loop on the
//     receiver's throttle signals. The limits are the site's whole allowance: every connection
//     to the site is made by its one owner shard.
//
// Dispatch: jobs are given to idle connections in order, each taking a token of the message
// rate; a job the rate holds back stays in the ready queue (never a retry) and the site wakes
// when the next token is due. A tenant limit (queue/shaping_rules.h tenants) is a bucket per
// (tenant, site) on top, and a campaign limit (campaigns) one per (campaign, site): a job whose
// tenant's (or campaign's) bucket is empty steps aside into that tenant's (campaign's) hold (no
// retry, no connection opened for it) while the jobs of others behind it go on; it goes back in
// front of the ready queue when the token is due (and steps aside again if its other limit has
// none then); a job that goes takes a token of each. A new connection is opened only for jobs that no connection
// being opened will take, within the allowed count and connection rate, not while the site
// backs off, and not when only the message rate holds the jobs back.
//
// Failures:
//   - a connection that fails before the greeting with no other connection to the site
//     established (the receiver looks down): the next address; when the last one failed, the
//     site backs off (1 s, 2 s, 4 s ... capped at 60 s and at the first retry interval) and its
//     waiting jobs are deferred;
//   - a connection refused at the greeting with a throttle reply (421, "too many connections"),
//     or refused or reset while others to the site are established: a signal about the
//     site's connections (queue/throttle_signal.h) for the controller; no job was on it, so
//     nothing is deferred; with no other connection open or being opened the site backs off as
//     above, its jobs waiting (deferred only after throttled_refusals_before_deferring such
//     refusals in a row);
//   - a failure on our side (close_report::local_failure): no signal; the site backs off, and
//     its jobs are deferred only after local_failures_before_deferring such failures in a row
//     with no connection to it established (one exhausted port range is not a reason to use a
//     retry of every message of the site);
//   - a reply to a command: the controller hears it (a rate signal cuts the message rate); the
//     job is deferred (only that job); a 421 also backs the site off.
// Held mail: a job waiting at its site past its message's --max-age ends there as expired; one
// waiting past its --delay-warning time makes the origin send the sender a delay notice (the
// job keeps waiting). Both are looked at every expiry_sweep_ms.
// Automation rules are matched on every negative reply of the peer (a refused greeting's too;
// each recipient's of a job, accepted recipients or not, until one fires):
// suspend stops the site's connections and messages until its end (its mail waits in the ready
// queue), throttle multiplies its message rate.
// A back-off, a suspension and the rates' waits end by one timer per site on the pool's
// core::timer_wheel (monotonic ms): the delivery sleeps until next_wake_ms() and calls
// run_timers(). A job's end never cancels a site's timer (a back-off runs out). An
// opportunistic TLS handshake that failed on TLS itself marks the address TLS-broken
// (queue/tls_client_policy.h) and a plaintext connection starts at once.
//
// Eviction (issue 17, review finding 7): sites and destinations are made on first use and dropped
// at a tick once unused for idle_evict_ms with nothing a new one would not have (no job waiting
// or held, no connection, no timer or back-off, the controller at rest: destination_pool::
// evict_idle), their ready queues given back to the scheduler. Nothing outside the pool keeps a
// pointer to either (jobs and other shards name a site by its key; a connection's pool_site
// keeps its site). The tick dispatches only the sites that need it (needs_dispatch()).
//
// Clock: every time the controller and the timers see is the pool's time_source's monotonic
// milliseconds (microseconds = ms * 1000); the precise clock that fires the alarm only says
// which timers are due. A wait is armed one coarse tick late (coarse_slack_ms), so that the
// coarse clock has reached the token's time when the site wakes.
//
// Edges: the pool makes connections through a link_factory and drives them; they report to
// it (queue/outbound_link.h). Every job it ends goes to its pool_owner (the delivery), once;
// every shaping change is reported to it for the log.
//
// Threading: shard-local (the owner shard of its destinations and sites). Connections are
// owned here and freed at the end of a turn once nothing is in flight (retirable()).
#pragma once
#include <cstdint>
#include <functional>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/clock.h"
#include "core/config.h"
#include "core/dns.h"
#include "core/timer_wheel.h"
#include "queue/connection_leases.h"
#include "queue/delivery_job.h"
#include "queue/egress.h"
#include "queue/operator_holds.h"
#include "queue/outbound_link.h"
#include "queue/record.h"
#include "queue/retry_schedule.h"
#include "queue/scheduler.h"
#include "queue/shard_snapshot.h"
#include "queue/shaping_table.h"
#include "queue/throttle_controller.h"
#include "queue/token_bucket.h"
#include "queue/tls_client_policy.h"

namespace ringrelay::queue {

class destination_pool;

// A domain delivered by MX, while its plan is looked up (see above).
struct destination final : core::mx_waiter {
    destination_pool* pool = nullptr;
    std::string name;  // the domain
    core::config::tls_policy tls = core::config::tls_policy::opportunistic;
    std::string tls_suffix;  // of the route key: "|tls=P" or ""
    // The plan: addresses in order, with the host name each belongs to; the site they make.
    std::vector<core::endpoint> targets;
    std::vector<std::string> target_hosts;
    std::string site;      // site name of target_hosts
    std::string site_key;  // see above
    std::string rule_domain;
    std::string provider;  // the site's provider by the rules (queue/shaping_rules.h), or ""
    bool resolving = false;
    std::int64_t resolved_until_ms = 0;  // re-resolve after this (the resolver caches by TTL)
    std::int64_t last_used_ms = 0;       // monotonic: the last job submitted to it (eviction)
    std::uint64_t rules_generation = 0;  // of the rules site_key was made with
    ready_queue* ready = nullptr;        // the scheduler's, for jobs waiting for the plan
    void resolved(core::mx_result result) noexcept override;
};

// A site this shard owns (see above).
struct site {
    std::string name;  // queue/site_name.h
    std::string key;
    std::string rule_domain;  // the domain whose rule it has of its own, or ""
    core::config::tls_policy tls = core::config::tls_policy::opportunistic;
    bool by_mx = false;
    const egress_source* egress = nullptr;  // its connections bind this source (queue/egress.h); null: none
    // The addresses in the order they are tried, and the next one to try. A plan with the same
    // addresses in another order (each domain sharing the site shuffles its equal-preference
    // exchangers on its own) keeps both: only a changed address set starts the plan anew.
    std::vector<core::endpoint> targets;
    std::vector<std::string> target_hosts;
    std::size_t next_target = 0;
    ready_queue* ready = nullptr;  // the scheduler's, for this site
    std::vector<outbound_link*> connections;
    resolved_shaping limits;
    std::optional<throttle_controller> controller;  // made with the site
    std::int64_t backoff_until_ms = 0;
    std::uint32_t connect_failures = 0;    // consecutive; the back-off's exponent
    std::uint32_t throttled_refusals = 0;  // consecutive, with none established
    std::uint32_t local_failures = 0;      // our own connect failures, consecutive, with none established
    core::timer_handle wake;  // the pool's timer at wake_ms, while armed
    std::int64_t wake_ms = 0;
    std::int64_t last_used_ms = 0;  // monotonic: made, a job joined or ended, a connection ended (eviction)
    // Tenant and campaign limits (issue 17), per tenant (campaign) with a message rate at this
    // site: its bucket, and the jobs its empty bucket holds back, out of the ready queue (in the
    // order they stepped aside).
    struct key_hold {
        token_bucket bucket;
        std::deque<delivery_job*> held;
    };
    using key_holds = std::unordered_map<std::string, key_hold>;
    key_holds tenants;    // by delivery_job::tenant
    key_holds campaigns;  // by delivery_job::campaign
    [[nodiscard]] key_holds& holds_of(keyed_limit which) noexcept {
        return which == keyed_limit::tenant ? tenants : campaigns;
    }
    [[nodiscard]] const key_holds& holds_of(keyed_limit which) const noexcept {
        return which == keyed_limit::tenant ? tenants : campaigns;
    }
    // Each hold of every limit: f(key_hold&).
    template <typename F>
    void for_each_hold(F f) {
        for (auto& [key, h] : tenants) f(h);
        for (auto& [key, h] : campaigns) f(h);
    }
    template <typename F>
    void for_each_hold(F f) const {
        for (const auto& [key, h] : tenants) f(h);
        for (const auto& [key, h] : campaigns) f(h);
    }
};

// Hears about every job the pool ends.
class pool_owner {
public:
    // The job is over (attempted, or refused before any attempt): its outcome goes to the
    // message's shard. `why`: a local reason (connection or DNS failure), else "".
    virtual void job_finished(delivery_job* job, protocol::message_outcome&& outcome, const next_hop_ref& hop,
                              const std::string& why) noexcept = 0;
    // The job knows its site (delivery_job::site_key): to the site's owner shard, whose pool's
    // submit_site() takes it (this pool's when it is the owner).
    virtual void to_site(delivery_job* job) noexcept = 0;
    // The job waits at site `hop.site` past its message's --delay-warning time (it keeps
    // waiting): the message's shard sends the sender its delay notice. At most once per job.
    virtual void job_held(delivery_job* job, const next_hop_ref& hop, const std::string& why) noexcept = 0;
    // The site's limits changed (a throttle signal, growth, automation, a reload): the log.
    virtual void shaping_changed(const site& s, const shaping_change& change) noexcept = 0;
    // An automation rule fired on `s` (and on this pool's other sites it reaches:
    // destination_pool::apply_automation): the owner takes it to the other shards' pools.
    virtual void automation_fired(const site& s, const automation_rule& rule, const std::string& subject) noexcept {
        (void)s, (void)rule, (void)subject;
    }

protected:
    ~pool_owner() = default;
};

// With no other connection to it open or being opened, this many throttle refusals in a row defer
// the site's waiting jobs (its back-off has reached 16 s by then).
inline constexpr std::uint32_t throttled_refusals_before_deferring = 6;
// As many failures on our side in a row (no local port or address) before the same.
inline constexpr std::uint32_t local_failures_before_deferring = 6;
// How often the jobs waiting at the sites are looked at for --max-age and --delay-warning
// (destination_pool::tick).
inline constexpr std::int64_t expiry_sweep_ms = 10'000;
// A wait for a token or a suspension's end is armed this much late: the coarse clock trails
// the precise one that fires the alarm by a scheduler tick (core/clock.h).
inline constexpr std::int64_t coarse_slack_ms = 4;
// A site or destination unused this long (no job joined or ended, no connection ended) and with
// nothing else to keep (see destination_pool::tick) is dropped: its state is what a new one would
// have, and the long tail of domains a relay sees once must not grow memory and the tick's work
// for ever (issue 17, review finding 7). Five minutes: well past the longest back-off (60 s) and
// the MX plan's reuse (60 s), so a site in steady use is not dropped between its jobs.
inline constexpr std::int64_t idle_evict_ms = 5 * 60'000;
// How far into a site's ready queue a decision to open a connection looks for jobs their
// tenants' and campaigns' tokens let go (the rest step aside when a connection is up: next_job).
inline constexpr std::size_t tenant_scan_limit = 256;

// A reply made here (no peer said it): `code`, the enhanced status `enhanced` ("4.4.7"), and
// the text "<enhanced> <why>".
[[nodiscard]] protocol::outcome_reply local_reply(std::uint16_t code, const char* enhanced, const std::string& why);

class destination_pool final : public outbound_owner, public lease_listener {
public:
    // Everything given outlives the pool. schedule: its first interval caps the back-off.
    // shaping: the relay's rules (taken again when its generation changes, at a tick).
    destination_pool(const core::config& config, const retry_schedule& schedule, scheduler& queues,
                     tls_client_policy& tls, core::mx_resolver& resolver, link_factory& links, pool_owner& owner,
                     const core::time_source& clock, const shaping_table& shaping,
                     const operator_holds* holds = nullptr);
    destination_pool(const destination_pool&) = delete;
    destination_pool& operator=(const destination_pool&) = delete;
    ~destination_pool();

    // A static route's site and key for `job` (from its route and egress source): set in the
    // job. The origin calls it to pick the site's owner shard; submit() calls it again (the
    // same answer).
    static void set_route_site(delivery_job& job);
    // Gives a job whose site is set (without a source) its egress source: the site key gains
    // "|src=NAME".
    static void set_source(delivery_job& job, const egress_source& source);
    // With --redis (issue 19): every site's connection_limit is counted across the nodes through
    // `leases` (queue/connection_leases.h), which outlives the pool: a connection is opened only
    // under a lease (or, while Redis is unreachable, within the fallback share), a site holding
    // leases is not evicted, and a connection's end gives its lease back. Call once, before
    // the first job; without it nothing changes.
    void share_connections(connection_leases* leases) noexcept;
    // A lease request of the site `site_key` was answered (connection_leases): open (granted,
    // or Redis failed: the fallback share applies now) dispatches the site again; retry_later
    // (refused) wakes it after lease_retry_ms to ask again.
    void lease_answer(const std::string& site_key, lease_verdict verdict) noexcept override;
    static constexpr std::int64_t lease_retry_ms = 250;
    // A job for a destination this shard owns: by MX, it waits for the plan (then to_site());
    // a static route's, for its site, which this shard owns.
    void submit(delivery_job* job) noexcept;
    // A job whose site this shard owns: it joins the site's ready queue and is dispatched.
    void submit_site(delivery_job* job) noexcept;
    // Once a second: a new rules table; the sites that need it are dispatched (waiting or held
    // jobs: a connection may have room; connections, or a controller not settled: growth,
    // forgetting, a suspension's end); idle connections QUIT after the site's idle_timeout,
    // connections without progress are aborted; idle sites and destinations are dropped
    // (evict_idle).
    void tick(std::int64_t now_ms) noexcept;
    // Sites whose timer is due by now_ms (monotonic, the alarm's precise reading): back-offs
    // over by then end; each is dispatched (by the pool's own clock).
    void run_timers(std::int64_t now_ms) noexcept;
    // When the next site timer is due (monotonic ms; a lower bound, see core/timer_wheel.h), or
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
    // The destination for `key` ("mx:<domain>"), the site for `key`, if they exist (tests, inspection).
    [[nodiscard]] const destination* find(const std::string& key) const noexcept;
    [[nodiscard]] const site* find_site(const std::string& key) const noexcept;
    // How many destinations and sites exist (tests, inspection).
    [[nodiscard]] std::size_t destinations() const noexcept { return _destinations.size(); }
    [[nodiscard]] std::size_t sites() const noexcept { return _sites.size(); }
    // /metrics (queue/shard_snapshot.h): one entry a site this shard owns (the splits of a site
    // name not merged), appended to `out`: its jobs in the ready queue and held by tenant and campaign limits,
    // and the arrival of the message at the head of each (the ones waiting longest there; the
    // queues are not walked). O(sites).
    void site_depths(std::vector<site_depth>& out) const;

    // The back-off after `failures` consecutive failures.
    [[nodiscard]] std::int64_t backoff_ms(std::uint32_t failures) const noexcept;

    // outbound_owner
    next_step connection_ready(outbound_link& c) noexcept override;
    next_step job_done(outbound_link& c, delivery_job* job, const protocol::message_outcome& outcome,
                       const next_hop_ref& hop) noexcept override;
    void connection_closed(outbound_link& c, const close_report& report) noexcept override;
    void want_flush(outbound_link& c) noexcept override { _flush.push_back(&c); }

    // An automation rule that fired on a site named `site_name` (on this shard or another): it
    // acts on every site of this pool with that name (the same MX rollup split by "|domain=",
    // "|tls=" or "|src=") and, for a rule of a provider, on every site of that provider; not on
    // `except` (the site it fired on, already acted on).
    void apply_automation(std::string_view site_name, const automation_rule& rule, std::string_view subject,
                          const site* except) noexcept;

    // The queue control API (issue 18; `holds`: the operator's suspensions, queue/operator_holds.h,
    // which hold a site's jobs in its ready queue like an automation's suspension).
    // Calls f(site) for every site of this pool.
    template <typename F>
    void for_each_site(F f) const {
        for (const auto& [key, s] : _sites) f(*s);
    }
    // Moves the jobs waiting at the sites (ready queues and tenant holds) for which pred holds to
    // `out`; return_jobs() then gives them back to their origins unattempted.
    void take_waiting_if(const std::function<bool(const delivery_job&)>& pred, std::vector<delivery_job*>& out);
    void return_jobs(std::vector<delivery_job*>& jobs, const std::string& why) noexcept;
    // Dispatches the sites for which pred holds (a suspension ended); how many.
    std::size_t wake_sites(const std::function<bool(const site&)>& pred) noexcept;

    // The destination's MX lookup answered (destination::resolved).
    void mx_resolved(destination& d, core::mx_result result) noexcept;

private:
    destination& destination_for(const route_key& r);
    site& site_for(const delivery_job& job);
    void dispatch(destination& d) noexcept;
    void dispatch(site& s) noexcept;
    // The next job of `s` for connection `c` if the message rate has a token (else the site
    // wakes when it has one).
    [[nodiscard]] next_step next_job(site& s, outbound_link& c) noexcept;
    outbound_link& open_connection(site& s) noexcept;
    // max_recipients_per_transaction (issue 17): the job's next transaction is its recipients
    // from batch_first on, at most the site's cap of them (job.outbound.rcpt_to views them).
    static void begin_transaction(const site& s, delivery_job& job) noexcept;
    // A job with transactions still to send goes back in front of the site's ready queue (the
    // connection that sent the last one takes it next if it can); when stopping it ends now, the
    // rest not attempted.
    void requeue_transaction(site& s, delivery_job* job, const next_hop_ref& hop) noexcept;
    // Every job the pool ends at a site ends here: with the outcomes of its earlier transactions
    // in front (queue/delivery_job.h batched), recipients of no transaction yet taking the
    // outcome's kind.
    void finish_job(delivery_job* job, protocol::message_outcome&& outcome, const next_hop_ref& hop,
                    const std::string& why) noexcept;
    // Tenant and campaign limits (issue 17). key_allows: the job's key for `which` has no rate,
    // or a token now (its hold made or brought to the current rules' rate). holding_limit: the
    // first of the job's limits that has no token now, or none. hold: the job steps out of the
    // ready queue into the hold of its key for `which`, and the site wakes for that key's next
    // token. take_tokens: a token of each of the job's limits that has a hold (it goes).
    // release_held: each key's held jobs that its tokens now allow go back in front of the ready
    // queue (a key whose rate is gone releases all); the site wakes for the others.
    [[nodiscard]] bool key_allows(site& s, keyed_limit which, const std::string& key, std::uint64_t now_us) noexcept;
    [[nodiscard]] std::optional<keyed_limit> holding_limit(site& s, const delivery_job& job, std::uint64_t now_us) noexcept;
    void hold(site& s, delivery_job* job, keyed_limit which, std::uint64_t now_us) noexcept;
    static void take_tokens(site& s, const delivery_job& job, std::uint64_t now_us) noexcept;
    // The jobs at the front of the ready queue that a limit holds back step aside, until one
    // may go (or none is left).
    void step_aside_held(site& s, std::uint64_t now_us) noexcept;
    // Of the first jobs of the ready queue (at most tenant_scan_limit), how many, up to `want`,
    // their tenants' and campaigns' tokens let go now (each job claiming one of each): what a new
    // connection is for.
    [[nodiscard]] static std::size_t keys_let_go(site& s, std::size_t want, std::uint64_t now_us) noexcept;
    void release_held(site& s, std::uint64_t now_us) noexcept;
    // Any tenant or campaign hold at `s` (held jobs, or a bucket not yet dropped).
    [[nodiscard]] static bool has_holds(const site& s) noexcept { return !s.tenants.empty() || !s.campaigns.empty(); }
    // Every held job of `s` for which pred(job) holds, to `out`.
    template <typename Pred>
    static void take_held_if(site& s, Pred pred, std::vector<delivery_job*>& out);
    // Every job waiting for `d` ends without an attempt on the wire (DNS): bounced or deferred.
    void fail_ready_jobs(destination& d, recipient_status status, const std::string& why, const char* enhanced);
    // Every job waiting for `s` is deferred (the site cannot be reached).
    void defer_ready_jobs(site& s, const next_hop_ref& hop, const std::string& why);
    // Jobs waiting at `s` whose message is past --max-age (delivery_job::expires_us <= now_unix_us)
    // end with a local 451 4.4.7: the origin finds them expired and writes the Expiration and
    // its DSN. Mail held by the message rate or a suspension expires like mail in a retry.
    void expire_waiting(site& s, std::uint64_t now_unix_us);
    // Jobs waiting at `s` past their --delay-warning time (delivery_job::warn_us <= now_unix_us):
    // the owner is told (pool_owner::job_held), once per job; the jobs keep waiting.
    void warn_waiting(site& s, std::uint64_t now_unix_us);
    void retire(site& s, outbound_link& c);
    // One more consecutive failure: the site backs off until its timer ends it.
    void back_off(site& s) noexcept;
    // The site's timer fires at `at_ms` (or earlier, if it is armed earlier already).
    void wake_at(site& s, std::int64_t at_ms) noexcept;
    [[nodiscard]] std::int64_t wait_until_ms(std::uint64_t wait_us) const noexcept;
    // An operator's suspension of a domain (of one of its recipients) or of its tenant holds the
    // job: it goes back to its origin at the end of the turn (_returned), to wait there.
    [[nodiscard]] bool job_held_by_operator(const delivery_job& job) const noexcept;
    // An operator's suspension holds `s` (its wake-up armed for the end).
    [[nodiscard]] bool held_by_operator(site& s, std::int64_t now_ms) noexcept;
    // Connections to `s` established (greeted, not closing).
    [[nodiscard]] static std::uint32_t established(const site& s) noexcept;
    // Connections to `s` open or being opened (not closing).
    [[nodiscard]] static std::uint32_t alive(const site& s) noexcept;
    // Automation (queue/shaping_rules.h): the first rule of the site's provider (or of every
    // site) matching the peer's reply suspends or throttles the site; true if one did.
    bool automate(site& s, std::uint16_t code, std::string_view text) noexcept;
    // A change the controller returned: to the log.
    void log_change(const site& s, const std::optional<shaping_change>& change) noexcept;
    // The limits of a site under the current rules.
    [[nodiscard]] resolved_shaping limits_of(const site& s) const;
    void take_new_rules() noexcept;
    // Does the tick have something to do at `s`: waiting or held jobs, connections, or a
    // controller that time may change (growth, forgetting, a suspension's or throttle's end)?
    [[nodiscard]] static bool needs_dispatch(const site& s) noexcept;
    // Drops (with their ready queues) every destination with no job waiting, no lookup running,
    // unused for idle_evict_ms and with its plan past resolved_until_ms by as long; and every
    // site unused for idle_evict_ms with nothing that refers to it or that a new site would not
    // have: no job waiting or held by its tenants (whose buckets are full again), no connection
    // (open, being opened, or closed and not yet freed), no timer armed, no back-off running,
    // and its controller at rest (throttle_controller::at_rest: a cut rate is kept until it has
    // grown back or forget_after has passed without a signal). The back-off's exponent is not
    // kept: a new site starts again at 1 s.
    void evict_idle(std::int64_t now_ms) noexcept;
    [[nodiscard]] bool evictable(site& s, std::int64_t now_ms) noexcept;
    [[nodiscard]] std::uint64_t now_us() const noexcept {
        return static_cast<std::uint64_t>(_clock.monotonic_ms()) * 1000;
    }

    // Fixed after construction.
    const core::config& _config;
    const retry_schedule& _schedule;
    scheduler& _queues;
    tls_client_policy& _tls;
    core::mx_resolver& _resolver;
    link_factory& _links;
    pool_owner& _owner;
    const core::time_source& _clock;
    const shaping_table& _shaping;
    const operator_holds* const _holds;  // the delivery's; null: none (tests)
    connection_leases* _leases = nullptr;  // --redis (issue 19): the shard's; null: none
    protocol::client_config _client_config;  // EHLO name; STARTTLS per connection
    // Shard-local.
    std::shared_ptr<const shaping_rules> _rules;  // the table the sites were resolved with
    std::uint64_t _rules_generation = 0;
    std::string _subject;  // automation_subject(), reused
    std::unordered_map<std::string, std::unique_ptr<destination>> _destinations;
    std::unordered_map<std::string, std::unique_ptr<site>> _sites;
    std::vector<std::unique_ptr<outbound_link>> _connections;
    std::vector<outbound_link*> _flush;      // output waiting, this turn
    std::vector<outbound_link*> _graveyard;  // closed, freed once retirable()
    core::timer_wheel<site*> _wakes;         // monotonic ms
    std::int64_t _next_expiry_sweep_ms = 0;  // monotonic
    std::vector<delivery_job*> _expired;     // expire_waiting()'s and warn_waiting()'s, reused
    std::vector<delivery_job*> _returned;    // held by an operator's suspension: back at the turn's end
    bool _stopping = false;
};

}  // namespace ringrelay::queue
