// Unit tests of queue/shaping_rules.h and queue/site_name.h (issue 17): site names (MX rollup,
// routes); the rules file: every key parsed, precedence domain > provider > default field by
// field, the longest mx_suffix winning, later files merged over earlier ones field by field,
// automation rules replaced by name or put first; broken files refused with the file, the key
// path and the reason, word for word; the shipped etc/shaping.json loads, cites a source for
// every rule, leaves the flags' three default fields alone, and its automation rules fire on the
// providers' real reply texts (and not on others); the flags make the default rule.
#include "queue/shaping_rules.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "queue/site_name.h"

using namespace ringrelay::queue;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

shaping_rules parse(std::string_view json) {
    auto r = parse_shaping_rules(json, "test.json");
    EXPECT_TRUE(r.has_value()) << (r ? "" : r.error());
    return r ? std::move(*r) : shaping_rules{};
}

std::string parse_error(std::string_view json) {
    auto r = parse_shaping_rules(json, "test.json");
    if (r) return "(loaded)";
    return r.error();
}

const shaping_rules& shipped() {
    static const shaping_rules rules = [] {
        const std::vector<std::string> none;
        auto load = load_shaping_rules(flag_default_rule(16, 1000, 5), none, shipped_shaping::load);
        if (!load) {
            ADD_FAILURE() << load.error();
            return shaping_rules{};
        }
        return std::move(load->rules);
    }();
    return rules;
}

resolved_shaping resolve(const shaping_rules& r, std::string_view domain, std::vector<std::string_view> mx) {
    return r.resolve(domain, std::span<const std::string_view>(mx));
}

// --- Site names -------------------------------------------------------------------------------

TEST(SiteName, MxHostsSortedLowerCasedDeduplicated) {
    const std::vector<std::string_view> mx = {"ALT1.ASPMX.L.GOOGLE.COM.", "aspmx.l.google.com", "alt1.aspmx.l.google.com"};
    EXPECT_EQ(site_name_of_mx(std::span<const std::string_view>(mx)), "alt1.aspmx.l.google.com,aspmx.l.google.com");
}

TEST(SiteName, DomainsWithTheSameMxShareTheSite) {
    const std::vector<std::string> a = {"mx2.example.net", "mx1.example.net"};
    const std::vector<std::string> b = {"MX1.example.net.", "mx2.EXAMPLE.net"};
    EXPECT_EQ(site_name_of_mx(std::span<const std::string>(a)), site_name_of_mx(std::span<const std::string>(b)));
    EXPECT_EQ(site_name_of_mx(std::span<const std::string>(a)), "mx1.example.net,mx2.example.net");
}

TEST(SiteName, NoHostsNoName) {
    EXPECT_EQ(site_name_of_mx(std::span<const std::string>()), "");
}

TEST(SiteName, RouteIsHostAndPort) {
    EXPECT_EQ(site_name_of_route("192.0.2.1", 25), "192.0.2.1:25");
    EXPECT_EQ(site_name_of_route("Smtp.Example.NET.", 587), "smtp.example.net:587");
    EXPECT_EQ(site_name_of_route("2001:db8::1", 25), "[2001:db8::1]:25");
    EXPECT_EQ(site_name_of_route("[2001:db8::1]", 25), "[2001:db8::1]:25");
}

// --- Parsing ----------------------------------------------------------------------------------

TEST(ShapingRules, ParsesEveryKey) {
    const shaping_rules r = parse(R"({
      "version": 1, "about": "test", "_comment": {"anything": [1, 2]},
      "default": {"connection_limit": 16, "max_deliveries_per_connection": 1000, "idle_timeout": "30s",
                  "max_connection_rate": "600/min", "max_message_rate": "100/s,max_burst=5",
                  "max_recipients_per_transaction": 100, "adaptive": false,
                  "source": ["https://example.org/a", "https://example.org/b"], "note": "n", "_x": 1},
      "domains": {"Example.NET": {"max_message_rate": "50/s"}},
      "providers": {"google": {"match": {"mx_suffix": [".Google.com", "googlemail.com."]},
                               "connection_limit": 20, "max_deliveries_per_connection": 50}},
      "automation": [{"name": "y", "provider": "google", "match": "\\[TSS04\\]", "action": "suspend", "duration": "1h"},
                     {"match": "^421 4\\.7\\.0", "action": "throttle", "factor": 0.5, "duration": "10m",
                      "source": "s", "note": "n", "_c": true}],
      "warmup": {"ip1": {"start": "2026-12-01", "daily": [200, 500, 1000], "source": "s", "note": "n",
                         "providers": {"google": {"daily": [50, 100]}, "_c": 1}}}})");
    EXPECT_EQ(r.default_rule.connection_limit, 16u);
    EXPECT_EQ(r.default_rule.max_deliveries_per_connection, 1000u);
    EXPECT_EQ(r.default_rule.idle_timeout, seconds(30));
    EXPECT_EQ(r.default_rule.max_connection_rate->count, 600u);
    EXPECT_EQ(r.default_rule.max_message_rate->burst, 5u);
    EXPECT_EQ(r.default_rule.max_recipients_per_transaction, 100u);
    EXPECT_EQ(r.default_rule.adaptive, false);
    ASSERT_EQ(r.warmup.size(), 1u);
    EXPECT_EQ(r.warmup[0].source, "ip1");
    ASSERT_TRUE(r.warmup[0].all_sites.has_value());
    EXPECT_EQ(r.warmup[0].all_sites->start_day, *parse_civil_date("2026-12-01"));
    EXPECT_EQ(r.warmup[0].all_sites->daily, (std::vector<std::uint64_t>{200, 500, 1000}));
    ASSERT_EQ(r.warmup[0].providers.size(), 1u);
    EXPECT_EQ(r.warmup[0].providers[0].provider, "google");
    // A provider's schedule without a start of its own starts with the source's.
    EXPECT_EQ(r.warmup[0].providers[0].schedule.start_day, *parse_civil_date("2026-12-01"));
    EXPECT_EQ(r.warmup[0].providers[0].schedule.daily, (std::vector<std::uint64_t>{50, 100}));
    EXPECT_EQ(r.default_rule.source.size(), 2u);
    ASSERT_EQ(r.domains.size(), 1u);
    EXPECT_EQ(r.domains[0].domain, "example.net");
    ASSERT_EQ(r.providers.size(), 1u);
    EXPECT_EQ(r.providers[0].mx_suffix, (std::vector<std::string>{".google.com", "googlemail.com"}));
    ASSERT_EQ(r.automation.size(), 2u);
    EXPECT_EQ(r.automation[0].action, automation_action::suspend);
    EXPECT_EQ(r.automation[0].duration, std::chrono::hours(1));
    EXPECT_EQ(r.automation[1].action, automation_action::throttle);
    EXPECT_DOUBLE_EQ(r.automation[1].factor, 0.5);
    EXPECT_EQ(r.automation[1].duration, std::chrono::minutes(10));
    EXPECT_TRUE(check_shaping_rules(r).has_value());
}

