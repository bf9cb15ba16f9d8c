// tests/tools/sink/stats_test.cc: ringrelay-sink's statistics: sums over shards, per-second
// rates, and the final summary (text and JSON).
#include "tools/sink/stats.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace ringrelay::sink {
namespace {

TEST(SinkStats, SnapshotSumsEveryShard) {
    shard_stats a;
    shard_stats b;
    bump(a.received, 10);
    bump(b.received, 5);
    bump(a.deferred);
    bump(b.rejected, 2);
    bump(b.bytes, 1000);
    bump(a.refused_connections, 3);
    const std::vector<const shard_stats*> shards{&a, &b};
    const totals t = snapshot(shards);
    EXPECT_EQ(t.received, 15U);
    EXPECT_EQ(t.deferred, 1U);
    EXPECT_EQ(t.rejected, 2U);
    EXPECT_EQ(t.bytes, 1000U);
    EXPECT_EQ(t.refused_connections, 3U);
    EXPECT_EQ(t.disconnected, 0U);
}

TEST(SinkStats, ProgressLineGivesRatesOverTheIntervalAndTotals) {
    totals before;
    before.received = 1000;
    before.bytes = 2'000'000;
    totals now = before;
    now.received = 3000;
    now.deferred = 40;
    now.bytes = 6'000'000;
    now.open_connections = 7;
    const std::string line = progress_line(now, before, 2.0);
    EXPECT_NE(line.find("received 1000/s (3000)"), std::string::npos) << line;
    EXPECT_NE(line.find("deferred 20/s (40)"), std::string::npos) << line;
    EXPECT_NE(line.find("2.0 MB/s (6.0 MB)"), std::string::npos) << line;
    EXPECT_NE(line.find("7 open connection(s)"), std::string::npos) << line;
}

TEST(SinkStats, SummaryTextAndJsonCarryTheCounts) {
    totals t;
    t.received = 5000;
    t.deferred = 3;
    t.rejected = 4;
    t.disconnected = 5;
    t.rate_limited = 6;
    t.connections = 50;
    t.refused_connections = 2;
    t.bytes = 12345;
    const std::string text = summary_text(t, 2.0, 5000);
    EXPECT_NE(text.find("5000 message(s) received in 2.000 s: 2500 messages/s, 9000000 messages/hour"),
              std::string::npos)
        << text;
    EXPECT_NE(text.find("of 5000 expected"), std::string::npos) << text;
    const std::string json = summary_json(t, 2.0, 5000);
    for (const char* field : {"\"received\":5000", "\"expected\":5000", "\"deferred\":3", "\"rejected\":4",
                              "\"disconnected\":5", "\"rate_limited\":6", "\"connections\":50",
                              "\"refused_connections\":2", "\"bytes\":12345", "\"messages_per_second\":2500.0"}) {
        EXPECT_NE(json.find(field), std::string::npos) << field << " in " << json;
    }
    EXPECT_EQ(json.front(), '{');
    EXPECT_EQ(json.substr(json.size() - 2), "}\n");
}

TEST(SinkStats, ZeroSecondsGivesZeroRates) {
    totals t;
    t.received = 3;
    EXPECT_NE(summary_json(t, 0, 0).find("\"messages_per_second\":0.0"), std::string::npos);
    EXPECT_NE(progress_line(t, totals{}, 0).find("received 0/s (3)"), std::string::npos);
}

}  // namespace
}  // namespace ringrelay::sink
