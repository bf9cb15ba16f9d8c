// Unit tests of core/config.h: defaults, JSON config, flag precedence, and errors that name
// the key or flag; the flag table (ConfigTable): every row round-trips, one row per field.
#include "core/config.h"
#include "core/duration.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <simdjson.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <variant>
#include <vector>

using namespace ringrelay::core;

namespace {

std::expected<config, config_exit> load(std::vector<std::string> args) {
    args.insert(args.begin(), "ringrelay");
    std::vector<const char*> argv;
    for (const std::string& a : args) argv.push_back(a.c_str());
    return load_config(static_cast<int>(argv.size()), argv.data());
}

std::string write_temp(const std::string& text) {
    char name[] = "/tmp/ringrelay-config-XXXXXX";
    const int fd = mkstemp(name);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
    ::close(fd);
    return name;
}

}  // namespace

TEST(Config, EmbeddedDefaultsMatchTheDocumentation) {
    auto c = load({});
    ASSERT_TRUE(c.has_value()) << c.error().message;
    ASSERT_EQ(c->listen.size(), 1u);
    EXPECT_EQ(c->listen[0], "127.0.0.1:2525");
    EXPECT_EQ(c->spool, "./var/spool");
    EXPECT_EQ(c->max_message_size, 26214400u);
    EXPECT_EQ(c->max_recipients, 1000u);
    EXPECT_EQ(c->command_timeout, 300u);
    EXPECT_GE(c->shards, 1u);
    EXPECT_FALSE(c->hostname.empty());
    EXPECT_EQ(c->relay_cidrs.size(), 2u);
}

TEST(Config, FlagsOverrideTheConfigFile) {
    const std::string path = write_temp(R"({"shards": 3, "max-recipients": 7, "hostname": "file.example",
        "relay_domains": ["Example.ORG", ".sub.example"], "listen": ["127.0.0.1:2600", "[::1]:2601"]})");
    auto c = load({"--config", path, "--max-recipients", "9"});
    std::remove(path.c_str());
    ASSERT_TRUE(c.has_value()) << c.error().message;
    EXPECT_EQ(c->shards, 3u);
    EXPECT_EQ(c->max_recipients, 9u);
    EXPECT_EQ(c->hostname, "file.example");
    ASSERT_EQ(c->relay_domains.size(), 2u);
    EXPECT_EQ(c->relay_domains[0], "example.org");
    EXPECT_EQ(c->listen_endpoints.size(), 2u);
}

TEST(Config, PostmasterFromFlagOverridesTheConfigFile) {
    const std::string path = write_temp(R"({"postmaster": "file@example.org"})");
    auto from_file = load({"--config", path});
    auto from_flag = load({"--config", path, "--postmaster", "ops@example.net"});
    std::remove(path.c_str());
    ASSERT_TRUE(from_file.has_value()) << from_file.error().message;
    ASSERT_TRUE(from_flag.has_value()) << from_flag.error().message;
    EXPECT_EQ(from_file->postmaster, "file@example.org");
    EXPECT_EQ(from_flag->postmaster, "ops@example.net");
}

TEST(Config, CommaSeparatedListsSplit) {
    auto c = load({"--relay-networks", "10.0.0.0/8, 192.168.0.0/16", "--relay-domains", "a.example,b.example"});
    ASSERT_TRUE(c.has_value()) << c.error().message;
    EXPECT_EQ(c->relay_cidrs.size(), 2u);
    EXPECT_EQ(c->relay_domains.size(), 2u);
}

TEST(Config, RepeatedListenAccumulates) {
    auto c = load({"--listen", "127.0.0.1:2525", "--listen", "127.0.0.2:2525"});
    ASSERT_TRUE(c.has_value()) << c.error().message;
    EXPECT_EQ(c->listen_endpoints.size(), 2u);
}

// Issue 15: retries in milliseconds ("250ms,1s"), from the flag and from the file.
TEST(Config, RetryIntervalsTakeMilliseconds) {
    auto c = load({"--retry-intervals", "250ms,1s, 1m30s"});
    ASSERT_TRUE(c.has_value()) << c.error().message;
    EXPECT_EQ(c->retry_intervals, "250ms,1s, 1m30s");
    const auto parsed = parse_duration_list(c->retry_intervals);
    ASSERT_TRUE(parsed.has_value());
    EXPECT_EQ(*parsed, (std::vector<std::chrono::milliseconds>{std::chrono::milliseconds(250),
                                                                std::chrono::milliseconds(1000),
                                                                std::chrono::milliseconds(90000)}));
    const std::string path = write_temp(R"({"retry-intervals": "250ms,500ms"})");
    auto f = load({"--config", path});
    std::remove(path.c_str());
    ASSERT_TRUE(f.has_value()) << f.error().message;
    EXPECT_EQ(f->retry_intervals, "250ms,500ms");
    auto bad = load({"--retry-intervals", "250us"});
    ASSERT_FALSE(bad.has_value());
    EXPECT_EQ(bad.error().message,
              "ringrelay: --retry-intervals: item 1 \"250us\": unknown unit \"us\" (use d, h, m, s or ms)");
}

