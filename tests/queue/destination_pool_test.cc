// Unit tests of queue/destination_pool.h, hermetic: connections are fakes made by a fake
// link_factory (no sockets), MX lookups go to a fake resolver the test answers, and time is a
// clock the test moves by hand. The test plays the connections' side of queue/outbound_link.h
// the way queue::outbound does: it reports, then carries out the answer (next job or QUIT).
#include "queue/destination_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/config.h"
#include "core/net.h"

using namespace ringrelay;
using namespace ringrelay::queue;
using namespace std::chrono_literals;

namespace {

struct fake_clock final : core::time_source {
    std::int64_t now_ms = 1'000'000;
    [[nodiscard]] std::int64_t monotonic_ms() const noexcept override { return now_ms; }
    [[nodiscard]] std::int64_t unix_us() const noexcept override { return 1'700'000'000'000'000 + now_ms * 1000; }
};

// A connection that does what the test tells it to.
struct fake_link final : outbound_link {
    connection_target target;
    protocol::client_config config;
    core::tls_verify verify = core::tls_verify::none;
    bool* freed = nullptr;  // set by the destructor
    bool started = false;
    bool is_connected = false;
    bool is_closing = false;
    bool finished = false;
    const char* aborted = nullptr;
    bool can_retire = true;
    delivery_job* job = nullptr;
    std::uint32_t sent = 0;
    std::int64_t activity_ms = 0;
    std::vector<delivery_job*> assigned;  // every job it was given, in order

    ~fake_link() override {
        if (freed != nullptr) *freed = true;
        delete job;  // a job still on it when the test ends (the test plays its origin shard)
    }
    void start() noexcept override { started = true; }
    void assign(delivery_job* j) noexcept override {
        EXPECT_TRUE(ready_for_job());
        job = j;
        assigned.push_back(j);
    }
    void finish() noexcept override { finished = true; }
    void abort(const char* why) noexcept override { aborted = why; }
    void flush() noexcept override {}
    [[nodiscard]] bool ready_for_job() const noexcept override {
        return is_connected && !is_closing && !finished && job == nullptr;
    }
    [[nodiscard]] bool connected() const noexcept override { return is_connected; }
    [[nodiscard]] bool closing() const noexcept override { return is_closing; }
    [[nodiscard]] bool busy() const noexcept override { return job != nullptr; }
    [[nodiscard]] bool quitting() const noexcept override { return finished; }
    [[nodiscard]] bool retirable() const noexcept override { return is_closing && can_retire; }
    [[nodiscard]] std::int64_t last_activity_ms() const noexcept override { return activity_ms; }
    [[nodiscard]] std::uint32_t messages_sent() const noexcept override { return sent; }
};

struct fake_factory final : link_factory {
    std::vector<fake_link*> made;  // owned by the pool
    std::int64_t* clock_ms = nullptr;
    std::unique_ptr<outbound_link> make(const connection_target& target, const protocol::client_config& config,
                                        core::tls_verify verify, outbound_owner&) override {
        auto link = std::make_unique<fake_link>();
        link->target = target;
        link->config = config;
        link->verify = verify;
        link->activity_ms = *clock_ms;
        made.push_back(link.get());
        return link;
    }
};

struct fake_resolver final : core::mx_resolver {
    std::vector<std::pair<std::string, core::mx_waiter*>> lookups;
    std::vector<core::mx_waiter*> cancelled;
    void resolve_mx(std::string_view domain, core::mx_waiter* done) override {
        lookups.emplace_back(std::string(domain), done);
    }
    void cancel(core::mx_waiter* done) noexcept override { cancelled.push_back(done); }
};

struct finished_job {
    delivery_job* job;
    protocol::message_outcome outcome;
    next_hop_ref hop;
    std::string why;
};

struct recording_owner final : pool_owner {
    std::vector<finished_job> finished;
    std::vector<std::pair<std::string, shaping_change>> changes;  // site, change
    destination_pool* pool = nullptr;  // one shard: every site is this pool's
    void job_finished(delivery_job* job, protocol::message_outcome&& outcome, const next_hop_ref& hop,
                      const std::string& why) noexcept override {
        finished.push_back({job, std::move(outcome), hop, why});
    }
    void to_site(delivery_job* job) noexcept override { pool->submit_site(job); }
    std::vector<finished_job> held;  // job_held(): the jobs stay at their site
    void job_held(delivery_job* job, const next_hop_ref& hop, const std::string& why) noexcept override {
        held.push_back({job, {}, hop, why});
    }
    void shaping_changed(const site& s, const shaping_change& change) noexcept override {
        changes.emplace_back(s.name, change);
    }
    std::vector<std::string> fired;  // automation_fired(): the site names
    automation_rule last_rule;
    void automation_fired(const site& s, const automation_rule& rule, const std::string&) noexcept override {
        fired.push_back(s.name);
        last_rule = rule;
    }
};

core::endpoint ep(const char* text) {
    auto e = core::parse_endpoint(text);
    EXPECT_TRUE(e.has_value());
    return *e;
}

core::mx_target mx(const char* host, std::uint16_t preference, const char* address) {
    core::mx_target t;
    t.host = host;
    t.preference = preference;
    t.addresses = {ep(address)};
    return t;
}

class DestinationPoolTest : public ::testing::Test {
protected:
    DestinationPoolTest() {
        _config.hostname = "relay.test";
        _config.max_connections_per_destination = 1;
        _config.max_messages_per_connection = 100;
        _config.idle_connection_timeout = 5;
        _config.command_timeout = 300;
        _factory.clock_ms = &_clock.now_ms;
    }
    ~DestinationPoolTest() override {
        _pool.reset();  // frees the fake connections (and the jobs still on them)
        for (auto& f : _owner.finished) delete f.job;
        for (delivery_job* j : _on_links) delete j;
    }

    // The pool, made on first use with the rules: the flags' default rule, then _rules_json.
    destination_pool& pool() {
        if (!_pool) {
            shaping_rules rules = flag_default_rule(_config.max_connections_per_destination,
                                                    _config.max_messages_per_connection, _config.idle_connection_timeout);
            if (!_rules_json.empty()) {
                auto over = parse_shaping_rules(_rules_json, "test.json");
                EXPECT_TRUE(over.has_value()) << over.error();
                if (over) rules = merge_shaping_rules(std::move(rules), *over);
            }
            _shaping.replace(std::move(rules));
            _pool = std::make_unique<destination_pool>(_config, _schedule, _scheduler, _tls, _resolver, _factory,
                                                       _owner, _clock, _shaping);
            _owner.pool = _pool.get();
        }
        return *_pool;
    }

    static route_key static_route(const char* address = "127.0.0.1:2526") {
        route_key r;
        r.key = address;
        r.name = address;
        r.by_mx = false;
        r.hop = ep(address);
        return r;
    }
    static route_key mx_route(const char* domain) {
        route_key r;
        r.key = std::string("mx:") + domain;
        r.name = domain;
        r.by_mx = true;
        return r;
    }
    // A job as the origin shard makes it (the pool reads only its route).
    delivery_job* submit(const route_key& r) {
        auto* job = new delivery_job();
        job->route = r;
        pool().submit(job);
        return job;
    }

    // The connection's side of outbound_link.h, as queue::outbound does it.
    void follow(fake_link& c, const next_step& next) {
        if (next.quit) {
            c.finish();
        } else if (next.job != nullptr) {
            c.assign(next.job);
        }
    }
    void greet(fake_link& c) {
        c.is_connected = true;
        follow(c, pool().connection_ready(c));
    }
    // Tenant alice may send one message an hour: her first job goes on the site's connection,
    // the second (returned) waits in her hold at the site.
    delivery_job* held_by_alices_limit() {
        _rules_json = R"({"tenants": {"alice": {"max_message_rate": "1/h,max_burst=1"}}})";
        delivery_job* jobs[2];
        for (delivery_job*& j : jobs) {
            j = new delivery_job();
            j->route = static_route();
            j->tenant = "alice";
        }
        fake_link& c = first_connection_with(jobs[0]);
        pool().submit(jobs[1]);
        complete(c, protocol::outcome_kind::accepted);
        EXPECT_EQ(pool().find_site("127.0.0.1:2526")->tenants.at("alice").held.size(), 1u);
        return jobs[1];
    }
    // `job` submitted to a pool with no connection yet: the connection opened for it, greeted.
    fake_link& first_connection_with(delivery_job* job) {
        pool().submit(job);
        EXPECT_EQ(_factory.made.size(), 1u);
        greet(*_factory.made[0]);
        return *_factory.made[0];
    }
    void complete(fake_link& c, protocol::outcome_kind kind) {
        delivery_job* job = std::exchange(c.job, nullptr);
        ASSERT_NE(job, nullptr);
        ++c.sent;
        protocol::message_outcome outcome;
        outcome.kind = kind;
        follow(c, pool().job_done(c, job, outcome, next_hop_ref{c.target.host, core::to_string(c.target.address), "", ""}));
    }
    // The job on `c` fails with the peer's reply `code` `text`.
    void fail_job(fake_link& c, std::uint16_t code, const char* text) {
        delivery_job* job = std::exchange(c.job, nullptr);
        ASSERT_NE(job, nullptr);
        ++c.sent;
        protocol::message_outcome outcome;
        outcome.kind = protocol::outcome_kind::transient_failure;
        outcome.reply.origin = protocol::reply_origin::peer;
        outcome.reply.code = code;
        outcome.reply.text = text;
        follow(c, pool().job_done(c, job, outcome, next_hop_ref{c.target.host, "127.0.0.1:2526", "", ""}));
    }
    void close(fake_link& c, close_report report) {
        c.is_closing = true;
        if (c.job != nullptr) _on_links.push_back(std::exchange(c.job, nullptr));
        report.hop = next_hop_ref{c.target.host, core::to_string(c.target.address), "", ""};
        pool().connection_closed(c, report);
    }
    void fail_before_greeting(fake_link& c, std::string why = "cannot reach it: Connection refused") {
        close_report r;
        r.before_greeting = true;
        r.reason = protocol::close_reason::connection_lost;
        r.stage = attempt_stage::connect;
        r.why = std::move(why);
        close(c, r);
    }
    // The site wakes for a token due within `ms`: the clock moves on by `ms` and the timer fires.
    void wake_for_token(std::int64_t ms) {
        const std::int64_t wake = pool().next_backoff_end_ms();
        ASSERT_NE(wake, destination_pool::no_backoff) << "the site wakes for its next token";
        EXPECT_LE(wake, _clock.now_ms + ms + coarse_slack_ms);
        _clock.now_ms += ms;
        pool().run_timers(_clock.now_ms + coarse_slack_ms);
    }
    void answer_mx(core::mx_result result) {
        ASSERT_FALSE(_resolver.lookups.empty());
        core::mx_waiter* w = _resolver.lookups.back().second;
        w->resolved(std::move(result));
    }

