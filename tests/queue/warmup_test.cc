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

// The warm-up journal (a restart keeps the day's counts): what a shard publishes, the file's
// lines both ways, the totals of a day, and each shard's seed.
TEST(WarmupJournal, SeededCountsLimitAsIfTheyHadBeenSent) {
    const auto t = table({"p=a"});
    const shaping_rules r = rules_of(R"({"warmup": {"a": {"start": "2026-12-01", "daily": [5]}}})");
    egress_chooser c(*t);
    warmup_ledger l(0, 1);
    const std::uint64_t v = l.version();
    l.seed(warmup_count{"a", "", dec1, 3});
    EXPECT_NE(l.version(), v);
    EXPECT_EQ(choose(c, l, *t, r, "", dec1, 3), "aa-");
    std::vector<warmup_count> out;
    l.counts(out);
    EXPECT_EQ(out, (std::vector<warmup_count>{{"a", "", dec1, 5}}));
    // A seed of another day counts nothing today.
    warmup_ledger fresh(0, 1);
    fresh.seed(warmup_count{"a", "", dec1 - 1, 5});
    egress_chooser c2(*t);
    EXPECT_EQ(choose(c2, fresh, *t, r, "", dec1, 6), "aaaaa-");
}

TEST(WarmupJournal, LinesRoundTripAndErrorsNameTheLine) {
    const std::vector<warmup_count> totals{{"a", "", dec1, 3}, {"b\"x", "google", dec1, 12}};
    const std::string text = format_warmup_journal(totals);
    EXPECT_EQ(text,
              "{\"day\":\"2026-12-01\",\"source\":\"a\",\"counted_as\":\"\",\"used\":3}\n"
              "{\"day\":\"2026-12-01\",\"source\":\"b\\\"x\",\"counted_as\":\"google\",\"used\":12}\n");
    auto back = parse_warmup_journal(text);
    ASSERT_TRUE(back.has_value()) << back.error();
    EXPECT_EQ(*back, totals);
    EXPECT_TRUE(parse_warmup_journal("").has_value());
    const std::pair<std::string, std::string> bad[] = {
        {"{\"day\":\"2026-12-01\",\"source\":\"a\",\"counted_as\":\"\",\"used\":3}\nnot json\n",
         "line 2: not a JSON object"},
        {"{\"day\":\"2026-13-01\",\"source\":\"a\",\"counted_as\":\"\",\"used\":3}", "line 1: \"day\" must be a date, YYYY-MM-DD"},
        {"{\"day\":20261201,\"source\":\"a\",\"counted_as\":\"\",\"used\":3}", "line 1: \"day\" must be a string"},
        {"{\"day\":\"2026-12-01\",\"source\":\"\",\"counted_as\":\"\",\"used\":3}", "line 1: \"source\" must be a non-empty string"},
        {"{\"day\":\"2026-12-01\",\"source\":\"a\",\"used\":3}", "line 1: \"counted_as\" must be a string"},
        {"{\"day\":\"2026-12-01\",\"source\":\"a\",\"counted_as\":\"\",\"used\":-3}", "line 1: \"used\" must be a non-negative integer"},
    };
    for (const auto& [input, error] : bad) {
        auto r = parse_warmup_journal(input);
        ASSERT_FALSE(r.has_value()) << input;
        EXPECT_EQ(r.error(), error) << input;
    }
}

TEST(WarmupJournal, TotalsOfTheDayAndSeedsSplitLikeTheAllowance) {
    const std::vector<warmup_count> published{{"a", "", dec1, 4}, {"b", "", dec1, 1}, {"a", "", dec1, 3},
                                              {"a", "google", dec1, 2}, {"a", "", dec1 - 1, 9}, {"c", "", dec1, 0}};
    const auto totals = warmup_totals(published, dec1);
    EXPECT_EQ(totals, (std::vector<warmup_count>{{"a", "", dec1, 7}, {"a", "google", dec1, 2}, {"b", "", dec1, 1}}));
    // Over three shards: 7 -> 3,2,2; 2 -> 1,1,0; 1 -> 1,0,0 (zero parts left out).
    EXPECT_EQ(warmup_seed(totals, 0, 3),
              (std::vector<warmup_count>{{"a", "", dec1, 3}, {"a", "google", dec1, 1}, {"b", "", dec1, 1}}));
    EXPECT_EQ(warmup_seed(totals, 1, 3), (std::vector<warmup_count>{{"a", "", dec1, 2}, {"a", "google", dec1, 1}}));
    EXPECT_EQ(warmup_seed(totals, 2, 3), (std::vector<warmup_count>{{"a", "", dec1, 2}}));
    // Whatever the split, no shard is left more than its share of what remains: an allowance of
    // 10 with 7 used leaves 3 in all (4-3, 3-2, 3-2).
    std::uint64_t left = 0;
    for (unsigned s = 0; s < 3; ++s) left += warmup_share(10, s, 3) - warmup_seed(totals, s, 3)[0].used;
    EXPECT_EQ(left, 3u);
}

}  // namespace ringrelay::queue
