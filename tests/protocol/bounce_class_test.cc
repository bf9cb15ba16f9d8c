// Unit tests of protocol/bounce_class.h: status patterns (parse errors word for word), the text
// normalisation rules see (multi-line replies with their repeated enhanced codes, case, white
// space, the bound on hostile input), the matching (conditions AND, patterns OR, first rule
// wins, no rule: other), and reading a reason that carries a refused greeting's reply. The real
// reply texts against the shipped rules are in tests/queue/bounce_rules_test.cc.
#include "protocol/bounce_class.h"

#include <gtest/gtest.h>

#include <array>
#include <string>
#include <vector>

using namespace ringrelay::protocol;

namespace {

enhanced_status st(std::uint8_t c, std::uint16_t s, std::uint16_t d) { return enhanced_status{c, s, d}; }

bounce_rule rule(std::string name, bounce_class cls) {
    bounce_rule r;
    r.name = std::move(name);
    r.cls = cls;
    r.source = "test";
    return r;
}

bounce_input peer(std::uint16_t code, enhanced_status e, std::string_view text) {
    bounce_input in;
    in.origin = rule_origin::peer;
    in.code = code;
    in.enhanced = e;
    in.text = text;
    return in;
}

std::string normalized(std::string_view text) {
    std::array<char, max_classified_text> buf{};
    return std::string(normalize_bounce_text(text, buf));
}

}  // namespace

TEST(BounceClass, NamesRoundTripAndAreTheIssuesWords) {
    const std::vector<std::string_view> names = {
        "invalid-recipient", "inactive-mailbox", "mailbox-full", "message-too-large", "spam-content",
        "policy",            "reputation",       "rate-limited", "authentication",    "dns",
        "tls",               "routing",          "protocol",     "other"};
    ASSERT_EQ(names.size(), bounce_class_count);
    for (std::size_t i = 0; i < names.size(); ++i) {
        EXPECT_EQ(to_string(static_cast<bounce_class>(i)), names[i]);
        EXPECT_EQ(parse_bounce_class(names[i]), static_cast<bounce_class>(i));
    }
    EXPECT_FALSE(parse_bounce_class("Reputation").has_value()) << "exact, lower case";
    EXPECT_FALSE(parse_bounce_class("spam").has_value());
    EXPECT_FALSE(parse_bounce_class("").has_value());
}

struct pattern_case {
    const char* label;
    const char* text;
    const char* error;  // nullptr: valid
};

class StatusPatternParse : public ::testing::TestWithParam<pattern_case> {};

TEST_P(StatusPatternParse, AcceptsOrNamesTheProblem) {
    const pattern_case& c = GetParam();
    const auto p = parse_status_pattern(c.text);
    if (c.error == nullptr) {
        EXPECT_TRUE(p.has_value()) << p.error();
    } else {
        ASSERT_FALSE(p.has_value());
        EXPECT_EQ(p.error(), c.error);
    }
}

INSTANTIATE_TEST_SUITE_P(
    Table, StatusPatternParse,
    ::testing::Values(
        pattern_case{"exact", "5.1.1", nullptr}, pattern_case{"any_class", "*.7.26", nullptr},
        pattern_case{"range", "4.7.500-699", nullptr}, pattern_case{"any_detail", "5.7.*", nullptr},
        pattern_case{"success", "2.0.0", nullptr}, pattern_case{"single_point_range", "5.7.5-5", nullptr},
        pattern_case{"two_parts", "5.1", "status '5.1' is not C.S.D (e.g. 5.1.1, *.7.26, 4.7.500-699)"},
        pattern_case{"four_parts", "5.1.1.1", "status '5.1.1.1' is not C.S.D (e.g. 5.1.1, *.7.26, 4.7.500-699)"},
        pattern_case{"empty", "", "status '' is not C.S.D (e.g. 5.1.1, *.7.26, 4.7.500-699)"},
        pattern_case{"class_6", "6.1.1", "status '6.1.1': the class must be 2, 4, 5 or *"},
        pattern_case{"class_range", "4-5.1.1", "status '4-5.1.1': the class must be 2, 4, 5 or *"},
        pattern_case{"letters", "5.x.1", "status subject 'x' is not a number 0-999, a range A-B or *"},
        pattern_case{"four_digits", "5.1.1000", "status detail '1000' is not a number 0-999, a range A-B or *"},
        pattern_case{"empty_range", "5.7.9-3", "status detail range '9-3' is empty"},
        pattern_case{"open_range", "5.7.500-", "status detail '500-' is not a number 0-999, a range A-B or *"},
        pattern_case{"empty_part", "5..1", "status subject '' is not a number 0-999, a range A-B or *"}),
    [](const ::testing::TestParamInfo<pattern_case>& i) { return std::string(i.param.label); });