    core::config _config;
    retry_schedule _schedule{{10min, 30min}, std::chrono::hours(24), 0};
    scheduler _scheduler{_schedule, 1};
    fake_clock _clock;
    std::atomic<std::uint64_t> _generation{0};
    tls_client_policy _tls{_config, _generation, _clock};
    fake_resolver _resolver;
    fake_factory _factory;
    recording_owner _owner;
    std::vector<delivery_job*> _on_links;  // jobs a closed fake connection still held
    std::string _rules_json;  // a --shaping file over the flags' default rule
    shaping_table _shaping;
    std::unique_ptr<destination_pool> _pool;
};

}  // namespace

TEST_F(DestinationPoolTest, OneConnectionRunsTheDestinationsJobsInOrder) {
    delivery_job* a = submit(static_route());
    delivery_job* b = submit(static_route());
    ASSERT_EQ(_factory.made.size(), 1u) << "--max-connections-per-destination 1";
    fake_link& c = *_factory.made[0];
    EXPECT_TRUE(c.started);
    EXPECT_EQ(core::to_string(c.target.address), "127.0.0.1:2526");
    EXPECT_EQ(c.target.host, "127.0.0.1:2526");
    EXPECT_FALSE(c.target.by_mx);
    EXPECT_EQ(c.config.helo_name, "relay.test");

    greet(c);
    ASSERT_EQ(c.assigned, (std::vector<delivery_job*>{a}));
    complete(c, protocol::outcome_kind::accepted);
    ASSERT_EQ(_owner.finished.size(), 1u);
    EXPECT_EQ(_owner.finished[0].job, a);
    EXPECT_EQ(_owner.finished[0].outcome.kind, protocol::outcome_kind::accepted);
    EXPECT_EQ(_owner.finished[0].hop.address, "127.0.0.1:2526");
    EXPECT_EQ(_owner.finished[0].why, "");
    EXPECT_EQ(c.assigned, (std::vector<delivery_job*>{a, b})) << "the next job follows on the same connection";
    complete(c, protocol::outcome_kind::transient_failure);
    ASSERT_EQ(_owner.finished.size(), 2u);
    EXPECT_EQ(_owner.finished[1].job, b);
    EXPECT_EQ(_owner.finished[1].outcome.kind, protocol::outcome_kind::transient_failure);
    EXPECT_FALSE(c.finished) << "an idle connection stays open until --idle-connection-timeout";
    EXPECT_EQ(_factory.made.size(), 1u);
}

TEST_F(DestinationPoolTest, OpensConnectionsOnlyForJobsNoOpeningConnectionWillTakeUpToTheLimit) {
    _config.max_connections_per_destination = 3;
    submit(static_route());
    EXPECT_EQ(_factory.made.size(), 1u);
    submit(static_route());
    EXPECT_EQ(_factory.made.size(), 2u);
    for (int i = 0; i < 5; ++i) submit(static_route());
    EXPECT_EQ(_factory.made.size(), 3u);
    EXPECT_EQ(pool().connections(), 3u);
    // Another destination has limits of its own.
    submit(static_route("127.0.0.1:2527"));
    EXPECT_EQ(_factory.made.size(), 4u);
    // A connection that is up takes the next waiting job at once.
    greet(*_factory.made[0]);
    EXPECT_EQ(_factory.made[0]->assigned.size(), 1u);
    EXPECT_EQ(pool().find_site("127.0.0.1:2526")->ready->size(), 6u);
}

TEST_F(DestinationPoolTest, LastAddressFailingBacksOffAndDefersTheWaitingJobs) {
    delivery_job* a = submit(static_route());
    delivery_job* b = submit(static_route());
    fail_before_greeting(*_factory.made[0]);
    ASSERT_EQ(_owner.finished.size(), 2u);
    EXPECT_EQ(_owner.finished[0].job, a);
    EXPECT_EQ(_owner.finished[1].job, b);
    for (const finished_job& f : _owner.finished) {
        EXPECT_EQ(f.outcome.kind, protocol::outcome_kind::transient_failure);
        EXPECT_EQ(f.why, "cannot reach it: Connection refused");
        EXPECT_EQ(f.hop.address, "127.0.0.1:2526");
    }
    const site* d = pool().find_site("127.0.0.1:2526");
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(d->connect_failures, 1u);
    EXPECT_EQ(d->backoff_until_ms, _clock.now_ms + 1000);

    // While it backs off, no connection is opened; the job waits.
    submit(static_route());
    EXPECT_EQ(_factory.made.size(), 1u);
    _clock.now_ms += 999;
    pool().tick(_clock.now_ms);
    EXPECT_EQ(_factory.made.size(), 1u);
    _clock.now_ms += 1;
    pool().tick(_clock.now_ms);
    ASSERT_EQ(_factory.made.size(), 2u) << "the back-off is over";

    // A second failure doubles it.
    fail_before_greeting(*_factory.made[1]);
    EXPECT_EQ(pool().find_site("127.0.0.1:2526")->backoff_until_ms, _clock.now_ms + 2000);
}

TEST_F(DestinationPoolTest, BackoffDoublesAndIsCappedAtAMinuteAndTheFirstRetryInterval) {
    EXPECT_EQ(pool().backoff_ms(1), 1000);
    EXPECT_EQ(pool().backoff_ms(2), 2000);
    EXPECT_EQ(pool().backoff_ms(3), 4000);
    EXPECT_EQ(pool().backoff_ms(6), 32000);
    EXPECT_EQ(pool().backoff_ms(7), 60000);
    EXPECT_EQ(pool().backoff_ms(1000), 60000);
    const retry_schedule quick({5s}, std::chrono::hours(1), 0);
    destination_pool p(_config, quick, _scheduler, _tls, _resolver, _factory, _owner, _clock, _shaping);
    EXPECT_EQ(p.backoff_ms(2), 2000);
    EXPECT_EQ(p.backoff_ms(4), 5000);
}

TEST_F(DestinationPoolTest, A421BacksOffWithoutDeferringAndAnAcceptedMessageResetsTheBackoffsGrowth) {
    submit(static_route());
    fake_link& first = *_factory.made[0];
    greet(first);
    submit(static_route());  // waits: the one connection is busy
    close_report r;
    r.reason = protocol::close_reason::peer_shutdown;  // 421 after the greeting
    close(first, r);
    const site* d = pool().find_site("127.0.0.1:2526");
    EXPECT_EQ(d->connect_failures, 1u);
    EXPECT_EQ(d->backoff_until_ms, _clock.now_ms + 1000);
    EXPECT_TRUE(_owner.finished.empty()) << "a 421 defers nothing by itself";
    EXPECT_EQ(d->ready->size(), 1u);

    _clock.now_ms += 1000;
    pool().tick(_clock.now_ms);
    ASSERT_EQ(_factory.made.size(), 2u);
    fake_link& second = *_factory.made[1];
    greet(second);
    ASSERT_EQ(second.assigned.size(), 1u);
    complete(second, protocol::outcome_kind::accepted);
    EXPECT_EQ(d->connect_failures, 0u) << "the next back-off starts from 1 s again";
}

// Issue 15: a back-off ends by its own timer (the delivery sleeps until next_backoff_end_ms()
// and calls run_timers()), not by the once-a-second tick.
TEST_F(DestinationPoolTest, ABackoffEndsByItsTimerAndTheWaitingJobIsDispatchedThen) {
    EXPECT_EQ(pool().next_backoff_end_ms(), destination_pool::no_backoff);
    submit(static_route());
    fail_before_greeting(*_factory.made[0]);
    const std::int64_t end = _clock.now_ms + 1000;
    EXPECT_LE(pool().next_backoff_end_ms(), end) << "a lower bound";
    EXPECT_GT(pool().next_backoff_end_ms(), _clock.now_ms);
    submit(static_route());  // waits for the back-off
    EXPECT_EQ(_factory.made.size(), 1u);
    pool().run_timers(end - 1);
    EXPECT_EQ(_factory.made.size(), 1u) << "not a millisecond early";
    EXPECT_EQ(pool().next_backoff_end_ms(), end) << "exact once the wheel has come close";
    // The pool's own (coarse) clock may trail the caller's: the timer ends the back-off anyway.
    _clock.now_ms = end - 3;
    pool().run_timers(end);
    ASSERT_EQ(_factory.made.size(), 2u) << "dispatched when the back-off ended";
    EXPECT_EQ(pool().next_backoff_end_ms(), destination_pool::no_backoff);
    EXPECT_EQ(pool().find_site("127.0.0.1:2526")->backoff_until_ms, 0);
}

// Issue 17: a job's end never cancels a site's timer (a back-off, a suspension, a wait for a
// token runs out by itself).
TEST_F(DestinationPoolTest, ALongerBackoffWaitsForItsOwnEndAndASuccessLeavesTheTimerToRunOut) {
    submit(static_route());
    fail_before_greeting(*_factory.made[0]);
    _clock.now_ms += 1000;
    submit(static_route());
    pool().tick(_clock.now_ms);  // the tick ends it here (its timer is still set)
    ASSERT_EQ(_factory.made.size(), 2u);
    fail_before_greeting(*_factory.made[1]);  // 2 s now
    submit(static_route());
    pool().run_timers(_clock.now_ms + 1999);
    EXPECT_EQ(_factory.made.size(), 2u) << "the first back-off's timer no longer ends anything";
    pool().run_timers(_clock.now_ms + 2000);
    ASSERT_EQ(_factory.made.size(), 3u);
    _clock.now_ms += 2000;
    // A 421 after the greeting backs off again; a success on the next connection ends it.
    greet(*_factory.made[2]);
    submit(static_route());  // waits behind the first on the one connection
    close_report r;
    r.reason = protocol::close_reason::peer_shutdown;
    close(*_factory.made[2], r);
    EXPECT_NE(pool().next_backoff_end_ms(), destination_pool::no_backoff);
    _clock.now_ms += 10'000;
    pool().tick(_clock.now_ms);  // the tick still dispatches a destination whose back-off is over
    ASSERT_EQ(_factory.made.size(), 4u);
    greet(*_factory.made[3]);
    complete(*_factory.made[3], protocol::outcome_kind::accepted);
    EXPECT_NE(pool().next_backoff_end_ms(), destination_pool::no_backoff) << "not cancelled by the success";
}

TEST_F(DestinationPoolTest, MxPlanIsLookedUpOnceAndTheNextExchangerIsTriedBeforeDeferring) {
    delivery_job* job = submit(mx_route("example.net"));
    submit(mx_route("example.net"));
    ASSERT_EQ(_resolver.lookups.size(), 1u) << "one lookup for the jobs waiting";
    EXPECT_EQ(_resolver.lookups[0].first, "example.net");
    EXPECT_TRUE(_factory.made.empty());

    core::mx_result result;
    result.status = core::dns_status::ok;
    result.targets = {mx("mx1.example.net", 10, "192.0.2.1:25"), mx("mx2.example.net", 20, "192.0.2.2:25")};
    answer_mx(std::move(result));
    ASSERT_EQ(_factory.made.size(), 1u);
    EXPECT_EQ(_factory.made[0]->target.host, "mx1.example.net");
    EXPECT_EQ(core::to_string(_factory.made[0]->target.address), "192.0.2.1:25");
    EXPECT_TRUE(_factory.made[0]->target.by_mx);
    EXPECT_EQ(_factory.made[0]->target.destination, "mx1.example.net,mx2.example.net") << "the site";
    EXPECT_EQ(_factory.made[0]->target.site, "mx1.example.net,mx2.example.net");

    fail_before_greeting(*_factory.made[0]);
    EXPECT_TRUE(_owner.finished.empty()) << "the second exchanger gets its chance first";
    ASSERT_EQ(_factory.made.size(), 2u);
    EXPECT_EQ(_factory.made[1]->target.host, "mx2.example.net");
    EXPECT_EQ(core::to_string(_factory.made[1]->target.address), "192.0.2.2:25");

    fail_before_greeting(*_factory.made[1]);
    ASSERT_EQ(_owner.finished.size(), 2u);
    EXPECT_EQ(_owner.finished[0].job, job);
    EXPECT_EQ(_owner.finished[0].outcome.kind, protocol::outcome_kind::transient_failure);
    EXPECT_EQ(_owner.finished[0].hop.name, "mx2.example.net");
    EXPECT_EQ(_resolver.lookups.size(), 1u) << "the plan is reused for 60 s";

    // After 60 s the plan is looked up again.
    _clock.now_ms += 60001;
    submit(mx_route("example.net"));
    EXPECT_EQ(_resolver.lookups.size(), 2u);
}

TEST_F(DestinationPoolTest, OnlyExchangersMorePreferredThanOurselvesAreUsed) {
    submit(mx_route("example.net"));
    core::mx_result result;
    result.status = core::dns_status::ok;
    result.targets = {mx("mx1.example.net", 5, "192.0.2.1:25"), mx("relay.test", 10, "192.0.2.9:25"),
                      mx("mx3.example.net", 20, "192.0.2.3:25")};
    answer_mx(std::move(result));
    ASSERT_EQ(_factory.made.size(), 1u);
    fail_before_greeting(*_factory.made[0]);
    EXPECT_EQ(_factory.made.size(), 1u) << "neither we nor the less preferred exchanger is tried";
    ASSERT_EQ(_owner.finished.size(), 1u);
    EXPECT_EQ(_owner.finished[0].outcome.kind, protocol::outcome_kind::transient_failure);
}

TEST_F(DestinationPoolTest, MailThatWouldLoopBackBounces) {
    submit(mx_route("example.net"));
    core::mx_result result;
    result.status = core::dns_status::ok;
    result.targets = {mx("RELAY.test", 10, "192.0.2.9:25"), mx("mx2.example.net", 20, "192.0.2.2:25")};
    answer_mx(std::move(result));
    EXPECT_TRUE(_factory.made.empty());
    ASSERT_EQ(_owner.finished.size(), 1u);
    const finished_job& f = _owner.finished[0];
    EXPECT_EQ(f.outcome.kind, protocol::outcome_kind::permanent_failure);
    EXPECT_EQ(f.outcome.reply.code, 550);
    EXPECT_EQ(f.outcome.reply.origin, protocol::reply_origin::local);
    EXPECT_EQ(f.outcome.reply.text, "5.4.6 mail for example.net loops back to myself");
    EXPECT_EQ(f.outcome.reply.enhanced.status_class, 5);
    EXPECT_EQ(f.outcome.reply.enhanced.subject, 4);
    EXPECT_EQ(f.outcome.reply.enhanced.detail, 6);
    EXPECT_EQ(f.hop.name, "example.net");
    EXPECT_EQ(f.why, "mail for example.net loops back to myself");
}

struct dns_case {
    core::dns_status status;
    protocol::outcome_kind kind;
    int code;
    const char* text;
};

class DestinationPoolDnsTest : public DestinationPoolTest, public ::testing::WithParamInterface<dns_case> {};

TEST_P(DestinationPoolDnsTest, EveryWaitingJobEndsWithTheLookupsAnswer) {
    const dns_case& c = GetParam();
    submit(mx_route("example.net"));
    submit(mx_route("example.net"));
    core::mx_result result;
    result.status = c.status;
    result.detail = "ns1: timeout";
    answer_mx(std::move(result));
    EXPECT_TRUE(_factory.made.empty());
    ASSERT_EQ(_owner.finished.size(), 2u);
    for (const finished_job& f : _owner.finished) {
        EXPECT_EQ(f.outcome.kind, c.kind);
        EXPECT_EQ(f.outcome.reply.code, c.code);
        EXPECT_EQ(f.outcome.reply.text, c.text);
    }
    EXPECT_TRUE(pool().find("mx:example.net")->ready->empty());
}

INSTANTIATE_TEST_SUITE_P(
    Answers, DestinationPoolDnsTest,
    ::testing::Values(
        dns_case{core::dns_status::null_mx, protocol::outcome_kind::permanent_failure, 550,
                 "5.1.10 the domain accepts no mail (null MX, RFC 7505)"},
        dns_case{core::dns_status::no_such_domain, protocol::outcome_kind::permanent_failure, 550,
                 "5.1.2 the recipient's domain does not exist (NXDOMAIN)"},
        dns_case{core::dns_status::no_address, protocol::outcome_kind::permanent_failure, 550,
                 "5.4.4 the recipient's domain has no mail exchanger or address"},
        dns_case{core::dns_status::temporary, protocol::outcome_kind::transient_failure, 451,
                 "4.4.3 DNS lookup failed temporarily: ns1: timeout"}));

TEST_F(DestinationPoolTest, FailedOpportunisticHandshakeRetriesThisAddressInPlaintextAtOnce) {
    submit(static_route());
    fake_link& first = *_factory.made[0];
    EXPECT_EQ(first.config.starttls, protocol::tls_use::when_offered);
    close_report r;
    r.before_greeting = true;
    r.reason = protocol::close_reason::tls_failed;
    r.tls_protocol_failure = true;
    r.tls_use = protocol::tls_use::when_offered;
    close(first, r);
    EXPECT_TRUE(_owner.finished.empty()) << "nothing deferred";
    ASSERT_EQ(_factory.made.size(), 2u) << "a new connection at once";
    EXPECT_EQ(_factory.made[1]->config.starttls, protocol::tls_use::never);
    EXPECT_EQ(pool().find_site("127.0.0.1:2526")->connect_failures, 0u);

    // A handshake merely cut off (not a TLS failure) is a lost connection: no plaintext.
    submit(static_route("127.0.0.1:2527"));
    fake_link& other = *_factory.made[2];
    r.tls_protocol_failure = false;
    close(other, r);
    EXPECT_EQ(_factory.made.size(), 3u);
    EXPECT_EQ(_owner.finished.size(), 1u);
    EXPECT_EQ(_tls.for_connection(core::config::tls_policy::opportunistic, "127.0.0.1:2527").starttls,
              protocol::tls_use::when_offered);
}

TEST_F(DestinationPoolTest, IdleConnectionsQuitAndConnectionsWithoutProgressAreAborted) {
    _config.max_connections_per_destination = 2;
    submit(static_route());
    submit(static_route());
    fake_link& idle = *_factory.made[0];
    fake_link& busy = *_factory.made[1];
    greet(idle);
    greet(busy);
    complete(idle, protocol::outcome_kind::accepted);
    const std::int64_t t0 = _clock.now_ms;
    idle.activity_ms = t0;
    busy.activity_ms = t0;
    pool().tick(t0 + 5000);
    EXPECT_FALSE(idle.finished);
    pool().tick(t0 + 5001);
    EXPECT_TRUE(idle.finished) << "idle for more than --idle-connection-timeout";
    EXPECT_EQ(busy.aborted, nullptr);
    pool().tick(t0 + 300001);
    ASSERT_NE(busy.aborted, nullptr);
    EXPECT_STREQ(busy.aborted, "timeout waiting for the next hop");
}

TEST_F(DestinationPoolTest, AConnectionQuitsAfterMaxMessagesAndTheNextJobGetsANewOne) {
    _config.max_connections_per_destination = 2;
    _config.max_messages_per_connection = 1;
    submit(static_route());
    fake_link& c = *_factory.made[0];
    greet(c);
    submit(static_route());
    EXPECT_EQ(_factory.made.size(), 2u) << "the first connection is busy";
    complete(c, protocol::outcome_kind::accepted);
    EXPECT_TRUE(c.finished);
    EXPECT_EQ(c.assigned.size(), 1u);
}

TEST_F(DestinationPoolTest, StopQuitsIdleConnectionsAndForceAbortsThem) {
    _config.max_connections_per_destination = 2;
    submit(static_route());
    submit(static_route());
    fake_link& a = *_factory.made[0];
    fake_link& b = *_factory.made[1];
    greet(a);  // busy
    greet(b);
    complete(b, protocol::outcome_kind::accepted);  // idle
    pool().stop(false);
    EXPECT_FALSE(a.finished) << "a busy connection finishes its job first";
    EXPECT_TRUE(b.finished);
    complete(a, protocol::outcome_kind::accepted);
    EXPECT_TRUE(a.finished) << "stopping: QUIT after the job";
    submit(static_route());
    EXPECT_EQ(_factory.made.size(), 2u) << "no new connections once stopping";
    pool().stop(true);
    EXPECT_STREQ(a.aborted, "relay shutting down");
    EXPECT_STREQ(b.aborted, "relay shutting down");
}

TEST_F(DestinationPoolTest, ClosedConnectionsAreFreedAtTheTurnsEndOnceNothingIsInFlight) {
    submit(static_route());
    fake_link& c = *_factory.made[0];
    bool freed = false;
    c.freed = &freed;
    greet(c);
    complete(c, protocol::outcome_kind::accepted);
    c.can_retire = false;  // an operation still in flight
    close_report r;
    r.reason = protocol::close_reason::quit;
    close(c, r);
    pool().on_turn_end();
    EXPECT_FALSE(freed);
    EXPECT_FALSE(pool().idle());
    c.can_retire = true;
    pool().on_turn_end();
    EXPECT_TRUE(freed);
    EXPECT_TRUE(pool().idle());
}

TEST_F(DestinationPoolTest, ALookupInProgressIsCancelledWhenThePoolGoes) {
    submit(mx_route("example.net"));
    ASSERT_EQ(_resolver.lookups.size(), 1u);
    core::mx_waiter* w = _resolver.lookups[0].second;
    _pool.reset();
    EXPECT_EQ(_resolver.cancelled, (std::vector<core::mx_waiter*>{w}));
}

// ---- sites and shaping (issue 17) ------------------------------------------------------------

namespace {

core::mx_result google_like_plan() {
    core::mx_result result;
    result.status = core::dns_status::ok;
    result.targets = {mx("ASPMX.L.example.com.", 1, "192.0.2.1:25"), mx("alt1.aspmx.l.example.com", 5, "192.0.2.2:25")};
    return result;
}

}  // namespace

TEST_F(DestinationPoolTest, DomainsSharingTheirExchangersShareOneSiteAndItsLimits) {
    submit(mx_route("one.example"));
    answer_mx(google_like_plan());
    submit(mx_route("two.example"));
    answer_mx(google_like_plan());
    ASSERT_EQ(_factory.made.size(), 1u) << "one site, --max-connections-per-destination 1 for both domains";
    const site* s = pool().find_site("alt1.aspmx.l.example.com,aspmx.l.example.com");
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(s->ready->size(), 2u) << "both domains' jobs wait in the site's one ready queue";
    fake_link& c = *_factory.made[0];
    greet(c);
    complete(c, protocol::outcome_kind::accepted);
    ASSERT_EQ(_owner.finished.size(), 1u);
    EXPECT_EQ(_owner.finished[0].hop.site, "alt1.aspmx.l.example.com,aspmx.l.example.com");
    EXPECT_EQ(c.assigned.size(), 2u) << "the other domain's job follows on the same connection";
}

TEST_F(DestinationPoolTest, ADomainWithARuleOfItsOwnGetsItsOwnSiteWithThatRulesLimits) {
    _rules_json = R"({"domains": {"two.example": {"connection_limit": 3}}})";
    submit(mx_route("one.example"));
    answer_mx(google_like_plan());
    for (int i = 0; i < 3; ++i) submit(mx_route("two.example"));
    answer_mx(google_like_plan());
    EXPECT_NE(pool().find_site("alt1.aspmx.l.example.com,aspmx.l.example.com"), nullptr);
    const site* own = pool().find_site("alt1.aspmx.l.example.com,aspmx.l.example.com|domain=two.example");
    ASSERT_NE(own, nullptr);
    EXPECT_EQ(own->limits.connection_limit, 3u);
    EXPECT_EQ(own->connections.size(), 3u);
    EXPECT_EQ(_factory.made.size(), 4u);
}

TEST_F(DestinationPoolTest, ARuleFileOverridesTheFlagsDefaultRule) {
    _config.max_connections_per_destination = 5;
    _rules_json = R"({"default": {"connection_limit": 2, "max_deliveries_per_connection": 7, "idle_timeout": "9s"}})";
    for (int i = 0; i < 4; ++i) submit(static_route());
    EXPECT_EQ(_factory.made.size(), 2u);
    const site* s = pool().find_site("127.0.0.1:2526");
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(s->limits.max_deliveries_per_connection, 7u);
    EXPECT_EQ(s->limits.idle_timeout, 9s);
}

// A job the message rate holds back waits in the site's ready queue: no retry is consumed and
// no connection is opened for it.
TEST_F(DestinationPoolTest, AJobTheMessageRateHoldsBackWaitsInTheReadyQueueWithoutANewConnection) {
    _config.max_connections_per_destination = 5;
    _rules_json = R"({"default": {"max_message_rate": "1/s,max_burst=1"}})";
    for (int i = 0; i < 3; ++i) submit(static_route());
    ASSERT_EQ(_factory.made.size(), 1u) << "one token: one connection, though the limit is 5";
    fake_link& c = *_factory.made[0];
    greet(c);
    ASSERT_EQ(c.assigned.size(), 1u);
    complete(c, protocol::outcome_kind::accepted);
    EXPECT_EQ(c.assigned.size(), 1u) << "no token for the second job yet";
    EXPECT_EQ(_owner.finished.size(), 1u) << "the others are not deferred";
    EXPECT_EQ(pool().find_site("127.0.0.1:2526")->ready->size(), 2u);
    pool().tick(_clock.now_ms);
    EXPECT_EQ(_factory.made.size(), 1u) << "still no new connection for a rate-held job";
    wake_for_token(1000);
    EXPECT_EQ(c.assigned.size(), 2u) << "the token came: the idle connection takes the next job";
    EXPECT_EQ(_factory.made.size(), 1u);
}

// max_recipients_per_transaction (issue 17): a job with more recipients than the site allows in
// one transaction is sent in several, one after the other on the same connection (each a
// delivery of the connection, each taking a token), and ends once, with one outcome per
// recipient in the job's order.
namespace {
delivery_job* job_with_recipients(const route_key& r, std::size_t n) {
    auto* job = new delivery_job();
    job->route = r;
    for (std::size_t i = 0; i < n; ++i) {
        job->rcpt_index.push_back(static_cast<std::uint32_t>(i));
        job->rcpt_to.push_back("r" + std::to_string(i) + "@example.net");
    }
    job->outbound.rcpt_to = job->rcpt_to;  // as the origin sets it: every recipient
    return job;
}
std::vector<std::string> sending(const delivery_job& job) {
    return {job.outbound.rcpt_to.begin(), job.outbound.rcpt_to.end()};
}
}  // namespace

TEST_F(DestinationPoolTest, AJobWithMoreRecipientsThanATransactionAllowsIsSentInSeveralOnOneConnection) {
    _rules_json = R"({"default": {"max_recipients_per_transaction": 2}})";
    delivery_job* job = job_with_recipients(static_route(), 5);
    fake_link& c = first_connection_with(job);
    ASSERT_EQ(c.assigned.size(), 1u);
    EXPECT_EQ(sending(*job), (std::vector<std::string>{"r0@example.net", "r1@example.net"}));
    complete(c, protocol::outcome_kind::accepted);
    EXPECT_TRUE(_owner.finished.empty()) << "the job has transactions still to send";
    ASSERT_EQ(c.assigned, (std::vector<delivery_job*>{job, job})) << "the next one on the same connection";
    EXPECT_EQ(sending(*job), (std::vector<std::string>{"r2@example.net", "r3@example.net"}));
    // The second transaction: r3 refused at RCPT, r2 accepted.
    {
        delivery_job* j = std::exchange(c.job, nullptr);
        ++c.sent;
        protocol::message_outcome o;
        o.kind = protocol::outcome_kind::accepted;
        o.recipients.resize(2);
        o.recipients[0].kind = protocol::outcome_kind::accepted;
        o.recipients[1].kind = protocol::outcome_kind::permanent_failure;
        o.recipients[1].reply.origin = protocol::reply_origin::peer;
        o.recipients[1].reply.code = 550;
        follow(c, pool().job_done(c, j, o, next_hop_ref{c.target.host, "127.0.0.1:2526", "", ""}));
    }
    ASSERT_EQ(c.assigned.size(), 3u);
    EXPECT_EQ(sending(*job), (std::vector<std::string>{"r4@example.net"}));
    complete(c, protocol::outcome_kind::transient_failure);
    ASSERT_EQ(_owner.finished.size(), 1u);
    const protocol::message_outcome& whole = _owner.finished[0].outcome;
    ASSERT_EQ(whole.recipients.size(), 5u) << "one outcome per recipient of the job";
    EXPECT_EQ(whole.recipients[0].kind, protocol::outcome_kind::accepted);
    EXPECT_EQ(whole.recipients[1].kind, protocol::outcome_kind::accepted);
    EXPECT_EQ(whole.recipients[2].kind, protocol::outcome_kind::accepted);
    EXPECT_EQ(whole.recipients[3].kind, protocol::outcome_kind::permanent_failure);
    EXPECT_EQ(whole.recipients[3].reply.code, 550);
    EXPECT_EQ(whole.recipients[4].kind, protocol::outcome_kind::transient_failure);
    EXPECT_EQ(c.sent, 3u) << "three transactions";
}

TEST_F(DestinationPoolTest, WithoutARecipientCapAJobIsOneTransaction) {
    delivery_job* job = job_with_recipients(static_route(), 5);
    fake_link& c = first_connection_with(job);
    EXPECT_EQ(sending(*job).size(), 5u);
    complete(c, protocol::outcome_kind::accepted);
    ASSERT_EQ(_owner.finished.size(), 1u);
    EXPECT_EQ(c.assigned.size(), 1u);
}

// A connection lost between two transactions: the rest waits in the ready queue (not attempted
// yet) for the next connection; deferred there (the site cannot be reached), the recipients the
// first transaction delivered keep their outcome.
TEST_F(DestinationPoolTest, TransactionsLeftWhenTheConnectionGoesWaitAndKeepTheEarlierOutcomes) {
    _rules_json = R"({"default": {"max_recipients_per_transaction": 2}})";
    fake_link& c = first_connection_with(job_with_recipients(static_route(), 3));
    c.is_closing = true;  // the peer goes away after the first transaction's reply
    complete(c, protocol::outcome_kind::accepted);
    EXPECT_TRUE(_owner.finished.empty());
    EXPECT_EQ(pool().find_site("127.0.0.1:2526")->ready->size(), 1u) << "the rest waits";
    close_report r;
    r.reason = protocol::close_reason::connection_lost;
    close(c, r);
    ASSERT_EQ(_factory.made.size(), 2u) << "a new connection for the rest";
    fail_before_greeting(*_factory.made[1]);
    ASSERT_EQ(_owner.finished.size(), 1u);
    const protocol::message_outcome& whole = _owner.finished[0].outcome;
    ASSERT_EQ(whole.recipients.size(), 3u);
    EXPECT_EQ(whole.recipients[0].kind, protocol::outcome_kind::accepted);
    EXPECT_EQ(whole.recipients[1].kind, protocol::outcome_kind::accepted);
    EXPECT_EQ(whole.recipients[2].kind, protocol::outcome_kind::transient_failure);
}

// Tenant and campaign limits (issue 17), each keyed by what the message carries: a key whose
// bucket at the site is empty has its jobs step aside (held at the site: no retry, no connection
// opened for them) while the other keys' jobs to the same site go on; its job goes when its
// token is due; a reload without its rule releases them. Run for both limits.
namespace {
delivery_job* keyed_job(const route_key& r, keyed_limit which, const char* key) {
    auto* job = new delivery_job();
    job->route = r;
    (which == keyed_limit::tenant ? job->tenant : job->campaign) = key;
    return job;
}
delivery_job* campaign_job(const route_key& r, const char* tenant, const char* campaign) {
    auto* job = keyed_job(r, keyed_limit::tenant, tenant);
    job->campaign = campaign;
    return job;
}
}  // namespace

class KeyedLimitTest : public DestinationPoolTest, public testing::WithParamInterface<keyed_limit> {
protected:
    // {"tenants"|"campaigns": {"KEY": {"max_message_rate": RATE}}}
    static std::string rule(const char* key, const char* rate) {
        return std::string(R"({")") + (GetParam() == keyed_limit::tenant ? "tenants" : "campaigns") + R"(": {")" + key +
               R"(": {"max_message_rate": ")" + rate + R"("}}})";
    }
    delivery_job* job(const char* key) { return keyed_job(static_route(), GetParam(), key); }
    const site::key_holds& holds() { return pool().find_site("127.0.0.1:2526")->holds_of(GetParam()); }
};