// Tenant limits (issue 17): a tenant's own rule (compared without case), else "*"; no tenant
// (the null sender without AUTH) has none.
TEST(ShapingRules, TenantRateIsItsOwnElseTheWildcardsAndNoneWithoutATenant) {
    const shaping_rules r = parse(R"({"tenants": {"Alice": {"max_message_rate": "10/s", "source": "ops"},
                                                  "example.org": {"max_message_rate": "600/min,max_burst=5"},
                                                  "quiet.example": {"note": "no rate of its own"},
                                                  "*": {"max_message_rate": "100/s"}}})");
    ASSERT_EQ(r.tenants.size(), 4u);
    EXPECT_EQ(r.tenants.front().key, "*") << "sorted, lower-cased";
    EXPECT_EQ(r.tenant_rate("alice"), parse_shaping_rate("10/s").value());
    EXPECT_EQ(r.tenant_rate("ALICE"), parse_shaping_rate("10/s").value());
    EXPECT_EQ(r.tenant_rate("Example.ORG"), parse_shaping_rate("600/min,max_burst=5").value());
    EXPECT_EQ(r.tenant_rate("quiet.example"), parse_shaping_rate("100/s").value()) << "a rule without a rate";
    EXPECT_EQ(r.tenant_rate("bob"), parse_shaping_rate("100/s").value());
    EXPECT_FALSE(r.tenant_rate("").has_value());
    EXPECT_FALSE(parse(R"({"tenants": {"alice": {"max_message_rate": "1/s"}}})").tenant_rate("bob").has_value())
        << "no \"*\": others have no tenant limit";
}

TEST(ShapingRules, LaterFileMergesTenantsFieldByField) {
    shaping_rules base = parse(R"({"tenants": {"alice": {"max_message_rate": "10/s", "source": "a"},
                                               "bob": {"max_message_rate": "1/s"}}})");
    const shaping_rules over = parse(R"({"tenants": {"ALICE": {"source": "b"}, "carol": {"max_message_rate": "2/s"}}})");
    const shaping_rules m = merge_shaping_rules(std::move(base), over);
    ASSERT_EQ(m.tenants.size(), 3u);
    EXPECT_EQ(m.tenant_rate("alice"), parse_shaping_rate("10/s").value()) << "kept: the later file sets no rate";
    EXPECT_EQ(m.tenants[0].source, std::vector<std::string>{"b"});
    EXPECT_EQ(m.tenant_rate("carol"), parse_shaping_rate("2/s").value());
    EXPECT_EQ(m.tenant_rate("bob"), parse_shaping_rate("1/s").value());
}

// Campaign limits (issue 17): as tenants', keyed by the campaign header's value.
TEST(ShapingRules, CampaignRateIsItsOwnElseTheWildcardsAndNoneWithoutACampaign) {
    const shaping_rules r = parse(R"({"campaign_header": "X-Campaign-Id",
                                      "campaigns": {"Spring-Sale": {"max_message_rate": "5/s", "note": "n"},
                                                    "*": {"max_message_rate": "50/s"}},
                                      "tenants": {"spring-sale": {"max_message_rate": "1/s"}}})");
    EXPECT_EQ(r.campaign_field(), "X-Campaign-Id");
    ASSERT_EQ(r.campaigns.size(), 2u);
    EXPECT_EQ(r.campaigns.back().key, "spring-sale") << "sorted, lower-cased";
    EXPECT_EQ(r.campaign_rate("SPRING-sale"), parse_shaping_rate("5/s").value());
    EXPECT_EQ(r.campaign_rate("other"), parse_shaping_rate("50/s").value());
    EXPECT_FALSE(r.campaign_rate("").has_value());
    EXPECT_EQ(r.tenant_rate("spring-sale"), parse_shaping_rate("1/s").value()) << "tenants are a table of their own";
    EXPECT_EQ(r.keyed_rate(keyed_limit::campaign, "spring-sale"), parse_shaping_rate("5/s").value());
    EXPECT_FALSE(parse(R"({"campaigns": {"a": {"max_message_rate": "1/s"}}})").campaign_rate("b").has_value())
        << "no \"*\": others have no campaign limit";
    EXPECT_TRUE(parse("{}").campaign_field().empty());
}

TEST(ShapingRules, LaterFileMergesCampaignsAndReplacesTheHeader) {
    shaping_rules flags = flag_default_rule(16, 1000, 5, "X-Mailing");
    EXPECT_EQ(flags.campaign_field(), "X-Mailing");
    shaping_rules first = merge_shaping_rules(std::move(flags), parse(R"({"campaigns": {"a": {"max_message_rate": "1/s", "source": "x"}}})"));
    EXPECT_EQ(first.campaign_field(), "X-Mailing") << "a file without campaign_header keeps the flag's";
    shaping_rules second = merge_shaping_rules(std::move(first), parse(R"({"campaign_header": "X-Campaign-Id",
                                                                          "campaigns": {"A": {"source": "y"}, "b": {"max_message_rate": "2/s"}}})"));
    EXPECT_EQ(second.campaign_field(), "X-Campaign-Id");
    ASSERT_EQ(second.campaigns.size(), 2u);
    EXPECT_EQ(second.campaign_rate("a"), parse_shaping_rate("1/s").value()) << "kept: the later file sets no rate";
    EXPECT_EQ(second.campaigns[0].source, std::vector<std::string>{"y"});
    EXPECT_EQ(second.campaign_rate("b"), parse_shaping_rate("2/s").value());
    const shaping_rules off = merge_shaping_rules(std::move(second), parse(R"({"campaign_header": ""})"));
    EXPECT_TRUE(off.campaign_field().empty()) << "\"\" turns it off";
    EXPECT_EQ(off.campaigns.size(), 2u);
}

