// Unit tests of core/dns.h, core/dns_message.h and core/dns_cache.h. The resolver tests
// serve records from a real dnsmasq on 127.0.0.1 (started per test, stopped by PID) and run
// the reactor loop in the test thread; they are skipped when dnsmasq is not installed
// (Debian package dnsmasq-base) or io_uring is unavailable.
#include "core/dns.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/dns_cache.h"
#include "core/dns_message.h"
#include "core/net.h"

using namespace ringrelay::core;

namespace {

std::string find_dnsmasq() {
    for (const char* p : {"/usr/sbin/dnsmasq", "/usr/bin/dnsmasq", "/sbin/dnsmasq"}) {
        if (access(p, X_OK) == 0) return p;
    }
    return {};
}

// A UDP port nobody answers on (bound, never read: no ICMP unreachable either).
struct silent_udp {
    int fd = -1;
    std::uint16_t port = 0;
    silent_udp() {
        fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return;
        socklen_t len = sizeof a;
        getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
        port = ntohs(a.sin_port);
    }
    ~silent_udp() {
        if (fd >= 0) close(fd);
    }
};

std::uint16_t free_port() {
    // A port free for both UDP and TCP right now (dnsmasq binds both).
    for (int attempt = 0; attempt < 20; ++attempt) {
        const int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof a;
        if (bind(u, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
            getsockname(u, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
            close(u);
            continue;
        }
        const int t = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        const bool ok = bind(t, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
        close(t);
        close(u);
        if (ok) return ntohs(a.sin_port);
    }
    return 0;
}

// dnsmasq serving the records of every test, each domain showing one behaviour.
class dnsmasq_server {
public:
    bool start() {
        const std::string binary = find_dnsmasq();
        if (binary.empty()) return false;
        char tmpl[] = "/tmp/rr-dns-test-XXXXXX";
        if (mkdtemp(tmpl) == nullptr) return false;
        _dir = tmpl;
        _port = free_port();
        std::vector<std::string> args = {
            binary, "--no-resolv", "--no-hosts", "--port=" + std::to_string(_port),
            "--listen-address=127.0.0.1", "--bind-interfaces", "--keep-in-foreground",
            "--pid-file=" + _dir + "/dnsmasq.pid", "--conf-file=/dev/null", "--log-queries",
            "--log-facility=" + _dir + "/dnsmasq.log", "--local-ttl=300",
            // Everything under .test not listed here is NXDOMAIN.
            "--local=/test/",
            "--mx-host=example.test,mx1.example.test,10", "--mx-host=example.test,mx2.example.test,20",
            "--host-record=mx1.example.test,127.0.0.2", "--host-record=mx2.example.test,127.0.0.3,::3",
            // Equal preferences.
            "--mx-host=eq.test,a.eq.test,10", "--mx-host=eq.test,b.eq.test,10", "--mx-host=eq.test,c.eq.test,20",
            "--host-record=a.eq.test,127.0.1.1", "--host-record=b.eq.test,127.0.1.2",
            "--host-record=c.eq.test,127.0.1.3",
            // No MX, an address: the implicit MX.
            "--host-record=implicit.test,127.0.0.9",
            // Exists (TXT), no MX, no address.
            "--txt-record=noaddr.test,nothing here",
            // RFC 7505 null MX.
            "--mx-host=nullmx.test,.,0",
            // The first MX host has no address, the second has.
            "--mx-host=partial.test,dead.partial.test,10", "--mx-host=partial.test,live.partial.test,20",
            "--host-record=live.partial.test,127.0.2.2",
            // No MX host has an address.
            "--mx-host=allbad.test,gone.allbad.test,10",
            // REFUSED (no upstream for it).
            "--server=/refused.test/#",
        };
        // An answer too big for UDP (EDNS 1232): c-ares retries over TCP.
        for (int i = 0; i < 60; ++i) {
            const std::string host = "host-number-" + std::to_string(i) + ".big.test";
            args.push_back("--mx-host=big.test," + host + ",10");
            args.push_back("--host-record=" + host + ",127.0.3." + std::to_string(i + 1));
        }
        _silent = std::make_unique<silent_udp>();
        args.push_back("--server=/slow.test/127.0.0.1#" + std::to_string(_silent->port));

        std::vector<char*> argv;
        for (std::string& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        if (posix_spawn(&_pid, binary.c_str(), nullptr, nullptr, argv.data(), environ) != 0) return false;
        // Ready when it accepts TCP on its port.
        for (int i = 0; i < 200; ++i) {
            const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            const auto ep = parse_endpoint("127.0.0.1:" + std::to_string(_port));
            const bool up = connect(fd, ep->addr(), ep->length) == 0;
            close(fd);
            if (up) return true;
            int status = 0;
            if (waitpid(_pid, &status, WNOHANG) == _pid) {
                _pid = -1;
                return false;
            }
            usleep(10000);
        }
        return false;
    }

    void stop() {
        if (_pid > 0) {
            kill(_pid, SIGTERM);
            int status = 0;
            waitpid(_pid, &status, 0);
            _pid = -1;
        }
    }

    ~dnsmasq_server() {
        stop();
        if (!_dir.empty()) {
            std::error_code ec;
            std::filesystem::remove_all(_dir, ec);
        }
    }

    [[nodiscard]] endpoint address() const { return *parse_endpoint("127.0.0.1:" + std::to_string(_port)); }

private:
    std::string _dir;
    std::uint16_t _port = 0;
    pid_t _pid = -1;
    std::unique_ptr<silent_udp> _silent;
};

struct recording_waiter final : mx_waiter {
    int calls = 0;
    mx_result last;
    void resolved(mx_result result) noexcept override {
        ++calls;
        last = std::move(result);
    }
};

std::vector<std::string> hosts(const mx_result& r) {
    std::vector<std::string> out;
    for (const mx_target& t : r.targets) out.push_back(t.host);
    return out;
}

std::vector<std::string> addresses(const mx_target& t) {
    std::vector<std::string> out;
    for (const endpoint& e : t.addresses) out.push_back(to_string(e));
    return out;
}

class DnsResolverTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (find_dnsmasq().empty()) GTEST_SKIP() << "dnsmasq is not installed (apt install dnsmasq-base)";
        if (_reactor.init(64, probe_kernel_features())) GTEST_SKIP() << "io_uring unavailable";
        ASSERT_TRUE(_dns.start()) << "dnsmasq did not start";
    }

    void TearDown() override {
        for (auto& r : _resolvers) {
            r->shutdown();
            run_until([&] { return r->idle(); });
            EXPECT_TRUE(r->idle());
        }
        _resolvers.clear();
        _dns.stop();
    }

    dns_config config() {
        dns_config c;
        c.servers = {_dns.address()};
        c.timeout_ms = 300;
        c.tries = 1;
        c.shuffle_seed = 1;
        return c;
    }

    dns_resolver& make(dns_config c) {
        _resolvers.push_back(std::make_unique<dns_resolver>(_reactor, std::move(c)));
        EXPECT_FALSE(_resolvers.back()->init());
        _resolvers.back()->tick(now());
        return *_resolvers.back();
    }

    dns_resolver& make() { return make(config()); }

    [[nodiscard]] std::int64_t now() const { return monotonic_ms() + _clock_offset_ms; }

    template <typename Pred>
    bool run_until(Pred done, std::int64_t budget_ms = 5000) {
        const std::int64_t deadline = monotonic_ms() + budget_ms;
        while (!done()) {
            if (monotonic_ms() > deadline) return false;
            int timeout = 20;
            for (auto& r : _resolvers) {
                const int t = r->next_timeout_ms();
                if (t >= 0) timeout = std::min(timeout, t);
            }
            if (!_reactor.run_once(timeout)) return false;
            for (auto& r : _resolvers) r->tick(now());
        }
        return true;
    }

    mx_result resolve(dns_resolver& r, std::string_view domain) {
        recording_waiter w;
        r.resolve_mx(domain, &w);
        EXPECT_TRUE(run_until([&] { return w.calls > 0; })) << domain;
        EXPECT_EQ(w.calls, 1);
        return w.last;
    }

    reactor _reactor;
    dnsmasq_server _dns;
    std::vector<std::unique_ptr<dns_resolver>> _resolvers;
    std::int64_t _clock_offset_ms = 0;
};

}  // namespace

// ---- the resolver against dnsmasq -------------------------------------------------------

TEST_F(DnsResolverTest, OrdersMailExchangersByPreference) {
    dns_config c = config();
    c.address_order = dns_address_order::ipv6_first;
    dns_resolver& r = make(std::move(c));
    const mx_result res = resolve(r, "Example.Test.");
    ASSERT_EQ(res.status, dns_status::ok) << res.detail;
    ASSERT_EQ(hosts(res), (std::vector<std::string>{"mx1.example.test", "mx2.example.test"}));
    EXPECT_EQ(res.targets[0].preference, 10);
    EXPECT_EQ(res.targets[1].preference, 20);
    EXPECT_EQ(addresses(res.targets[0]), (std::vector<std::string>{"127.0.0.2:25"}));
    EXPECT_EQ(addresses(res.targets[1]), (std::vector<std::string>{"[::3]:25", "127.0.0.3:25"}));
}

TEST_F(DnsResolverTest, ShufflesEqualPreferencesDeterministicallyPerSeed) {
    std::set<std::vector<std::string>> orders;
    for (std::uint64_t seed = 1; seed <= 16; ++seed) {
        dns_config c = config();
        c.shuffle_seed = seed;
        c.address_order = dns_address_order::ipv4_only;
        dns_resolver& a = make(c);
        dns_resolver& b = make(c);
        const mx_result ra = resolve(a, "eq.test");
        const mx_result rb = resolve(b, "eq.test");
        ASSERT_EQ(ra.status, dns_status::ok) << ra.detail;
        ASSERT_EQ(ra.targets.size(), 3u);
        EXPECT_EQ(hosts(ra), hosts(rb)) << "same seed, same order";
        EXPECT_EQ(ra.targets[2].host, "c.eq.test") << "preference 20 stays last";
        orders.insert(hosts(ra));
    }
    EXPECT_EQ(orders.size(), 2u) << "both orders of the two preference-10 hosts occur";
}

TEST_F(DnsResolverTest, FallsBackToTheDomainsAddressWithoutMx) {
    dns_resolver& r = make();
    const mx_result res = resolve(r, "implicit.test");
    ASSERT_EQ(res.status, dns_status::ok) << res.detail;
    ASSERT_EQ(hosts(res), (std::vector<std::string>{"implicit.test"}));
    EXPECT_EQ(res.targets[0].preference, 0);
    EXPECT_EQ(addresses(res.targets[0]), (std::vector<std::string>{"127.0.0.9:25"}));
}

TEST_F(DnsResolverTest, NullMxBouncesWithoutAddressLookups) {
    dns_resolver& r = make();
    const mx_result res = resolve(r, "nullmx.test");
    EXPECT_EQ(res.status, dns_status::null_mx) << res.detail;
    EXPECT_TRUE(res.targets.empty());
    EXPECT_EQ(r.stats().queries, 1u);
}

TEST_F(DnsResolverTest, NxdomainIsNoSuchDomain) {
    dns_resolver& r = make();
    const mx_result res = resolve(r, "nowhere.test");
    EXPECT_EQ(res.status, dns_status::no_such_domain) << res.detail;
}

TEST_F(DnsResolverTest, DomainWithoutMxOrAddressIsNoAddress) {
    dns_resolver& r = make();
    const mx_result res = resolve(r, "noaddr.test");
    EXPECT_EQ(res.status, dns_status::no_address) << res.detail;
}

TEST_F(DnsResolverTest, RefusedIsTemporary) {
    dns_resolver& r = make();
    const mx_result res = resolve(r, "refused.test");
    EXPECT_EQ(res.status, dns_status::temporary) << res.detail;
}

TEST_F(DnsResolverTest, TimeoutIsTemporary) {
    dns_resolver& r = make();
    const std::int64_t start = monotonic_ms();
    const mx_result res = resolve(r, "slow.test");
    EXPECT_EQ(res.status, dns_status::temporary) << res.detail;
    EXPECT_NE(res.detail.find("slow.test"), std::string::npos) << res.detail;
    EXPECT_LT(monotonic_ms() - start, 3000) << "timeout_ms 300, one try";
}

TEST_F(DnsResolverTest, SkipsMxHostWithoutAddress) {
    dns_resolver& r = make();
    const mx_result res = resolve(r, "partial.test");
    ASSERT_EQ(res.status, dns_status::ok) << res.detail;
    EXPECT_EQ(hosts(res), (std::vector<std::string>{"live.partial.test"}));
    EXPECT_NE(res.detail.find("dead.partial.test"), std::string::npos) << res.detail;
}

TEST_F(DnsResolverTest, NoResolvableMxHostIsTemporary) {
    dns_resolver& r = make();
    const mx_result res = resolve(r, "allbad.test");
    EXPECT_EQ(res.status, dns_status::temporary) << res.detail;
    EXPECT_TRUE(res.targets.empty());
}

TEST_F(DnsResolverTest, TruncatedAnswerIsRetriedOverTcpAndCapped) {
    dns_config c = config();
    c.address_order = dns_address_order::ipv4_only;
    c.timeout_ms = 2000;
    dns_resolver& r = make(std::move(c));
    const mx_result res = resolve(r, "big.test");
    ASSERT_EQ(res.status, dns_status::ok) << res.detail;
    EXPECT_EQ(res.targets.size(), 10u) << "max_mx_hosts";
    EXPECT_EQ(r.stats().queries, 11u) << "MX + A of the 10 kept hosts";
}

TEST_F(DnsResolverTest, AnswersFromTheCacheWithoutAQuery) {
    dns_resolver& r = make();
    ASSERT_EQ(resolve(r, "example.test").status, dns_status::ok);
    const std::uint64_t queries = r.stats().queries;
    _dns.stop();  // anything not cached would now time out
    const mx_result res = resolve(r, "example.test");
    ASSERT_EQ(res.status, dns_status::ok) << res.detail;
    EXPECT_EQ(hosts(res), (std::vector<std::string>{"mx1.example.test", "mx2.example.test"}));
    EXPECT_EQ(r.stats().queries, queries);
    EXPECT_GT(r.stats().cache_hits, 0u);
}

TEST_F(DnsResolverTest, CachesNegativeAnswers) {
    dns_resolver& r = make();
    ASSERT_EQ(resolve(r, "nowhere.test").status, dns_status::no_such_domain);
    _dns.stop();
    EXPECT_EQ(resolve(r, "nowhere.test").status, dns_status::no_such_domain);
    EXPECT_EQ(r.stats().queries, 1u);
}

TEST_F(DnsResolverTest, CacheEntriesExpireWithTheirTtl) {
    dns_resolver& r = make();  // --local-ttl=300
    ASSERT_EQ(resolve(r, "implicit.test").status, dns_status::ok);
    const std::uint64_t queries = r.stats().queries;
    _clock_offset_ms = 299'000;
    r.tick(now());
    ASSERT_EQ(resolve(r, "implicit.test").status, dns_status::ok);
    EXPECT_EQ(r.stats().queries, queries) << "still fresh at 299 s";
    _clock_offset_ms = 301'000;
    r.tick(now());
    _dns.stop();
    const mx_result res = resolve(r, "implicit.test");
    EXPECT_EQ(res.status, dns_status::temporary) << "expired at 301 s, asked again, no server: " << res.detail;
    EXPECT_GT(r.stats().queries, queries);
}

TEST_F(DnsResolverTest, ConcurrentLookupsShareQueries) {
    dns_config c = config();
    c.address_order = dns_address_order::ipv4_only;
    dns_resolver& r = make(std::move(c));
    recording_waiter w[3];
    for (auto& one : w) r.resolve_mx("example.test", &one);
    ASSERT_TRUE(run_until([&] { return w[0].calls + w[1].calls + w[2].calls == 3; }));
    for (auto& one : w) EXPECT_EQ(hosts(one.last), (std::vector<std::string>{"mx1.example.test", "mx2.example.test"}));
    EXPECT_EQ(r.stats().queries, 3u) << "MX, A mx1, A mx2 once each";
}

TEST_F(DnsResolverTest, CancelledWaiterIsNeverCalled) {
    dns_resolver& r = make();
    recording_waiter cancelled;
    recording_waiter other;
    r.resolve_mx("example.test", &cancelled);
    r.resolve_mx("example.test", &other);
    r.cancel(&cancelled);
    ASSERT_TRUE(run_until([&] { return other.calls > 0; }));
    // A cached answer is queued for delivery; cancelling before the loop runs drops it.
    r.resolve_mx("example.test", &cancelled);
    r.cancel(&cancelled);
    ASSERT_TRUE(run_until([&] { return r.idle(); }));
    EXPECT_EQ(cancelled.calls, 0);
    EXPECT_EQ(other.calls, 1);
}

TEST_F(DnsResolverTest, NeverCallsBackInsideResolveMx) {
    dns_resolver& r = make();
    ASSERT_EQ(resolve(r, "example.test").status, dns_status::ok);
    recording_waiter w;
    r.resolve_mx("example.test", &w);  // everything cached
    EXPECT_EQ(w.calls, 0);
    ASSERT_TRUE(run_until([&] { return w.calls > 0; }));
    EXPECT_EQ(w.last.status, dns_status::ok);
}

TEST_F(DnsResolverTest, InvalidDomainIsNoSuchDomainWithoutAQuery) {
    dns_resolver& r = make();
    const mx_result res = resolve(r, "bad_domain!.test");
    EXPECT_EQ(res.status, dns_status::no_such_domain) << res.detail;
    EXPECT_EQ(r.stats().queries, 0u);
}

TEST_F(DnsResolverTest, ShutdownFailsPendingLookups) {
    dns_resolver& r = make();
    recording_waiter w;
    r.resolve_mx("slow.test", &w);
    ASSERT_TRUE(run_until([&] { return r.stats().queries > 0; }));
    r.shutdown();
    ASSERT_TRUE(run_until([&] { return w.calls > 0 && r.idle(); }));
    EXPECT_EQ(w.last.status, dns_status::temporary);
    recording_waiter late;
    r.resolve_mx("example.test", &late);
    ASSERT_TRUE(run_until([&] { return late.calls > 0; }));
    EXPECT_EQ(late.last.status, dns_status::temporary);
}

TEST(DnsServerFlag, ParsesWithParseEndpoint) {
    const auto e = parse_endpoint("127.0.0.1:5353");
    ASSERT_TRUE(e.has_value());
    dns_config c;
    c.servers.push_back(*e);
    EXPECT_EQ(to_string(c.servers[0]), "127.0.0.1:5353");
}

// ---- static_mx_resolver ---------------------------------------------------------------------

TEST(StaticMxResolver, AnswersFromItsTableOnTheLoop) {
    reactor r;
    if (r.init(8, probe_kernel_features())) GTEST_SKIP() << "io_uring unavailable";
    static_mx_resolver s(r);
    mx_result known{dns_status::ok, {{"mx.example.org", 5, {*parse_endpoint("127.0.0.1:2525")}}}, ""};
    s.set("Example.ORG.", known);
    recording_waiter a;
    recording_waiter b;
    recording_waiter c;
    s.resolve_mx("example.org", &a);
    s.resolve_mx("other.org", &b);
    s.resolve_mx("example.org", &c);
    s.cancel(&c);
    EXPECT_EQ(a.calls, 0) << "not inside resolve_mx";
    for (int i = 0; i < 10 && !s.idle(); ++i) ASSERT_TRUE(r.run_once(0));
    ASSERT_EQ(a.calls, 1);
    EXPECT_EQ(a.last.status, dns_status::ok);
    EXPECT_EQ(hosts(a.last), (std::vector<std::string>{"mx.example.org"}));
    EXPECT_EQ(b.last.status, dns_status::no_such_domain);
    EXPECT_EQ(c.calls, 0);
    EXPECT_EQ(s.lookups(), 3u);
}

// ---- wire format ----------------------------------------------------------------------------

namespace {

std::vector<std::uint8_t> hex(std::string_view h) {
    std::vector<std::uint8_t> out;
    for (std::size_t i = 0; i + 1 < h.size(); i += 2) out.push_back(static_cast<std::uint8_t>(std::stoi(std::string(h.substr(i, 2)), nullptr, 16)));
    return out;
}

// Builds a response: header, one question, then raw answer/authority bytes.
struct message_builder {
    std::vector<std::uint8_t> bytes;
    explicit message_builder(std::uint8_t rcode, std::uint16_t an, std::uint16_t ns) {
        bytes = {0x12, 0x34, 0x81, static_cast<std::uint8_t>(0x80 | rcode), 0, 1,
                 static_cast<std::uint8_t>(an >> 8), static_cast<std::uint8_t>(an), static_cast<std::uint8_t>(ns >> 8),
                 static_cast<std::uint8_t>(ns), 0, 0};
    }
    message_builder& name(std::string_view n) {
        std::size_t start = 0;
        while (start < n.size()) {
            std::size_t dot = n.find('.', start);
            if (dot == std::string_view::npos) dot = n.size();
            bytes.push_back(static_cast<std::uint8_t>(dot - start));
            bytes.insert(bytes.end(), n.begin() + static_cast<std::ptrdiff_t>(start), n.begin() + static_cast<std::ptrdiff_t>(dot));
            start = dot + 1;
        }
        bytes.push_back(0);
        return *this;
    }
    message_builder& raw(std::initializer_list<std::uint8_t> b) {
        bytes.insert(bytes.end(), b);
        return *this;
    }
    message_builder& u16(std::uint16_t v) { return raw({static_cast<std::uint8_t>(v >> 8), static_cast<std::uint8_t>(v)}); }
    message_builder& u32(std::uint32_t v) {
        return raw({static_cast<std::uint8_t>(v >> 24), static_cast<std::uint8_t>(v >> 16), static_cast<std::uint8_t>(v >> 8),
                    static_cast<std::uint8_t>(v)});
    }
    // Owner name as a pointer to the question name (offset 12).
    message_builder& rr(std::uint16_t type, std::uint32_t ttl, std::uint16_t rdlength) {
        return raw({0xC0, 12}).u16(type).u16(1).u32(ttl).u16(rdlength);
    }
};

}  // namespace

TEST(DnsMessage, ParsesAnMxAnswerFromDnsmasq) {
    // dnsmasq 2.90's answer to "example.test MX" (mx2 first, pref 20; mx1 pref 10; glue A).
    const auto msg = hex(
        "123485800001000200000001076578616d706c65047465737400000f0001c00c000f00010000012c0014001403"
        "6d7832076578616d706c65047465737400c00c000f00010000012c0014000a036d7831076578616d706c650474"
        "65737400c04c000100010000012c00047f000002");
    const auto a = parse_dns_answer(msg, "example.test", dns_type::mx);
    ASSERT_TRUE(a.has_value());
    ASSERT_EQ(a->mx.size(), 2u);
    EXPECT_EQ(a->mx[0].exchange, "mx2.example.test");
    EXPECT_EQ(a->mx[0].preference, 20);
    EXPECT_EQ(a->mx[1].exchange, "mx1.example.test");
    EXPECT_EQ(a->ttl, 300u);
}

TEST(DnsMessage, ReadsTheRootExchangeOfANullMx) {
    const auto msg = hex("123485800001000100000000066e756c6c6d78047465737400000f0001c00c000f00010000012c0003000000");
    const auto a = parse_dns_answer(msg, "nullmx.test", dns_type::mx);
    ASSERT_TRUE(a.has_value());
    ASSERT_EQ(a->mx.size(), 1u);
    EXPECT_EQ(a->mx[0].exchange, "");
    EXPECT_EQ(a->mx[0].preference, 0);
}

TEST(DnsMessage, FollowsCnameAndTakesTheSmallestTtl) {
    message_builder m(0, 2, 0);
    m.name("www.example.test").u16(1).u16(1);
    const std::size_t cname_rdata = m.bytes.size() + 12;
    m.rr(5, 600, 14).name("h.other.test");
    m.raw({0xC0, static_cast<std::uint8_t>(cname_rdata)}).u16(1).u16(1).u32(60).u16(4).raw({10, 0, 0, 1});
    const auto a = parse_dns_answer(m.bytes, "WWW.example.test.", dns_type::a);
    ASSERT_TRUE(a.has_value());
    ASSERT_EQ(a->addresses.size(), 1u);
    EXPECT_EQ(a->addresses[0].bytes[0], 10);
    EXPECT_EQ(a->ttl, 60u);
}

TEST(DnsMessage, IgnoresRecordsOfOtherOwners) {
    message_builder m(0, 1, 0);
    m.name("a.test").u16(1).u16(1);
    m.name("b.test").u16(1).u16(1).u32(60).u16(4).raw({10, 0, 0, 1});
    const auto a = parse_dns_answer(m.bytes, "a.test", dns_type::a);
    ASSERT_TRUE(a.has_value());
    EXPECT_TRUE(a->addresses.empty());
}

TEST(DnsMessage, TakesNegativeTtlFromTheSoa) {
    message_builder m(3, 0, 1);
    m.name("x.test").u16(15).u16(1);
    m.rr(6, 900, 0);
    const std::size_t rdlength_at = m.bytes.size() - 2;
    const std::size_t start = m.bytes.size();
    m.name("ns.test").name("host.test").u32(1).u32(2).u32(3).u32(4).u32(120);
    m.bytes[rdlength_at + 1] = static_cast<std::uint8_t>(m.bytes.size() - start);
    const auto a = parse_dns_answer(m.bytes, "x.test", dns_type::mx);
    ASSERT_TRUE(a.has_value());
    EXPECT_EQ(a->rcode, 3);
    EXPECT_EQ(a->negative_ttl, 120u);
}

TEST(DnsMessage, RejectsForwardAndLoopingPointers) {
    message_builder fwd(0, 1, 0);
    fwd.name("a.test").u16(15).u16(1);
    fwd.rr(15, 60, 4).u16(10).raw({0xC0, 0xFF});
    EXPECT_FALSE(parse_dns_answer(fwd.bytes, "a.test", dns_type::mx).has_value());
    message_builder self(0, 0, 0);
    self.bytes.push_back(0xC0);
    self.bytes.push_back(12);
    self.u16(15).u16(1);
    EXPECT_EQ(parse_dns_answer(self.bytes, "a.test", dns_type::mx).error(), dns_message_error::bad_name);
}

TEST(DnsMessage, RejectsLengthsPastTheEnd) {
    message_builder m(0, 1, 0);
    m.name("a.test").u16(1).u16(1);
    m.rr(1, 60, 200).raw({1, 2, 3, 4});
    EXPECT_EQ(parse_dns_answer(m.bytes, "a.test", dns_type::a).error(), dns_message_error::truncated);
    message_builder wrong(0, 1, 0);
    wrong.name("a.test").u16(1).u16(1);
    wrong.rr(1, 60, 3).raw({1, 2, 3});
    EXPECT_EQ(parse_dns_answer(wrong.bytes, "a.test", dns_type::a).error(), dns_message_error::bad_rdata);
    const std::vector<std::uint8_t> short_header = {0x12, 0x34, 0x81};
    EXPECT_EQ(parse_dns_answer(short_header, "a.test", dns_type::a).error(), dns_message_error::truncated);
}

TEST(DnsMessage, EscapesOddBytesSoALabelCannotPoseAsTwo) {
    message_builder m(0, 1, 0);
    m.name("a.test").u16(15).u16(1);
    m.rr(15, 60, 2 + 12).u16(10).raw({7, 'm', 'x', '.', 'e', 'v', 'i', 'l', 2, 'a', 'b', 0});
    const auto a = parse_dns_answer(m.bytes, "a.test", dns_type::mx);
    ASSERT_TRUE(a.has_value());
    ASSERT_EQ(a->mx.size(), 1u);
    EXPECT_EQ(a->mx[0].exchange, "mx\\046evil.ab");
    EXPECT_FALSE(valid_host_name(a->mx[0].exchange));
}

TEST(DnsMessage, ValidatesHostNames) {
    for (const char* good : {"mx.example.org", "MX1.Example.ORG.", "a", "1.2.3.4", "x-y.z9"}) {
        EXPECT_TRUE(valid_host_name(good)) << good;
    }
    const std::string long_label(64, 'a');
    const std::string long_name = std::string(63, 'a') + "." + std::string(63, 'b') + "." + std::string(63, 'c') +
                                  "." + std::string(62, 'd');  // 254
    for (const std::string& bad : {std::string(""), std::string("."), std::string("a..b"), std::string("-a.b"),
                                   std::string("a-.b"), std::string("a_b.c"), std::string("a b"), std::string("a\\046b"),
                                   std::string("a.b.."), long_label, long_name, std::string("a\0b", 3)}) {
        EXPECT_FALSE(valid_host_name(bad)) << bad;
    }
}

// ---- cache --------------------------------------------------------------------------------

TEST(DnsCache, ExpiresAndStaysWithinItsCapacity) {
    dns_cache c(16);
    for (int i = 0; i < 100; ++i) {
        dns_cache_entry e;
        e.expires_ms = 1000 + i;
        std::string name = "h";  // (not "h" + ...: GCC 12 -Wrestrict false positive at -O3)
        name += std::to_string(i);
        c.insert(dns_type::a, name, e, 0);
        EXPECT_LE(c.size(), 16u);
    }
    EXPECT_NE(c.find(dns_type::a, "h99", 0), nullptr) << "the latest-expiring survive";
    EXPECT_EQ(c.find(dns_type::mx, "h99", 0), nullptr) << "keyed by type too";
    EXPECT_EQ(c.find(dns_type::a, "h99", 1099), nullptr) << "expired";
    c.expire(2000);
    EXPECT_EQ(c.size(), 0u);
}
