// tests/queue/postmaster_test.cc: the mailbox <postmaster> is delivered to (RFC 5321 §4.5.1):
// --postmaster, else postmaster@ the --hostname; anything that is not a "local@domain" address
// stops the start with an error naming the flag.
#include <gtest/gtest.h>

#include <string>

#include "core/config.h"
#include "queue/relay.h"

namespace ringrelay::queue {
namespace {

core::config with(std::string hostname, std::string postmaster) {
    core::config c;
    c.hostname = std::move(hostname);
    c.postmaster = std::move(postmaster);
    return c;
}

TEST(PostmasterAddress, DefaultsToPostmasterAtTheHostname) {
    const auto a = postmaster_address(with("mx.example.net", ""));
    ASSERT_TRUE(a.has_value()) << a.error();
    EXPECT_EQ(*a, "postmaster@mx.example.net");
}

TEST(PostmasterAddress, TakesTheConfiguredAddress) {
    const auto a = postmaster_address(with("mx.example.net", "abuse-desk@example.org"));
    ASSERT_TRUE(a.has_value()) << a.error();
    EXPECT_EQ(*a, "abuse-desk@example.org");
}

TEST(PostmasterAddress, RefusesWhatIsNoMailAddress) {
    for (const char* bad : {"postmaster", "no-domain@", "@example.org", "two@@example.org", "a b@example.org",
                            "<ops@example.org>", "ops@example.org\r\nRCPT TO:<x@y>", "@relay.example:ops@example.org"}) {
        const auto a = postmaster_address(with("mx.example.net", bad));
        ASSERT_FALSE(a.has_value()) << bad;
        EXPECT_NE(a.error().find("--postmaster"), std::string::npos) << a.error();
        EXPECT_NE(a.error().find("not a valid mail address"), std::string::npos) << a.error();
    }
}

TEST(PostmasterAddress, ABadDefaultNamesTheHostname) {
    const auto a = postmaster_address(with("bad host name", ""));
    ASSERT_FALSE(a.has_value());
    EXPECT_NE(a.error().find("--hostname"), std::string::npos) << a.error();
    EXPECT_NE(a.error().find("give --postmaster ADDRESS"), std::string::npos) << a.error();
}

}  // namespace
}  // namespace ringrelay::queue