TEST(ShapingRules, CampaignHeaderFlagIsChecked) {
    const std::vector<std::string> none;
    auto bad = load_shaping_rules(flag_default_rule(16, 1000, 5, "Received"), none, shipped_shaping::skip);
    ASSERT_FALSE(bad.has_value());
    EXPECT_EQ(bad.error(), "--campaign-header \"Received\": the message needs this field: it would be stripped from "
                           "every message");
    auto good = load_shaping_rules(flag_default_rule(16, 1000, 5, "X-Campaign-Id"), none, shipped_shaping::skip);
    ASSERT_TRUE(good.has_value());
    EXPECT_EQ(describe(*good), "shaping: 0 providers, 0 domains, 0 automation rules (no shipped provider rules: "
                               "--no-default-shaping); campaigns by header X-Campaign-Id: 0 rules");
}

TEST(ShapingRules, IssueExampleLoads) {
    const shaping_rules r = parse(R"(
      {"default":   {"connection_limit": 16, "max_deliveries_per_connection": 1000},
       "domains":   {"example.net": {"max_message_rate": "50/s"}},
       "providers": {"google": {"match": {"mx_suffix": [".google.com", ".googlemail.com"]},
                                "connection_limit": 20, "max_deliveries_per_connection": 50}},
       "automation": [{"provider": "google", "match": "\\[TSS04\\]", "action": "suspend", "duration": "1h"},
                      {"match": "^421 4\\.7\\.0", "action": "throttle", "factor": 0.5, "duration": "10m"}]})");
    EXPECT_TRUE(check_shaping_rules(r).has_value());
}

TEST(ShapingRules, WarmupAllowanceByDay) {
    warmup_schedule w;
    w.start_day = *parse_civil_date("2026-12-01");
    w.daily = {200, 500, 1000};
    EXPECT_EQ(warmup_allowance(w, w.start_day - 5), 200u);
    EXPECT_EQ(warmup_allowance(w, w.start_day), 200u);
    EXPECT_EQ(warmup_allowance(w, w.start_day + 2), 1000u);
    EXPECT_FALSE(warmup_allowance(w, w.start_day + 3).has_value());
}

TEST(ShapingRules, CivilDates) {
    EXPECT_EQ(parse_civil_date("1970-01-01"), 0);
    EXPECT_EQ(parse_civil_date("2000-03-01"), 11017);
    EXPECT_EQ(parse_civil_date("2024-02-29"), 19782);
    EXPECT_FALSE(parse_civil_date("2023-02-29"));
    EXPECT_FALSE(parse_civil_date("2026-13-01"));
    EXPECT_FALSE(parse_civil_date("2026-1-01"));
    EXPECT_FALSE(parse_civil_date("1969-12-31"));
    EXPECT_FALSE(parse_civil_date("2026-12-0a"));
}

// --- Errors: the file, the key path and the reason ----------------------------------------------

struct bad_file {
    const char* label;
    const char* json;
    const char* error;
};

class ShapingRulesRefuse : public testing::TestWithParam<bad_file> {};

TEST_P(ShapingRulesRefuse, NamesFileKeyAndReason) { EXPECT_EQ(parse_error(GetParam().json), GetParam().error); }