TEST(StatusPattern, RangesAndWildcardsMatchWhatTheySay) {
    const status_pattern banned = *parse_status_pattern("5.7.606-649");
    EXPECT_TRUE(banned.matches(st(5, 7, 606)));
    EXPECT_TRUE(banned.matches(st(5, 7, 649)));
    EXPECT_FALSE(banned.matches(st(5, 7, 605)));
    EXPECT_FALSE(banned.matches(st(5, 7, 650)));
    EXPECT_FALSE(banned.matches(st(4, 7, 606))) << "the class is exact";
    const status_pattern any = *parse_status_pattern("*.1.1");
    EXPECT_TRUE(any.matches(st(4, 1, 1)));
    EXPECT_TRUE(any.matches(st(5, 1, 1)));
    EXPECT_FALSE(any.matches(st(5, 1, 10)));
    EXPECT_FALSE(any.matches(enhanced_status{})) << "a reply without an enhanced code matches no status";
    EXPECT_FALSE(parse_status_pattern("*.*.*")->matches(enhanced_status{}));
}

TEST(BounceText, MultiLineRepliesReadAsOneSentence) {
    // Gmail repeats the enhanced code on every line (reply_parser keeps each line's text verbatim).
    EXPECT_EQ(normalized("5.7.26 Unauthenticated email from example.com is not accepted due to\n"
                         "5.7.26 domain's DMARC policy. Please visit\n5.7.26 https://support.google.com/mail/answer/81126"),
              "unauthenticated email from example.com is not accepted due to domain's dmarc policy. please visit "
              "https://support.google.com/mail/answer/81126");
    EXPECT_EQ(normalized("  Mailbox \t  FULL\r\n  try   later "), "mailbox full try later");
    EXPECT_EQ(normalized("5.1.1"), "") << "a bare code is no text";
    EXPECT_EQ(normalized("1.2.3 is not a status code"), "1.2.3 is not a status code");
    EXPECT_EQ(normalized("5.7.1x not a code"), "5.7.1x not a code");
    EXPECT_EQ(normalized("see RFC 5321 4.5.3 here"), "see rfc 5321 4.5.3 here") << "only at the start of a line";
    EXPECT_EQ(normalize_bounce_pattern("  Part of  Their\tNetwork "), "part of their network");
}

TEST(BounceText, OnlyTheFirstMaxClassifiedTextOctetsAreLookedAt) {
    // A hostile next hop may send 128 lines of 512 octets: the work stays bounded.
    std::string huge(64 * 1024, 'a');
    huge += " spamhaus";
    std::array<char, max_classified_text> buf{};
    const std::string_view n = normalize_bounce_text(huge, buf);
    EXPECT_EQ(n.size(), max_classified_text);
    std::vector<bounce_rule> rules{rule("late", bounce_class::reputation)};
    rules[0].text = {"spamhaus"};
    const bounce_rules table(std::move(rules));
    EXPECT_EQ(table.classify(peer(550, st(5, 7, 1), huge)).cls, bounce_class::other);
    EXPECT_EQ(table.classify(peer(550, st(5, 7, 1), "blocked using zen.spamhaus.org")).cls, bounce_class::reputation);
    std::array<char, 4> tiny{};
    EXPECT_EQ(normalize_bounce_text("abcdefgh", tiny), "abcd");
    // Cut where a space would go: the text ends before it, never with it (found by
    // fuzz_bounce_classes; a crash input is in tests/fuzz/corpus/bounce_classes/).
    EXPECT_EQ(normalize_bounce_text("abcd efgh", tiny), "abcd");
    std::array<char, 5> five{};
    EXPECT_EQ(normalize_bounce_text("abcd  efgh", five), "abcd");
    EXPECT_EQ(normalize_bounce_text("ab c", five), "ab c");
}