TEST_P(KeyedLimitTest, AnEmptyBucketHoldsOnlyThatKeysJobsAtTheSite) {
    _rules_json = rule("slow", "1/s,max_burst=1");
    delivery_job* slow1 = job("slow");
    delivery_job* slow2 = job("slow");
    delivery_job* fast = job("fast");
    delivery_job* none = job("");
    for (delivery_job* j : {slow1, slow2, fast, none}) pool().submit(j);
    ASSERT_EQ(_factory.made.size(), 1u);
    fake_link& c = *_factory.made[0];
    greet(c);
    for (int i = 0; i < 3; ++i) complete(c, protocol::outcome_kind::accepted);
    EXPECT_EQ(c.assigned, (std::vector<delivery_job*>{slow1, fast, none}))
        << "the slow key's second job steps aside; the other key's and the one without go on";
    EXPECT_EQ(_owner.finished.size(), 3u) << "the held job is not deferred";
    const site* st = pool().find_site("127.0.0.1:2526");
    ASSERT_NE(st, nullptr);
    EXPECT_TRUE(st->ready->empty());
    ASSERT_EQ(holds().count("slow"), 1u);
    EXPECT_EQ(holds().at("slow").held.size(), 1u);
    EXPECT_TRUE(st->holds_of(GetParam() == keyed_limit::tenant ? keyed_limit::campaign : keyed_limit::tenant).empty())
        << "the other limit has no rule";
    std::vector<site_depth> depths;
    pool().site_depths(depths);
    ASSERT_EQ(depths.size(), 1u);
    EXPECT_EQ(depths[0].messages, 1u) << "the held job waits at the site (/metrics' ringrelay_queue_messages)";
    pool().tick(_clock.now_ms);
    EXPECT_EQ(_factory.made.size(), 1u) << "no connection for a held job";
    wake_for_token(1000);
    EXPECT_EQ(c.assigned, (std::vector<delivery_job*>{slow1, fast, none, slow2})) << "its token came";
}