INSTANTIATE_TEST_SUITE_P(
    Files, ShapingRulesRefuse,
    testing::Values(
        bad_file{"NotJson", "{", "test.json: not valid JSON: The JSON document has an improper structure: missing or superfluous commas, braces, missing keys, etc."},
        bad_file{"NotObject", "[]", "test.json: the top level must be a JSON object (default, domains, providers, automation)"},
        bad_file{"UnknownTopKey", R"({"defaults": {}})",
                 "test.json: defaults: unknown key (the top level has default, domains, providers, tenants, campaigns, "
                 "campaign_header, automation, warmup, version, about)"},
        bad_file{"UnknownLimitKey", R"({"default": {"connection_limits": 3}})",
                 "test.json: default.connection_limits: unknown key (a rule has connection_limit, max_connection_rate, "
                 "max_message_rate, max_deliveries_per_connection, max_recipients_per_transaction, idle_timeout, "
                 "adaptive, source, note)"},
        bad_file{"BadRate", R"({"domains": {"example.net": {"max_message_rate": "10/x"}}})",
                 "test.json: domains.\"example.net\".max_message_rate: \"10/x\": unknown period \"x\" (use s, min, h or day)"},
        bad_file{"RateNotText", R"({"default": {"max_connection_rate": 10}})",
                 "test.json: default.max_connection_rate: expected a rate as text, e.g. \"10/s\" or \"600/min\""},
        bad_file{"ZeroConnections", R"({"default": {"connection_limit": 0}})",
                 "test.json: default.connection_limit: expected an integer from 1 to 100000"},
        bad_file{"FractionConnections", R"({"default": {"connection_limit": 1.5}})",
                 "test.json: default.connection_limit: expected an integer from 1 to 100000"},
        bad_file{"BadDuration", R"({"default": {"idle_timeout": "5 minutes"}})",
                 "test.json: default.idle_timeout: \"5 minutes\": unexpected \" \" (use d, h, m, s or ms)"},
        bad_file{"ZeroDuration", R"({"default": {"idle_timeout": "0s"}})",
                 "test.json: default.idle_timeout: \"0s\": must be from 1s to 1d"},
        bad_file{"AdaptiveNotBool", R"({"default": {"adaptive": "yes"}})",
                 "test.json: default.adaptive: expected true or false"},
        bad_file{"BadWarmupDate", R"({"warmup": {"a": {"start": "2026-02-30", "daily": [1]}}})",
                 "test.json: warmup.\"a\".start: expected a date \"YYYY-MM-DD\""},
        bad_file{"EmptyWarmup", R"({"warmup": {"a": {"start": "2026-02-01", "daily": []}}})",
                 "test.json: warmup.\"a\".daily: expected an array of 1 to 366 daily message counts"},
        bad_file{"ZeroWarmupDay", R"({"warmup": {"a": {"start": "2026-02-01", "daily": [10, 0]}}})",
                 "test.json: warmup.\"a\".daily[2]: expected an integer from 1 to 1000000000"},
        bad_file{"WarmupUnknownKey", R"({"warmup": {"a": {"start": "2026-02-01", "daily": [1], "end": 3}}})",
                 "test.json: warmup.\"a\".end: unknown key (a warm-up has start, daily, providers, source, note)"},
        bad_file{"WarmupWithoutStart", R"({"warmup": {"a": {"daily": [1]}}})",
                 "test.json: warmup.\"a\": missing \"start\""},
        bad_file{"WarmupWithoutDaily", R"({"warmup": {"a": {"start": "2026-02-01"}}})",
                 "test.json: warmup.\"a\": missing \"daily\" (or \"providers\")"},
        bad_file{"ProviderWarmupWithoutStart", R"({"warmup": {"a": {"providers": {"g": {"daily": [5]}}}}})",
                 "test.json: warmup.\"a\".providers.\"g\": missing \"start\" (here or in the source's warm-up)"},
        bad_file{"ProviderWarmupUnknownKey",
                 R"({"warmup": {"a": {"start": "2026-02-01", "providers": {"g": {"daily": [5], "x": 1}}}}})",
                 "test.json: warmup.\"a\".providers.\"g\".x: unknown key (a provider's warm-up has start and daily)"},
        bad_file{"BadWarmupSourceName", R"({"warmup": {"a b": {"start": "2026-02-01", "daily": [1]}}})",
                 "test.json: warmup.\"a b\": an egress source name is 1-64 letters, digits, '-', '_' and '.'"},
        // A warm-up is an IP address's: inside a site's rule it is refused, saying where it goes.
        bad_file{"WarmupInARule", R"({"default": {"warmup": {"start": "2026-02-01", "daily": [1]}}})",
                 "test.json: default.warmup: a warm-up belongs to an egress source: the top level's \"warmup\": "
                 "{\"SOURCE\": {\"start\": ..., \"daily\": [...], \"providers\": {...}}}"},
        bad_file{"TenantUnknownKey", R"({"tenants": {"alice": {"connection_limit": 3}}})",
                 "test.json: tenants.\"alice\".connection_limit: unknown key (a tenant rule has max_message_rate, "
                 "source, note)"},
        bad_file{"TenantBadRate", R"({"tenants": {"*": {"max_message_rate": "2/fortnight"}}})",
                 "test.json: tenants.\"*\".max_message_rate: \"2/fortnight\": unknown period \"fortnight\" (use s, "
                 "min, h or day)"},
        bad_file{"TenantTwice", R"({"tenants": {"Example.org": {}, "example.ORG": {}}})",
                 "test.json: tenants.\"example.org\": given twice (tenants compare without case)"},
        bad_file{"TenantEmpty", R"({"tenants": {"": {}}})",
                 "test.json: tenants.\"\": a tenant is an AUTH user or a sender domain: 1 to 255 printable octets"},
        bad_file{"TenantsNotObject", R"({"tenants": ["alice"]})",
                 "test.json: tenants: expected an object {\"TENANT\": {\"max_message_rate\": ...}, ...}"},
        bad_file{"CampaignUnknownKey", R"({"campaigns": {"spring": {"connection_limit": 3}}})",
                 "test.json: campaigns.\"spring\".connection_limit: unknown key (a campaign rule has max_message_rate, "
                 "source, note)"},
        bad_file{"CampaignBadRate", R"({"campaigns": {"*": {"max_message_rate": "5/week"}}})",
                 "test.json: campaigns.\"*\".max_message_rate: \"5/week\": unknown period \"week\" (use s, "
                 "min, h or day)"},
        bad_file{"CampaignTwice", R"({"campaigns": {"Spring": {}, "SPRING": {}}})",
                 "test.json: campaigns.\"spring\": given twice (campaigns compare without case)"},
        bad_file{"CampaignEmpty", R"({"campaigns": {"": {}}})",
                 "test.json: campaigns.\"\": a campaign is its header's value: 1 to 255 printable octets"},
        bad_file{"CampaignsNotObject", R"({"campaigns": "spring"})",
                 "test.json: campaigns: expected an object {\"CAMPAIGN\": {\"max_message_rate\": ...}, ...}"},
        bad_file{"CampaignHeaderNotText", R"({"campaign_header": 1})",
                 "test.json: campaign_header: expected a header field name (\"X-Campaign-Id\"), or \"\" for none"},
        bad_file{"CampaignHeaderWithColon", R"({"campaign_header": "X-Campaign:Id"})",
                 "test.json: campaign_header: \"X-Campaign:Id\": a header field name has printable US-ASCII octets "
                 "other than ':'"},
        bad_file{"CampaignHeaderWithSpace", R"({"campaign_header": "X Campaign"})",
                 "test.json: campaign_header: \"X Campaign\": a header field name has printable US-ASCII octets "
                 "other than ':'"},
        bad_file{"CampaignHeaderTooLong", R"({"campaign_header": "X-123456789012345678901234567890123456789012345678901234567890123"})",
                 "test.json: campaign_header: \"X-123456789012345678901234567890123456789012345678901234567890123\": "
                 "a header field name is 1 to 64 octets"},
        bad_file{"CampaignHeaderFrom", R"({"campaign_header": "FROM"})",
                 "test.json: campaign_header: \"FROM\": the message needs this field: it would be stripped from every "
                 "message"},
        bad_file{"CampaignHeaderContent", R"({"campaign_header": "Content-Type"})",
                 "test.json: campaign_header: \"Content-Type\": the message needs its Content-* fields: they would "
                 "be stripped"},
        bad_file{"BadDomain", R"({"domains": {"exa mple.net": {}}})",
                 "test.json: domains.\"exa mple.net\": not a domain name"},
        bad_file{"DomainTwice", R"({"domains": {"example.net": {}, "EXAMPLE.net.": {}}})",
                 "test.json: domains.\"example.net\": given twice (domains compare without case and trailing dot)"},
        bad_file{"KeyTwice", R"({"default": {"connection_limit": 1, "connection_limit": 2}})",
                 "test.json: default: \"connection_limit\" given twice"},
        bad_file{"ProviderUnknownKey", R"({"providers": {"g": {"match": {"mx_suffix": ".g.com"}, "limit": 1}}})",
                 "test.json: providers.\"g\".limit: unknown key (a provider has match, connection_limit, "
                 "max_connection_rate, max_message_rate, max_deliveries_per_connection, "
                 "max_recipients_per_transaction, idle_timeout, adaptive, source, note)"},
        bad_file{"MatchUnknownKey", R"({"providers": {"g": {"match": {"mx": ".g.com"}}}})",
                 "test.json: providers.\"g\".match.mx: unknown key (a match has mx_suffix)"},
        bad_file{"BadSuffix", R"({"providers": {"g": {"match": {"mx_suffix": ["..g.com"]}}}})",
                 "test.json: providers.\"g\".match.mx_suffix: \"..g.com\" is not a host name suffix (\".example.net\" or \"example.net\")"},
        bad_file{"BadProviderName", R"({"providers": {"g oogle": {}}})",
                 "test.json: providers.\"g oogle\": a provider name is 1-64 letters, digits, '-', '_' and '.'"},
        bad_file{"BadRegex", R"({"automation": [{"name": "x", "match": "[TSS04", "action": "suspend", "duration": "1h"}]})",
                 "test.json: automation rule 1 \"x\".match: bad regular expression: missing ]: [TSS04"},
        bad_file{"BacktrackingOnlyRegex", R"({"automation": [{"match": "(a)\\1", "action": "suspend", "duration": "1h"}]})",
                 "test.json: automation rule 1.match: bad regular expression: invalid escape sequence: \\1"},
        bad_file{"BadAction", R"({"automation": [{"match": "x", "action": "pause", "duration": "1h"}]})",
                 "test.json: automation rule 1.action: expected \"suspend\" or \"throttle\""},
        bad_file{"ThrottleWithoutFactor", R"({"automation": [{"match": "x", "action": "throttle", "duration": "1h"}]})",
                 "test.json: automation rule 1: missing \"factor\" (a throttle multiplies the allowed rate by it)"},
        bad_file{"FactorOne", R"({"automation": [{"match": "x", "action": "throttle", "factor": 1, "duration": "1h"}]})",
                 "test.json: automation rule 1.factor: expected a number between 0 and 1 (exclusive): the allowed rate is multiplied by it"},
        bad_file{"SuspendWithFactor", R"({"automation": [{"match": "x", "action": "suspend", "factor": 0.5, "duration": "1h"}]})",
                 "test.json: automation rule 1.factor: only a throttle has a factor"},
        bad_file{"MissingDuration", R"({"automation": [{"match": "x", "action": "suspend"}]})",
                 "test.json: automation rule 1: missing \"duration\""},
        bad_file{"LongDuration", R"({"automation": [{"match": "x", "action": "suspend", "duration": "31d"}]})",
                 "test.json: automation rule 1.duration: \"31d\": must be from 1s to 30d"},
        bad_file{"AutomationUnknownKey", R"({"automation": [{"match": "x", "action": "suspend", "duration": "1h", "trigger": 1}]})",
                 "test.json: automation rule 1.trigger: unknown key (an automation rule has name, provider, match, action, "
                 "duration, factor, source, note)"},
        bad_file{"SameNameTwice", R"({"automation": [{"name": "a", "match": "x", "action": "suspend", "duration": "1h"},
                                                     {"name": "a", "match": "y", "action": "suspend", "duration": "1h"}]})",
                 "test.json: automation rule 2 \"a\": the name is given to two rules"},
        bad_file{"Version2", R"({"version": 2})", "test.json: version: only version 1 is known"}),
    [](const testing::TestParamInfo<bad_file>& i) { return i.param.label; });

