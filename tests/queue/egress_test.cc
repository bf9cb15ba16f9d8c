// tests/queue/egress_test.cc: egress sources, pools and selectors (queue/egress.h): parsing
// and every start-up error word for word, the test bind, first-match selection, and the
// smooth weighted round robin's exact proportions.
#include "queue/egress.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>


namespace ringrelay::queue {
namespace {

struct flags {
    std::vector<std::string> sources, pools, pool_for;
};

flags with(std::vector<std::string> sources, std::vector<std::string> pools, std::vector<std::string> pool_for) {
    return {std::move(sources), std::move(pools), std::move(pool_for)};
}

std::expected<std::shared_ptr<const egress_table>, std::string> load(const flags& f) {
    return egress_table::load(f.sources, f.pools, f.pool_for, "relay.example");  // --hostname
}

std::string error_of(const flags& f) {
    auto t = load(f);
    return t ? std::string("(loaded)") : t.error();
}

TEST(EgressTable, NoFlagsMeansSystemChosenAddress) {
    auto t = load(with({}, {}, {}));
    ASSERT_TRUE(t) << t.error();
    EXPECT_TRUE((*t)->empty());
    EXPECT_EQ((*t)->pool_for("example.org", "alice"), nullptr);
    EXPECT_EQ((*t)->describe(),
              "egress: 0 source(s), 0 pool(s), 0 selector(s); outbound connections use the system-chosen address");
}

TEST(EgressTable, SourcesPoolsAndSelectorsLoad) {
    auto t = load(with({"a=127.0.0.2", "b=127.0.0.3,ehlo=b.mta.example", "six=[::1]"},
                                     {"bulk=a:3,b:1", "v6=six"},
                                     {"auth-user:Alice=v6", "sender-domain:News.Example=bulk", "*=bulk"}));
    ASSERT_TRUE(t) << t.error();
    const egress_table& e = **t;
    ASSERT_EQ(e.sources().size(), 3U);
    EXPECT_EQ(e.sources()[0].ehlo, "relay.example");  // --hostname by default
    EXPECT_EQ(e.sources()[1].ehlo, "b.mta.example");
    EXPECT_EQ(e.sources()[1].address_text, "127.0.0.3");
    EXPECT_EQ(e.sources()[2].address.family(), AF_INET6);
    EXPECT_EQ(e.sources()[0].address.port(), 0);
    ASSERT_EQ(e.pools().size(), 2U);
    EXPECT_EQ(e.pools()[0].total_weight, 4U);
    EXPECT_EQ(e.pools()[0].members[1].source, 1U);
    // First match wins; domain and user compare without case.
    EXPECT_EQ(e.pool_for("news.example", "ALICE"), &e.pools()[1]);
    EXPECT_EQ(e.pool_for("NEWS.example", ""), &e.pools()[0]);
    EXPECT_EQ(e.pool_for("other.example", "bob"), &e.pools()[0]);  // '*'
    EXPECT_EQ(e.describe(),
              "egress: 3 source(s) (a=127.0.0.2 ehlo relay.example, b=127.0.0.3 ehlo b.mta.example, "
              "six=[::1] ehlo relay.example), 2 pool(s), 3 selector(s)");
}

TEST(EgressTable, WithoutACatchAllUnmatchedMailUsesTheSystemAddress) {
    auto t = load(with({"a=127.0.0.2"}, {"p=a"}, {"sender-domain:example.org=p"}));
    ASSERT_TRUE(t) << t.error();
    EXPECT_EQ((*t)->pool_for("example.net", ""), nullptr);
    EXPECT_EQ((*t)->pool_for("sub.example.org", ""), nullptr);  // exact domain, not its subdomains
    EXPECT_NE((*t)->pool_for("example.org", ""), nullptr);
}

TEST(EgressTable, StartUpErrorsNameTheFlagAndTheValue) {
    EXPECT_EQ(error_of(with({"a"}, {}, {})), "--egress-source 'a': expected NAME=ADDRESS[,ehlo=HOSTNAME]");
    EXPECT_EQ(error_of(with({"a=mail.example"}, {}, {})),
              "--egress-source 'a=mail.example': 'mail.example' is not an IPv4 or IPv6 address");
    EXPECT_EQ(error_of(with({"a b=127.0.0.2"}, {}, {})),
              "--egress-source 'a b=127.0.0.2': the name must be 1 to 64 letters, digits, '-', '_' or '.'");
    EXPECT_EQ(error_of(with({"a=127.0.0.2", "a=127.0.0.3"}, {}, {})),
              "--egress-source 'a=127.0.0.3': a source named a is given twice");
    EXPECT_EQ(error_of(with({"a=127.0.0.2,helo=x"}, {}, {})),
              "--egress-source 'a=127.0.0.2,helo=x': unknown option 'helo=x' (expected ehlo=HOSTNAME)");
    EXPECT_EQ(error_of(with({"a=127.0.0.2,ehlo=bad name"}, {}, {})),
              "--egress-source 'a=127.0.0.2,ehlo=bad name': ehlo 'bad name' is not a host name or address literal");
    // An address this host does not have: the test bind fails at start-up.
    EXPECT_EQ(error_of(with({"far=192.0.2.77"}, {}, {})),
              "--egress-source 'far=192.0.2.77': cannot bind 192.0.2.77: Cannot assign requested address");
    EXPECT_EQ(error_of(with({"a=127.0.0.2"}, {"p=a,zz"}, {})),
              "--egress-pool 'p=a,zz': no --egress-source named 'zz'");
    EXPECT_EQ(error_of(with({"a=127.0.0.2"}, {"p=a:0"}, {})),
              "--egress-pool 'p=a:0': weight '0' is not a positive integer (1 to 1000000)");
    EXPECT_EQ(error_of(with({"a=127.0.0.2"}, {"p=a:1.5"}, {})),
              "--egress-pool 'p=a:1.5': weight '1.5' is not a positive integer (1 to 1000000)");
    EXPECT_EQ(error_of(with({"a=127.0.0.2"}, {"p=a:-2"}, {})),
              "--egress-pool 'p=a:-2': weight '-2' is not a positive integer (1 to 1000000)");
    EXPECT_EQ(error_of(with({"a=127.0.0.2"}, {"p=a,a"}, {})), "--egress-pool 'p=a,a': source a is named twice");
    EXPECT_EQ(error_of(with({"a=127.0.0.2"}, {"p=a", "p=a"}, {})), "--egress-pool 'p=a': a pool named p is given twice");
    EXPECT_EQ(error_of(with({"a=127.0.0.2"}, {"p/q=a"}, {})),
              "--egress-pool 'p/q=a': the name must be 1 to 64 letters, digits, '-', '_' or '.'");
    EXPECT_EQ(error_of(with({"a=127.0.0.2"}, {"p="}, {})), "--egress-pool 'p=': expected NAME=SOURCE[:WEIGHT],...");
    EXPECT_EQ(error_of(with({"a=127.0.0.2"}, {"p=a"}, {"*=q"})), "--pool-for '*=q': no --egress-pool named 'q'");
    EXPECT_EQ(error_of(with({"a=127.0.0.2"}, {"p=a"}, {"domain:x=p"})),
              "--pool-for 'domain:x=p': unknown selector 'domain:x' (expected sender-domain:DOMAIN, auth-user:USER "
              "or *)");
    EXPECT_EQ(error_of(with({"a=127.0.0.2"}, {"p=a"}, {"p"})),
              "--pool-for 'p': expected SELECTOR=POOL (sender-domain:DOMAIN, auth-user:USER or *)");
}

TEST(EgressChooser, WeightsGiveExactProportionsSpreadOut) {
    auto t = load(with({"a=127.0.0.2", "b=127.0.0.3", "c=127.0.0.4"}, {"p=a:5,b:1,c:1"}, {"*=p"}));
    ASSERT_TRUE(t) << t.error();
    egress_chooser chooser(**t);
    const egress_pool& pool = (*t)->pools()[0];
    std::string sequence;
    for (int i = 0; i < 7; ++i) sequence += (*t)->sources()[chooser.next(pool)].name;
    // nginx's smooth weighted round robin: a a b a c a a, not a a a a a b c.
    EXPECT_EQ(sequence, "aabacaa");
    std::map<std::uint32_t, int> counts;
    for (int i = 0; i < 7000; ++i) ++counts[chooser.next(pool)];
    EXPECT_EQ(counts[0], 5000);
    EXPECT_EQ(counts[1], 1000);
    EXPECT_EQ(counts[2], 1000);
}

TEST(EgressChooser, PoolsKeepTheirOwnState) {
    auto t = load(with({"a=127.0.0.2", "b=127.0.0.3"}, {"p=a,b", "q=b:2,a:1"}, {"*=p"}));
    ASSERT_TRUE(t) << t.error();
    egress_chooser chooser(**t);
    const auto& pools = (*t)->pools();
    EXPECT_EQ(chooser.next(pools[0]), 0U);
    EXPECT_EQ(chooser.next(pools[1]), 1U);
    EXPECT_EQ(chooser.next(pools[0]), 1U);
    EXPECT_EQ(chooser.next(pools[1]), 0U);
    EXPECT_EQ(chooser.next(pools[1]), 1U);
}

TEST(ParseBindAddress, NumericOnly) {
    EXPECT_TRUE(parse_bind_address("127.0.0.2"));
    EXPECT_TRUE(parse_bind_address("::1"));
    EXPECT_TRUE(parse_bind_address("[2001:db8::1]"));
    EXPECT_FALSE(parse_bind_address("localhost"));
    EXPECT_FALSE(parse_bind_address("127.0.0.2:25"));
    EXPECT_FALSE(parse_bind_address(""));
}

}  // namespace
}  // namespace ringrelay::queue