TEST_P(KeyedLimitTest, NoConnectionIsOpenedForJobsOnlyAnEmptyBucketHolds) {
    _config.max_connections_per_destination = 3;
    _rules_json = rule("*", "1/min,max_burst=1");
    for (int i = 0; i < 3; ++i) pool().submit(job("alice"));
    EXPECT_EQ(_factory.made.size(), 1u) << "one token: one connection, though the limit is 3";
    greet(*_factory.made[0]);
    EXPECT_EQ(_factory.made[0]->assigned.size(), 1u);
    pool().tick(_clock.now_ms);
    EXPECT_EQ(_factory.made.size(), 1u);
    // Another key's job is not held behind alice's.
    delivery_job* bob = job("bob");
    pool().submit(bob);
    complete(*_factory.made[0], protocol::outcome_kind::accepted);
    ASSERT_EQ(_factory.made[0]->assigned.size(), 2u);
    EXPECT_EQ(_factory.made[0]->assigned[1], bob);
}

// A reload (SIGHUP) that drops the key's rule releases its held jobs at the next tick.
TEST_P(KeyedLimitTest, AReloadWithoutTheRuleReleasesItsHeldJobs) {
    _rules_json = rule("alice", "1/h,max_burst=1");
    pool().submit(job("alice"));
    pool().submit(job("alice"));
    fake_link& c = *_factory.made[0];
    greet(c);
    complete(c, protocol::outcome_kind::accepted);
    ASSERT_EQ(c.assigned.size(), 1u) << "the second waits an hour for its token";
    _shaping.replace(flag_default_rule(_config.max_connections_per_destination, _config.max_messages_per_connection,
                                       _config.idle_connection_timeout));
    pool().tick(_clock.now_ms);
    EXPECT_EQ(c.assigned.size(), 2u) << "no limit any more: it goes";
    EXPECT_TRUE(holds().empty());
}