TEST(ShapingRules, ProviderWithoutMatchNeedsAnEarlierFile) {
    const shaping_rules r = parse(R"({"providers": {"google": {"connection_limit": 2}}})");
    const auto c = check_shaping_rules(r);
    ASSERT_FALSE(c.has_value());
    EXPECT_EQ(c.error(), "test.json: providers.\"google\": missing \"match\" (no earlier file defines provider \"google\")");
    EXPECT_TRUE(check_shaping_rules(merge_shaping_rules(shipped(), r)).has_value());
}

TEST(ShapingRules, AutomationNamingAnUnknownProviderIsRefused) {
    const shaping_rules r = parse(R"({"automation": [{"provider": "nope", "match": "x", "action": "suspend", "duration": "1h"}]})");
    const auto c = check_shaping_rules(r);
    ASSERT_FALSE(c.has_value());
    EXPECT_EQ(c.error(), "test.json: automation rule 1.provider: unknown provider \"nope\"");
}

// --- Resolution ---------------------------------------------------------------------------------

const char* const layered = R"({
  "default":   {"connection_limit": 16, "max_deliveries_per_connection": 1000, "max_message_rate": "500/s"},
  "domains":   {"example.net": {"max_message_rate": "50/s"},
                "gmail.com":   {"idle_timeout": "10s"}},
  "providers": {"google":   {"match": {"mx_suffix": [".google.com", ".googlemail.com"]},
                             "connection_limit": 20, "max_deliveries_per_connection": 50},
                "google-l": {"match": {"mx_suffix": [".l.google.com"]}, "connection_limit": 7},
                "exact":    {"match": {"mx_suffix": ["mx.example.org"]}, "connection_limit": 3}}})";

TEST(ShapingRules, WarmupNamingAnUnknownProviderIsRefused) {
    const shaping_rules r = parse(R"({"warmup": {"a": {"start": "2026-12-01", "providers": {"nope": {"daily": [5]}}}}})");
    EXPECT_EQ(check_shaping_rules(r).error(), "test.json: warmup.\"a\".providers: unknown provider \"nope\"");
}

TEST(ShapingRules, WarmupNamingAnUnknownSourceIsRefused) {
    const shaping_rules r = parse(R"({"warmup": {"a": {"start": "2026-12-01", "daily": [5]},
                                                "ip9": {"start": "2026-12-01", "daily": [5]}}})");
    const std::vector<std::string_view> both = {"a", "ip9"}, one = {"a", "b"};
    EXPECT_TRUE(check_warmup_sources(r, both).has_value());
    EXPECT_EQ(check_warmup_sources(r, one).error(), "test.json: warmup.\"ip9\": no --egress-source named \"ip9\"");
}

TEST(ShapingRules, WarmupProviderScheduleElseAllSites) {
    const shaping_rules r = parse(R"({"providers": {"google": {"match": {"mx_suffix": ".google.com"}}},
      "warmup": {"a": {"start": "2026-12-01", "daily": [200], "providers": {"google": {"daily": [50]}}},
                 "b": {"start": "2026-12-01", "providers": {"google": {"daily": [60]}}}}})");
    std::string_view as;
    ASSERT_NE(r.find_warmup("a"), nullptr);
    EXPECT_EQ(r.find_warmup("a")->schedule_for("google", as)->daily.front(), 50u);
    EXPECT_EQ(as, "google");
    EXPECT_EQ(r.find_warmup("a")->schedule_for("yahoo", as)->daily.front(), 200u);
    EXPECT_EQ(as, "");
    EXPECT_EQ(r.find_warmup("a")->schedule_for("", as)->daily.front(), 200u);
    EXPECT_EQ(r.find_warmup("b")->schedule_for("yahoo", as), nullptr);  // b is limited only for google
    EXPECT_EQ(r.find_warmup("c"), nullptr);
}

