// tests/tools/sink/options_test.cc: ringrelay-sink's command line: defaults, --listen,
// probabilities, --expect and the other numbers, --help.
#include "tools/sink/options.h"

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

namespace ringrelay::sink {
namespace {

std::expected<sink_options, options_exit> parse(std::vector<std::string> args) {
    args.insert(args.begin(), "ringrelay-sink");
    std::vector<const char*> argv;
    for (const std::string& a : args) argv.push_back(a.c_str());
    return parse_options(static_cast<int>(argv.size()), argv.data());
}

// The error message of a failed parse ("" if it succeeded).
std::string error_of(std::vector<std::string> args) {
    auto r = parse(std::move(args));
    if (r) return "";
    EXPECT_EQ(r.error().code, 2);
    return r.error().message;
}

TEST(SinkOptions, ListenAloneGivesDefaults) {
    auto o = parse({"--listen", "127.0.0.1:2526"});
    ASSERT_TRUE(o.has_value()) << o.error().message;
    ASSERT_EQ(o->listen.size(), 1U);
    EXPECT_EQ(o->listen[0].port(), 2526);
    EXPECT_EQ(o->expect, 0U);
    EXPECT_EQ(o->defer_rate, 0.0);
    EXPECT_EQ(o->reject_rate, 0.0);
    EXPECT_EQ(o->disconnect_rate, 0.0);
    EXPECT_EQ(o->delay_ms, 0U);
    EXPECT_EQ(o->max_connections_per_ip, 0U);
    EXPECT_EQ(o->max_rate_per_ip, 0.0);
    EXPECT_TRUE(o->save_dir.empty());
    EXPECT_EQ(o->format, output_format::text);
    EXPECT_EQ(o->progress, progress_lines::every_second);
    EXPECT_FALSE(o->seed_given);
    const unsigned cpus = std::thread::hardware_concurrency();
    EXPECT_EQ(o->shards, cpus == 0 ? 1U : cpus);
}

TEST(SinkOptions, SeveralListenKeepTheirOrder) {
    auto o = parse({"--listen", "127.0.0.1:1", "--listen", "[::1]:2", "--listen", "localhost:3"});
    ASSERT_TRUE(o.has_value()) << o.error().message;
    ASSERT_EQ(o->listen.size(), 3U);
    EXPECT_EQ(o->listen[0].port(), 1);
    EXPECT_EQ(o->listen[1].family(), AF_INET6);
    EXPECT_EQ(o->listen[2].port(), 3);
}

TEST(SinkOptions, ListenIsRequired) { EXPECT_NE(error_of({"--expect", "3"}), ""); }

class BadListen : public ::testing::TestWithParam<const char*> {};

TEST_P(BadListen, IsRefusedNamingTheFlag) {
    const std::string e = error_of({"--listen", GetParam()});
    EXPECT_NE(e.find("--listen"), std::string::npos) << e;
}

INSTANTIATE_TEST_SUITE_P(Values, BadListen,
                         ::testing::Values("127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:x",
                                           "example.org:25", "[::1:25", "300.1.1.1:25"));

struct rate_case {
    const char* flag;
    const char* value;
};

class BadRate : public ::testing::TestWithParam<rate_case> {};

TEST_P(BadRate, IsRefusedNamingTheFlag) {
    const std::string e = error_of({"--listen", "127.0.0.1:0", GetParam().flag, GetParam().value});
    EXPECT_NE(e.find(GetParam().flag), std::string::npos) << e;
}

INSTANTIATE_TEST_SUITE_P(Values, BadRate,
                         ::testing::Values(rate_case{"--defer-rate", "-0.1"}, rate_case{"--defer-rate", "1.01"},
                                           rate_case{"--reject-rate", "2"}, rate_case{"--reject-rate", "nan"},
                                           rate_case{"--disconnect-rate", "inf"},
                                           rate_case{"--disconnect-rate", "-1"},
                                           rate_case{"--defer-rate", "half"}));

TEST(SinkOptions, RatesAtTheBoundsAreAccepted) {
    auto zero = parse({"--listen", "127.0.0.1:0", "--defer-rate", "0", "--reject-rate", "0"});
    ASSERT_TRUE(zero.has_value()) << zero.error().message;
    auto one = parse({"--listen", "127.0.0.1:0", "--reject-rate", "1"});
    ASSERT_TRUE(one.has_value()) << one.error().message;
    EXPECT_EQ(one->reject_rate, 1.0);
}

TEST(SinkOptions, RatesMayAddUpToOneButNotMore) {
    auto exact = parse({"--listen", "127.0.0.1:0", "--defer-rate", "0.7", "--reject-rate", "0.2",
                        "--disconnect-rate", "0.1"});
    ASSERT_TRUE(exact.has_value()) << exact.error().message;
    EXPECT_EQ(exact->defer_rate, 0.7);
    EXPECT_EQ(exact->disconnect_rate, 0.1);
    const std::string e = error_of({"--listen", "127.0.0.1:0", "--defer-rate", "0.6", "--reject-rate", "0.5"});
    EXPECT_NE(e.find("add up"), std::string::npos) << e;
}

TEST(SinkOptions, OffersNoTlsUnlessAsked) {
    auto plain = parse({"--listen", "127.0.0.1:0"});
    ASSERT_TRUE(plain.has_value());
    EXPECT_FALSE(plain->tls);
    auto self_signed = parse({"--listen", "127.0.0.1:0", "--tls", "--tls-dir", "/tmp/x"});
    ASSERT_TRUE(self_signed.has_value()) << self_signed.error().message;
    EXPECT_TRUE(self_signed->tls);
    EXPECT_EQ(self_signed->tls_dir, "/tmp/x");
    auto configured = parse({"--listen", "127.0.0.1:0", "--tls-cert", "c.pem", "--tls-key", "k.pem"});
    ASSERT_TRUE(configured.has_value()) << configured.error().message;
    EXPECT_TRUE(configured->tls);  // a certificate implies --tls
}

TEST(SinkOptions, TlsFlagsMustComeTogether) {
    EXPECT_NE(error_of({"--listen", "127.0.0.1:0", "--tls-cert", "c.pem"}).find("--tls-key"), std::string::npos);
    EXPECT_NE(error_of({"--listen", "127.0.0.1:0", "--tls-key", "k.pem"}).find("--tls-cert"), std::string::npos);
    EXPECT_NE(error_of({"--listen", "127.0.0.1:0", "--tls-dir", "/tmp/x"}).find("--tls-dir"), std::string::npos);
}

TEST(SinkOptions, ExpectTakesACount) {
    auto o = parse({"--listen", "127.0.0.1:0", "--expect", "250000"});
    ASSERT_TRUE(o.has_value()) << o.error().message;
    EXPECT_EQ(o->expect, 250000U);
    EXPECT_NE(error_of({"--listen", "127.0.0.1:0", "--expect", "-1"}), "");
    EXPECT_NE(error_of({"--listen", "127.0.0.1:0", "--expect", "many"}), "");
    EXPECT_NE(error_of({"--listen", "127.0.0.1:0", "--expect"}), "");
}

TEST(SinkOptions, LimitsAndDelayAreParsed) {
    auto o = parse({"--listen", "127.0.0.1:0", "--max-connections-per-ip", "2", "--max-rate-per-ip", "5.5",
                    "--delay-ms", "250", "--save", "/tmp/x", "--quiet", "--json", "--seed", "42", "--hostname",
                    "mx.sink.test", "--duration", "9", "--shards", "3"});
    ASSERT_TRUE(o.has_value()) << o.error().message;
    EXPECT_EQ(o->max_connections_per_ip, 2U);
    EXPECT_EQ(o->max_rate_per_ip, 5.5);
    EXPECT_EQ(o->delay_ms, 250U);
    EXPECT_EQ(o->save_dir, "/tmp/x");
    EXPECT_EQ(o->progress, progress_lines::off);
    EXPECT_EQ(o->format, output_format::json);
    EXPECT_TRUE(o->seed_given);
    EXPECT_EQ(o->seed, 42U);
    EXPECT_EQ(o->hostname, "mx.sink.test");
    EXPECT_EQ(o->duration_seconds, 9U);
    EXPECT_EQ(o->shards, 3U);
}

TEST(SinkOptions, BadNumbersAreRefusedNamingTheFlag) {
    const std::pair<const char*, const char*> bad[] = {
        {"--max-rate-per-ip", "-5"}, {"--max-rate-per-ip", "1e10"}, {"--shards", "257"},
        {"--max-message-size", "0"}, {"--timeout", "0"},           {"--hostname", "two words"},
        {"--delay-ms", "-3"},        {"--max-connections-per-ip", "x"}};
    for (const auto& [flag, value] : bad) {
        const std::string e = error_of({"--listen", "127.0.0.1:0", flag, value});
        EXPECT_NE(e.find(flag), std::string::npos) << flag << " " << value << ": " << e;
    }
}

TEST(SinkOptions, UnknownFlagIsRefused) { EXPECT_NE(error_of({"--listen", "127.0.0.1:0", "--fast"}), ""); }

TEST(SinkOptions, HelpExitsZeroAndDocumentsTheSaveFormat) {
    auto r = parse({"--help"});
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code, 0);
    for (const char* s : {"X-Sink-Mail-From:", "X-Sink-Rcpt-To:", "X-Sink-Size:", "--max-rate-per-ip",
                          "421 4.7.0", "451 4.7.1", "--expect"}) {
        EXPECT_NE(r.error().message.find(s), std::string::npos) << s;
    }
}

}  // namespace
}  // namespace ringrelay::sink
