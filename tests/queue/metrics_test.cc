// tests/queue/metrics_test.cc: /metrics' text (issue 18) from hand-made shard counters and
// snapshots: sites merged over shards and capped (the rest in site="_other"), label values
// escaped, the latency histograms cumulative, outcomes summed by provider and source, every
// bounce class present, ages counted to the time given.
#include "queue/metrics.h"

#include <gtest/gtest.h>

#include <string>
#include <string_view>

using namespace ringrelay;
using queue::shard_snapshot;

namespace {

constexpr std::uint64_t now_us = 1'000'000'000'000;

struct two_shards {
    two_shards() : sources(2) {
        sources.set(0, &counters[0], &slots[0]);
        sources.set(1, &counters[1], &slots[1]);
    }
    template <typename Fill>
    void publish(unsigned shard, Fill fill) {
        ASSERT_TRUE(slots[shard].publish([&](shard_snapshot& s) {
            s = shard_snapshot{};
            fill(s);
        }));
    }
    std::string render() {
        std::string out;
        queue::render_metrics(sources, out, now_us);
        return out;
    }
    queue::shard_counters counters[2];
    queue::shard_snapshot_slot slots[2];
    queue::metrics_sources sources;
};

bool has_line(const std::string& text, std::string_view line) {
    return text.find("\n" + std::string(line) + "\n") != std::string::npos;
}

std::size_t count_of(const std::string& text, std::string_view prefix) {
    std::size_t n = 0;
    for (std::size_t at = text.find(prefix); at != std::string::npos; at = text.find(prefix, at + 1))
        if (at == 0 || text[at - 1] == '\n') ++n;
    return n;
}

}  // namespace

TEST(Metrics, SumsASiteOverTheShardsThatHoldIt) {
    two_shards f;
    f.publish(0, [](shard_snapshot& s) { s.sites = {{"mx.a.test", 3, now_us - 5'000'000}, {"mx.b.test", 1, 0}}; });
    f.publish(1, [](shard_snapshot& s) { s.sites = {{"mx.a.test", 2, now_us - 9'000'000}}; });
    const std::string t = f.render();
    EXPECT_TRUE(has_line(t, "ringrelay_queue_messages{site=\"mx.a.test\"} 5")) << t;
    EXPECT_TRUE(has_line(t, "ringrelay_queue_messages{site=\"mx.b.test\"} 1")) << t;
    EXPECT_TRUE(has_line(t, "ringrelay_queue_messages{site=\"_other\"} 0")) << t;
    // The oldest of the two shards' heads, counted to `now_us`.
    EXPECT_TRUE(has_line(t, "ringrelay_queue_oldest_seconds{site=\"mx.a.test\"} 9")) << t;
    EXPECT_TRUE(has_line(t, "# TYPE ringrelay_queue_messages gauge")) << t;
}

TEST(Metrics, CapsSiteSeriesAndSumsTheRestInOther) {
    two_shards f;
    // 2 x 40 distinct sites, depth 1..80: the 50 deepest by name, the 30 others (1..30) summed.
    f.publish(0, [](shard_snapshot& s) {
        for (int i = 1; i <= 40; ++i) s.sites.push_back({"s" + std::to_string(i), static_cast<std::uint64_t>(i), 0});
    });
    f.publish(1, [](shard_snapshot& s) {
        for (int i = 41; i <= 80; ++i) s.sites.push_back({"s" + std::to_string(i), static_cast<std::uint64_t>(i), 0});
        s.rest = {"", 7, 0};  // what shard 1 itself left out
    });
    const std::string t = f.render();
    EXPECT_EQ(count_of(t, "ringrelay_queue_messages{"), queue::max_site_series + 1) << t;
    EXPECT_TRUE(has_line(t, "ringrelay_queue_messages{site=\"s80\"} 80"));
    EXPECT_TRUE(has_line(t, "ringrelay_queue_messages{site=\"s31\"} 31"));
    EXPECT_FALSE(has_line(t, "ringrelay_queue_messages{site=\"s30\"} 30"));
    EXPECT_TRUE(has_line(t, "ringrelay_queue_messages{site=\"_other\"} " + std::to_string(30 * 31 / 2 + 7))) << t;
}

TEST(Metrics, KeepDeepestMergesNamesBeforeCapping) {
    std::vector<queue::site_depth> sites = {{"b", 1, 50}, {"a", 2, 0}, {"b", 2, 40}, {"c", 2, 10}};
    queue::site_depth rest;
    queue::keep_deepest(sites, rest, 2);
    ASSERT_EQ(sites.size(), 2u);
    EXPECT_EQ(sites[0].site, "b");
    EXPECT_EQ(sites[0].messages, 3u);
    EXPECT_EQ(sites[0].oldest_arrival_us, 40u);
    EXPECT_EQ(sites[1].site, "a");  // ties by name
    EXPECT_EQ(rest.messages, 2u);
    EXPECT_EQ(rest.oldest_arrival_us, 10u);
}