INSTANTIATE_TEST_SUITE_P(TenantAndCampaign, KeyedLimitTest, testing::Values(keyed_limit::tenant, keyed_limit::campaign),
                         [](const testing::TestParamInfo<keyed_limit>& info) {
                             return std::string(to_string(info.param));
                         });

TEST_F(DestinationPoolTest, AJobTakesATokenOfItsTenantAndOfItsCampaign) {
    _rules_json = R"({"tenants": {"alice": {"max_message_rate": "1/h,max_burst=2"}},
                      "campaigns": {"spring": {"max_message_rate": "1/h,max_burst=1"}}})";
    delivery_job* first = campaign_job(static_route(), "alice", "spring");
    delivery_job* second = campaign_job(static_route(), "alice", "spring");  // spring's token is gone
    delivery_job* third = campaign_job(static_route(), "alice", "");          // alice's second token
    delivery_job* fourth = campaign_job(static_route(), "alice", "autumn");   // alice has none left
    delivery_job* other = campaign_job(static_route(), "bob", "autumn");
    for (delivery_job* j : {first, second, third, fourth, other}) pool().submit(j);
    fake_link& c = *_factory.made[0];
    greet(c);
    for (int i = 0; i < 3; ++i) complete(c, protocol::outcome_kind::accepted);
    EXPECT_EQ(c.assigned, (std::vector<delivery_job*>{first, third, other}));
    const site* st = pool().find_site("127.0.0.1:2526");
    ASSERT_NE(st, nullptr);
    ASSERT_EQ(st->campaigns.count("spring"), 1u);
    EXPECT_EQ(st->campaigns.at("spring").held, (std::deque<delivery_job*>{second})) << "held by its campaign";
    ASSERT_EQ(st->tenants.count("alice"), 1u);
    EXPECT_EQ(st->tenants.at("alice").held, (std::deque<delivery_job*>{fourth}))
        << "held by its tenant: the first job took a tenant token too";
    EXPECT_EQ(_owner.finished.size(), 3u);
}

TEST_F(DestinationPoolTest, JobsHeldByTheirTenantExpireByMaxAge) {
    delivery_job* held = held_by_alices_limit();
    held->expires_us = static_cast<std::uint64_t>(_clock.unix_us()) + 5'000'000;
    ASSERT_EQ(_owner.finished.size(), 1u);
    _clock.now_ms += expiry_sweep_ms;
    pool().tick(_clock.now_ms);
    ASSERT_EQ(_owner.finished.size(), 2u);
    EXPECT_EQ(_owner.finished[1].job, held);
    EXPECT_NE(_owner.finished[1].outcome.reply.text.find("4.4.7"), std::string::npos);
}