TEST(Config, BodyCacheSizeTakesBinaryUnitsOrBytes) {
    auto d = load({});
    ASSERT_TRUE(d.has_value()) << d.error().message;
    EXPECT_EQ(d->body_cache_bytes, 256ull << 20) << "the default, 256MiB";
    for (const auto& [text, bytes] : std::vector<std::pair<std::string, std::uint64_t>>{
             {"32MiB", 32ull << 20}, {"100", 100}, {"0", 0}, {"4KiB", 4096}, {"2GiB", 2ull << 30}}) {
        auto c = load({"--body-cache-size", text});
        ASSERT_TRUE(c.has_value()) << text << ": " << c.error().message;
        EXPECT_EQ(c->body_cache_bytes, bytes) << text;
    }
    for (const std::string bad : {"256MB", "", "MiB", "-1", "1.5GiB", "32 MiB", "99999999999999999999",
                                  "20000000TiB"}) {
        auto c = load({"--body-cache-size", bad});
        ASSERT_FALSE(c.has_value()) << bad;
        EXPECT_EQ(c.error().code, 2);
        EXPECT_NE(c.error().message.find("--body-cache-size"), std::string::npos) << c.error().message;
    }
    const std::string file = write_temp(R"({"body-cache-size": 1048576})");
    auto j = load({"--config", file});
    ::unlink(file.c_str());
    ASSERT_TRUE(j.has_value()) << j.error().message;
    EXPECT_EQ(j->body_cache_bytes, 1u << 20) << "JSON takes a number of bytes";
    const std::string file2 = write_temp(R"({"body-cache-size": "64KiB"})");
    auto k = load({"--config", file2});
    ::unlink(file2.c_str());
    ASSERT_TRUE(k.has_value()) << k.error().message;
    EXPECT_EQ(k->body_cache_bytes, 64u << 10) << "or the same text as the flag";
}

// Compaction tests need segments far smaller than the 64 MiB default (issue 15's crash tests).
TEST(Config, SpoolSegmentSizeTakesBinaryUnitsWithinOneMiBToOneGiB) {
    auto d = load({});
    ASSERT_TRUE(d.has_value()) << d.error().message;
    EXPECT_EQ(d->spool_segment_bytes, 64ull << 20) << "the default, 64MiB";
    for (const auto& [text, bytes] : std::vector<std::pair<std::string, std::uint64_t>>{
             {"1MiB", 1ull << 20}, {"1048576", 1ull << 20}, {"3MiB", 3ull << 20}, {"1GiB", 1ull << 30}}) {
        auto c = load({"--spool-segment-size", text});
        ASSERT_TRUE(c.has_value()) << text << ": " << c.error().message;
        EXPECT_EQ(c->spool_segment_bytes, bytes) << text;
    }
    for (const std::string bad : {"1048575", "1023KiB", "0", "1025MiB", "2GiB", "64MB", ""}) {
        auto c = load({"--spool-segment-size", bad});
        ASSERT_FALSE(c.has_value()) << bad;
        EXPECT_EQ(c.error().code, 2);
        EXPECT_NE(c.error().message.find("--spool-segment-size"), std::string::npos) << c.error().message;
    }
    auto small = load({"--spool-segment-size", "512KiB"});
    ASSERT_FALSE(small.has_value());
    EXPECT_EQ(small.error().message,
              "ringrelay: --spool-segment-size: must be between 1MiB and 1GiB, got '512KiB'");
    const std::string file = write_temp(R"({"spool-segment-size": 2097152})");
    auto j = load({"--config", file});
    ::unlink(file.c_str());
    ASSERT_TRUE(j.has_value()) << j.error().message;
    EXPECT_EQ(j->spool_segment_bytes, 2u << 20) << "JSON takes a number of bytes";
    const std::string file2 = write_temp(R"({"spool-segment-size": "4MiB"})");
    auto k = load({"--config", file2});
    ::unlink(file2.c_str());
    ASSERT_TRUE(k.has_value()) << k.error().message;
    EXPECT_EQ(k->spool_segment_bytes, 4u << 20) << "or the same text as the flag";
}

TEST(Config, UnknownJsonKeyIsAnErrorNamingIt) {
    const std::string path = write_temp(R"({"max-recipents": 5})");
    auto c = load({"--config", path});
    std::remove(path.c_str());
    ASSERT_FALSE(c.has_value());
    EXPECT_EQ(c.error().code, 2);
    EXPECT_NE(c.error().message.find("max-recipents"), std::string::npos) << c.error().message;
}

TEST(Config, WrongJsonTypeNamesTheKey) {
    const std::string path = write_temp(R"({"shards": "two"})");
    auto c = load({"--config", path});
    std::remove(path.c_str());
    ASSERT_FALSE(c.has_value());
    EXPECT_NE(c.error().message.find("'shards'"), std::string::npos) << c.error().message;
}

TEST(Config, InvalidJsonIsReported) {
    const std::string path = write_temp("{\"shards\": 2,");
    auto c = load({"--config", path});
    std::remove(path.c_str());
    ASSERT_FALSE(c.has_value());
    EXPECT_NE(c.error().message.find("not valid JSON"), std::string::npos) << c.error().message;
}

TEST(Config, BadFlagValuesNameTheFlag) {
    struct {
        std::vector<std::string> args;
        const char* names;
    } cases[] = {
        {{"--listen", "nowhere"}, "--listen"},
        {{"--relay-networks", "10.0.0.0/99"}, "--relay-networks"},
        {{"--proxy-protocol-from", "10.0.0.0/33"}, "--proxy-protocol-from"},
        {{"--proxy-protocol-timeout", "0"}, "--proxy-protocol-timeout"},
        {{"--redis", "127.0.0.1:6379"}, "--redis: expected redis://HOST:PORT/DB or unix:PATH"},
        {{"--redis", "redis://127.0.0.1:6379/99"}, "--redis: database must be 0..15"},
        {{"--cluster-size", "0"}, "--cluster-size"},
        {{"--max-recipients", "0"}, "--max-recipients"},
        {{"--command-timeout", "0"}, "--command-timeout"},
        {{"--shards", "1000"}, "--shards"},
        {{"--shards", "many"}, "--shards"},
    };
    for (const auto& tc : cases) {
        auto c = load(tc.args);
        ASSERT_FALSE(c.has_value()) << tc.names;
        EXPECT_EQ(c.error().code, 2);
        EXPECT_NE(c.error().message.find(tc.names), std::string::npos) << c.error().message;
    }
}

