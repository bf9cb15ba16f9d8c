// Unit tests of core/config.h: defaults, JSON config, flag precedence, and errors that name
// the key or flag.
#include "core/config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
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
