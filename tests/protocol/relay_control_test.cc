// tests/protocol/relay_control_test.cc: who may relay where (RFC 5321 §3.9): trusted clients
// anywhere, untrusted ones only to relay_domains and without sender-specified routing
// (%-hack, !-paths, quoted local parts, source routes). Checked through the session's RCPT
// replies, as a client sees them, plus the domain matcher alone.
#include "protocol/relay_control.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/protocol/session_harness.h"

namespace ringrelay::protocol {
namespace {

struct relay_case {
    const char* name;
    relay_trust trust;
    std::string path;
    std::string reply;  // the RCPT reply
    std::string stored; // envelope recipient if accepted
};

const std::string denied = ": Relay access denied\r\n";

// One RCPT to `path` from a client of `trust`, every split of the dialogue: checks the RCPT
// reply and, when `stored` is not empty, the one message's envelope recipient.
void expect_rcpt(const server_config& config, relay_trust trust, const std::string& path, const std::string& reply,
                 const std::string& stored) {
    const client_info client{"198.51.100.9", trust};
    const std::string input = "EHLO c\r\nMAIL FROM:<s@example.net>\r\nRCPT TO:" + path + "\r\nDATA\r\n.\r\n";
    const auto t = testing::run_everywhere(config, client, input);
    const std::string prefix = testing::banner + testing::ehlo_reply + "250 2.1.0 Ok\r\n";
    ASSERT_EQ(t.out.substr(0, prefix.size()), prefix);
    const std::string rest = t.out.substr(prefix.size());
    EXPECT_EQ(rest.substr(0, rest.find("\r\n") + 2), reply);
    if (stored.empty()) {
        EXPECT_TRUE(t.messages.empty());
    } else {
        ASSERT_EQ(t.messages.size(), 1U);
        EXPECT_EQ(t.messages[0].env.rcpt_to, std::vector<std::string>{stored});
    }
}

class RelayControl : public ::testing::TestWithParam<relay_case> {};

TEST_P(RelayControl, RcptReplyFollowsTrustAndDomain) {
    const relay_case& c = GetParam();
    expect_rcpt(testing::test_config(), c.trust, c.path, c.reply, c.stored);
}

const std::string ok = "250 2.1.5 Ok\r\n";
using enum relay_trust;

// clang-format off
INSTANTIATE_TEST_SUITE_P(Cases, RelayControl, ::testing::Values(
    relay_case{"UntrustedToRelayDomain", untrusted, "<u@example.org>", ok, "u@example.org"},
    relay_case{"UntrustedDomainCaseInsensitive", untrusted, "<u@EXAMPLE.Org>", ok, "u@EXAMPLE.Org"},
    relay_case{"UntrustedToForeignDomain", untrusted, "<u@elsewhere.example>", "554 5.7.1 <u@elsewhere.example>" + denied, ""},
    relay_case{"UntrustedSubdomainOfExactEntry", untrusted, "<u@a.example.org>", "554 5.7.1 <u@a.example.org>" + denied, ""},
    relay_case{"UntrustedSubdomainOfDotEntry", untrusted, "<u@a.sub.example.com>", ok, "u@a.sub.example.com"},
    relay_case{"UntrustedDeepSubdomainOfDotEntry", untrusted, "<u@x.y.sub.example.com>", ok, "u@x.y.sub.example.com"},
    relay_case{"UntrustedDotEntryItselfNotMatched", untrusted, "<u@sub.example.com>", "554 5.7.1 <u@sub.example.com>" + denied, ""},
    relay_case{"UntrustedSuffixWithoutDot", untrusted, "<u@evilsub.example.com>", "554 5.7.1 <u@evilsub.example.com>" + denied, ""},
    relay_case{"UntrustedPercentHack", untrusted, "<victim%elsewhere.example@example.org>", "554 5.7.1 <victim%elsewhere.example@example.org>" + denied, ""},
    relay_case{"UntrustedBangPath", untrusted, "<elsewhere.example!victim@example.org>", "554 5.7.1 <elsewhere.example!victim@example.org>" + denied, ""},
    relay_case{"UntrustedQuotedAt", untrusted, "<\"victim@elsewhere.example\"@example.org>", "554 5.7.1 <\"victim@elsewhere.example\"@example.org>" + denied, ""},
    relay_case{"UntrustedQuotedPlain", untrusted, "<\"u\"@example.org>", "554 5.7.1 <\"u\"@example.org>" + denied, ""},
    relay_case{"UntrustedSourceRouteToForeign", untrusted, "<@example.org:victim@elsewhere.example>", "554 5.7.1 <@example.org:victim@elsewhere.example>" + denied, ""},
    relay_case{"UntrustedSourceRouteToRelayDomainStripped", untrusted, "<@a.example,@b.example:u@example.org>", ok, "u@example.org"},
    relay_case{"UntrustedAddressLiteral", untrusted, "<u@[192.0.2.1]>", "554 5.7.1 <u@[192.0.2.1]>" + denied, ""},
    relay_case{"UntrustedPostmasterWithoutDomain", untrusted, "<Postmaster>", "550 5.1.1 <Postmaster>: no local delivery on this relay\r\n", ""},
    relay_case{"TrustedToForeignDomain", trusted, "<u@elsewhere.example>", ok, "u@elsewhere.example"},
    relay_case{"TrustedPercentHack", trusted, "<a%b@elsewhere.example>", ok, "a%b@elsewhere.example"},
    relay_case{"TrustedQuotedLocalPart", trusted, "<\"a b\"@elsewhere.example>", ok, "\"a b\"@elsewhere.example"},
    relay_case{"TrustedAddressLiteral", trusted, "<u@[IPv6:2001:db8::1]>", ok, "u@[IPv6:2001:db8::1]"},
    relay_case{"TrustedPostmasterStillRefused", trusted, "<postmaster>", "550 5.1.1 <postmaster>: no local delivery on this relay\r\n", ""}),
    [](const auto& info) { return std::string(info.param.name); });
// clang-format on

// RFC 5321 §4.5.1: with a postmaster configured, "<postmaster>" and "<postmaster@HOSTNAME>"
// are accepted from anyone and stored as the configured mailbox; other postmasters are not.
struct postmaster_case {
    const char* name;
    relay_trust trust;
    std::string path;
    std::string reply;
    std::string stored;
};

class PostmasterRcpt : public ::testing::TestWithParam<postmaster_case> {};

TEST_P(PostmasterRcpt, AcceptedFromAnyoneAndStoredAsTheConfiguredMailbox) {
    const postmaster_case& c = GetParam();
    server_config config = testing::test_config();  // hostname mx.example.net
    config.postmaster = "ops@pm.example";
    expect_rcpt(config, c.trust, c.path, c.reply, c.stored);
}

// clang-format off
INSTANTIATE_TEST_SUITE_P(Cases, PostmasterRcpt, ::testing::Values(
    postmaster_case{"BarePostmasterUntrusted", untrusted, "<Postmaster>", ok, "ops@pm.example"},
    postmaster_case{"BarePostmasterUpperCase", untrusted, "<POSTMASTER>", ok, "ops@pm.example"},
    postmaster_case{"BarePostmasterTrusted", trusted, "<postmaster>", ok, "ops@pm.example"},
    postmaster_case{"PostmasterAtHostname", untrusted, "<postmaster@mx.example.net>", ok, "ops@pm.example"},
    postmaster_case{"PostmasterAtHostnameAnyCase", untrusted, "<PostMaster@MX.Example.NET>", ok, "ops@pm.example"},
    postmaster_case{"PostmasterWithSourceRoute", untrusted, "<@a.example:postmaster@mx.example.net>", ok, "ops@pm.example"},
    postmaster_case{"QuotedPostmasterAtHostnameIsNot", untrusted, "<\"postmaster\"@mx.example.net>",
                    "554 5.7.1 <\"postmaster\"@mx.example.net>" + denied, ""},
    postmaster_case{"PostmasterOfAnotherDomainIsRelayed", untrusted, "<postmaster@elsewhere.example>",
                    "554 5.7.1 <postmaster@elsewhere.example>" + denied, ""},
    postmaster_case{"PostmasterOfASubdomainIsNot", untrusted, "<postmaster@a.mx.example.net>",
                    "554 5.7.1 <postmaster@a.mx.example.net>" + denied, ""},
    postmaster_case{"OtherUserAtHostnameIsNot", untrusted, "<root@mx.example.net>",
                    "554 5.7.1 <root@mx.example.net>" + denied, ""}),
    [](const auto& info) { return std::string(info.param.name); });
// clang-format on

struct match_case {
    const char* name;
    std::string domain;
    bool matches;
};

class DomainMatches : public ::testing::TestWithParam<match_case> {};

TEST_P(DomainMatches, FollowsExactAndDotRules) {
    const std::vector<std::string> domains{"example.org", ".sub.example.com"};
    EXPECT_EQ(domain_matches(GetParam().domain, domains), GetParam().matches);
}

INSTANTIATE_TEST_SUITE_P(Cases, DomainMatches,
                         ::testing::Values(match_case{"Exact", "example.org", true},
                                           match_case{"ExactUpperCase", "EXAMPLE.ORG", true},
                                           match_case{"ExactNoSubdomains", "a.example.org", false},
                                           match_case{"ParentOfExact", "org", false},
                                           match_case{"DotEntrySubdomain", "a.sub.example.com", true},
                                           match_case{"DotEntryApex", "sub.example.com", false},
                                           match_case{"DotEntryLookalike", "xsub.example.com", false},
                                           match_case{"Empty", "", false}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(DomainMatches, EmptyListMatchesNothing) {
    EXPECT_FALSE(domain_matches("example.org", std::vector<std::string>{}));
}

}  // namespace
}  // namespace ringrelay::protocol
