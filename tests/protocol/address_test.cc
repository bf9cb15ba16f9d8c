// tests/protocol/address_test.cc: RFC 5321 §4.1.2 path grammar: what parses, what the
// mailbox view is after route stripping, and the routing features relay control needs.
#include "protocol/address.h"

#include <gtest/gtest.h>

#include <string>

namespace ringrelay::protocol {
namespace {

using namespace std::string_literals;

enum flag : unsigned {
    none = 0,
    quoted = 1,
    routing = 2,
    route = 4,
    utf8 = 8,
    null_path = 16,
    postmaster = 32,
};

struct accept_case {
    const char* name;
    path_kind kind;
    std::string text;
    std::string mailbox;
    std::string domain;
    domain_form form;
    unsigned flags;
};

class AddressAccepts : public ::testing::TestWithParam<accept_case> {};

TEST_P(AddressAccepts, YieldsMailboxDomainAndFlags) {
    const accept_case& c = GetParam();
    const auto p = parse_path(c.text, c.kind);
    ASSERT_TRUE(p.has_value());
    EXPECT_EQ(p->mailbox, c.mailbox);
    EXPECT_EQ(p->domain, c.domain);
    EXPECT_EQ(p->form, c.form);
    EXPECT_EQ(p->quoted_local, (c.flags & quoted) != 0);
    EXPECT_EQ(p->routing_chars, (c.flags & routing) != 0);
    EXPECT_EQ(p->source_route, (c.flags & route) != 0);
    EXPECT_EQ(p->non_ascii, (c.flags & utf8) != 0);
    EXPECT_EQ(p->null_path, (c.flags & null_path) != 0);
    EXPECT_EQ(p->postmaster_only, (c.flags & postmaster) != 0);
}

constexpr auto fwd = path_kind::forward_path;
constexpr auto rev = path_kind::reverse_path;
constexpr auto name = domain_form::name;

// clang-format off
INSTANTIATE_TEST_SUITE_P(Paths, AddressAccepts, ::testing::Values(
    accept_case{"Simple", fwd, "<user@example.org>", "user@example.org", "example.org", name, none},
    accept_case{"DotAtomLocal", fwd, "<first.last+tag@example.org>", "first.last+tag@example.org", "example.org", name, none},
    accept_case{"AllAtext", fwd, "<!#$&'*+-/=?^_`{|}~@example.org>", "!#$&'*+-/=?^_`{|}~@example.org", "example.org", name, routing},
    accept_case{"SingleLabelDomain", fwd, "<u@localhost>", "u@localhost", "localhost", name, none},
    accept_case{"HyphenDigitDomain", fwd, "<u@a-1.9z.example>", "u@a-1.9z.example", "a-1.9z.example", name, none},
    accept_case{"NullSender", rev, "<>", "", "", domain_form::none, null_path},
    accept_case{"Postmaster", fwd, "<postmaster>", "postmaster", "", domain_form::none, postmaster},
    accept_case{"PostmasterMixedCase", fwd, "<PostMaster>", "PostMaster", "", domain_form::none, postmaster},
    accept_case{"PostmasterWithDomain", fwd, "<postmaster@example.org>", "postmaster@example.org", "example.org", name, none},
    accept_case{"SourceRoute", fwd, "<@a.example,@b.example:user@example.org>", "user@example.org", "example.org", name, route},
    accept_case{"SourceRouteSingle", rev, "<@a.example:user@example.org>", "user@example.org", "example.org", name, route},
    accept_case{"Quoted", fwd, "<\"john doe\"@example.org>", "\"john doe\"@example.org", "example.org", name, quoted},
    accept_case{"QuotedAt", fwd, "<\"a@b\"@example.org>", "\"a@b\"@example.org", "example.org", name, quoted | routing},
    accept_case{"QuotedPair", fwd, "<\"a\\\"b\"@example.org>", "\"a\\\"b\"@example.org", "example.org", name, quoted},
    accept_case{"QuotedEscapedAt", fwd, "<\"a\\@b\"@example.org>", "\"a\\@b\"@example.org", "example.org", name, quoted | routing},
    accept_case{"QuotedEmpty", fwd, "<\"\"@example.org>", "\"\"@example.org", "example.org", name, quoted},
    accept_case{"PercentHack", fwd, "<a%b.example@example.org>", "a%b.example@example.org", "example.org", name, routing},
    accept_case{"BangPath", fwd, "<b.example!a@example.org>", "b.example!a@example.org", "example.org", name, routing},
    accept_case{"Ipv4Literal", fwd, "<u@[192.0.2.255]>", "u@[192.0.2.255]", "[192.0.2.255]", domain_form::ipv4_literal, none},
    accept_case{"Ipv6Literal", fwd, "<u@[IPv6:2001:db8::1]>", "u@[IPv6:2001:db8::1]", "[IPv6:2001:db8::1]", domain_form::ipv6_literal, none},
    accept_case{"Ipv6Full", fwd, "<u@[IPv6:1:2:3:4:5:6:7:8]>", "u@[IPv6:1:2:3:4:5:6:7:8]", "[IPv6:1:2:3:4:5:6:7:8]", domain_form::ipv6_literal, none},
    accept_case{"Ipv6Unspecified", fwd, "<u@[IPv6:::]>", "u@[IPv6:::]", "[IPv6:::]", domain_form::ipv6_literal, none},
    accept_case{"Ipv6LeadingCompressed", fwd, "<u@[IPv6:::1]>", "u@[IPv6:::1]", "[IPv6:::1]", domain_form::ipv6_literal, none},
    accept_case{"Ipv6TrailingCompressed", fwd, "<u@[ipv6:fe80::]>", "u@[ipv6:fe80::]", "[ipv6:fe80::]", domain_form::ipv6_literal, none},
    accept_case{"Ipv6WithIpv4", fwd, "<u@[IPv6:::ffff:192.0.2.1]>", "u@[IPv6:::ffff:192.0.2.1]", "[IPv6:::ffff:192.0.2.1]", domain_form::ipv6_literal, none},
    accept_case{"Ipv6FullWithIpv4", fwd, "<u@[IPv6:1:2:3:4:5:6:192.0.2.1]>", "u@[IPv6:1:2:3:4:5:6:192.0.2.1]", "[IPv6:1:2:3:4:5:6:192.0.2.1]", domain_form::ipv6_literal, none},
    accept_case{"Utf8LocalPart", fwd, "<j\xC3\xB6rg@example.org>", "j\xC3\xB6rg@example.org", "example.org", name, utf8},
    accept_case{"Utf8Domain", fwd, "<u@b\xC3\xBC" "cher.example>", "u@b\xC3\xBC" "cher.example", "b\xC3\xBC" "cher.example", name, utf8},
    accept_case{"Utf8FourByte", fwd, "<\xF0\x9F\x98\x80@example.org>", "\xF0\x9F\x98\x80@example.org", "example.org", name, utf8},
    accept_case{"Utf8OnlyInRouteIsAscii", fwd, "<@b\xC3\xBC.example:u@example.org>", "u@example.org", "example.org", name, route},
    accept_case{"Label63", fwd, "<u@" + std::string(63, 'a') + ".example>", "u@" + std::string(63, 'a') + ".example", std::string(63, 'a') + ".example", name, none}),
    [](const auto& info) { return std::string(info.param.name); });
// clang-format on

struct reject_case {
    const char* name;
    path_kind kind;
    std::string text;
    address_error error;
};

class AddressRejects : public ::testing::TestWithParam<reject_case> {};

TEST_P(AddressRejects, ReportsError) {
    const auto p = parse_path(GetParam().text, GetParam().kind);
    ASSERT_FALSE(p.has_value()) << p->mailbox;
    EXPECT_EQ(p.error(), GetParam().error);
}

constexpr auto syntax = address_error::syntax;
constexpr auto too_long = address_error::too_long;

// clang-format off
INSTANTIATE_TEST_SUITE_P(Paths, AddressRejects, ::testing::Values(
    reject_case{"NoBrackets", fwd, "user@example.org", syntax},
    reject_case{"OnlyOpen", fwd, "<", syntax},
    reject_case{"NullRecipient", fwd, "<>", syntax},
    reject_case{"NoDomain", fwd, "<user>", syntax},
    reject_case{"PostmasterAsSender", rev, "<postmaster>", syntax},
    reject_case{"PostmasterQuoted", fwd, "<\"postmaster\">", syntax},
    reject_case{"EmptyLocal", fwd, "<@example.org>", syntax},
    reject_case{"DoubleAt", fwd, "<a@@example.org>", syntax},
    reject_case{"TwoAts", fwd, "<a@b@example.org>", syntax},
    reject_case{"LeadingDot", fwd, "<.a@example.org>", syntax},
    reject_case{"TrailingDot", fwd, "<a.@example.org>", syntax},
    reject_case{"DoubleDot", fwd, "<a..b@example.org>", syntax},
    reject_case{"SpaceInLocal", fwd, "<a b@example.org>", syntax},
    reject_case{"EmptyDomain", fwd, "<a@>", syntax},
    reject_case{"DomainTrailingDot", fwd, "<a@example.org.>", syntax},
    reject_case{"DomainLeadingHyphen", fwd, "<a@-example.org>", syntax},
    reject_case{"DomainTrailingHyphen", fwd, "<a@example-.org>", syntax},
    reject_case{"DomainUnderscore", fwd, "<a@ex_ample.org>", syntax},
    reject_case{"DomainEmptyLabel", fwd, "<a@example..org>", syntax},
    reject_case{"Label64", fwd, "<u@" + std::string(64, 'a') + ".example>", too_long},
    reject_case{"PathOver256", fwd, "<" + std::string(200, 'a') + "@" + std::string(60, 'b') + ".example>", too_long},
    reject_case{"UnclosedQuote", fwd, "<\"abc@example.org>", syntax},
    reject_case{"QuotedControl", fwd, "<\"a\x01\"@example.org>", syntax},
    reject_case{"QuotedPairControl", fwd, "<\"a\\\x01\"@example.org>", syntax},
    reject_case{"QuotedCr", fwd, "<\"a\rb\"@example.org>", syntax},
    reject_case{"NulInLocal", fwd, "<a\0b@example.org>"s, syntax},
    reject_case{"RouteWithoutColon", fwd, "<@a.example,user@example.org>", syntax},
    reject_case{"RouteEmptyDomain", fwd, "<@:user@example.org>", syntax},
    reject_case{"RouteOnly", fwd, "<@a.example:>", syntax},
    reject_case{"Ipv4TooBig", fwd, "<u@[256.0.0.1]>", syntax},
    reject_case{"Ipv4ThreeParts", fwd, "<u@[1.2.3]>", syntax},
    reject_case{"Ipv4FourDigits", fwd, "<u@[1.2.3.0001]>", syntax},
    reject_case{"Ipv6TwoCompressions", fwd, "<u@[IPv6:1::2::3]>", syntax},
    reject_case{"Ipv6TooManyGroups", fwd, "<u@[IPv6:1:2:3:4:5:6:7:8:9]>", syntax},
    reject_case{"Ipv6CompressedTooMany", fwd, "<u@[IPv6:1:2:3:4:5:6:7::]>", syntax},
    reject_case{"Ipv6LongGroup", fwd, "<u@[IPv6:12345::1]>", syntax},
    reject_case{"Ipv6NoTag", fwd, "<u@[2001:db8::1]>", syntax},
    reject_case{"GeneralLiteral", fwd, "<u@[x-tag:abc]>", syntax},
    reject_case{"LiteralUnclosed", fwd, "<u@[192.0.2.1>", syntax},
    reject_case{"Utf8Truncated", fwd, "<j\xC3@example.org>", syntax},
    reject_case{"Utf8Overlong", fwd, "<\xC0\xAF@example.org>", syntax},
    reject_case{"Utf8Surrogate", fwd, "<\xED\xA0\x80@example.org>", syntax},
    reject_case{"Utf8TooLarge", fwd, "<\xF4\x90\x80\x80@example.org>", syntax},
    reject_case{"Utf8StrayContinuation", fwd, "<\x80@example.org>", syntax}),
    [](const auto& info) { return std::string(info.param.name); });
// clang-format on

TEST(Address, ViewsPointIntoInput) {
    const std::string text = "<@r.example:u@example.org>";
    const auto p = parse_path(text, path_kind::forward_path);
    ASSERT_TRUE(p.has_value());
    EXPECT_EQ(p->mailbox.data(), text.data() + 12);
    EXPECT_EQ(p->local_part, "u");
}

}  // namespace
}  // namespace ringrelay::protocol