TEST(ShapingRules, LaterFileReplacesASourcesWarmupWhole) {
    shaping_rules base = parse(R"({"warmup": {"a": {"start": "2026-12-01", "daily": [200], "providers": {"g": {"daily": [5]}}},
                                              "b": {"start": "2026-12-01", "daily": [7]}}})");
    const shaping_rules over = parse(R"({"warmup": {"a": {"start": "2026-12-05", "daily": [300]}}})");
    const shaping_rules m = merge_shaping_rules(std::move(base), over);
    ASSERT_EQ(m.warmup.size(), 2u);
    EXPECT_EQ(m.find_warmup("a")->all_sites->daily.front(), 300u);
    EXPECT_TRUE(m.find_warmup("a")->providers.empty());
    EXPECT_EQ(m.find_warmup("b")->all_sites->daily.front(), 7u);
}

TEST(ShapingRules, DomainThenProviderThenDefaultFieldByField) {
    const shaping_rules r = parse(layered);
    const resolved_shaping s = resolve(r, "GMAIL.com", {"gmail-smtp-in.l.google.com", "alt1.gmail-smtp-in.l.google.com"});
    EXPECT_EQ(s.domain_rule, "gmail.com");
    EXPECT_EQ(s.provider, "google-l");                // the longest suffix
    EXPECT_EQ(s.connection_limit, 7u);                // provider google-l
    EXPECT_EQ(s.max_deliveries_per_connection, 1000u); // default: google-l does not set it
    EXPECT_EQ(s.idle_timeout, seconds(10));           // domain
    EXPECT_EQ(s.max_message_rate->count, 500u);       // default

    const resolved_shaping w = resolve(r, "workspace.example", {"smtp.google.com"});
    EXPECT_EQ(w.provider, "google");
    EXPECT_EQ(w.connection_limit, 20u);
    EXPECT_EQ(w.max_deliveries_per_connection, 50u);

    const resolved_shaping d = resolve(r, "example.net", {"mx.example.net"});
    EXPECT_EQ(d.provider, "");
    EXPECT_EQ(d.max_message_rate->count, 50u);
    EXPECT_EQ(d.connection_limit, 16u);
}

TEST(ShapingRules, SuffixMatchesAnyMxHostOfTheSite) {
    const shaping_rules r = parse(layered);
    EXPECT_EQ(resolve(r, "x.test", {"mx.other.test", "backup.googlemail.com."}).provider, "google");
    EXPECT_EQ(resolve(r, "x.test", {"googlemail.com"}).provider, "");  // ".googlemail.com" needs a label before it
    EXPECT_EQ(resolve(r, "x.test", {"mx.example.org"}).provider, "exact");
    EXPECT_EQ(resolve(r, "x.test", {"a.mx.example.org"}).provider, "exact");
    EXPECT_EQ(resolve(r, "x.test", {"amx.example.org"}).provider, "");
    EXPECT_EQ(resolve(r, "x.test", {}).provider, "");  // a route: no MX hosts
}

TEST(ShapingRules, BuiltinDefaultsWhenNothingSetsAField) {
    const resolved_shaping s = resolve(shaping_rules{}, "example.net", {"mx.example.net"});
    EXPECT_EQ(s.connection_limit, builtin_connection_limit);
    EXPECT_EQ(s.max_deliveries_per_connection, builtin_max_deliveries_per_connection);
    EXPECT_EQ(s.idle_timeout, builtin_idle_timeout);
    EXPECT_TRUE(s.adaptive);
    EXPECT_FALSE(s.max_message_rate.has_value());
    EXPECT_FALSE(s.max_connection_rate.has_value());
    EXPECT_FALSE(s.max_recipients_per_transaction.has_value());
}

TEST(ShapingRules, FlagsMakeTheDefaultRuleAndFilesOverrideThem) {
    const shaping_rules flags = flag_default_rule(4, 77, 9);
    const resolved_shaping s = resolve(flags, "example.net", {"mx.example.net"});
    EXPECT_EQ(s.connection_limit, 4u);
    EXPECT_EQ(s.max_deliveries_per_connection, 77u);
    EXPECT_EQ(s.idle_timeout, seconds(9));
    const shaping_rules over = merge_shaping_rules(flags, parse(R"({"default": {"connection_limit": 2}})"));
    const resolved_shaping o = resolve(over, "example.net", {"mx.example.net"});
    EXPECT_EQ(o.connection_limit, 2u);
    EXPECT_EQ(o.max_deliveries_per_connection, 77u);
}

// --- Merging files --------------------------------------------------------------------------------

TEST(ShapingRules, LaterFileMergesFieldByField) {
    shaping_rules r = parse(layered);
    r = merge_shaping_rules(std::move(r), parse(R"({
      "default":   {"max_message_rate": "100/s"},
      "domains":   {"example.net": {"connection_limit": 2}, "new.example": {"connection_limit": 1}},
      "providers": {"google": {"max_message_rate": "20/s"},
                    "exact": {"match": {"mx_suffix": [".example.com"]}},
                    "yahoo": {"match": {"mx_suffix": [".yahoodns.net"]}, "max_deliveries_per_connection": 20}}})"));
    ASSERT_TRUE(check_shaping_rules(r).has_value());
    const resolved_shaping d = resolve(r, "example.net", {"mx.example.net"});
    EXPECT_EQ(d.max_message_rate->count, 50u);  // the domain's earlier rate stays
    EXPECT_EQ(d.connection_limit, 2u);          // added by the later file
    EXPECT_EQ(resolve(r, "other.test", {"mx.other.test"}).max_message_rate->count, 100u);
    const resolved_shaping g = resolve(r, "x.test", {"smtp.google.com"});
    EXPECT_EQ(g.connection_limit, 20u);          // earlier
    EXPECT_EQ(g.max_message_rate->count, 20u);   // later
    EXPECT_EQ(resolve(r, "x.test", {"mx.example.org"}).provider, "");  // a later match replaces the earlier one whole
    EXPECT_EQ(resolve(r, "x.test", {"mx.example.com"}).provider, "exact");
    EXPECT_EQ(resolve(r, "x.test", {"mta5.am0.yahoodns.net"}).max_deliveries_per_connection, 20u);
    EXPECT_EQ(resolve(r, "new.example", {"mx.new.example"}).connection_limit, 1u);
    ASSERT_EQ(r.domains.size(), 3u);
    EXPECT_TRUE(r.domains[0].domain < r.domains[1].domain && r.domains[1].domain < r.domains[2].domain);
}