// Issue 19: the load balancers whose connections start with a PROXY header.
TEST(Config, ProxyProtocolFromTakesNetworksFromFlagsAndJson) {
    auto c = load({"--proxy-protocol-from", "10.0.0.5,192.168.1.0/24", "--proxy-protocol-from", "::1"});
    ASSERT_TRUE(c.has_value()) << c.error().message;
    ASSERT_EQ(c->proxy_cidrs.size(), 3u);
    sockaddr_in in{};
    in.sin_family = AF_INET;
    inet_pton(AF_INET, "192.168.1.77", &in.sin_addr);
    EXPECT_TRUE(c->proxy_cidrs[1].contains(reinterpret_cast<const sockaddr*>(&in)));
    EXPECT_FALSE(c->proxy_cidrs[0].contains(reinterpret_cast<const sockaddr*>(&in)));
    EXPECT_EQ(c->proxy_protocol_timeout, 5u);

    const std::string file = write_temp(R"({"proxy-protocol-from": ["10.1.0.0/16"], "proxy-protocol-timeout": 2})");
    auto j = load({"--config", file});
    std::remove(file.c_str());
    ASSERT_TRUE(j.has_value()) << j.error().message;
    ASSERT_EQ(j->proxy_cidrs.size(), 1u);
    EXPECT_EQ(j->proxy_protocol_timeout, 2u);

    EXPECT_TRUE(load({})->proxy_cidrs.empty());  // none by default: no connection is read as one
}

// Issue 19: the Redis the nodes share their limits through, and the fleet's size for the fallback.
TEST(Config, RedisTakesAUrlFromFlagsAndJson) {
    auto c = load({"--redis", "redis://127.0.0.1:6390/3", "--cluster-size", "4"});
    ASSERT_TRUE(c.has_value()) << c.error().message;
    ASSERT_TRUE(c->redis_address.has_value());
    EXPECT_EQ(c->redis_address->host, "127.0.0.1");
    EXPECT_EQ(c->redis_address->port, 6390);
    EXPECT_EQ(c->redis_address->db, 3u);
    EXPECT_EQ(c->cluster_size, 4u);

    const std::string file = write_temp(R"({"redis": "unix:/run/redis/redis.sock", "cluster-size": 2})");
    auto j = load({"--config", file});
    std::remove(file.c_str());
    ASSERT_TRUE(j.has_value()) << j.error().message;
    ASSERT_TRUE(j->redis_address.has_value());
    EXPECT_EQ(j->redis_address->transport, redis_url::kind::unix_socket);
    EXPECT_EQ(j->redis_address->path, "/run/redis/redis.sock");
    EXPECT_EQ(j->cluster_size, 2u);

    const auto none = load({});
    EXPECT_FALSE(none->redis_address.has_value());  // none by default: every limit is the node's own
    EXPECT_EQ(none->cluster_size, 1u);
}

