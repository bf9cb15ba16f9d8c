// Unit tests of /api/v1/suppressions' vocabulary (queue/suppression_request.h, issue 18): POST
// and DELETE bodies and GET query strings checked with the field named, pages chosen with a
// cursor, and the JSON answers.
#include "queue/suppression_request.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

using namespace ringrelay::queue;

namespace {

suppression_entry entry(std::string tenant, std::string address, std::uint64_t time_s = 1700000000) {
    return suppression_entry{std::move(tenant), std::move(address), time_s * 1000000, 0,
                             suppression_source::hard_bounce, {}, {}};
}

struct bad_body {
    const char* label;
    const char* body;
    const char* error_has;
};

class SuppressionAddRefuses : public ::testing::TestWithParam<bad_body> {};

TEST_P(SuppressionAddRefuses, NamingTheField) {
    const auto r = parse_suppression_add(GetParam().body);
    ASSERT_FALSE(r.has_value()) << GetParam().label;
    EXPECT_NE(r.error().find(GetParam().error_has), std::string::npos) << r.error();
}

INSTANTIATE_TEST_SUITE_P(
    Bodies, SuppressionAddRefuses,
    ::testing::Values(bad_body{"not JSON", "{", "not valid JSON"},
                      bad_body{"not an object", "[1]", "expected a JSON object"},
                      bad_body{"unknown field", R"({"tenant":"t","address":"a@b","foo":1})", "unknown field \"foo\""},
                      bad_body{"no tenant", R"({"address":"a@b"})", "\"tenant\" is required"},
                      bad_body{"empty tenant", R"({"tenant":"","address":"a@b"})", "\"tenant\": empty"},
                      bad_body{"tenant not a string", R"({"tenant":7,"address":"a@b"})", "\"tenant\": expected a string"},
                      bad_body{"no address", R"({"tenant":"t"})", "one of \"address\", \"addresses\" is required"},
                      bad_body{"both", R"({"tenant":"t","address":"a@b","addresses":["c@d"]})", "only one of"},
                      bad_body{"not an address", R"({"tenant":"t","address":"nobody"})", "\"address\": not an address"},
                      bad_body{"space in address", R"({"tenant":"t","address":"a b@c"})", "\"address\": holds a space"},
                      bad_body{"addresses not an array", R"({"tenant":"t","addresses":"a@b"})", "\"addresses\": expected an array"},
                      bad_body{"addresses empty", R"({"tenant":"t","addresses":[]})", "\"addresses\": empty"},
                      bad_body{"addresses hold a number", R"({"tenant":"t","addresses":["a@b",3]})", "\"addresses\": expected an array"},
                      bad_body{"reason not a string", R"({"tenant":"t","address":"a@b","reason":1})", "\"reason\": expected a string"},
                      bad_body{"reason with a newline", R"({"tenant":"t","address":"a@b","reason":"a\nb"})", "\"reason\": holds a control"},
                      bad_body{"tenant twice", R"({"tenant":"t","tenant":"u","address":"a@b"})", "\"tenant\": given twice"}),
    [](const auto& info) {
        std::string name;
        for (const char c : std::string(info.param.label)) name += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
        return name;
    });

TEST(SuppressionRequest, AddTakesOneOrManyAddressesLowerCasedOnceEach) {
    auto one = parse_suppression_add(R"({"tenant":"Shop.Example","address":"Gone@X.test","reason":"asked"})");
    ASSERT_TRUE(one.has_value()) << one.error();
    EXPECT_EQ(one->tenant, "shop.example");
    ASSERT_EQ(one->addresses, std::vector<std::string>{"gone@x.test"});
    EXPECT_EQ(one->reason, "asked");
    auto many = parse_suppression_add(R"({"tenant":"t","addresses":["a@x","B@x","b@X","a@x"]})");
    ASSERT_TRUE(many.has_value()) << many.error();
    EXPECT_EQ(many->addresses, (std::vector<std::string>{"a@x", "b@x"}));
    EXPECT_TRUE(many->reason.empty());
}

TEST(SuppressionRequest, AddRefusesMoreThanTheMaximumAddresses) {
    std::string body = R"({"tenant":"t","addresses":[)";
    for (std::size_t i = 0; i <= suppression_max_addresses; ++i) body += (i ? ",\"u" : "\"u") + std::to_string(i) + "@x\"";
    body += "]}";
    auto r = parse_suppression_add(body);
    ASSERT_FALSE(r.has_value());
    EXPECT_NE(r.error().find("more than 1000"), std::string::npos) << r.error();
}

TEST(SuppressionRequest, RemoveTakesABodyOrTheQueryButNoReason) {
    auto body = parse_suppression_remove(R"({"tenant":"T","address":"A@x"})", "");
    ASSERT_TRUE(body.has_value()) << body.error();
    EXPECT_EQ(body->tenant, "t");
    EXPECT_EQ(body->addresses, std::vector<std::string>{"a@x"});
    auto query = parse_suppression_remove("", "tenant=T&address=a%40X");
    ASSERT_TRUE(query.has_value()) << query.error();
    EXPECT_EQ(query->tenant, "t");
    EXPECT_EQ(query->addresses, std::vector<std::string>{"a@x"});
    auto reason = parse_suppression_remove(R"({"tenant":"t","address":"a@x","reason":"r"})", "");
    ASSERT_FALSE(reason.has_value());
    EXPECT_NE(reason.error().find("unknown field \"reason\""), std::string::npos) << reason.error();
    EXPECT_FALSE(parse_suppression_remove(R"({"tenant":"t","address":"a@x"})", "tenant=t").has_value()) << "both";
    auto missing = parse_suppression_remove("", "tenant=t");
    ASSERT_FALSE(missing.has_value());
    EXPECT_NE(missing.error().find("\"address\" is required"), std::string::npos) << missing.error();
    auto unknown = parse_suppression_remove("", "tenant=t&address=a@x&limit=3");
    ASSERT_FALSE(unknown.has_value());
    EXPECT_NE(unknown.error().find("unknown parameter \"limit\""), std::string::npos) << unknown.error();
}

TEST(SuppressionRequest, QueryReadsFiltersLimitAndPercentEscapes) {
    auto q = parse_suppression_query("tenant=Shop.Example&address=a%2Bb%40x.test&limit=5");
    ASSERT_TRUE(q.has_value()) << q.error();
    EXPECT_EQ(q->tenant, "shop.example");
    EXPECT_EQ(q->address, "a+b@x.test");
    EXPECT_EQ(q->limit, 5u);
    EXPECT_FALSE(q->after);
    auto none = parse_suppression_query("");
    ASSERT_TRUE(none.has_value());
    EXPECT_EQ(none->limit, suppression_default_limit);
    for (const char* bad : {"limit=0", "limit=1001", "limit=x", "limit=", "foo=1", "tenant=a&tenant=b", "tenant=%4",
                            "tenant=%zz", "cursor=abc", "cursor=00", "address=nobody"})
        EXPECT_FALSE(parse_suppression_query(bad).has_value()) << bad;
    EXPECT_EQ(target_query("/api/v1/suppressions?limit=2"), "limit=2");
    EXPECT_EQ(target_query("/api/v1/suppressions"), "");
}

TEST(SuppressionRequest, PagesFollowTheCursorToTheEndWithoutRepeatsOrGaps) {
    std::vector<suppression_entry> all;
    for (const char* t : {"a", "b"})
        for (int i = 0; i < 5; ++i) all.push_back(entry(t, "u" + std::to_string(i) + "@x"));
    suppression_query q;
    q.limit = 3;
    std::vector<std::string> seen;
    for (int pages = 0; pages < 10; ++pages) {
        const auto page = select_suppressions(all, q);
        EXPECT_EQ(page.matched, 10u);
        for (const auto* e : page.entries) seen.push_back(e->tenant + "/" + e->address);
        if (!page.more) break;
        auto next = parse_suppression_query("limit=3&cursor=" + page.next_cursor);
        ASSERT_TRUE(next.has_value()) << next.error();
        q = *next;
    }
    ASSERT_EQ(seen.size(), 10u);
    for (std::size_t i = 0; i < all.size(); ++i) EXPECT_EQ(seen[i], all[i].tenant + "/" + all[i].address);
}

TEST(SuppressionRequest, FiltersByTenantAndAddress) {
    std::vector<suppression_entry> all{entry("a", "x@y"), entry("a", "z@y"), entry("b", "x@y")};
    suppression_query q;
    q.tenant = "a";
    auto page = select_suppressions(all, q);
    EXPECT_EQ(page.entries.size(), 2u);
    q.tenant.clear();
    q.address = "x@y";
    page = select_suppressions(all, q);
    ASSERT_EQ(page.entries.size(), 2u);
    EXPECT_EQ(page.entries[1]->tenant, "b");
    EXPECT_FALSE(page.more);
}

TEST(SuppressionRequest, PageRendersEveryFieldAndTheCursor) {
    std::vector<suppression_entry> all{entry("t", "a@x", 1700000000), entry("t", "b@x")};
    all[0].source = suppression_source::api;
    all[0].reason = "said \"stop\"";
    all[1].queue_id = 0xAB;
    suppression_query q;
    q.limit = 1;
    const std::string one = render_suppression_page(select_suppressions(all, q), 86400);
    EXPECT_NE(one.find(R"("tenant": "t", "address": "a@x", "added": "2023-11-14T22:13:20.000000Z", "expires": "2023-11-15T22:13:20.000000Z", "source": "api", "reason": "said \"stop\"", "queue_id": null)"),
              std::string::npos)
        << one;
    EXPECT_NE(one.find(R"("count": 1, "matched": 2, "next_cursor": ")"), std::string::npos) << one;
    q.limit = 10;
    const std::string both = render_suppression_page(select_suppressions(all, q), 0);
    EXPECT_NE(both.find(R"("expires": null, "source": "hard-bounce", "reason": null, "queue_id": "00000000000000AB")"),
              std::string::npos)
        << both;
    EXPECT_NE(both.find(R"("next_cursor": null)"), std::string::npos) << both;
}

}  // namespace