TEST(ShapingRules, AutomationReplacedByNameInPlaceOthersFirst) {
    shaping_rules r = parse(R"({"automation": [
      {"name": "a", "match": "A", "action": "suspend", "duration": "1h"},
      {"name": "b", "match": "B", "action": "suspend", "duration": "1h"},
      {"match": "C", "action": "suspend", "duration": "1h"}]})");
    r = merge_shaping_rules(std::move(r), parse(R"({"automation": [
      {"name": "b", "match": "B2", "action": "throttle", "factor": 0.5, "duration": "5m"},
      {"name": "d", "match": "D", "action": "suspend", "duration": "2h"}]})"));
    ASSERT_EQ(r.automation.size(), 4u);
    EXPECT_EQ(r.automation[0].name, "d");
    EXPECT_EQ(r.automation[1].name, "a");
    EXPECT_EQ(r.automation[2].name, "b");
    EXPECT_EQ(r.automation[2].pattern, "B2");
    EXPECT_EQ(r.automation[2].action, automation_action::throttle);
    EXPECT_EQ(r.automation[3].pattern, "C");
}

TEST(ShapingRules, LoadReadsFilesInOrderAndNamesTheBrokenOne) {
    char dir_template[] = "/tmp/shaping_rules_test.XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    const std::string dir = dir_template;
    const std::string first = dir + "/first.json", second = dir + "/second.json", broken = dir + "/broken.json";
    std::ofstream(first) << R"({"providers": {"google": {"connection_limit": 3}}})";
    std::ofstream(second) << R"({"providers": {"google": {"connection_limit": 2}}, "domains": {"x.test": {}}})";
    std::ofstream(broken) << R"({"default": {"max_message_rate": "fast"}})";
    const std::vector<std::string> files = {first, second};
    auto load = load_shaping_rules(flag_default_rule(16, 1000, 5), files, shipped_shaping::load);
    ASSERT_TRUE(load.has_value()) << load.error();
    EXPECT_EQ(resolve(load->rules, "gmail.com", {"gmail-smtp-in.l.google.com"}).connection_limit, 2u);
    EXPECT_NE(describe(*load).find(second), std::string::npos);

    const std::vector<std::string> with_broken = {first, broken};
    auto bad = load_shaping_rules(flag_default_rule(16, 1000, 5), with_broken, shipped_shaping::load);
    ASSERT_FALSE(bad.has_value());
    EXPECT_EQ(bad.error(), "--shaping " + broken +
                               ": default.max_message_rate: \"fast\": expected COUNT/PERIOD, e.g. \"10/s\" or \"600/min\"");

    // Without the shipped rules, a file adding to "google" has nothing to add to.
    const std::vector<std::string> only_first = {first};
    auto skipped = load_shaping_rules(flag_default_rule(16, 1000, 5), only_first, shipped_shaping::skip);
    ASSERT_FALSE(skipped.has_value());
    EXPECT_EQ(skipped.error(), "--shaping " + first +
                                   ": providers.\"google\": missing \"match\" (no earlier file defines provider \"google\")");
    const std::vector<std::string> missing = {dir + "/missing.json"};
    auto unreadable = load_shaping_rules(flag_default_rule(16, 1000, 5), missing, shipped_shaping::load);
    ASSERT_FALSE(unreadable.has_value());
    EXPECT_EQ(unreadable.error(), "--shaping " + dir + "/missing.json: cannot read: No such file or directory");
    for (const std::string& f : {first, second, broken}) std::remove(f.c_str());
    rmdir(dir.c_str());
}

TEST(ShapingRules, SkippingTheShippedFileLeavesNoProviders) {
    const std::vector<std::string> none;
    auto load = load_shaping_rules(flag_default_rule(16, 1000, 5), none, shipped_shaping::skip);
    ASSERT_TRUE(load.has_value());
    EXPECT_TRUE(load->rules.providers.empty());
    EXPECT_EQ(describe(*load), "shaping: 0 providers, 0 domains, 0 automation rules (no shipped provider rules: --no-default-shaping)");
}

// --- The shipped etc/shaping.json ---------------------------------------------------------------

#ifdef RINGRELAY_SOURCE_ROOT
TEST(ShippedShaping, EmbeddedCopyIsTheSourceFile) {
    std::ifstream in(std::string(RINGRELAY_SOURCE_ROOT) + "/etc/shaping.json", std::ios::binary);
    ASSERT_TRUE(in.good());
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(text, embedded_shaping());
}
#endif

TEST(ShippedShaping, LoadsAndCitesASourceForEveryRule) {
    auto r = parse_shaping_rules(embedded_shaping(), embedded_shaping_label);
    ASSERT_TRUE(r.has_value()) << r.error();
    ASSERT_TRUE(check_shaping_rules(*r).has_value());
    for (const provider_rule& p : r->providers) {
        EXPECT_FALSE(p.limits.source.empty()) << p.name;
        EXPECT_FALSE(p.mx_suffix.empty()) << p.name;
    }
    for (const domain_rule& d : r->domains) EXPECT_FALSE(d.limits.source.empty()) << d.domain;
    for (const automation_rule& a : r->automation) {
        EXPECT_FALSE(a.source.empty()) << a.name;
        EXPECT_FALSE(a.name.empty()) << a.pattern;
    }
}

TEST(ShippedShaping, LeavesTheFlagsDefaultFieldsAlone) {
    auto r = parse_shaping_rules(embedded_shaping(), embedded_shaping_label);
    ASSERT_TRUE(r.has_value());
    EXPECT_FALSE(r->default_rule.connection_limit.has_value());
    EXPECT_FALSE(r->default_rule.max_deliveries_per_connection.has_value());
    EXPECT_FALSE(r->default_rule.idle_timeout.has_value());
    const resolved_shaping s = resolve(shipped(), "example.net", {"mx.example.net"});
    EXPECT_EQ(s.connection_limit, 16u);
    EXPECT_EQ(s.max_deliveries_per_connection, 1000u);
}

struct provider_case {
    const char* label;
    const char* domain;
    const char* mx;
    const char* provider;
};

class ShippedProviders : public testing::TestWithParam<provider_case> {};

TEST_P(ShippedProviders, RealMxHostsFindTheirProvider) {
    const provider_case& c = GetParam();
    EXPECT_EQ(resolve(shipped(), c.domain, {c.mx}).provider, c.provider);
}

