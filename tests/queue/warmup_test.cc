// tests/queue/warmup_test.cc: IP warm-up (queue/warmup.h, issue 17) with a fake clock (every
// call is given the UTC day): the day index, each shard's share of a day's allowance, the
// schedule counted per source and per provider, the round robin going to the other sources of
// the pool once one has used up its share, none left (the message waits), the next day's new
// allowance, the end of the schedule (warmed), and the Shaping record. Schedule parsing is in
// shaping_rules_test.cc.
#include "queue/warmup.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

namespace ringrelay::queue {
namespace {

constexpr std::int64_t day_us = 86'400'000'000;

shaping_rules rules_of(std::string_view json) {
    auto r = parse_shaping_rules(json, "test.json");
    EXPECT_TRUE(r.has_value()) << (r ? "" : r.error());
    return r ? std::move(*r) : shaping_rules{};
}

std::shared_ptr<const egress_table> table(std::vector<std::string> pools) {
    // Two sources on an address every host has; the test bind is all egress_table does with it.
    auto t = egress_table::load({"a=127.0.0.1", "b=127.0.0.1"}, pools, {"*=p"}, "relay.example");
    EXPECT_TRUE(t.has_value()) << (t ? "" : t.error());
    return *t;
}

// The sources chosen for `n` messages to a site of `provider` on `day`: "a", "b" or "-" (none).
std::string choose(egress_chooser& chooser, warmup_ledger& ledger, const egress_table& t, const shaping_rules& r,
                   std::string_view provider, std::int64_t day, int n, std::vector<warmup_used_up>* used = nullptr) {
    std::string out;
    std::vector<warmup_used_up> scratch;
    for (int i = 0; i < n; ++i) {
        const auto s = choose_warm_source(chooser, ledger, t, t.pools()[0], r, provider, day, used ? *used : scratch);
        out += s ? t.sources()[*s].name : "-";
    }
    return out;
}

const std::int64_t dec1 = *parse_civil_date("2026-12-01");

TEST(Warmup, DayIsTheUtcCalendarDay) {
    EXPECT_EQ(unix_day(0), 0);
    EXPECT_EQ(unix_day(day_us - 1), 0);
    EXPECT_EQ(unix_day(day_us), 1);
    EXPECT_EQ(unix_day(-1), -1);
    EXPECT_EQ(unix_day(dec1 * day_us + 23 * 3'600'000'000LL), dec1);  // 2026-12-01T23:00Z
}

TEST(Warmup, AllowanceSplitOverShardsRemainderToLowShards) {
    EXPECT_EQ(warmup_share(7, 0, 2), 4u);
    EXPECT_EQ(warmup_share(7, 1, 2), 3u);
    EXPECT_EQ(warmup_share(5, 0, 1), 5u);
    std::uint64_t sum = 0;
    for (unsigned s = 0; s < 8; ++s) sum += warmup_share(5, s, 8);
    EXPECT_EQ(sum, 5u);  // never more than the day's total
    EXPECT_EQ(warmup_share(5, 4, 8), 1u);
    EXPECT_EQ(warmup_share(5, 5, 8), 0u);
}

TEST(Warmup, DayNUsesDailyNFirstBeforeStartNoneAfterTheList) {
    warmup_schedule w{dec1, {200, 500, 1000}};
    EXPECT_EQ(warmup_allowance(w, dec1 - 3), 200u);
    EXPECT_EQ(warmup_allowance(w, dec1), 200u);
    EXPECT_EQ(warmup_allowance(w, dec1 + 1), 500u);
    EXPECT_EQ(warmup_allowance(w, dec1 + 2), 1000u);
    EXPECT_FALSE(warmup_allowance(w, dec1 + 3).has_value());
}

TEST(Warmup, UsedUpSourceOverflowsToTheOtherSourceOfThePool) {
    const auto t = table({"p=a,b"});
    const shaping_rules r = rules_of(R"({"warmup": {"a": {"start": "2026-12-01", "daily": [3]}}})");
    egress_chooser chooser(*t);
    warmup_ledger ledger(0, 1);
    // 1:1 round robin until a's 3 are used, then b only.
    EXPECT_EQ(choose(chooser, ledger, *t, r, "", dec1, 10), "ababab" "bbbb");
    EXPECT_EQ(ledger.used("a", "", dec1), 3u);
}

TEST(Warmup, NoSourceLeftMeansTheMessageWaitsUntilTheNextDay) {
    const auto t = table({"p=a"});
    const shaping_rules r = rules_of(R"({"warmup": {"a": {"start": "2026-12-01", "daily": [2, 4]}}})");
    egress_chooser chooser(*t);
    warmup_ledger ledger(0, 1);
    EXPECT_EQ(choose(chooser, ledger, *t, r, "", dec1, 4), "aa--");
    EXPECT_EQ(choose(chooser, ledger, *t, r, "", dec1 + 1, 6), "aaaa--");  // the next day: daily[1]
    EXPECT_EQ(choose(chooser, ledger, *t, r, "", dec1 + 2, 3), "aaa");      // the list is over: warmed
}

TEST(Warmup, EachShardCountsItsOwnShare) {
    const auto t = table({"p=a"});
    const shaping_rules r = rules_of(R"({"warmup": {"a": {"start": "2026-12-01", "daily": [5]}}})");
    egress_chooser c0(*t), c1(*t);
    warmup_ledger l0(0, 2), l1(1, 2);
    EXPECT_EQ(choose(c0, l0, *t, r, "", dec1, 4), "aaa-");
    EXPECT_EQ(choose(c1, l1, *t, r, "", dec1, 4), "aa--");
}

TEST(Warmup, ProviderScheduleCountsApartFromTheOtherSites) {
    const auto t = table({"p=a"});
    const shaping_rules r = rules_of(R"({"providers": {"google": {"match": {"mx_suffix": ".google.com"}}},
        "warmup": {"a": {"start": "2026-12-01", "daily": [3], "providers": {"google": {"daily": [1]}}}}})");
    egress_chooser chooser(*t);
    warmup_ledger ledger(0, 1);
    EXPECT_EQ(choose(chooser, ledger, *t, r, "google", dec1, 2), "a-");
    EXPECT_EQ(choose(chooser, ledger, *t, r, "yahoo", dec1, 2), "aa");
    EXPECT_EQ(choose(chooser, ledger, *t, r, "", dec1, 2), "a-");  // yahoo and others share the 3
    EXPECT_EQ(ledger.used("a", "google", dec1), 1u);
    EXPECT_EQ(ledger.used("a", "", dec1), 3u);
}

TEST(Warmup, WithoutAWarmupTheRoundRobinIsUnchanged) {
    const auto t = table({"p=a:3,b"});
    const shaping_rules none;
    egress_chooser plain(*t), warm(*t);
    warmup_ledger ledger(0, 1);
    std::string expected;
    for (int i = 0; i < 8; ++i) expected += t->sources()[plain.next(t->pools()[0])].name;
    EXPECT_EQ(choose(warm, ledger, *t, none, "", dec1, 8), expected);
    EXPECT_EQ(expected, "aabaaaba");
    EXPECT_FALSE(pool_has_warmup(*t, t->pools()[0], none));
    EXPECT_TRUE(pool_has_warmup(*t, t->pools()[0], rules_of(R"({"warmup": {"b": {"start": "2026-12-01", "daily": [1]}}})")));
}

TEST(Warmup, UsedUpIsReportedOncePerDayPerSourceAndProvider) {
    const auto t = table({"p=a"});
    const shaping_rules r = rules_of(R"({"warmup": {"a": {"start": "2026-12-01", "daily": [2, 2]}}})");
    egress_chooser chooser(*t);
    warmup_ledger ledger(0, 1);
    std::vector<warmup_used_up> used;
    EXPECT_EQ(choose(chooser, ledger, *t, r, "", dec1, 5, &used), "aa---");
    ASSERT_EQ(used.size(), 1u);
    EXPECT_EQ(used[0].source, "a");
    EXPECT_EQ(used[0].day, dec1);
    EXPECT_EQ(used[0].allowance, 2u);
    EXPECT_EQ(used[0].share, 2u);
    EXPECT_EQ(choose(chooser, ledger, *t, r, "", dec1 + 1, 3, &used), "aa-");
    EXPECT_EQ(used.size(), 2u);
    std::string line;
    append_warmup_record(line, used[0], 0, dec1 * day_us + 1'000'000);
    EXPECT_EQ(line, "{\"type\":\"Shaping\",\"time\":\"2026-12-01T00:00:01.000000Z\",\"source\":\"a\","
                    "\"event\":\"warmup_used_up\",\"provider\":null,\"day\":\"2026-12-01\",\"allowance\":2,"
                    "\"shard\":0,\"share\":2}\n");
}

}  // namespace
}  // namespace ringrelay::queue