TEST(BounceRules, ConditionsAllHoldPatternsAnyAndTheFirstRuleWins) {
    std::vector<bounce_rule> rules;
    rules.push_back(rule("both", bounce_class::mailbox_full));
    rules.back().status = {*parse_status_pattern("4.2.2")};
    rules.back().text = {"quota", "storage"};
    rules.push_back(rule("status-only", bounce_class::inactive_mailbox));
    rules.back().status = {*parse_status_pattern("*.2.*")};
    rules.push_back(rule("shadowed", bounce_class::policy));
    rules.back().status = {*parse_status_pattern("4.2.2")};
    rules.push_back(rule("code", bounce_class::protocol));
    rules.back().code = {500, 502};
    const bounce_rules table(std::move(rules));

    bounce_verdict v = table.classify(peer(452, st(4, 2, 2), "4.2.2 Out of STORAGE space"));
    EXPECT_EQ(v.cls, bounce_class::mailbox_full);
    EXPECT_EQ(v.rule, "both");
    v = table.classify(peer(452, st(4, 2, 2), "4.2.2 something else"));
    EXPECT_EQ(v.rule, "status-only") << "text did not match: the next rule; 'shadowed' is never reached";
    v = table.classify(peer(502, {}, "command not implemented"));
    EXPECT_EQ(v.rule, "code");
    v = table.classify(peer(421, {}, "busy"));
    EXPECT_EQ(v.cls, bounce_class::other);
    EXPECT_TRUE(v.rule.empty());
    EXPECT_TRUE(v.blocklist.empty());
}

TEST(BounceRules, OriginSeparatesOurFailuresFromTheNextHops) {
    std::vector<bounce_rule> rules;
    rules.push_back(rule("ours", bounce_class::dns));
    rules.back().origin = rule_origin::local;
    rules.back().status = {*parse_status_pattern("5.1.10")};
    rules.push_back(rule("theirs", bounce_class::invalid_recipient));
    rules.back().origin = rule_origin::peer;
    rules.back().status = {*parse_status_pattern("5.1.10")};
    rules.push_back(rule("no-code", bounce_class::protocol));
    rules.back().origin = rule_origin::local;
    rules.back().code = {0};
    const bounce_rules table(std::move(rules));
    bounce_input local = peer(550, st(5, 1, 10), "5.1.10 the domain accepts no mail (null MX, RFC 7505)");
    local.origin = rule_origin::local;
    EXPECT_EQ(table.classify(local).rule, "ours");
    EXPECT_EQ(table.classify(peer(550, st(5, 1, 10), "RESOLVER.ADR.RecipientNotFound")).rule, "theirs");
    bounce_input lost;
    lost.text = "connection lost";
    EXPECT_EQ(table.classify(lost).rule, "no-code");
    lost.origin = rule_origin::any;
    EXPECT_EQ(table.classify(lost).rule, "no-code") << "an input of any origin is ours";
    EXPECT_EQ(table.classify(peer(0, {}, "x")).cls, bounce_class::other) << "code 0 from a peer is not ours";
}

TEST(BounceRules, OnlyReputationCarriesABlocklist) {
    std::vector<bounce_rule> rules;
    rules.push_back(rule("listed", bounce_class::reputation));
    rules.back().text = {"spamhaus"};
    rules.back().blocklist = "Spamhaus";
    rules.push_back(rule("odd", bounce_class::policy));
    rules.back().text = {"policy"};
    rules.back().blocklist = "Nobody";  // the loader refuses this; classify() ignores it anyway
    const bounce_rules table(std::move(rules));
    bounce_verdict v = table.classify(peer(554, st(5, 7, 1), "Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org"));
    EXPECT_EQ(v.cls, bounce_class::reputation);
    EXPECT_EQ(v.blocklist, "Spamhaus");
    v = table.classify(peer(550, st(5, 7, 1), "policy"));
    EXPECT_EQ(v.cls, bounce_class::policy);
    EXPECT_TRUE(v.blocklist.empty());
    EXPECT_EQ(table.find("odd")->name, "odd");
    EXPECT_EQ(table.find("none"), nullptr);
}

TEST(BounceInput, AReasonCarryingAReplyIsThePeers) {
    // queue/outbound.cc passes a refused greeting on as "CODE text".
    bounce_input in = bounce_input_from_reason("554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org");
    EXPECT_EQ(in.origin, rule_origin::peer);
    EXPECT_EQ(in.code, 554);
    EXPECT_EQ(in.enhanced, st(5, 7, 1));
    EXPECT_EQ(in.text, "5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org");
    in = bounce_input_from_reason("421-4.7.0 [TSS04] Messages temporarily deferred");
    EXPECT_EQ(in.code, 421);
    EXPECT_EQ(in.enhanced, st(4, 7, 0));
    in = bounce_input_from_reason("550 no enhanced code");
    EXPECT_EQ(in.code, 550);
    EXPECT_FALSE(in.enhanced.present());
    for (const char* ours : {"cannot reach 127.0.0.1:2526: Connection refused", "message expired (--max-age)", "250 ok",
                             "5.1.1 no code", "55", "", "999 x", "5501 x"}) {
        in = bounce_input_from_reason(ours);
        EXPECT_EQ(in.origin, rule_origin::local) << ours;
        EXPECT_EQ(in.code, 0) << ours;
        EXPECT_EQ(in.text, ours);
    }
}
