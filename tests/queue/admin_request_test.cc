// tests/queue/admin_request_test.cc: the queue control API's requests (issue 18): bodies
// checked field by field (the error names the field), queue ids, shards' reports merged and
// rendered as JSON, qshape's age buckets.
#include "queue/admin_request.h"

#include <gtest/gtest.h>

#include <string>
#include <string_view>

using namespace ringrelay::queue;

namespace {

struct bad_body {
    const char* label;
    admin_action action;
    const char* body;
    const char* error;
};

class AdminRequestBadBody : public ::testing::TestWithParam<bad_body> {};

TEST_P(AdminRequestBadBody, IsRefusedNamingTheField) {
    const bad_body& c = GetParam();
    const auto r = parse_admin_body(c.action, c.body);
    ASSERT_FALSE(r.has_value()) << c.label;
    EXPECT_EQ(r.error(), c.error) << c.label;
}

INSTANTIATE_TEST_SUITE_P(
    Table, AdminRequestBadBody,
    ::testing::Values(
        bad_body{"not_json", admin_action::suspend, "{site", "body: not valid JSON: The JSON document has an improper structure: missing or superfluous commas, braces, missing keys, etc."},
        bad_body{"not_object", admin_action::resume, "[1]", "body: expected a JSON object"},
        bad_body{"unknown_field", admin_action::suspend, R"({"site": "a", "duration": "1h", "x": 1})", "unknown field \"x\""},
        bad_body{"not_string", admin_action::suspend, R"({"site": 3, "duration": "1h"})", "\"site\": expected a string"},
        bad_body{"empty_value", admin_action::resume, R"({"domain": ""})", "\"domain\": empty"},
        bad_body{"bad_duration", admin_action::suspend, R"({"site": "a", "duration": "1x"})",
                 "\"duration\": not a duration: \"1x\": unknown unit \"x\" (use d, h, m, s or ms)"},
        bad_body{"zero_duration", admin_action::suspend, R"({"site": "a", "duration": "0s"})", "\"duration\": must be more than 0"},
        bad_body{"no_duration", admin_action::suspend, R"({"tenant": "a"})", "\"duration\" is required"},
        bad_body{"no_selector", admin_action::suspend, R"({"duration": "1h"})",
                 "one of \"site\", \"provider\", \"domain\", \"tenant\" is required"},
        bad_body{"two_selectors", admin_action::resume, R"({"site": "a", "domain": "b"})",
                 "only one of \"site\", \"provider\", \"domain\", \"tenant\" may be given"},
        bad_body{"resume_duration", admin_action::resume, R"({"site": "a", "duration": "1h"})", "unknown field \"duration\""},
        bad_body{"flush_site", admin_action::flush, R"({"site": "a"})", "unknown field \"site\""},
        bad_body{"bounce_no_reason", admin_action::bounce, R"({"domain": "a"})", "\"reason\" is required"},
        bad_body{"bounce_bad_id", admin_action::bounce, R"({"queue_id": "12", "reason": "r"})",
                 "\"queue_id\": not a queue id (16 hex digits): \"12\""},
        bad_body{"bounce_tenant", admin_action::bounce, R"({"tenant": "t", "reason": "r"})", "unknown field \"tenant\""}),
    [](const auto& info) { return std::string(info.param.label); });

TEST(AdminRequest, ReadsASuspensionLowerCased) {
    const auto r = parse_admin_body(admin_action::suspend, R"({"provider": "Gmail", "duration": "1h"})");
    ASSERT_TRUE(r.has_value()) << r.error();
    EXPECT_EQ(r->selector, admin_selector::provider);
    EXPECT_EQ(r->value, "gmail");
    EXPECT_EQ(r->duration_us, 3600ull * 1'000'000);
}

TEST(AdminRequest, FlushesEverythingWithoutABody) {
    for (const char* body : {"", " \r\n", "{}"}) {
        const auto r = parse_admin_body(admin_action::flush, body);
        ASSERT_TRUE(r.has_value()) << body;
        EXPECT_EQ(r->selector, admin_selector::all);
    }
    EXPECT_FALSE(parse_admin_body(admin_action::resume, "").has_value());
}

TEST(AdminRequest, ReadsABounceByQueueId) {
    const auto r = parse_admin_body(admin_action::bounce, R"({"queue_id": "00000000000A0b1C", "reason": "spam run"})");
    ASSERT_TRUE(r.has_value()) << r.error();
    EXPECT_EQ(r->selector, admin_selector::queue_id);
    EXPECT_EQ(r->queue_id, 0xA0B1Cu);
    EXPECT_EQ(r->reason, "spam run");
}

TEST(AdminRequest, ParsesOnlySixteenHexDigitsAsAQueueId) {
    EXPECT_EQ(parse_queue_id("FFFFFFFFFFFFFFFF"), 0xFFFFFFFFFFFFFFFFu);
    EXPECT_FALSE(parse_queue_id("FFFFFFFFFFFFFFF").has_value());
    EXPECT_FALSE(parse_queue_id("FFFFFFFFFFFFFFFFF").has_value());
    EXPECT_FALSE(parse_queue_id("FFFFFFFFFFFFFFFG").has_value());
}

TEST(AdminRequest, PutsAgesInQshapeBucketsAtTheirExactBoundaries) {
    constexpr std::uint64_t arrival = 1'000'000'000;
    constexpr std::uint64_t s = 1'000'000;
    constexpr std::uint64_t m = 60 * s;
    struct age_case {
        const char* label;
        std::uint64_t age_us;
        const char* bucket;
    };
    const age_case cases[] = {
        {"just arrived", 0, "0-5m"},           {"4m59s", 4 * m + 59 * s, "0-5m"},
        {"4m59.999999s", 5 * m - 1, "0-5m"},   {"5m", 5 * m, "5-10m"},
        {"9m59s", 9 * m + 59 * s, "5-10m"},     {"10m", 10 * m, "10-20m"},
        {"20m", 20 * m, "20-40m"},              {"40m", 40 * m, "40-80m"},
        {"80m", 80 * m, "80-160m"},             {"160m", 160 * m, "160-320m"},
        {"319m59s", 319 * m + 59 * s, "160-320m"}, {"320m", 320 * m, "320m+"},
        {"30 days", 30 * 24 * 60 * m, "320m+"},
    };
    for (const age_case& c : cases)
        EXPECT_EQ(age_bucket_name(age_bucket(arrival, arrival + c.age_us)), std::string_view(c.bucket)) << c.label;
    // The wall clock went back: the message counts as just arrived.
    EXPECT_EQ(age_bucket(arrival, arrival - 1), 0u);
    EXPECT_EQ(age_bucket_name(age_bucket_count), "");
}

TEST(AdminRequest, MergesShardsRowsBySite) {
    admin_report a;
    site_row owner;
    owner.site = "mx.example.org";
    owner.owned = true;
    owner.queued = 2;
    owner.ages[1] = 1;  // 5-10m
    owner.ages[7] = 1;  // 320m+
    owner.oldest_us = 5'000'000;
    owner.state = site_state::backing_off;
    owner.connection_limit = 4;
    owner.rate_milli = 2500;
    a.sites.push_back(owner);
    admin_report b;
    site_row origin;
    origin.site = "mx.example.org";
    origin.deferred = 3;
    origin.oldest_us = 1'000'000;
    origin.next_attempt_us = 9'000'000;
    b.sites.push_back(origin);
    site_row other;
    other.site = "example.net";
    other.deferred = 1;
    other.state = site_state::suspended;
    b.sites.push_back(other);
    site_row owner_b;  // the same site's jobs held by a second owner (another egress source's key)
    owner_b.site = "mx.example.org";
    owner_b.queued = 1;
    owner_b.ages[1] = 1;
    b.sites.push_back(owner_b);
    merge(a, std::move(b));
    ASSERT_EQ(a.sites.size(), 2u);
    const site_row& m = a.sites[0];
    EXPECT_EQ(m.queued, 3u);
    EXPECT_EQ(m.ages, (age_counts{0, 2, 0, 0, 0, 0, 0, 1}));
    EXPECT_EQ(m.deferred, 3u);
    EXPECT_EQ(m.oldest_us, 1'000'000u);
    EXPECT_EQ(m.next_attempt_us, 9'000'000u);
    EXPECT_EQ(m.state, site_state::backing_off);
    admin_request q;
    q.action = admin_action::queue;
    EXPECT_EQ(render_admin_report(q, a, 0),
              "{\"sites\": [\n"
              "  {\"site\": \"example.net\", \"queued\": 0, \"ages\": {\"0-5m\": 0, \"5-10m\": 0, \"10-20m\": 0, "
              "\"20-40m\": 0, \"40-80m\": 0, \"80-160m\": 0, \"160-320m\": 0, \"320m+\": 0}, \"deferred\": 1, "
              "\"in_flight\": 0, \"oldest\": null, \"next_attempt\": null, \"state\": \"suspended\", "
              "\"connections\": 0, \"connection_limit\": null, \"message_rate\": null},\n"
              "  {\"site\": \"mx.example.org\", \"queued\": 3, \"ages\": {\"0-5m\": 0, \"5-10m\": 2, \"10-20m\": 0, "
              "\"20-40m\": 0, \"40-80m\": 0, \"80-160m\": 0, \"160-320m\": 0, \"320m+\": 1}, \"deferred\": 3, "
              "\"in_flight\": 0, \"oldest\": \"1970-01-01T00:00:01.000000Z\", "
              "\"next_attempt\": \"1970-01-01T00:00:09.000000Z\", \"state\": \"backing off\", \"connections\": 0, "
              "\"connection_limit\": 4, \"message_rate\": 2.500}\n"
              "], \"ages\": {\"0-5m\": 0, \"5-10m\": 2, \"10-20m\": 0, \"20-40m\": 0, \"40-80m\": 0, \"80-160m\": 0, "
              "\"160-320m\": 0, \"320m+\": 1}}\n");
    EXPECT_EQ(render_admin_report(q, admin_report{}, 0),
              "{\"sites\": [], \"ages\": {\"0-5m\": 0, \"5-10m\": 0, \"10-20m\": 0, \"20-40m\": 0, "
              "\"40-80m\": 0, \"80-160m\": 0, \"160-320m\": 0, \"320m+\": 0}}\n");
}

TEST(AdminRequest, RendersAMessageWithItsRecipients) {
    admin_report r;
    message_view& m = r.message.emplace();
    m.queue_id = 0x1F;
    m.sender = "a@example.org";
    m.client = "127.0.0.1";
    m.size = 120;
    m.arrival_us = 1'000'000;
    recipient_view& x = m.recipients.emplace_back();
    x.address = "b@example.net";
    x.state = "deferred";
    x.attempts = 2;
    x.last_reply = "451 4.3.0 \"busy\"";
    admin_request q;
    q.action = admin_action::message;
    EXPECT_EQ(render_admin_report(q, r, 61'000'000),
              "{\"queue_id\": \"000000000000001F\", \"shard\": 0, \"sender\": \"a@example.org\", \"client\": \"127.0.0.1\", "
              "\"size\": 120, \"received\": \"1970-01-01T00:00:01.000000Z\", \"age_seconds\": 60, \"next_attempt\": null, "
              "\"recipients\": [\n"
              "  {\"address\": \"b@example.net\", \"state\": \"deferred\", \"attempts\": 2, "
              "\"last_reply\": \"451 4.3.0 \\\"busy\\\"\", \"site\": null}\n"
              "]}\n");
    r.message.reset();
    EXPECT_EQ(render_admin_report(q, r, 0), "");
}

}  // namespace