// Review finding (issue 17): mail held at its site by the message rate (or a suspension) is not
// in a retry, so only the site can end it when its message passes --max-age: the waiting jobs
// past their expiry end with a local 451 4.4.7 (the origin then writes the Expiration), the
// others keep waiting in their order.
TEST_F(DestinationPoolTest, JobsHeldAtTheSitePastMaxAgeEndAsExpiredAndTheOthersKeepWaiting) {
    _rules_json = R"({"default": {"max_message_rate": "1/h,max_burst=1"}})";
    const auto unix_now = static_cast<std::uint64_t>(_clock.unix_us());
    // Expiries: an hour away, 30 s away, none (0), 30 s away, an hour away.
    const std::uint64_t expiry[] = {unix_now + 3'600'000'000ULL, unix_now + 30'000'000, 0, unix_now + 30'000'000,
                                    unix_now + 3'600'000'000ULL};
    std::vector<delivery_job*> jobs;
    for (std::uint64_t e : expiry) {
        auto* job = new delivery_job();
        job->route = static_route();
        job->expires_us = e;
        jobs.push_back(job);
        pool().submit(job);
    }
    ASSERT_EQ(_factory.made.size(), 1u);
    fake_link& c = *_factory.made[0];
    greet(c);
    ASSERT_EQ(c.assigned.size(), 1u) << "one token: the first job goes, the rest wait for the rate";
    const site& s = *pool().find_site("127.0.0.1:2526");
    ASSERT_EQ(s.ready->size(), 4u);
    pool().tick(_clock.now_ms);
    EXPECT_TRUE(_owner.finished.empty()) << "nothing is past its expiry yet";
    _clock.now_ms += 31'000;  // past the 30 s expiries, and past the next sweep
    pool().tick(_clock.now_ms);
    ASSERT_EQ(_owner.finished.size(), 2u) << "the two jobs 30 s from expiry";
    EXPECT_EQ(_owner.finished[0].job, jobs[1]);
    EXPECT_EQ(_owner.finished[1].job, jobs[3]);
    for (const finished_job& f : _owner.finished) {
        EXPECT_EQ(f.outcome.kind, protocol::outcome_kind::transient_failure);
        EXPECT_EQ(f.outcome.reply.origin, protocol::reply_origin::local);
        EXPECT_EQ(f.outcome.reply.code, 451);
        EXPECT_EQ(f.outcome.reply.enhanced.subject, 4);
        EXPECT_EQ(f.outcome.reply.enhanced.detail, 7);
        EXPECT_NE(f.why.find("--max-age"), std::string::npos) << f.why;
        EXPECT_EQ(f.hop.site, "127.0.0.1:2526");
    }
    ASSERT_EQ(s.ready->size(), 2u) << "the others keep waiting";
    // In their order (popped and put back: the scheduler frees what its queues hold).
    delivery_job* first = s.ready->pop();
    delivery_job* second = s.ready->pop();
    EXPECT_EQ(first, jobs[2]);
    EXPECT_EQ(second, jobs[4]);
    s.ready->push(first);
    s.ready->push(second);
}

// A job waiting at its site past its --delay-warning time (delivery_job::warn_us) makes the site
// tell the origin, once per job (the origin sends the sender a delay notice); the job keeps
// waiting, and jobs without a warning time (none configured, or the notice already sent) are
// never reported.
TEST_F(DestinationPoolTest, JobsHeldAtTheSitePastTheirDelayWarningAreReportedOnceAndKeepWaiting) {
    _rules_json = R"({"default": {"max_message_rate": "1/h,max_burst=1"}})";
    const auto unix_now = static_cast<std::uint64_t>(_clock.unix_us());
    // Warning times: none (the first, which takes the token), 30 s away, none, an hour away.
    const std::uint64_t warn[] = {0, unix_now + 30'000'000, 0, unix_now + 3'600'000'000ULL};
    std::vector<delivery_job*> jobs;
    for (std::uint64_t w : warn) {
        auto* job = new delivery_job();
        job->route = static_route();
        job->warn_us = w;
        jobs.push_back(job);
        pool().submit(job);
    }
    ASSERT_EQ(_factory.made.size(), 1u);
    greet(*_factory.made[0]);
    const site& s = *pool().find_site("127.0.0.1:2526");
    ASSERT_EQ(s.ready->size(), 3u) << "one token: the rest wait for the rate";
    pool().tick(_clock.now_ms);
    EXPECT_TRUE(_owner.held.empty()) << "nobody is past a warning time yet";
    _clock.now_ms += 31'000;  // past the 30 s warning, and past the next sweep
    pool().tick(_clock.now_ms);
    ASSERT_EQ(_owner.held.size(), 1u);
    EXPECT_EQ(_owner.held[0].job, jobs[1]);
    EXPECT_EQ(_owner.held[0].hop.site, "127.0.0.1:2526");
    EXPECT_NE(_owner.held[0].why.find("127.0.0.1:2526"), std::string::npos) << _owner.held[0].why;
    EXPECT_TRUE(_owner.finished.empty()) << "a delay notice ends no job";
    EXPECT_EQ(s.ready->size(), 3u) << "the held jobs keep waiting";
    _clock.now_ms += 11'000;  // the next sweep: the same job is not reported again
    pool().tick(_clock.now_ms);
    EXPECT_EQ(_owner.held.size(), 1u);
}

// The same for a job held by its tenant's limit (out of the ready queue, in its tenant's hold).
TEST_F(DestinationPoolTest, JobsHeldByTheirTenantPastTheirDelayWarningAreReported) {
    delivery_job* held = held_by_alices_limit();
    held->warn_us = static_cast<std::uint64_t>(_clock.unix_us()) + 30'000'000;
    _clock.now_ms += 31'000;
    pool().tick(_clock.now_ms);
    ASSERT_EQ(_owner.held.size(), 1u);
    EXPECT_EQ(_owner.held[0].job, held);
    EXPECT_EQ(_owner.finished.size(), 1u) << "a delay notice ends no job";
}

constexpr const char* too_many_connections = "4.7.0 Try again later, closing connection. (too many connections from your IP)";

// ringrelay-sink --max-connections-per-ip's refusal, as queue::outbound reports it.
close_report greeting_refusal() {
    close_report r;
    r.before_greeting = true;
    r.reason = protocol::close_reason::peer_shutdown;
    r.stage = attempt_stage::greeting;
    r.code = 421;
    r.text = too_many_connections;
    r.why = std::string("421 ") + too_many_connections;
    return r;
}

// Issue 17: a connection refused at the greeting is a signal about the connection count, not a
// verdict on the mail: nothing is deferred and the allowed count is cut.
TEST_F(DestinationPoolTest, AGreetingRefusalDefersNothingAndCutsTheConnections) {
    _config.max_connections_per_destination = 4;
    for (int i = 0; i < 8; ++i) submit(static_route());
    ASSERT_EQ(_factory.made.size(), 4u);
    greet(*_factory.made[0]);
    greet(*_factory.made[1]);
    const close_report r = greeting_refusal();
    close(*_factory.made[2], r);
    EXPECT_TRUE(_owner.finished.empty()) << "no job was on it, and none waiting is deferred";
    EXPECT_EQ(pool().find_site("127.0.0.1:2526")->ready->size(), 6u);
    ASSERT_EQ(_owner.changes.size(), 1u);
    EXPECT_EQ(_owner.changes[0].first, "127.0.0.1:2526");
    EXPECT_EQ(_owner.changes[0].second.event, shaping_event::decrease);
    EXPECT_EQ(_owner.changes[0].second.old_connections, 4u);
    EXPECT_EQ(_owner.changes[0].second.new_connections, 2u) << "the two the receiver took";
    EXPECT_EQ(_factory.made.size(), 4u) << "no new connection above the cut";
    // With nothing established, a refusal backs the site off; the jobs still wait.
    close(*_factory.made[3], r);
    EXPECT_TRUE(_owner.finished.empty());
}

TEST_F(DestinationPoolTest, AGreetingRefusalWithNoneEstablishedBacksOffAndKeepsTheJobsWaiting) {
    _config.max_connections_per_destination = 2;
    for (int i = 0; i < 3; ++i) submit(static_route());
    const close_report r = greeting_refusal();
    close(*_factory.made[0], r);
    const site* s = pool().find_site("127.0.0.1:2526");
    EXPECT_EQ(s->backoff_until_ms, 0) << "another connection is still being opened";
    close(*_factory.made[1], r);
    EXPECT_TRUE(_owner.finished.empty());
    EXPECT_EQ(s->backoff_until_ms, _clock.now_ms + 1000);
    EXPECT_EQ(s->ready->size(), 3u);
    // Refused again and again with nothing open: the waiting mail is deferred in the end.
    for (std::uint32_t i = 2; i <= throttled_refusals_before_deferring; ++i) {
        _clock.now_ms = s->backoff_until_ms;
        pool().run_timers(_clock.now_ms);
        ASSERT_EQ(_factory.made.size(), i + 1) << "one connection after each back-off (the cut count)";
        close(*_factory.made[i], r);
    }
    EXPECT_EQ(_owner.finished.size(), 3u);
}

// Our own connect failing, as queue::outbound reports it (no local port).
close_report local_connect_failure() {
    close_report r;
    r.before_greeting = true;
    r.reason = protocol::close_reason::connection_lost;
    r.stage = attempt_stage::connect;
    r.local_failure = true;
    r.why = "cannot reach 127.0.0.1:2526: Cannot assign requested address";
    return r;
}

// Issue 17: our own connect failing (no local port) says nothing about the receiver.
TEST_F(DestinationPoolTest, ALocalConnectFailureCutsNothing) {
    _config.max_connections_per_destination = 3;
    for (int i = 0; i < 6; ++i) submit(static_route());
    greet(*_factory.made[0]);
    const close_report r = local_connect_failure();
    close(*_factory.made[1], r);
    EXPECT_TRUE(_owner.changes.empty()) << "the allowance stays";
    EXPECT_EQ(pool().find_site("127.0.0.1:2526")->controller->connections(), 3u);
    EXPECT_TRUE(_owner.finished.empty()) << "a connection to the site is established: the jobs wait";
}

// ... and with nothing established, one such failure (a port range exhausted for a moment)
// does not use a retry of every waiting message: the site backs off, and only failures in a
// row defer its mail.
TEST_F(DestinationPoolTest, LocalConnectFailuresWithNoneUpDeferOnlyWhenTheyRepeat) {
    _config.max_connections_per_destination = 1;
    for (int i = 0; i < 3; ++i) submit(static_route());
    const close_report r = local_connect_failure();
    const site* s = pool().find_site("127.0.0.1:2526");
    ASSERT_NE(s, nullptr);
    close(*_factory.made[0], r);
    EXPECT_TRUE(_owner.finished.empty()) << "one failure on our side defers nothing";
    EXPECT_TRUE(_owner.changes.empty());
    EXPECT_EQ(s->ready->size(), 3u);
    for (std::uint32_t i = 1; i < local_failures_before_deferring; ++i) {
        _clock.now_ms = s->backoff_until_ms;
        pool().run_timers(_clock.now_ms);
        ASSERT_EQ(_factory.made.size(), i + 1) << "one connection after each back-off";
        close(*_factory.made[i], r);
    }
    EXPECT_EQ(_owner.finished.size(), 3u) << "failing again and again, the waiting mail is deferred";
}

TEST_F(DestinationPoolTest, ARefusedConnectWhileOthersAreEstablishedIsAConnectionsSignal) {
    _config.max_connections_per_destination = 3;
    for (int i = 0; i < 6; ++i) submit(static_route());
    greet(*_factory.made[0]);
    fail_before_greeting(*_factory.made[1]);  // refused, not on our side
    EXPECT_TRUE(_owner.finished.empty()) << "the receiver is up: nothing deferred";
    ASSERT_EQ(_owner.changes.size(), 1u);
    EXPECT_EQ(_owner.changes[0].second.new_connections, 1u) << "the one it took";
}

TEST_F(DestinationPoolTest, ARateReplyCutsTheMessageRateAndAGenericTryAgainLaterDoesNot) {
    _config.max_connections_per_destination = 1;
    for (int i = 0; i < 3; ++i) submit(static_route());
    fake_link& c = *_factory.made[0];
    greet(c);
    fail_job(c, 451, "4.3.0 Mail server temporarily rejected message. Try again later.");
    EXPECT_TRUE(_owner.changes.empty()) << "not a rate signal";
    _clock.now_ms += 10;
    fail_job(c, 451, "4.7.1 Message rate limit exceeded for IP, try again later");
    ASSERT_EQ(_owner.changes.size(), 1u);
    EXPECT_EQ(_owner.changes[0].second.event, shaping_event::decrease);
    EXPECT_NE(_owner.changes[0].second.new_rate_milli, 0u) << "a rate limit found";
    EXPECT_EQ(_owner.finished.size(), 2u) << "only the jobs that got the replies are deferred";
}

// Review finding 6a: a suspend reaches every split of the site (here its "|tls=" split: sites
// split by "|domain=" or "|src=" are reached in the same way), not only the one it fired on.
TEST_F(DestinationPoolTest, ASuspendReachesEverySplitOfTheSameSite) {
    _rules_json = R"({"automation": [{"match": "\\[TSS04\\]", "action": "suspend", "duration": "1h"}]})";
    route_key required = static_route();
    required.key += "|tls=required";
    required.tls = core::config::tls_policy::required;
    submit(static_route());
    submit(required);
    const site* plain = pool().find_site("127.0.0.1:2526");
    const site* split = pool().find_site("127.0.0.1:2526|tls=required");
    ASSERT_NE(plain, nullptr);
    ASSERT_NE(split, nullptr);
    EXPECT_EQ(split->name, plain->name);
    fake_link& c = *_factory.made[0];
    greet(c);
    fail_job(c, 421, "4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume");
    const auto now_us = static_cast<std::uint64_t>(_clock.now_ms) * 1000;
    EXPECT_TRUE(plain->controller->suspended(now_us));
    EXPECT_TRUE(split->controller->suspended(now_us)) << "the same site, another TLS policy: suspended too";
    std::size_t suspends = 0;
    for (const auto& [site_name, change] : _owner.changes) suspends += change.event == shaping_event::suspend ? 1 : 0;
    EXPECT_EQ(suspends, 2u) << "one Shaping record for each";
    ASSERT_EQ(_owner.fired.size(), 1u) << "and the delivery hears it once, for the other shards";
    EXPECT_EQ(_owner.fired[0], "127.0.0.1:2526");
    // Another shard's report of the rule reaches this pool's sites of that name.
    submit(static_route("127.0.0.1:2527"));
    const site* other = pool().find_site("127.0.0.1:2527");
    pool().apply_automation("127.0.0.1:2527", _owner.last_rule, "421 4.7.0 [TSS04] ...", nullptr);
    EXPECT_TRUE(other->controller->suspended(now_us));
}

// Review finding 6b: automation hears every negative reply of a job, not just its first, and
// also when another recipient was accepted.
class DestinationPoolAutomationReplies : public DestinationPoolTest,
                                         public testing::WithParamInterface<protocol::outcome_kind> {};

TEST_P(DestinationPoolAutomationReplies, AReplyAfterTheFirstNegativeOneStillFiresItsRule) {
    _rules_json = R"({"automation": [{"match": "\\[TSS04\\]", "action": "suspend", "duration": "1h"}]})";
    submit(static_route());
    submit(static_route());
    fake_link& c = *_factory.made[0];
    greet(c);
    delivery_job* job = std::exchange(c.job, nullptr);
    ASSERT_NE(job, nullptr);
    ++c.sent;
    protocol::message_outcome outcome;
    outcome.kind = protocol::outcome_kind::transient_failure;
    protocol::recipient_outcome first, second;
    first.kind = GetParam();  // a 550 unknown user, or accepted
    first.reply.origin = protocol::reply_origin::peer;
    first.reply.code = GetParam() == protocol::outcome_kind::accepted ? 250 : 550;
    first.reply.text = GetParam() == protocol::outcome_kind::accepted ? "2.1.5 Ok" : "5.1.1 <a@example.net>: unknown user";
    second.kind = protocol::outcome_kind::transient_failure;
    second.reply.origin = protocol::reply_origin::peer;
    second.reply.code = 421;
    second.reply.text = "4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume";
    outcome.recipients = {first, second};
    follow(c, pool().job_done(c, job, outcome, next_hop_ref{c.target.host, "127.0.0.1:2526", "", ""}));
    bool suspended = false;
    for (const auto& [site_name, change] : _owner.changes) suspended = suspended || change.event == shaping_event::suspend;
    EXPECT_TRUE(suspended) << "the second recipient's [TSS04] suspends the site";
    EXPECT_TRUE(pool().find_site("127.0.0.1:2526")->controller->suspended(static_cast<std::uint64_t>(_clock.now_ms) * 1000));
    EXPECT_EQ(c.assigned.size(), 1u) << "no message while suspended";
}

INSTANTIATE_TEST_SUITE_P(FirstRecipient, DestinationPoolAutomationReplies,
                         testing::Values(protocol::outcome_kind::permanent_failure, protocol::outcome_kind::accepted));

// Issue 17: automation on reply text; a job finishing elsewhere does not end the suspension.
TEST_F(DestinationPoolTest, ASuspendRuleHoldsTheSitesMailUntilItsEndAndAJobsEndDoesNotCancelIt) {
    _config.max_connections_per_destination = 2;
    _rules_json = R"({"automation": [{"match": "\\[TSS04\\]", "action": "suspend", "duration": "1h"}]})";
    for (int i = 0; i < 4; ++i) submit(static_route());
    fake_link& a = *_factory.made[0];
    fake_link& b = *_factory.made[1];
    greet(a);
    greet(b);
    fail_job(a, 421, "4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume");
    bool suspended = false;
    for (const auto& [site_name, change] : _owner.changes) suspended = suspended || change.event == shaping_event::suspend;
    EXPECT_TRUE(suspended);
    EXPECT_TRUE(a.assigned.size() == 1u) << "no message while suspended";
    complete(b, protocol::outcome_kind::accepted);  // a job in flight finishes
    EXPECT_EQ(b.assigned.size(), 1u);
    const site* s = pool().find_site("127.0.0.1:2526");
    EXPECT_TRUE(s->controller->suspended(static_cast<std::uint64_t>(_clock.now_ms) * 1000))
        << "a job's end does not cancel the suspension";
    EXPECT_EQ(s->ready->size(), 2u) << "the mail waits, no retry consumed";
    EXPECT_EQ(_owner.finished.size(), 2u);
    ASSERT_NE(pool().next_backoff_end_ms(), destination_pool::no_backoff) << "the site wakes at the suspension's end";
    _clock.now_ms += 1'800'000;
    pool().run_timers(_clock.now_ms);
    EXPECT_EQ(s->ready->size(), 2u) << "half an hour on, still suspended";
    _clock.now_ms += 1'800'000 + coarse_slack_ms;
    pool().run_timers(_clock.now_ms);
    EXPECT_TRUE(s->ready->empty()) << "after the suspension the waiting mail goes again";
    EXPECT_EQ(a.assigned.size() + b.assigned.size(), 4u);
}

namespace {

// Two exchangers of equal preference, in the order `first`, `second` (each domain's lookup
// shuffles them on its own).
core::mx_result equal_preference_plan(const char* first_address, const char* second_address) {
    core::mx_result result;
    result.status = core::dns_status::ok;
    const bool a_first = std::string_view(first_address) == "192.0.2.1:25";
    result.targets = {mx(a_first ? "a.mx.example" : "b.mx.example", 10, first_address),
                      mx(a_first ? "b.mx.example" : "a.mx.example", 10, second_address)};
    return result;
}

}  // namespace

// Review finding (issue 17): domains sharing a site each shuffle its equal-preference
// exchangers; a plan that only reorders the site's addresses must not send it back to its first
// address (which may be the one that just failed), or a dead address is tried again and again.
TEST_F(DestinationPoolTest, AnotherDomainsOrderOfTheSameAddressesKeepsTheSitesPlanAndPlace) {
    const std::string key = "a.mx.example,b.mx.example";
    submit(mx_route("one.example"));
    answer_mx(equal_preference_plan("192.0.2.1:25", "192.0.2.2:25"));
    ASSERT_EQ(_factory.made.size(), 1u);
    EXPECT_EQ(core::to_string(_factory.made[0]->target.address), "192.0.2.1:25");
    fail_before_greeting(*_factory.made[0]);  // 192.0.2.1 is dead: the plan moves on
    ASSERT_EQ(_factory.made.size(), 2u);
    EXPECT_EQ(core::to_string(_factory.made[1]->target.address), "192.0.2.2:25");
    greet(*_factory.made[1]);
    complete(*_factory.made[1], protocol::outcome_kind::accepted);
    close(*_factory.made[1], close_report{});  // an idle connection's end: nothing about the plan
    // Another domain with the same exchangers, shuffled the other way, then the first again.
    submit(mx_route("two.example"));
    answer_mx(equal_preference_plan("192.0.2.2:25", "192.0.2.1:25"));
    ASSERT_EQ(_factory.made.size(), 3u);
    EXPECT_EQ(core::to_string(_factory.made[2]->target.address), "192.0.2.2:25");
    greet(*_factory.made[2]);
    complete(*_factory.made[2], protocol::outcome_kind::accepted);
    close(*_factory.made[2], close_report{});
    submit(mx_route("one.example"));  // its plan is reused (60 s): 192.0.2.1 first again
    ASSERT_EQ(_factory.made.size(), 4u);
    EXPECT_EQ(core::to_string(_factory.made[3]->target.address), "192.0.2.2:25")
        << "the site keeps its plan and place; the dead address is not tried first again";
    const site* s = pool().find_site(key);
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(s->next_target, 1u);
}

TEST_F(DestinationPoolTest, ANewAddressSetStartsTheSitesPlanAnew) {
    submit(mx_route("one.example"));
    answer_mx(equal_preference_plan("192.0.2.1:25", "192.0.2.2:25"));
    fail_before_greeting(*_factory.made[0]);
    greet(*_factory.made[1]);
    complete(*_factory.made[1], protocol::outcome_kind::accepted);
    close(*_factory.made[1], close_report{});
    // The exchangers' addresses changed (192.0.2.2 became 192.0.2.3).
    submit(mx_route("two.example"));
    answer_mx(equal_preference_plan("192.0.2.1:25", "192.0.2.3:25"));
    ASSERT_EQ(_factory.made.size(), 3u);
    EXPECT_EQ(core::to_string(_factory.made[2]->target.address), "192.0.2.1:25") << "the new plan from its start";
}

// Egress sources (issue 17): each (source, site) is a site of its own, with its own limits;
// its connections bind the source and greet with its EHLO name.
class DestinationPoolEgressTest : public DestinationPoolTest {
protected:
    DestinationPoolEgressTest() {
        auto t = egress_table::load({"a=127.0.0.2,ehlo=a.relay.test", "b=127.0.0.3"}, {"p=a:1,b:1"}, {"*=p"},
                                    "relay.test");
        EXPECT_TRUE(t.has_value()) << (t ? "" : t.error());
        if (t) _egress = std::move(*t);
    }
    delivery_job* submit_from(const route_key& r, const char* source) {
        auto* job = new delivery_job();
        job->route = r;
        for (const egress_source& s : _egress->sources())
            if (s.name == source) job->egress = &s;
        EXPECT_NE(job->egress, nullptr);
        pool().submit(job);
        return job;
    }
    std::shared_ptr<const egress_table> _egress;
};

TEST_F(DestinationPoolEgressTest, EachSourceHasItsOwnSiteConnectionsAndEhloName) {
    submit_from(static_route(), "a");
    submit_from(static_route(), "b");
    submit(static_route());  // no source: the system-chosen address
    ASSERT_EQ(_factory.made.size(), 3u) << "--max-connections-per-destination 1 for each (source, site)";
    const site* a = pool().find_site("127.0.0.1:2526|src=a");
    const site* b = pool().find_site("127.0.0.1:2526|src=b");
    const site* none = pool().find_site("127.0.0.1:2526");
    ASSERT_NE(a, nullptr);
    ASSERT_NE(b, nullptr);
    ASSERT_NE(none, nullptr);
    EXPECT_EQ(a->name, "127.0.0.1:2526") << "the log names the site, not the key";
    ASSERT_NE(_factory.made[0]->target.source, nullptr);
    EXPECT_EQ(_factory.made[0]->target.source->name, "a");
    EXPECT_EQ(_factory.made[0]->config.helo_name, "a.relay.test");
    ASSERT_NE(_factory.made[1]->target.source, nullptr);
    EXPECT_EQ(_factory.made[1]->target.source->name, "b");
    EXPECT_EQ(_factory.made[1]->config.helo_name, "relay.test") << "without ehlo=, --hostname";
    EXPECT_EQ(_factory.made[2]->target.source, nullptr);
    EXPECT_EQ(_factory.made[2]->config.helo_name, "relay.test");
    // One source's failures back off that source's site only.
    fail_before_greeting(*_factory.made[0]);
    EXPECT_GT(a->backoff_until_ms, _clock.now_ms);
    EXPECT_EQ(b->backoff_until_ms, 0);
    EXPECT_EQ(none->backoff_until_ms, 0);
}

TEST_F(DestinationPoolEgressTest, AnMxSitesKeyCarriesTheSourceAndItsConnectionsTakeAnAddressOfTheSourcesFamily) {
    auto six = egress_table::load({"six=::1"}, {"v6=six"}, {"*=v6"}, "relay.test");
    if (!six) GTEST_SKIP() << "no IPv6 loopback here: " << six.error();
    _egress = std::move(*six);
    submit_from(mx_route("one.example"), "six");
    core::mx_result result;
    result.status = core::dns_status::ok;
    result.targets = {mx("mx.example.net", 10, "192.0.2.1:25"), mx("mx.example.net", 10, "[2001:db8::1]:25")};
    answer_mx(std::move(result));
    EXPECT_NE(pool().find_site("mx.example.net|src=six"), nullptr);
    ASSERT_EQ(_factory.made.size(), 1u);
    EXPECT_EQ(core::to_string(_factory.made[0]->target.address), "[2001:db8::1]:25") << "an IPv6 source, an IPv6 peer";
}

// ---- idle sites and destinations are dropped (issue 17, review finding 7) --------------------

namespace {

// The forget period of the controller's defaults (queue/throttle_controller.h), in ms.
constexpr std::int64_t forget_ms = static_cast<std::int64_t>(controller_params{}.forget_after_us / 1000);

}  // namespace

class DestinationPoolEvictionTest : public DestinationPoolTest {
protected:
    // The connection ends (QUIT) and is freed at the turn's end.
    void end_connection(fake_link& c) {
        close_report r;
        r.reason = protocol::close_reason::quit;
        close(c, r);
        pool().on_turn_end();
    }
    // The clock moves on by `ms`; the timers due by then fire and the once-a-second tick runs (as
    // the delivery does).
    void idle_for(std::int64_t ms) {
        _clock.now_ms += ms;
        pool().run_timers(_clock.now_ms);
        pool().tick(_clock.now_ms);
    }
    // One job to the static route `address`, delivered on a connection of its own that then ends.
    void deliver_once(const std::string& address) {
        submit(static_route(address.c_str()));
        fake_link& c = *_factory.made.back();
        greet(c);
        complete(c, protocol::outcome_kind::accepted);
        end_connection(c);
    }
    const site* the_site() { return pool().find_site("127.0.0.1:2526"); }
    // The one job waiting at the site for an hourly token (the message rate's or its tenant's,
    // taken at t0) goes on a new connection when the token comes; the site, idle after it, is
    // kept until the bucket is full again (a new site's would be) and then dropped.
    void sends_at_its_token_and_goes_when_the_bucket_is_full(std::int64_t t0) {
        _clock.now_ms = t0 + 3'600'000 + coarse_slack_ms;
        pool().run_timers(_clock.now_ms);
        ASSERT_EQ(_factory.made.size(), 2u) << "its token came";
        greet(*_factory.made[1]);
        complete(*_factory.made[1], protocol::outcome_kind::accepted);
        end_connection(*_factory.made[1]);
        const std::int64_t taken = _clock.now_ms;
        idle_for(idle_evict_ms);
        EXPECT_NE(the_site(), nullptr) << "its bucket is empty: a new site's would be full";
        _clock.now_ms = taken + 3'600'000;
        pool().tick(_clock.now_ms);
        EXPECT_EQ(the_site(), nullptr) << "the bucket is full again";
    }
};

TEST_F(DestinationPoolEvictionTest, AnIdleSiteIsDroppedAndANewJobToItMakesAFreshSiteThatWorks) {
    deliver_once("127.0.0.1:2526");
    const std::size_t queues = _scheduler.queues();
    idle_for(idle_evict_ms - 1);
    EXPECT_NE(the_site(), nullptr) << "not idle long enough";
    idle_for(1);
    EXPECT_EQ(the_site(), nullptr) << "idle for idle_evict_ms with nothing to keep";
    EXPECT_EQ(pool().sites(), 0u);
    EXPECT_EQ(_scheduler.queues(), queues - 1) << "its ready queue is given back";
    submit(static_route());
    ASSERT_NE(the_site(), nullptr);
    ASSERT_EQ(_factory.made.size(), 2u) << "the new site opens a connection for the job";
    greet(*_factory.made[1]);
    complete(*_factory.made[1], protocol::outcome_kind::accepted);
    ASSERT_EQ(_owner.finished.size(), 2u);
    EXPECT_EQ(_owner.finished[1].outcome.kind, protocol::outcome_kind::accepted);
}

TEST_F(DestinationPoolEvictionTest, AThousandOneShotSitesAreAllDroppedAfterTheIdleTime) {
    for (int i = 0; i < 1000; ++i) deliver_once("127.0.0.1:" + std::to_string(3000 + i));
    EXPECT_EQ(pool().sites(), 1000u);
    EXPECT_EQ(_scheduler.queues(), 1000u);
    idle_for(idle_evict_ms);
    EXPECT_EQ(pool().sites(), 0u);
    EXPECT_EQ(_scheduler.queues(), 0u);
}

TEST_F(DestinationPoolEvictionTest, ASiteWhoseRateWasCutIsKeptUntilTheCutIsForgotten) {
    submit(static_route());
    fake_link& c = *_factory.made[0];
    greet(c);
    fail_job(c, 451, "4.7.1 Message rate limit exceeded for IP, try again later");
    ASSERT_EQ(_owner.changes.size(), 1u);
    ASSERT_NE(the_site()->controller->rate_milli(), 0u) << "a rate limit found";
    end_connection(c);
    const std::int64_t signal = _clock.now_ms;
    idle_for(idle_evict_ms);
    EXPECT_NE(the_site(), nullptr) << "a new site would forget the cut";
    _clock.now_ms = signal + forget_ms - 1000;
    pool().tick(_clock.now_ms);
    EXPECT_NE(the_site(), nullptr);
    _clock.now_ms = signal + forget_ms;
    pool().tick(_clock.now_ms);
    EXPECT_EQ(the_site(), nullptr) << "no signal for the forget period: at rest";
}

TEST_F(DestinationPoolEvictionTest, ASiteWithAJobWaitingForItsRateIsKeptAndThenUntilItsBucketIsFull) {
    _rules_json = R"({"default": {"max_message_rate": "1/h,max_burst=1"}})";
    const std::int64_t t0 = _clock.now_ms;
    submit(static_route());
    submit(static_route());
    fake_link& c = *_factory.made[0];
    greet(c);
    complete(c, protocol::outcome_kind::accepted);
    end_connection(c);
    ASSERT_EQ(the_site()->ready->size(), 1u) << "the second waits an hour for its token";
    idle_for(2 * idle_evict_ms);
    ASSERT_NE(the_site(), nullptr) << "a job waits at it";
    EXPECT_EQ(the_site()->ready->size(), 1u);
    sends_at_its_token_and_goes_when_the_bucket_is_full(t0);
}

TEST_F(DestinationPoolEvictionTest, ASiteWithJobsHeldByTheirTenantIsKeptUntilTheTenantsBucketIsFull) {
    const std::int64_t t0 = _clock.now_ms;
    held_by_alices_limit();
    end_connection(*_factory.made[0]);
    idle_for(2 * idle_evict_ms);
    ASSERT_NE(the_site(), nullptr) << "alice's job is held at it";
    sends_at_its_token_and_goes_when_the_bucket_is_full(t0);
}

TEST_F(DestinationPoolEvictionTest, ASiteIsKeptWhileAConnectionToItIsOpenOrNotYetFreed) {
    _config.idle_connection_timeout = 7200;
    submit(static_route());
    fake_link& c = *_factory.made[0];
    greet(c);
    complete(c, protocol::outcome_kind::accepted);
    idle_for(2 * idle_evict_ms);
    ASSERT_NE(the_site(), nullptr) << "an idle connection is open";
    EXPECT_FALSE(c.finished);
    c.can_retire = false;  // closed with an operation still in flight
    end_connection(c);
    idle_for(idle_evict_ms);
    EXPECT_NE(the_site(), nullptr) << "the closed connection, not yet freed, still points at it";
    c.can_retire = true;
    pool().on_turn_end();
    idle_for(0);
    EXPECT_EQ(the_site(), nullptr);
}

// The longest back-off (60 s) is shorter than idle_evict_ms: a site is never dropped while it backs
// off; an unreachable one is dropped like any other once idle.
TEST_F(DestinationPoolEvictionTest, AnUnreachableSiteIsKeptWhileItBacksOffAndDroppedOnceIdle) {
    submit(static_route());
    fail_before_greeting(*_factory.made[0]);
    pool().on_turn_end();
    ASSERT_EQ(_owner.finished.size(), 1u) << "deferred";
    ASSERT_GT(the_site()->backoff_until_ms, _clock.now_ms);
    idle_for(idle_evict_ms - 1);
    EXPECT_NE(the_site(), nullptr);
    idle_for(1);
    EXPECT_EQ(the_site(), nullptr);
}

TEST_F(DestinationPoolEvictionTest, ASuspendedSiteIsKeptUntilItHasRestedAfterItsResumption) {
    _config.max_connections_per_destination = 2;  // resumed on one: a cut
    _rules_json = R"({"automation": [{"match": "\\[TSS04\\]", "action": "suspend", "duration": "1h"}]})";
    submit(static_route());
    fake_link& c = *_factory.made[0];
    greet(c);
    fail_job(c, 421, "4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume");
    end_connection(c);
    const std::int64_t t0 = _clock.now_ms;
    idle_for(2 * idle_evict_ms);
    ASSERT_NE(the_site(), nullptr) << "suspended";
    _clock.now_ms = t0 + 3'600'000 + coarse_slack_ms;
    pool().run_timers(_clock.now_ms);  // the suspension's end
    ASSERT_FALSE(the_site()->controller->suspended(static_cast<std::uint64_t>(_clock.now_ms) * 1000));
    EXPECT_EQ(the_site()->controller->connections(), 1u) << "resumed on one connection";
    const std::int64_t resumed = _clock.now_ms;
    idle_for(idle_evict_ms);
    EXPECT_NE(the_site(), nullptr) << "a new site would not start on one connection";
    _clock.now_ms = resumed + forget_ms;
    pool().tick(_clock.now_ms);
    EXPECT_EQ(the_site(), nullptr);
}

TEST_F(DestinationPoolEvictionTest, ADestinationIsDroppedOnceItsPlanHasExpiredAndItIsIdle) {
    submit(mx_route("example.net"));
    answer_mx(google_like_plan());
    const std::int64_t resolved = _clock.now_ms;
    fake_link& c = *_factory.made[0];
    greet(c);
    complete(c, protocol::outcome_kind::accepted);
    end_connection(c);
    const std::string site_key = _owner.finished[0].job->site_key;
    ASSERT_NE(pool().find_site(site_key), nullptr);
    _clock.now_ms = resolved + 60'000 + idle_evict_ms - 1;
    pool().tick(_clock.now_ms);
    EXPECT_NE(pool().find("mx:example.net"), nullptr) << "its plan expired less than idle_evict_ms ago";
    EXPECT_EQ(pool().find_site(site_key), nullptr) << "its site, unused for longer, is gone";
    idle_for(1);
    EXPECT_EQ(pool().find("mx:example.net"), nullptr);
    EXPECT_EQ(pool().destinations(), 0u);
    EXPECT_EQ(_scheduler.queues(), 0u);
}

TEST_F(DestinationPoolEvictionTest, ADestinationIsKeptWhileItsLookupRuns) {
    submit(mx_route("example.org"));
    idle_for(2 * idle_evict_ms);
    EXPECT_NE(pool().find("mx:example.org"), nullptr) << "the resolver will answer it";
    core::mx_result temporary;
    temporary.status = core::dns_status::temporary;
    answer_mx(temporary);
    ASSERT_EQ(_owner.finished.size(), 1u) << "deferred";
    idle_for(idle_evict_ms);
    EXPECT_EQ(pool().find("mx:example.org"), nullptr);
}