INSTANTIATE_TEST_SUITE_P(
    Hosts, ShippedProviders,
    testing::Values(provider_case{"Gmail", "gmail.com", "gmail-smtp-in.l.google.com", "google"},
                    provider_case{"Workspace", "example.org", "aspmx.l.google.com", "google"},
                    provider_case{"WorkspaceNew", "example.org", "smtp.google.com", "google"},
                    provider_case{"Yahoo", "yahoo.com", "mta5.am0.yahoodns.net", "yahoo"},
                    provider_case{"Aol", "aol.com", "mx-aol.mail.gm0.yahoodns.net", "yahoo"},
                    provider_case{"Hotmail", "hotmail.com", "hotmail-com.olc.protection.outlook.com", "outlook"},
                    provider_case{"Office365", "example.org", "example-org.mail.protection.outlook.com", "office365"},
                    provider_case{"Office365Dane", "example.org", "example-org.r-v1.mx.microsoft", "office365-dane"},
                    provider_case{"Icloud", "icloud.com", "mx01.mail.icloud.com", "apple"},
                    provider_case{"Gmx", "gmx.de", "mx00.emig.gmx.net", "gmx-webde"},
                    provider_case{"WebDe", "web.de", "mx-ha03.web.de", "gmx-webde"},
                    provider_case{"Comcast", "comcast.net", "mx1a1.comcast.net", "comcast"},
                    provider_case{"Orange", "orange.fr", "smtp-in.orange.fr", "orange"},
                    provider_case{"MailRu", "mail.ru", "mxs.mail.ru", "mailru"},
                    provider_case{"Qq", "qq.com", "mx1.qq.com", "qq"},
                    provider_case{"NetEase", "163.com", "163mx01.mxmail.netease.com", "netease"},
                    provider_case{"Other", "example.net", "mx.example.net", ""}),
    [](const testing::TestParamInfo<provider_case>& i) { return i.param.label; });

struct reply_case {
    const char* label;
    const char* provider;
    std::uint16_t code;
    const char* text;
    const char* rule;  // "" for none
};

class ShippedAutomation : public testing::TestWithParam<reply_case> {};

TEST_P(ShippedAutomation, RealRepliesFireTheirRule) {
    const reply_case& c = GetParam();
    std::string subject;
    automation_subject(c.code, c.text, subject);
    const automation_rule* r = shipped().match_automation(c.provider, subject);
    EXPECT_EQ(r == nullptr ? "" : r->name, c.rule) << subject;
}

// Reply texts as protocol::parsed_reply::text has them (lines joined by LF); IP addresses
// replaced by documentation values. Sources in etc/shaping.json and etc/bounce-classes.json.
INSTANTIATE_TEST_SUITE_P(
    Replies, ShippedAutomation,
    testing::Values(
        reply_case{"Gmail4728Ip", "google", 421,
                   "4.7.28 Our system has detected an unusual rate of\n4.7.28 unsolicited mail originating from your IP "
                   "address. To protect our\n4.7.28 users from spam, mail sent from your IP address has been temporarily\n"
                   "4.7.28 rate limited.",
                   "gmail-4.7.28"},
        reply_case{"Gmail4728Dkim", "google", 421,
                   "4.7.28 Gmail has detected an unusual rate of unsolicited mail originating from your DKIM domain.",
                   "gmail-4.7.28"},
        reply_case{"Gmail4728OtherProvider", "yahoo", 421, "4.7.28 Our system has detected an unusual rate", ""},
        reply_case{"GmailPerUserRate", "google", 450,
                   "4.2.1 The user you are trying to contact is receiving mail at a rate that\n4.2.1 prevents additional "
                   "messages from being delivered.",
                   ""},
        reply_case{"YahooTss04", "yahoo", 421,
                   "4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user "
                   "complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
                   "yahoo-tss04"},
        reply_case{"YahooIpts04", "yahoo", 421, "[IPTS04] Messages from 192.0.2.1 temporarily deferred", "yahoo-tss04"},
        reply_case{"YahooTss05", "yahoo", 421, "4.7.0 [TSS05] Messages from 192.0.2.1 temporarily deferred", "yahoo-tss05"},
        reply_case{"YahooTs03", "yahoo", 421,
                   "4.7.1 [TS03] All messages from 192.0.2.1 will be permanently deferred; Retrying will NOT succeed. "
                   "See https://postmaster.yahooinc.com/error-codes",
                   "yahoo-ts03"},
        reply_case{"YahooTs01IsNotSuspended", "yahoo", 421, "4.7.0 [TS01] Messages from 192.0.2.1 temporarily deferred", ""},
        reply_case{"OutlookIpReputation", "outlook", 451,
                   "4.7.650 The mail server [192.0.2.1] has been temporarily rate limited due to IP reputation. For "
                   "e-mail delivery information, see https://postmaster.live.com (S775)",
                   "outlook-ip-reputation"},
        reply_case{"ComcastRl000010", "comcast", 421, "Throttled - try again later RL000010", "comcast-rl000010"},
        reply_case{"QqIpFrequency", "qq", 550, "Ip frequency limited [ip:192.0.2.1]", "qq-frequency-limited"},
        reply_case{"NetEaseDailyLimit", "netease", 550, "RP:ORQ 192.0.2.1 ...", "netease-daily-limit"},
        reply_case{"UserUnknown", "google", 550, "5.1.1 The email account that you tried to reach does not exist.", ""}),
    [](const testing::TestParamInfo<reply_case>& i) { return i.param.label; });

TEST(AutomationSubject, CodeSpaceTextLinesJoinedBounded) {
    std::string s;
    automation_subject(421, "4.7.0 a\n4.7.0 b", s);
    EXPECT_EQ(s, "421 4.7.0 a 4.7.0 b");
    automation_subject(0, "connection refused", s);
    EXPECT_EQ(s, "connection refused");
    automation_subject(451, std::string(10'000, 'x'), s);
    EXPECT_EQ(s.size(), max_automation_subject);
}

TEST(AutomationRule, HostileReplyTextIsMatchedInLinearTime) {
    // A pattern that backtracks exponentially in a backtracking engine ((a+)+$ on "aaaa...b");
    // RE2 answers at once. No timing is asserted: a backtracking engine would not finish.
    const shaping_rules r = parse(R"({"automation": [{"match": "(a+)+$", "action": "suspend", "duration": "1h"},
                                                      {"match": "(x|xx)+y", "action": "suspend", "duration": "1h"}]})");
    std::string subject;
    automation_subject(421, std::string(2000, 'a') + "b", subject);
    EXPECT_EQ(r.match_automation("", subject), nullptr);
    automation_subject(421, std::string(2000, 'x'), subject);
    EXPECT_EQ(r.match_automation("", subject), nullptr);
}

}  // namespace
