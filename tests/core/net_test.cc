// Unit tests of core/net.h: endpoint and CIDR parsing, CIDR matching.
#include "core/net.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

using namespace ringrelay::core;

namespace {

sockaddr_storage v4(const char* a) {
    sockaddr_storage s{};
    auto* in = reinterpret_cast<sockaddr_in*>(&s);
    in->sin_family = AF_INET;
    inet_pton(AF_INET, a, &in->sin_addr);
    return s;
}

sockaddr_storage v6(const char* a) {
    sockaddr_storage s{};
    auto* in = reinterpret_cast<sockaddr_in6*>(&s);
    in->sin6_family = AF_INET6;
    inet_pton(AF_INET6, a, &in->sin6_addr);
    return s;
}

const sockaddr* sa(const sockaddr_storage& s) { return reinterpret_cast<const sockaddr*>(&s); }

}  // namespace

TEST(Endpoint, ParsesIpv4AndIpv6) {
    auto a = parse_endpoint("127.0.0.1:2525");
    ASSERT_TRUE(a.has_value());
    EXPECT_EQ(a->family(), AF_INET);
    EXPECT_EQ(a->port(), 2525);
    EXPECT_EQ(to_string(*a), "127.0.0.1:2525");
    auto b = parse_endpoint("[::1]:25");
    ASSERT_TRUE(b.has_value());
    EXPECT_EQ(b->family(), AF_INET6);
    EXPECT_EQ(to_string(*b), "[::1]:25");
    auto c = parse_endpoint("localhost:0");
    ASSERT_TRUE(c.has_value());
    EXPECT_EQ(to_string(*c), "127.0.0.1:0");
}

TEST(Endpoint, RejectsMalformedText) {
    for (const char* bad : {"127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:25x", "host.example:25",
                            "[::1:25", "[::1]25", ":25"}) {
        EXPECT_FALSE(parse_endpoint(bad).has_value()) << bad;
    }
}

TEST(Cidr, MatchesInsideAndNotOutside) {
    auto net = parse_cidr("10.1.0.0/16");
    ASSERT_TRUE(net.has_value());
    EXPECT_TRUE(net->contains(sa(v4("10.1.200.3"))));
    EXPECT_FALSE(net->contains(sa(v4("10.2.0.1"))));
    EXPECT_FALSE(net->contains(sa(v6("::1"))));
}

TEST(Cidr, MatchesOddPrefixLengths) {
    auto net = parse_cidr("192.168.1.128/25");
    ASSERT_TRUE(net.has_value());
    EXPECT_TRUE(net->contains(sa(v4("192.168.1.200"))));
    EXPECT_FALSE(net->contains(sa(v4("192.168.1.127"))));
}

TEST(Cidr, MatchesIpv4MappedIpv6PeersAgainstIpv4Networks) {
    auto net = parse_cidr("127.0.0.0/8");
    ASSERT_TRUE(net.has_value());
    EXPECT_TRUE(net->contains(sa(v6("::ffff:127.0.0.5"))));
    auto loop6 = parse_cidr("::1/128");
    ASSERT_TRUE(loop6.has_value());
    EXPECT_TRUE(loop6->contains(sa(v6("::1"))));
    EXPECT_FALSE(loop6->contains(sa(v6("::2"))));
}

TEST(Cidr, HostWithoutPrefixIsExact) {
    auto net = parse_cidr("10.0.0.7");
    ASSERT_TRUE(net.has_value());
    EXPECT_TRUE(net->contains(sa(v4("10.0.0.7"))));
    EXPECT_FALSE(net->contains(sa(v4("10.0.0.8"))));
}

TEST(Cidr, RejectsBadPrefixes) {
    for (const char* bad : {"10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/x", "nonsense", "10.0.0/8"}) {
        EXPECT_FALSE(parse_cidr(bad).has_value()) << bad;
    }
}

TEST(AddressText, ShowsMappedAddressesAsIpv4) {
    EXPECT_EQ(address_text(sa(v6("::ffff:10.0.0.1"))), "10.0.0.1");
    EXPECT_EQ(address_text(sa(v6("2001:db8::1"))), "2001:db8::1");
    EXPECT_EQ(address_text(sa(v4("192.0.2.1"))), "192.0.2.1");
}