TEST(Metrics, EscapesSiteNamesInLabelValues) {
    two_shards f;
    f.publish(0, [](shard_snapshot& s) { s.sites = {{"a\"b\\c\nd", 1, 0}}; });
    const std::string t = f.render();
    EXPECT_TRUE(has_line(t, "ringrelay_queue_messages{site=\"a\\\"b\\\\c\\nd\"} 1")) << t;
}

TEST(Metrics, LatencyHistogramBucketsAreCumulative) {
    two_shards f;
    f.counters[1].commit_latency.record(40);          // <= 50 us
    f.counters[1].commit_latency.record(300);         // <= 500 us
    f.counters[1].commit_latency.record(20'000'000);  // past 10 s: +Inf only
    const std::string t = f.render();
    EXPECT_TRUE(has_line(t, "# TYPE ringrelay_group_commit_seconds histogram")) << t;
    EXPECT_TRUE(has_line(t, "ringrelay_group_commit_seconds_bucket{shard=\"1\",le=\"0.00005\"} 1")) << t;
    EXPECT_TRUE(has_line(t, "ringrelay_group_commit_seconds_bucket{shard=\"1\",le=\"0.00025\"} 1")) << t;
    EXPECT_TRUE(has_line(t, "ringrelay_group_commit_seconds_bucket{shard=\"1\",le=\"0.0005\"} 2")) << t;
    EXPECT_TRUE(has_line(t, "ringrelay_group_commit_seconds_bucket{shard=\"1\",le=\"10\"} 2")) << t;
    EXPECT_TRUE(has_line(t, "ringrelay_group_commit_seconds_bucket{shard=\"1\",le=\"+Inf\"} 3")) << t;
    EXPECT_TRUE(has_line(t, "ringrelay_group_commit_seconds_count{shard=\"1\"} 3")) << t;
    EXPECT_TRUE(has_line(t, "ringrelay_group_commit_seconds_sum{shard=\"1\"} 20.00034")) << t;
    EXPECT_TRUE(has_line(t, "ringrelay_acknowledgement_seconds_count{shard=\"0\"} 0")) << t;
}

TEST(Metrics, SumsOutcomesByProviderAndSource) {
    two_shards f;
    f.publish(0, [](shard_snapshot& s) {
        s.outcomes = {{"google", "default", 4, 1, 0, 0}, {"", "default", 1, 0, 2, 1}};
        s.bounced_by_class[static_cast<std::size_t>(protocol::bounce_class::invalid_recipient)] = 2;
    });
    f.publish(1, [](shard_snapshot& s) {
        s.outcomes = {{"google", "default", 6, 0, 1, 0}, {"google", "ip2", 3, 0, 0, 0}};
        s.bounced_by_class[static_cast<std::size_t>(protocol::bounce_class::invalid_recipient)] = 1;
        s.bounced_by_class[static_cast<std::size_t>(protocol::bounce_class::policy)] = 5;
    });
    const std::string t = f.render();
    EXPECT_TRUE(has_line(t, "ringrelay_provider_messages_delivered_total{provider=\"google\",source=\"default\"} 10")) << t;
    EXPECT_TRUE(has_line(t, "ringrelay_provider_messages_delivered_total{provider=\"google\",source=\"ip2\"} 3")) << t;
    EXPECT_TRUE(has_line(t, "ringrelay_provider_messages_delivered_total{provider=\"none\",source=\"default\"} 1")) << t;
    EXPECT_TRUE(has_line(t, "ringrelay_provider_messages_deferred_total{provider=\"google\",source=\"default\"} 1")) << t;
    EXPECT_TRUE(has_line(t, "ringrelay_provider_messages_bounced_total{provider=\"none\",source=\"default\"} 2")) << t;
    EXPECT_TRUE(has_line(t, "ringrelay_provider_messages_expired_total{provider=\"none\",source=\"default\"} 1")) << t;
    EXPECT_TRUE(has_line(t, "ringrelay_messages_bounced_by_class_total{class=\"invalid-recipient\"} 3")) << t;
    EXPECT_TRUE(has_line(t, "ringrelay_messages_bounced_by_class_total{class=\"policy\"} 5")) << t;
    // Every class has its series, counted or not.
    EXPECT_EQ(count_of(t, "ringrelay_messages_bounced_by_class_total{"), protocol::bounce_class_count);
}

TEST(Metrics, RendersTheNewPerShardCounters) {
    two_shards f;
    f.counters[0].suppressed = 2;
    f.counters[0].spool_free_bytes = 4096;
    f.counters[1].body_cache_hits = 7;
    f.counters[1].dns_lookups = 3;
    const std::string t = f.render();
    EXPECT_TRUE(has_line(t, "ringrelay_messages_suppressed_total{shard=\"0\"} 2")) << t;
    EXPECT_TRUE(has_line(t, "ringrelay_spool_free_bytes{shard=\"0\"} 4096")) << t;
    EXPECT_TRUE(has_line(t, "ringrelay_body_cache_hits_total{shard=\"1\"} 7")) << t;
    EXPECT_TRUE(has_line(t, "ringrelay_dns_lookups_total{shard=\"1\"} 3")) << t;
}