TEST(Config, MalformedRedisUrlInJsonStopsTheStart) {
    const std::string file = write_temp(R"({"redis": "redis://[::1"})");
    auto j = load({"--config", file});
    std::remove(file.c_str());
    ASSERT_FALSE(j.has_value());
    EXPECT_EQ(j.error().code, 2);
    EXPECT_NE(j.error().message.find("--redis: missing ]"), std::string::npos) << j.error().message;
}

TEST(Config, MissingConfigFileIsAnError) {
    auto c = load({"--config", "/nonexistent/ringrelay.json"});
    ASSERT_FALSE(c.has_value());
    EXPECT_NE(c.error().message.find("/nonexistent/ringrelay.json"), std::string::npos);
}

TEST(Config, HelpDocumentsEveryFlag) {
    auto c = load({"--help"});
    ASSERT_FALSE(c.has_value());
    EXPECT_EQ(c.error().code, 0);
    for (const char* flag : {"--config", "--listen", "--shards", "--spool", "--hostname", "--relay-networks",
                             "--relay-domains", "--max-message-size", "--max-recipients", "--command-timeout",
                             "--log", "--list-spool", "--postmaster"}) {
        EXPECT_NE(c.error().message.find(flag), std::string::npos) << flag;
    }
}

// Inbound TLS (issue 5): --tls-cert/--tls-key go together; --listen-tls is repeatable and
// parsed like --listen; the JSON keys mirror the flags.
TEST(Config, TlsFlagsAreParsed) {
    auto c = load({"--tls-cert", "/etc/rr/cert.pem", "--tls-key", "/etc/rr/key.pem", "--listen-tls",
                   "127.0.0.1:4650", "--listen-tls", "[::1]:4651"});
    ASSERT_TRUE(c.has_value()) << c.error().message;
    EXPECT_EQ(c->tls_cert, "/etc/rr/cert.pem");
    EXPECT_EQ(c->tls_key, "/etc/rr/key.pem");
    ASSERT_EQ(c->listen_tls_endpoints.size(), 2u);
    EXPECT_EQ(c->listen_tls_endpoints[0].port(), 4650);
    EXPECT_EQ(c->listen_tls_endpoints[1].family(), AF_INET6);
    auto d = load({});
    ASSERT_TRUE(d.has_value());
    EXPECT_TRUE(d->tls_cert.empty());
    EXPECT_TRUE(d->listen_tls_endpoints.empty());
}

TEST(Config, TlsCertWithoutKeyIsAnError) {
    auto c = load({"--tls-cert", "/etc/rr/cert.pem"});
    ASSERT_FALSE(c.has_value());
    EXPECT_EQ(c.error().code, 2);
    EXPECT_NE(c.error().message.find("--tls-cert: needs --tls-key"), std::string::npos) << c.error().message;
    auto k = load({"--tls-key", "/etc/rr/key.pem"});
    ASSERT_FALSE(k.has_value());
    EXPECT_NE(k.error().message.find("--tls-key: needs --tls-cert"), std::string::npos) << k.error().message;
}

// Issue 18: --http-tls is repeatable, parsed like --http, and needs the SMTP certificate
// (no self-signed one is made for HTTPS).
TEST(Config, HttpTlsIsParsedAndNeedsACertificate) {
    auto c = load({"--tls-cert", "/c.pem", "--tls-key", "/k.pem", "--http-tls", "127.0.0.1:8443", "--http-tls",
                   "[::1]:8444"});
    ASSERT_TRUE(c.has_value()) << c.error().message;
    ASSERT_EQ(c->http_tls_endpoints.size(), 2u);
    EXPECT_EQ(c->http_tls_endpoints[0].port(), 8443);
    EXPECT_EQ(c->http_tls_endpoints[1].family(), AF_INET6);
    EXPECT_TRUE(c->http_endpoints.empty());
    auto none = load({"--http-tls", "127.0.0.1:8443"});
    ASSERT_FALSE(none.has_value());
    EXPECT_EQ(none.error().code, 2);
    EXPECT_NE(none.error().message.find("--http-tls: needs a certificate"), std::string::npos) << none.error().message;
    auto bad = load({"--tls-cert", "/c.pem", "--tls-key", "/k.pem", "--http-tls", "nowhere"});
    ASSERT_FALSE(bad.has_value());
    EXPECT_NE(bad.error().message.find("--http-tls: "), std::string::npos) << bad.error().message;
    auto d = load({});
    ASSERT_TRUE(d.has_value());
    EXPECT_TRUE(d->http_tls_endpoints.empty());
}

TEST(Config, HttpTlsJsonKey) {
    config c;
    ASSERT_TRUE(apply_json_config(R"({"http-tls": ["127.0.0.1:8443"]})", c));
    ASSERT_EQ(c.http_tls.size(), 1u);
    EXPECT_EQ(c.http_tls[0], "127.0.0.1:8443");
}

TEST(Config, BadListenTlsNamesTheFlag) {
    auto c = load({"--listen-tls", "nowhere"});
    ASSERT_FALSE(c.has_value());
    EXPECT_NE(c.error().message.find("--listen-tls: "), std::string::npos) << c.error().message;
}

TEST(Config, TlsJsonKeys) {
    config c;
    ASSERT_TRUE(apply_json_config(R"({"tls-cert": "/c.pem", "tls_key": "/k.pem", "listen-tls": ["127.0.0.1:465"]})", c));
    EXPECT_EQ(c.tls_cert, "/c.pem");
    EXPECT_EQ(c.tls_key, "/k.pem");
    ASSERT_EQ(c.listen_tls.size(), 1u);
    EXPECT_EQ(c.listen_tls[0], "127.0.0.1:465");
    EXPECT_FALSE(apply_json_config(R"({"tls-cert": 5})", c));
}

TEST(Config, AuthAndTlsPolicyFlags) {
    auto c = load({"--auth-users", "/etc/ringrelay/users", "--auth-plaintext", "--no-starttls", "--auth-max-failures",
                   "5", "--outbound-tls", "required", "--route-tls", "Example.ORG=verify,*=disabled",
                   "--outbound-ca-file", "/etc/ssl/ca.pem"});
    ASSERT_TRUE(c.has_value()) << c.error().message;
    EXPECT_EQ(c->auth_users, "/etc/ringrelay/users");
    EXPECT_TRUE(c->auth_plaintext);
    EXPECT_FALSE(c->starttls);
    EXPECT_EQ(c->auth_max_failures, 5u);
    EXPECT_EQ(c->auth_max_failures_per_ip, 10u);
    EXPECT_EQ(c->outbound_tls_policy, config::tls_policy::required);
    ASSERT_EQ(c->route_tls_table.size(), 2u);
    EXPECT_EQ(c->tls_policy_for("example.org"), config::tls_policy::verify);
    EXPECT_EQ(c->tls_policy_for("other.example"), config::tls_policy::disabled);
    EXPECT_EQ(c->outbound_ca_file, "/etc/ssl/ca.pem");

    // The domain's own entry wins over an earlier '*'.
    auto order = load({"--route-tls", "*=opportunistic,bank.example=required"});
    ASSERT_TRUE(order.has_value()) << order.error().message;
    EXPECT_EQ(order->tls_policy_for("bank.example"), config::tls_policy::required);
    EXPECT_EQ(order->tls_policy_for("other.example"), config::tls_policy::opportunistic);

    auto d = load({});
    ASSERT_TRUE(d.has_value());
    EXPECT_TRUE(d->starttls);
    EXPECT_FALSE(d->auth_plaintext);
    EXPECT_EQ(d->tls_policy_for("example.org"), config::tls_policy::opportunistic);
}

TEST(Config, BadTlsPolicyNamesTheFlag) {
    auto c = load({"--outbound-tls", "maybe"});
    ASSERT_FALSE(c.has_value());
    EXPECT_NE(c.error().message.find("--outbound-tls"), std::string::npos) << c.error().message;
    auto r = load({"--route-tls", "example.org"});
    ASSERT_FALSE(r.has_value());
    EXPECT_NE(r.error().message.find("--route-tls"), std::string::npos) << r.error().message;
    const std::string path = write_temp(R"({"route_tls": ["a.example=required"], "starttls": false, "auth_users": "u"})");
    auto f = load({"--config", path});
    std::remove(path.c_str());
    ASSERT_TRUE(f.has_value()) << f.error().message;
    EXPECT_FALSE(f->starttls);
    EXPECT_EQ(f->auth_users, "u");
    EXPECT_EQ(f->tls_policy_for("a.example"), config::tls_policy::required);
}

TEST(Config, TlsCipherAndKtlsFlags) {
    auto c = load({"--tls-ciphers", "ECDHE+AESGCM", "--tls-ciphersuites", "TLS_AES_128_GCM_SHA256", "--no-ktls"});
    ASSERT_TRUE(c.has_value()) << c.error().message;
    EXPECT_EQ(c->tls_ciphers, "ECDHE+AESGCM");
    EXPECT_EQ(c->tls_ciphersuites, "TLS_AES_128_GCM_SHA256");
    EXPECT_FALSE(c->ktls);
    auto d = load({});
    ASSERT_TRUE(d.has_value());
    EXPECT_TRUE(d->ktls);
    EXPECT_TRUE(d->tls_ciphers.empty());
}

// The AUTH wait queue: defaults, flags, JSON keys (both spellings), bounds naming the flag.
TEST(Config, AuthQueueFlags) {
    auto d = load({});
    ASSERT_TRUE(d.has_value());
    EXPECT_EQ(d->auth_queue_size, 256u);
    EXPECT_EQ(d->auth_queue_timeout, 10u);
    auto c = load({"--auth-queue-size", "0", "--auth-queue-timeout", "3"});
    ASSERT_TRUE(c.has_value()) << c.error().message;
    EXPECT_EQ(c->auth_queue_size, 0u);
    EXPECT_EQ(c->auth_queue_timeout, 3u);
    config j;
    ASSERT_TRUE(apply_json_config(R"({"auth-queue-size": 32, "auth_queue_timeout": 5})", j));
    EXPECT_EQ(j.auth_queue_size, 32u);
    EXPECT_EQ(j.auth_queue_timeout, 5u);
    EXPECT_FALSE(apply_json_config(R"({"auth-queue-size": -1})", j));
    auto t = load({"--auth-queue-timeout", "0"});
    ASSERT_FALSE(t.has_value());
    EXPECT_NE(t.error().message.find("--auth-queue-timeout"), std::string::npos) << t.error().message;
    auto s = load({"--auth-queue-size", "70000"});
    ASSERT_FALSE(s.has_value());
    EXPECT_NE(s.error().message.find("--auth-queue-size"), std::string::npos) << s.error().message;
}

// The flag table (config_flags()): every row round-trips from the command line and from the
// JSON file, the command line wins over the file for every row, every config field that is a
// flag has exactly one row, range errors name the flag, --help and --dump-flags print the rows.
namespace {

template <typename... F>
struct overloaded : F... {
    using F::operator()...;
};
template <typename... F>
overloaded(F...) -> overloaded<F...>;  // clang 16 (the fuzz build) lacks aggregate deduction

// The row's field of `c` as text: "7", "some text", "a|b" for a list, "true".
std::string field_text(const flag_descriptor& f, const config& c) {
    return std::visit(overloaded{
                          [&](bool config::*m) { return std::string(c.*m ? "true" : "false"); },
                          [&](std::string config::*m) { return c.*m; },
                          [&](std::vector<std::string> config::*m) {
                              std::string out;
                              for (const std::string& s : c.*m) out += (out.empty() ? "" : "|") + s;
                              return out;
                          },
                          [&](auto m) { return std::to_string(c.*m); },
                      },
                      f.member);
}

bool is_switch(const flag_descriptor& f) { return std::holds_alternative<bool config::*>(f.member); }
bool is_list(const flag_descriptor& f) { return std::holds_alternative<std::vector<std::string> config::*>(f.member); }
bool is_text(const flag_descriptor& f) { return std::holds_alternative<std::string config::*>(f.member); }

// Two values of an integer row's type in its range, both unlike the default.
std::vector<std::uint64_t> integer_samples(const flag_descriptor& f) {
    const std::uint64_t def = std::stoull(field_text(f, config{}));
    std::vector<std::uint64_t> out;
    for (std::uint64_t v = f.min; out.size() < 2; ++v)
        if (v != def) out.push_back(v);
    return out;
}

// A value for the row: its command-line arguments, its JSON value, and the field_text it gives.
struct sample {
    std::vector<std::string> args;
    std::string json;
    std::string field;
};

sample sample_for(const flag_descriptor& f, int which) {
    const std::string name(f.name);
    const std::string tag = std::to_string(which) + "-" + name.substr(2);
    if (is_switch(f)) {
        const bool value = f.form != flag_form::negated;
        return {{name}, value ? "true" : "false", value ? "true" : "false"};
    }
    if (is_text(f)) return {{name, "text" + tag}, "\"text" + tag + "\"", "text" + tag};
    if (is_list(f) && f.form == flag_form::whole_items)  // items keep their commas
        return {{name, "a" + tag + ",b" + tag, name, "c" + tag}, "[\"a" + tag + ",b" + tag + "\", \"c" + tag + "\"]",
                "a" + tag + ",b" + tag + "|c" + tag};
    if (is_list(f))
        return {{name, "a" + tag + ", b" + tag, name, "c" + tag}, "[\"a" + tag + ",b" + tag + "\", \"c" + tag + "\"]",
                "a" + tag + "|b" + tag + "|c" + tag};
    const std::string n = std::to_string(integer_samples(f)[static_cast<std::size_t>(which)]);
    return {{name, n}, n, n};
}

std::expected<config, config_exit> read(std::vector<std::string> args) {
    args.insert(args.begin(), "ringrelay");
    std::vector<const char*> argv;
    for (const std::string& a : args) argv.push_back(a.c_str());
    return read_config(static_cast<int>(argv.size()), argv.data());
}

// Counts the fields of an aggregate: the most initialisers `T{...}` accepts.
struct any_field {
    template <typename T>
    operator T() const;  // never defined: only asked about in requires
};
template <typename T, std::size_t... I>
constexpr bool brace_initialisable(std::index_sequence<I...>) {
    return requires { T{(static_cast<void>(I), any_field{})...}; };
}
template <typename T, std::size_t N = 0>
constexpr std::size_t field_count() {
    if constexpr (!brace_initialisable<T>(std::make_index_sequence<N + 1>{}))
        return N;
    else
        return field_count<T, N + 1>();
}

}  // namespace

TEST(ConfigTable, EveryRowRoundTripsFromTheCommandLine) {
    for (const flag_descriptor& f : config_flags()) {
        const sample s = sample_for(f, 0);
        ASSERT_NE(field_text(f, config{}), s.field) << f.name << ": the sample is the default";
        auto c = read(s.args);
        ASSERT_TRUE(c.has_value()) << f.name << ": " << c.error().message;
        EXPECT_EQ(field_text(f, *c), s.field) << f.name;
    }
}

TEST(ConfigTable, EveryRowRoundTripsFromJson) {
    for (const flag_descriptor& f : config_flags()) {
        const std::string key(json_key(f));
        if (f.command_line_only) {
            EXPECT_TRUE(key.empty()) << f.name;
            config c;
            auto r = apply_json_config("{\"" + std::string(f.name.substr(2)) + "\": true}", c);
            ASSERT_FALSE(r.has_value()) << f.name;
            EXPECT_NE(r.error().find("unknown key"), std::string::npos) << r.error();
            continue;
        }
        EXPECT_EQ(key, std::string(f.name.substr(f.form == flag_form::negated ? 5 : 2)));
        std::string underscored = key;
        std::replace(underscored.begin(), underscored.end(), '-', '_');
        for (const std::string& k : {key, underscored}) {
            const sample s = sample_for(f, 0);
            config c;
            auto r = apply_json_config("{\"" + k + "\": " + s.json + "}", c);
            ASSERT_TRUE(r.has_value()) << k << ": " << r.error();
            EXPECT_EQ(field_text(f, c), s.field) << k;
        }
        // A value of the wrong type names the key (as the file spells it, '_' read as '-').
        config c;
        auto wrong = apply_json_config("{\"" + key + "\": " + (is_text(f) || is_list(f) ? "{}" : "\"x\"") + "}", c);
        ASSERT_FALSE(wrong.has_value()) << key;
        EXPECT_NE(wrong.error().find("config key '" + key + "'"), std::string::npos) << wrong.error();
    }
}

TEST(ConfigTable, TheCommandLineWinsOverTheFileForEveryRow) {
    for (const flag_descriptor& f : config_flags()) {
        if (f.command_line_only) continue;
        const std::string key(json_key(f));
        // A switch can only be turned one way on the command line: the file holds the default.
        const std::string file_value = is_switch(f) ? field_text(f, config{}) : sample_for(f, 1).json;
        const std::string path = write_temp("{\"" + key + "\": " + file_value + "}");
        const sample flag = sample_for(f, 0);
        std::vector<std::string> args{"--config", path};
        args.insert(args.end(), flag.args.begin(), flag.args.end());
        auto both = read(args);
        auto file_only = read({"--config", path});
        std::remove(path.c_str());
        ASSERT_TRUE(both.has_value()) << f.name << ": " << both.error().message;
        ASSERT_TRUE(file_only.has_value()) << f.name << ": " << file_only.error().message;
        EXPECT_EQ(field_text(f, *both), flag.field) << f.name;
        if (!is_switch(f)) {
            EXPECT_EQ(field_text(f, *file_only), sample_for(f, 1).field) << f.name;
            EXPECT_NE(field_text(f, *file_only), field_text(f, config{})) << f.name;
        }
    }
}

// A config field added without a row would be parsed from nowhere; this counts them. The
// fields load_config derives (not flags) are the ones after "Derived by load_config" in
// core/config.h.
TEST(ConfigTable, EveryConfigFieldThatIsAFlagHasExactlyOneRow) {
    constexpr std::size_t derived_fields = 13;  // listen_endpoints, body_cache_bytes, spool_segment_bytes,
                                                // listen_tls_endpoints, relay_cidrs, http_endpoints,
                                                // http_cidrs, proxy_cidrs, redis_address, route_table,
                                                // outbound_tls_policy, route_tls_table, http_tls_endpoints
    EXPECT_EQ(field_count<config>() - derived_fields, config_flags().size())
        << "a core::config field has no row in the flag table (core/config.cc), or a derived field "
           "was added to core/config.h without counting it here";
    for (std::size_t i = 0; i < config_flags().size(); ++i)
        for (std::size_t j = 0; j < i; ++j) {
            EXPECT_FALSE(config_flags()[i].member == config_flags()[j].member)
                << config_flags()[i].name << " and " << config_flags()[j].name << " set the same field";
            EXPECT_NE(config_flags()[i].name, config_flags()[j].name);
        }
    // --help lists the rows and --help, --version and --config.
    auto help = load({"--help"});
    ASSERT_FALSE(help.has_value());
    std::istringstream lines(help.error().message);
    std::size_t options = 0;
    for (std::string line; std::getline(lines, line);)
        if (line.starts_with("  -")) ++options;
    EXPECT_EQ(options, config_flags().size() + 3) << help.error().message;
}

// The messages operators and scripts have seen since before the table; each names the flag.
TEST(ConfigTable, RangeErrorsNameTheFlag) {
    const struct {
        std::vector<std::string> args;
        const char* message;
    } cases[] = {
        {{"--shards", "257"}, "ringrelay: --shards: at most 256"},
        {{"--auth-max-failures", "0"}, "ringrelay: --auth-max-failures: must be at least 1"},
        {{"--auth-max-failures-per-ip", "0"}, "ringrelay: --auth-max-failures-per-ip: must be at least 1"},
        {{"--auth-failure-window", "0"}, "ringrelay: --auth-failure-window: must be at least 1 second"},
        {{"--auth-queue-size", "65537"}, "ringrelay: --auth-queue-size: at most 65536"},
        {{"--auth-queue-timeout", "0"}, "ringrelay: --auth-queue-timeout: must be between 1 and 3600 seconds"},
        {{"--auth-queue-timeout", "3601"}, "ringrelay: --auth-queue-timeout: must be between 1 and 3600 seconds"},
        {{"--max-message-size", "0"}, "ringrelay: --max-message-size: must be between 1 and 1072693248 bytes"},
        {{"--max-message-size", "1072693249"}, "ringrelay: --max-message-size: must be between 1 and 1072693248 bytes"},
        {{"--max-recipients", "0"}, "ringrelay: --max-recipients: must be at least 1"},
        {{"--command-timeout", "0"}, "ringrelay: --command-timeout: must be at least 1 second"},
        {{"--max-errors", "0"}, "ringrelay: --max-errors: must be at least 1"},
        {{"--max-connections-per-destination", "0"}, "ringrelay: --max-connections-per-destination: must be at least 1"},
        {{"--max-messages-per-connection", "0"}, "ringrelay: --max-messages-per-connection: must be at least 1"},
        {{"--smtp-port", "0"}, "ringrelay: --smtp-port: must be between 1 and 65535"},
        {{"--retry-intervals", "5m,,1h"}, "ringrelay: --retry-intervals: item 2 is empty"},
        {{"--max-age", "0s"}, "ringrelay: --max-age: must be positive"},
    };
    for (const auto& tc : cases) {
        auto c = load(tc.args);
        ASSERT_FALSE(c.has_value()) << tc.message;
        EXPECT_EQ(c.error().code, 2);
        EXPECT_EQ(c.error().message, tc.message);
    }
    // Every row with a range refuses the values just outside it, from the flag and from the
    // file, with an error that starts with the flag's name.
    for (const flag_descriptor& f : config_flags()) {
        std::vector<std::uint64_t> outside;
        if (f.min > 0) outside.push_back(f.min - 1);
        if (f.max != flag_no_max) outside.push_back(f.max + 1);
        for (const std::uint64_t v : outside) {
            auto c = load({std::string(f.name), std::to_string(v)});
            ASSERT_FALSE(c.has_value()) << f.name << " " << v;
            EXPECT_NE(c.error().message.find(std::string(f.name)), std::string::npos) << c.error().message;
            config j;
            auto applied = apply_json_config("{\"" + std::string(json_key(f)) + "\": " + std::to_string(v) + "}", j);
            if (!applied) {  // above what the field's type holds
                EXPECT_NE(applied.error().find(std::string(json_key(f))), std::string::npos) << applied.error();
                continue;
            }
            auto finished = finish_config(j);
            ASSERT_FALSE(finished.has_value()) << f.name << " " << v;
            EXPECT_TRUE(finished.error().starts_with(std::string(f.name) + ": ")) << finished.error();
        }
    }
}

// --help prints each row's help with the default from config{}'s initialiser.
TEST(ConfigTable, HelpPrintsTheDefaultFromTheStruct) {
    const struct {
        const char* name;
        std::optional<std::string> shown;
    } cases[] = {
        {"--listen", "127.0.0.1:2525"},
        {"--relay-networks", "127.0.0.0/8,::1/128"},
        {"--max-errors", "20"},
        {"--shards", "0 = online CPUs"},
        {"--max-connections-per-ip", "0 = no limit"},
        {"--max-connections", "10000"},
        {"--log", "'-'"},
        {"--hostname", "gethostname"},
        {"--retry-intervals", "5m,10m,20m,40m,1h20m,2h40m,4h"},
        {"--hold", std::nullopt},
        {"--no-starttls", std::nullopt},
        {"--tls-cert", std::nullopt},
        {"--route", std::nullopt},
    };
    auto row = [](std::string_view name) -> const flag_descriptor& {
        for (const flag_descriptor& f : config_flags())
            if (f.name == name) return f;
        ADD_FAILURE() << "no row " << name;
        return config_flags().front();
    };
    for (const auto& tc : cases) EXPECT_EQ(default_text(row(tc.name)), tc.shown) << tc.name;
    EXPECT_TRUE(help_text(row("--max-connections")).ends_with("(default 10000; 0 = no limit)"));
    EXPECT_TRUE(help_text(row("--max-errors")).ends_with(" (default 20) [SIGHUP applies a change]"));
    EXPECT_EQ(help_text(row("--hold")), row("--hold").help);

    auto help = load({"--help"});
    ASSERT_FALSE(help.has_value());
    EXPECT_EQ(help.error().code, 0);
    for (const flag_descriptor& f : config_flags()) {
        EXPECT_NE(help.error().message.find(help_text(f)), std::string::npos) << f.name;
        // An integer's default is its field's value in config{}.
        if (!is_switch(f) && !is_text(f) && !is_list(f)) {
            ASSERT_TRUE(default_text(f).has_value()) << f.name;
            EXPECT_TRUE(default_text(f)->starts_with(field_text(f, config{}))) << f.name;
        }
    }
}

// --dump-flags (alone) prints the table as JSON, in --help order, for scripts/gen-flags-doc.
TEST(ConfigTable, DumpFlagsListsEveryRow) {
    auto d = read({"--dump-flags"});
    ASSERT_FALSE(d.has_value());
    EXPECT_EQ(d.error().code, 0);
    simdjson::dom::parser parser;
    simdjson::dom::array rows;
    ASSERT_EQ(parser.parse(simdjson::padded_string(d.error().message)).get(rows), simdjson::SUCCESS)
        << d.error().message;
    ASSERT_EQ(rows.size(), config_flags().size());
    std::size_t i = 0;
    for (simdjson::dom::element r : rows) {
        const flag_descriptor& f = config_flags()[i++];
        EXPECT_EQ(std::string_view(r["name"].get_string().value()), f.name);
        EXPECT_EQ(std::string_view(r["description"].get_string().value()), help_text(f));
        if (f.command_line_only) {
            EXPECT_TRUE(r["json_key"].is_null()) << f.name;
        } else {
            EXPECT_EQ(std::string_view(r["json_key"].get_string().value()), json_key(f));
        }
        if (const auto shown = default_text(f)) {
            EXPECT_EQ(std::string_view(r["default"].get_string().value()), *shown);
        } else {
            EXPECT_TRUE(r["default"].is_null()) << f.name;
        }
    }
}

// SIGHUP (issue 18): changed_flags names exactly the rows whose values differ; copy_flags takes
// the rows given and the derived fields they feed, and nothing else.
TEST(ConfigReload, ChangedFlagsNamesTheDifferingRowsInHelpOrder) {
    auto a = load({"--max-message-size", "1000", "--listen", "127.0.0.1:2525"});
    auto b = load({"--max-message-size", "2000", "--listen", "127.0.0.1:2526", "--route", "example.org=127.0.0.1:25"});
    ASSERT_TRUE(a && b);
    std::vector<std::string_view> names;
    for (const flag_descriptor* f : changed_flags(*a, *b)) names.push_back(f->name);
    EXPECT_EQ(names, (std::vector<std::string_view>{"--listen", "--max-message-size", "--route"}));
    EXPECT_TRUE(changed_flags(*a, *a).empty());
}

TEST(ConfigReload, CopyFlagsTakesTheRowsAndTheirDerivedFieldsOnly) {
    auto a = load({"--relay-networks", "10.0.0.0/8", "--http-networks", "10.0.0.0/8", "--listen", "127.0.0.1:2525"});
    auto b = load({"--relay-networks", "192.0.2.0/24,198.51.100.0/24", "--http-networks", "192.0.2.0/24",
                   "--smarthost", "127.0.0.1:2600", "--route-tls", "example.org=required", "--max-recipients", "7",
                   "--listen", "127.0.0.1:2526"});
    ASSERT_TRUE(a && b);
    std::vector<const flag_descriptor*> rows;
    for (const flag_descriptor* f : changed_flags(*a, *b))
        if (f->live) rows.push_back(f);
    copy_flags(*a, *b, rows);
    EXPECT_EQ(a->relay_networks, b->relay_networks);
    EXPECT_EQ(a->relay_cidrs.size(), 2u);
    EXPECT_EQ(a->http_cidrs.size(), 1u);
    ASSERT_EQ(a->route_table.size(), 1u);
    EXPECT_EQ(a->route_table[0].domain, "*");
    EXPECT_EQ(a->tls_policy_for("example.org"), config::tls_policy::required);
    EXPECT_EQ(a->max_recipients, 7u);
    // --listen is not live: not copied, and still differs.
    EXPECT_EQ(a->listen, std::vector<std::string>{"127.0.0.1:2525"});
    ASSERT_EQ(a->listen_endpoints.size(), 1u);
    EXPECT_EQ(a->listen_endpoints[0].port(), 2525);
    auto left = changed_flags(*a, *b);
    ASSERT_EQ(left.size(), 1u);
    EXPECT_EQ(left[0]->name, "--listen");
}

TEST(ConfigReload, WhatMayChangeLiveIsMarkedInTheTableAndTheHelp) {
    std::vector<std::string_view> live, restart;
    for (const flag_descriptor& f : config_flags()) (f.live ? live : restart).push_back(f.name);
    for (std::string_view n : {"--route", "--smarthost", "--relay-networks", "--max-message-size", "--tls-cert",
                               "--auth-users", "--dkim-key", "--shaping", "--http-networks", "--outbound-ca-file"})
        EXPECT_NE(std::find(live.begin(), live.end(), n), live.end()) << n;
    for (std::string_view n : {"--listen", "--shards", "--spool", "--http", "--log", "--hostname", "--command-timeout"})
        EXPECT_NE(std::find(restart.begin(), restart.end(), n), restart.end()) << n;
    for (const flag_descriptor& f : config_flags())
        EXPECT_EQ(help_text(f).ends_with("[SIGHUP applies a change]"), f.live) << f.name;
}
