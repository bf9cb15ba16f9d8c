// tests/tools/bench/options_test.cc: ringrelay-bench's command line: required flags, the
// --messages/--duration choice, --domains with weights, --target, --size bounds, defaults,
// --starttls and --auth USER:PASS.
#include "tools/bench/options.h"

#include <gtest/gtest.h>

#include <initializer_list>
#include <string>
#include <vector>

#include "tools/bench/message_template.h"

namespace ringrelay::bench {
namespace {

std::expected<bench_options, usage_exit> parse(std::initializer_list<const char*> args) {
    std::vector<const char*> argv{"ringrelay-bench"};
    argv.insert(argv.end(), args.begin(), args.end());
    return parse_options(static_cast<int>(argv.size()), argv.data());
}

// A valid command line plus `extra`.
std::expected<bench_options, usage_exit> parse_with(std::initializer_list<const char*> extra) {
    std::vector<const char*> argv{"ringrelay-bench", "--target", "127.0.0.1:2525", "--connections", "10",
                                  "--size",          "2048"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return parse_options(static_cast<int>(argv.size()), argv.data());
}

void expect_usage_error(const std::expected<bench_options, usage_exit>& r, const std::string& mentions) {
    ASSERT_FALSE(r.has_value()) << "accepted, expected an error mentioning " << mentions;
    EXPECT_EQ(r.error().code, 2);
    EXPECT_NE(r.error().message.find(mentions), std::string::npos) << r.error().message;
}

TEST(BenchOptions, MinimalCommandLineGetsDefaults) {
    const auto r = parse_with({"--messages", "1000"});
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_EQ(r->target_text, "127.0.0.1:2525");
    EXPECT_EQ(r->target.port(), 2525);
    EXPECT_EQ(r->connections, 10u);
    EXPECT_EQ(r->mode, run_mode::messages);
    EXPECT_EQ(r->messages, 1000u);
    EXPECT_EQ(r->size, 2048u);
    EXPECT_EQ(r->recipients, 1u);
    EXPECT_EQ(r->rate, 0.0);
    ASSERT_EQ(r->domains.size(), 1u);
    EXPECT_EQ(r->domains[0].name, "example.com");
    EXPECT_EQ(r->pipelining, protocol::extension_use::when_offered);
    EXPECT_EQ(r->chunking, protocol::extension_use::never);
    EXPECT_EQ(r->format, output_format::text);
    EXPECT_GE(r->shards, 1u);
    EXPECT_LE(r->shards, 2u);
    EXPECT_EQ(r->max_messages_per_connection, 0u);
}

TEST(BenchOptions, StartTlsAndAuthAreOffByDefault) {
    const auto r = parse_with({"--messages", "1"});
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_FALSE(r->starttls);
    EXPECT_TRUE(r->auth_user.empty());
}

TEST(BenchOptions, AuthSplitsAtTheFirstColon) {
    const auto r = parse_with({"--messages", "1", "--starttls", "--auth", "user@example.org:pa:ss"});
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_TRUE(r->starttls);
    EXPECT_EQ(r->auth_user, "user@example.org");
    EXPECT_EQ(r->auth_password, "pa:ss");
}

TEST(BenchOptions, AuthNeedsUserAndColon) {
    expect_usage_error(parse_with({"--messages", "1", "--starttls", "--auth", "nocolon"}), "--auth");
    expect_usage_error(parse_with({"--messages", "1", "--auth", "user:pass"}), "--starttls");
    expect_usage_error(parse_with({"--messages", "1", "--starttls", "--auth", ":pass"}), "--auth");
}

TEST(BenchOptions, EveryFlagIsApplied) {
    const auto r = parse({"--target",
                          "[::1]:2626",
                          "--connections",
                          "40",
                          "--duration",
                          "2m",
                          "--size",
                          "100k",
                          "--recipients",
                          "5",
                          "--rate",
                          "2500.5",
                          "--domains",
                          "a.example:2,B.Example:1",
                          "--chunking",
                          "--no-pipelining",
                          "--json",
                          "--shards",
                          "3",
                          "--from",
                          "x@y.example",
                          "--helo",
                          "client.example",
                          "--timeout",
                          "250ms",
                          "--max-messages-per-connection",
                          "100",
                          "--quiet",
                          "--seed",
                          "99"});
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_EQ(r->target.family(), AF_INET6);
    EXPECT_EQ(r->mode, run_mode::duration);
    EXPECT_DOUBLE_EQ(r->duration_seconds, 120.0);
    EXPECT_EQ(r->size, 100u * 1024);
    EXPECT_EQ(r->recipients, 5u);
    EXPECT_DOUBLE_EQ(r->rate, 2500.5);
    ASSERT_EQ(r->domains.size(), 2u);
    EXPECT_EQ(r->domains[1], (weighted_domain{"b.example", 1}));
    EXPECT_EQ(r->chunking, protocol::extension_use::when_offered);
    EXPECT_EQ(r->pipelining, protocol::extension_use::never);
    EXPECT_EQ(r->format, output_format::json);
    EXPECT_EQ(r->shards, 3u);
    EXPECT_EQ(r->from, "x@y.example");
    EXPECT_EQ(r->helo, "client.example");
    EXPECT_DOUBLE_EQ(r->timeout_seconds, 0.25);
    EXPECT_EQ(r->max_messages_per_connection, 100u);
    EXPECT_EQ(r->progress, progress_display::off);
    EXPECT_EQ(r->seed, 99u);
}

TEST(BenchOptions, HelpExitsZeroWithUsage) {
    const auto r = parse({"--help"});
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code, 0);
    EXPECT_NE(r.error().message.find("--connections"), std::string::npos);
    EXPECT_NE(r.error().message.find("--rate"), std::string::npos);
}

TEST(BenchOptions, RequiresTargetConnectionsAndSize) {
    expect_usage_error(parse({"--connections", "1", "--size", "2048", "--messages", "1"}), "--target");
    expect_usage_error(parse({"--target", "127.0.0.1:25", "--size", "2048", "--messages", "1"}), "--connections");
    expect_usage_error(parse({"--target", "127.0.0.1:25", "--connections", "1", "--messages", "1"}), "--size");
}

TEST(BenchOptions, RequiresMessagesOrDuration) { expect_usage_error(parse_with({}), "--messages M or --duration S"); }

TEST(BenchOptions, MessagesAndDurationExcludeEachOther) {
    expect_usage_error(parse_with({"--messages", "10", "--duration", "5"}), "excludes");
}

TEST(BenchOptions, RefusesZeroOrNegativeCounts) {
    expect_usage_error(parse_with({"--messages", "0"}), "--messages");
    expect_usage_error(parse_with({"--duration", "0"}), "--duration");
    expect_usage_error(parse_with({"--duration", "-3"}), "--duration");
    expect_usage_error(parse_with({"--duration", "5x"}), "--duration");
    expect_usage_error(parse_with({"--messages", "-5"}), "--messages");
    expect_usage_error(parse_with({"--messages", "10", "--max-messages-per-connection", "-1"}),
                       "--max-messages-per-connection");
    expect_usage_error(parse_with({"--messages", "10", "--recipients", "-1"}), "--recipients");
    expect_usage_error(parse_with({"--messages", "10", "--recipients", "2.5"}), "--recipients");
    expect_usage_error(parse_with({"--messages", "10", "--seed", "-1"}), "--seed");
    expect_usage_error(parse_with({"--messages", "ten"}), "--messages");
    expect_usage_error(parse_with({"--messages", "10", "--rate", "0"}), "--rate");
    expect_usage_error(parse_with({"--messages", "10", "--recipients", "0"}), "--recipients");
    expect_usage_error(parse_with({"--messages", "10", "--timeout", "0"}), "--timeout");
    expect_usage_error(parse_with({"--messages", "10", "--shards", "0"}), "--shards");
    expect_usage_error(parse({"--target", "127.0.0.1:25", "--connections", "0", "--size", "2048", "--messages", "1"}),
                       "--connections");
}

TEST(BenchOptions, DurationAcceptsSecondsAndUnits) {
    const auto plain = parse_with({"--duration", "1.5"});
    ASSERT_TRUE(plain.has_value()) << plain.error().message;
    EXPECT_DOUBLE_EQ(plain->duration_seconds, 1.5);
    const auto units = parse_with({"--duration", "1m30s"});
    ASSERT_TRUE(units.has_value()) << units.error().message;
    EXPECT_DOUBLE_EQ(units->duration_seconds, 90.0);
}

struct bad_target_case {
    const char* label;
    const char* target;
};

class BenchOptionsBadTarget : public ::testing::TestWithParam<bad_target_case> {};

TEST_P(BenchOptionsBadTarget, IsAUsageError) {
    expect_usage_error(
        parse({"--target", GetParam().target, "--connections", "1", "--size", "2048", "--messages", "1"}), "--target");
}

INSTANTIATE_TEST_SUITE_P(Targets, BenchOptionsBadTarget,
                         ::testing::Values(bad_target_case{"NoPort", "127.0.0.1"},
                                           bad_target_case{"PortTooBig", "127.0.0.1:70000"},
                                           bad_target_case{"PortZero", "127.0.0.1:0"},
                                           bad_target_case{"HostName", "mail.example.com:25"},
                                           bad_target_case{"Empty", ""}, bad_target_case{"UnclosedBracket", "[::1:25"}),
                         [](const auto& info) { return std::string(info.param.label); });

TEST(BenchOptions, SizeBounds) {
    const std::size_t smallest = message_template::minimum_size("bench@ringrelay-bench.test");
    const std::string at_min = std::to_string(smallest);
    const std::string below_min = std::to_string(smallest - 1);
    auto ok = parse({"--target", "127.0.0.1:25", "--connections", "1", "--messages", "1", "--size", at_min.c_str()});
    ASSERT_TRUE(ok.has_value()) << ok.error().message;
    EXPECT_EQ(ok->size, smallest);
    expect_usage_error(
        parse({"--target", "127.0.0.1:25", "--connections", "1", "--messages", "1", "--size", below_min.c_str()}),
        "--size must be from " + at_min);
    auto max = parse({"--target", "127.0.0.1:25", "--connections", "1", "--messages", "1", "--size", "100M"});
    ASSERT_TRUE(max.has_value()) << max.error().message;
    EXPECT_EQ(max->size, max_message_size);
    expect_usage_error(parse({"--target", "127.0.0.1:25", "--connections", "1", "--messages", "1", "--size", "101M"}),
                       "--size");
    expect_usage_error(parse({"--target", "127.0.0.1:25", "--connections", "1", "--messages", "1", "--size", "2q"}),
                       "--size");
    expect_usage_error(parse({"--target", "127.0.0.1:25", "--connections", "1", "--messages", "1", "--size", "k"}),
                       "--size");
}

TEST(BenchOptions, ShardsNeverExceedConnections) {
    const auto r =
        parse({"--target", "127.0.0.1:25", "--connections", "2", "--size", "2048", "--messages", "1", "--shards", "8"});
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_EQ(r->shards, 2u);
}

TEST(BenchOptions, RefusesUnsendableSenderAndHelo) {
    expect_usage_error(parse_with({"--messages", "1", "--from", "no-at-sign"}), "--from");
    expect_usage_error(parse_with({"--messages", "1", "--from", "a b@example.com"}), "--from");
    expect_usage_error(parse_with({"--messages", "1", "--from", "<a@example.com>"}), "--from");
    expect_usage_error(parse_with({"--messages", "1", "--helo", "two words"}), "--helo");
    const auto null_sender = parse_with({"--messages", "1", "--from", ""});
    ASSERT_TRUE(null_sender.has_value()) << null_sender.error().message;
    EXPECT_TRUE(null_sender->from.empty());
}

TEST(BenchOptions, DomainsErrorIsReportedWithTheFlag) {
    expect_usage_error(parse_with({"--messages", "1", "--domains", "a.example:0"}), "--domains");
}

TEST(ParseDomains, ReadsWeightsAndDefaultsToOne) {
    const auto d = parse_domains("gmail.com:5,yahoo.com:3,Example.ORG");
    ASSERT_TRUE(d.has_value()) << d.error();
    ASSERT_EQ(d->size(), 3u);
    EXPECT_EQ((*d)[0], (weighted_domain{"gmail.com", 5}));
    EXPECT_EQ((*d)[1], (weighted_domain{"yahoo.com", 3}));
    EXPECT_EQ((*d)[2], (weighted_domain{"example.org", 1}));
}

struct bad_domains_case {
    const char* label;
    const char* text;
    const char* mentions;
};

class ParseDomainsBad : public ::testing::TestWithParam<bad_domains_case> {};

TEST_P(ParseDomainsBad, NamesTheProblem) {
    const auto d = parse_domains(GetParam().text);
    ASSERT_FALSE(d.has_value());
    EXPECT_NE(d.error().find(GetParam().mentions), std::string::npos) << d.error();
}

INSTANTIATE_TEST_SUITE_P(
    Lists, ParseDomainsBad,
    ::testing::Values(
        bad_domains_case{"Empty", "", "empty"}, bad_domains_case{"EmptyItem", "a.example,,b.example", "empty item"},
        bad_domains_case{"TrailingComma", "a.example,", "empty item"},
        bad_domains_case{"ZeroWeight", "a.example:0", "weight"},
        bad_domains_case{"NegativeWeight", "a.example:-1", "weight"},
        bad_domains_case{"FractionalWeight", "a.example:1.5", "weight"},
        bad_domains_case{"HugeWeight", "a.example:99999999999", "weight"},
        bad_domains_case{"MissingWeight", "a.example:", "weight"}, bad_domains_case{"EmptyName", ":3", "empty domain"},
        bad_domains_case{"BadCharacter", "a_b.example", "not a domain"},
        bad_domains_case{"Space", "a .example", "not a domain"}, bad_domains_case{"EmptyLabel", "a..example", "label"},
        bad_domains_case{"LeadingDot", ".example", "label"}, bad_domains_case{"HyphenEdge", "-a.example", "'-'"},
        bad_domains_case{"LongLabel", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example",
                         "label"},
        bad_domains_case{"Duplicate", "a.example:1,A.EXAMPLE:2", "twice"}),
    [](const auto& info) { return std::string(info.param.label); });

TEST(ParseSeconds, AcceptsNumbersAndDurations) {
    EXPECT_DOUBLE_EQ(parse_seconds("10").value(), 10.0);
    EXPECT_DOUBLE_EQ(parse_seconds("0.5").value(), 0.5);
    EXPECT_DOUBLE_EQ(parse_seconds("1h").value(), 3600.0);
    EXPECT_DOUBLE_EQ(parse_seconds("250ms").value(), 0.25);
    EXPECT_FALSE(parse_seconds("").has_value());
    EXPECT_FALSE(parse_seconds("ten").has_value());
    EXPECT_FALSE(parse_seconds("-1").has_value());
    EXPECT_FALSE(parse_seconds("inf").has_value());
}

}  // namespace
}  // namespace ringrelay::bench
