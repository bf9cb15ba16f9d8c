// tests/tools/bench/stats_test.cc: ringrelay-bench's statistics and summary: merging shard
// stats, the exit code, the text summary, and the JSON summary parsed back with simdjson.
#include "tools/bench/stats.h"

#include <gtest/gtest.h>
#include <simdjson.h>

#include <string>

namespace ringrelay::bench {
namespace {

bench_options sample_options() {
    bench_options o;
    o.target_text = "127.0.0.1:2525";
    o.connections = 50;
    o.shards = 2;
    o.mode = run_mode::messages;
    o.messages = 1000;
    o.size = 2048;
    o.recipients = 2;
    return o;
}

// Shard A: 600 accepted at 1..600 us ack; shard B: 390 accepted at 1001..1390 us, four 451,
// three 550, two refused locally, one lost.
void fill(run_stats& a, run_stats& b) {
    for (std::uint64_t i = 1; i <= 600; ++i) {
        a.ack_ns.record(i * 1000);
        a.transaction_ns.record(i * 2000);
    }
    a.accepted = 600;
    a.replies[250] = 600;
    a.connections_opened = 25;
    a.last_outcome_ns = 5'000;
    for (std::uint64_t i = 1001; i <= 1390; ++i) {
        b.ack_ns.record(i * 1000);
        b.transaction_ns.record(i * 2000);
    }
    b.accepted = 390;
    b.replies[250] = 390;
    b.transient_failures = 4;
    b.replies[451] = 4;
    b.permanent_failures = 3;
    b.replies[550] = 3;
    b.local_refusals = 2;
    b.lost_in_transaction = 1;
    b.session_replies[421] = 5;
    b.connections_opened = 30;
    b.connect_errors = 2;
    b.connections_lost = 6;
    b.timeouts = 1;
    b.errors["connect 127.0.0.1:2525: Connection refused"] = 2;
    b.errors["a \"quoted\"\\ text\twith tab"] = 1;
    b.reply_texts[451] = "4.3.0 try \"later\"";
    b.last_outcome_ns = 9'000;
}

TEST(RunStats, MergeAddsEverything) {
    run_stats a, b;
    fill(a, b);
    run_stats total;
    total.merge(a);
    total.merge(b);
    EXPECT_EQ(total.accepted, 990u);
    EXPECT_EQ(total.failed(), 10u);
    EXPECT_EQ(total.completed(), 1000u);
    EXPECT_EQ(total.replies[250], 990u);
    EXPECT_EQ(total.replies[451], 4u);
    EXPECT_EQ(total.connections_opened, 55u);
    EXPECT_EQ(total.ack_ns.count(), 990u);
    EXPECT_EQ(total.ack_ns.min(), 1000u);
    EXPECT_EQ(total.ack_ns.max(), 1'390'000u);
    EXPECT_EQ(total.errors.size(), 2u);
    EXPECT_EQ(total.last_outcome_ns, 9'000);
}

TEST(RunStats, ExitCodeIsZeroOnlyWhenEveryMessageWasAccepted) {
    const bench_options o = sample_options();
    run_report report;
    report.options = &o;
    run_stats s;
    s.accepted = 1000;
    EXPECT_EQ(exit_code(report, s), 0);
    s.transient_failures = 1;
    EXPECT_EQ(exit_code(report, s), 1);
    s.transient_failures = 0;
    s.accepted = 999;  // --messages 1000 but one never completed (interrupted)
    EXPECT_EQ(exit_code(report, s), 1);
    s.accepted = 1000;
    report.gave_up = true;
    EXPECT_EQ(exit_code(report, s), 1);
    bench_options d = o;
    d.mode = run_mode::duration;
    report.options = &d;
    report.gave_up = false;
    s.accepted = 5;
    EXPECT_EQ(exit_code(report, s), 0);
    s.accepted = 0;
    EXPECT_EQ(exit_code(report, s), 1);  // nothing was accepted at all
}

TEST(Summary, JsonParsesBackWithEveryField) {
    run_stats a, b, total;
    fill(a, b);
    total.merge(a);
    total.merge(b);
    const bench_options o = sample_options();
    run_report report;
    report.options = &o;
    report.seconds = 2.0;
    const std::string json = format_json(report, total);
    ASSERT_FALSE(json.empty());
    EXPECT_EQ(json.back(), '\n');
    EXPECT_EQ(json.find('\n'), json.size() - 1) << "one line";

    simdjson::dom::parser parser;
    simdjson::dom::element doc;
    ASSERT_EQ(parser.parse(json).get(doc), simdjson::SUCCESS) << json;
    EXPECT_EQ(std::string_view(doc["target"]), "127.0.0.1:2525");
    EXPECT_EQ(uint64_t(doc["connections"]), 50u);
    EXPECT_EQ(uint64_t(doc["shards"]), 2u);
    EXPECT_EQ(uint64_t(doc["size"]), 2048u);
    EXPECT_EQ(uint64_t(doc["recipients"]), 2u);
    EXPECT_EQ(std::string_view(doc["mode"]), "messages");
    EXPECT_TRUE(doc["rate"].is_null());
    EXPECT_TRUE(bool(doc["pipelining"]));
    EXPECT_FALSE(bool(doc["chunking"]));
    EXPECT_EQ(uint64_t(doc["messages"]), 1000u);
    EXPECT_EQ(uint64_t(doc["accepted"]), 990u);
    EXPECT_EQ(uint64_t(doc["failed"]), 10u);
    EXPECT_DOUBLE_EQ(double(doc["seconds"]), 2.0);
    EXPECT_DOUBLE_EQ(double(doc["messages_per_second"]), 495.0);
    EXPECT_DOUBLE_EQ(double(doc["messages_per_hour"]), 495.0 * 3600);

    // 990 ack values: 1..600 us and 1001..1390 us. p50 is the 495th value: 495 us.
    const simdjson::dom::element ack = doc["ack_latency_us"];
    EXPECT_EQ(uint64_t(ack["count"]), 990u);
    EXPECT_DOUBLE_EQ(double(ack["min"]), 1.0);
    EXPECT_DOUBLE_EQ(double(ack["max"]), 1390.0);
    EXPECT_NEAR(double(ack["p50"]), 495.0, 495.0 * 0.004);
    EXPECT_NEAR(double(ack["p90"]), 1291.0, 1291.0 * 0.004);  // 891st: 1001 + 290
    EXPECT_NEAR(double(ack["p99"]), 1381.0, 1381.0 * 0.004);  // 981st (980.1 rounds up)
    EXPECT_DOUBLE_EQ(double(ack["p99_9"]), 1390.0);           // the 990th value is the largest: exact
    EXPECT_GT(double(ack["mean"]), 0.0);
    const simdjson::dom::element txn = doc["transaction_latency_us"];
    EXPECT_NEAR(double(txn["p50"]), 990.0, 990.0 * 0.004);
    EXPECT_DOUBLE_EQ(double(txn["max"]), 2780.0);

    EXPECT_EQ(uint64_t(doc["replies"]["250"]), 990u);
    EXPECT_EQ(uint64_t(doc["replies"]["451"]), 4u);
    EXPECT_EQ(uint64_t(doc["replies"]["550"]), 3u);
    EXPECT_EQ(uint64_t(doc["session_replies"]["421"]), 5u);
    EXPECT_EQ(uint64_t(doc["failures"]["transient"]), 4u);
    EXPECT_EQ(uint64_t(doc["failures"]["permanent"]), 3u);
    EXPECT_EQ(uint64_t(doc["failures"]["local_refusals"]), 2u);
    EXPECT_EQ(uint64_t(doc["failures"]["lost_in_transaction"]), 1u);
    EXPECT_EQ(uint64_t(doc["connection_events"]["opened"]), 55u);
    EXPECT_EQ(uint64_t(doc["connection_events"]["connect_errors"]), 2u);
    EXPECT_EQ(uint64_t(doc["connection_events"]["lost"]), 6u);
    EXPECT_EQ(uint64_t(doc["connection_events"]["timeouts"]), 1u);
    EXPECT_EQ(uint64_t(doc["unsent"]), 0u);
    EXPECT_EQ(uint64_t(doc["errors"]["connect 127.0.0.1:2525: Connection refused"]), 2u);
    EXPECT_EQ(uint64_t(doc["errors"]["a \"quoted\"\\ text\twith tab"]), 1u);  // escaped and back
    EXPECT_EQ(std::string_view(doc["reply_texts"]["451"]), "4.3.0 try \"later\"");
    EXPECT_FALSE(bool(doc["gave_up"]));
    EXPECT_FALSE(bool(doc["interrupted"]));
}

TEST(Summary, JsonOfAnOpenLoopRunWithNothingDone) {
    bench_options o = sample_options();
    o.mode = run_mode::duration;
    o.rate = 1500;
    o.chunking = protocol::extension_use::when_offered;
    run_stats s;
    s.unsent = 12;
    run_report report;
    report.options = &o;
    report.seconds = 0;
    report.gave_up = true;
    report.interrupted = true;
    simdjson::dom::parser parser;
    simdjson::dom::element doc;
    const std::string json = format_json(report, s);
    ASSERT_EQ(parser.parse(json).get(doc), simdjson::SUCCESS) << json;
    EXPECT_EQ(std::string_view(doc["mode"]), "duration");
    EXPECT_DOUBLE_EQ(double(doc["rate"]), 1500.0);
    EXPECT_TRUE(bool(doc["chunking"]));
    EXPECT_EQ(uint64_t(doc["messages"]), 0u);
    EXPECT_DOUBLE_EQ(double(doc["messages_per_second"]), 0.0);
    EXPECT_EQ(uint64_t(doc["ack_latency_us"]["count"]), 0u);
    EXPECT_EQ(uint64_t(doc["unsent"]), 12u);
    EXPECT_TRUE(bool(doc["gave_up"]));
    EXPECT_TRUE(bool(doc["interrupted"]));
    simdjson::dom::object replies;
    ASSERT_EQ(doc["replies"].get(replies), simdjson::SUCCESS);
    EXPECT_EQ(replies.size(), 0u);
}

TEST(Summary, TextNamesThroughputLatencyAndCodes) {
    run_stats a, b, total;
    fill(a, b);
    total.merge(a);
    total.merge(b);
    const bench_options o = sample_options();
    run_report report;
    report.options = &o;
    report.seconds = 2.0;
    const std::string text = format_text(report, total);
    for (const char* expected :
         {"127.0.0.1:2525, 50 connections, 2 shards, 2048-byte messages, 2 recipients, closed loop",
          "1,000 completed: 990 accepted, 10 failed, in 2.000 s", "495 messages/s", "1.78 million messages/hour",
          "ack latency  p50 0.49", "p99.9 1.390 ms", "max 1.390 ms", "transaction  p50 0.9", "250: 990, 451: 4, 550: 3",
          "4 transient (4xx), 3 permanent", "refused with 421: 5", "55 opened, 2 connect errors, 6 lost, 1 timeouts",
          "connect 127.0.0.1:2525: Connection refused (x2)", "451 4.3.0 try"}) {
        EXPECT_NE(text.find(expected), std::string::npos) << "missing \"" << expected << "\" in:\n" << text;
    }
}

}  // namespace
}  // namespace ringrelay::bench
