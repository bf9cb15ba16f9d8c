// tests/core/redis_url_test.cc: the text of --redis (core/redis_url.h; issue 19): both forms,
// the defaults, and the malformed URLs that stop the start.
#include "core/redis_url.h"

#include <gtest/gtest.h>

using namespace ringrelay::core;

namespace {

struct good_case {
    const char* label;
    const char* text;
    redis_url want;
};

class RedisUrlGood : public testing::TestWithParam<good_case> {};

TEST_P(RedisUrlGood, ParsesToTheAddress) {
    const auto u = parse_redis_url(GetParam().text);
    ASSERT_TRUE(u.has_value()) << u.error();
    EXPECT_EQ(*u, GetParam().want);
    // What to_string writes reads back the same.
    const auto again = parse_redis_url(to_string(*u));
    ASSERT_TRUE(again.has_value()) << again.error();
    EXPECT_EQ(*again, *u);
}

INSTANTIATE_TEST_SUITE_P(
    Forms, RedisUrlGood,
    testing::Values(
        good_case{"Full", "redis://127.0.0.1:6380/2", {.host = "127.0.0.1", .port = 6380, .db = 2}},
        good_case{"DefaultPortAndDb", "redis://10.0.0.5", {.host = "10.0.0.5"}},
        good_case{"TrailingSlash", "redis://10.0.0.5:7000/", {.host = "10.0.0.5", .port = 7000}},
        good_case{"HostName", "redis://redis-1.example.net/15", {.host = "redis-1.example.net", .db = 15}},
        good_case{"Ipv6", "redis://[::1]:6390/1", {.host = "::1", .port = 6390, .db = 1}},
        good_case{"Unix", "unix:/run/redis/redis.sock",
                  {.transport = redis_url::kind::unix_socket, .port = default_redis_port, .path = "/run/redis/redis.sock"}}),
    [](const auto& info) { return std::string(info.param.label); });

struct bad_case {
    const char* label;
    const char* text;
    const char* says;  // a part of the error
};

class RedisUrlBad : public testing::TestWithParam<bad_case> {};

TEST_P(RedisUrlBad, IsRefusedWithTheReason) {
    const auto u = parse_redis_url(GetParam().text);
    ASSERT_FALSE(u.has_value()) << to_string(*u);
    EXPECT_NE(u.error().find(GetParam().says), std::string::npos) << u.error();
}

INSTANTIATE_TEST_SUITE_P(
    Malformed, RedisUrlBad,
    testing::Values(bad_case{"Empty", "", "expected redis://HOST:PORT/DB or unix:PATH"},
                    bad_case{"OtherScheme", "http://127.0.0.1:6379", "expected redis://"},
                    bad_case{"NoScheme", "127.0.0.1:6379", "expected redis://"},
                    bad_case{"UpperScheme", "REDIS://127.0.0.1", "expected redis://"},
                    bad_case{"NoHost", "redis://:6379/0", "bad host"},
                    bad_case{"PortZero", "redis://127.0.0.1:0", "port must be 1..65535"},
                    bad_case{"PortTooBig", "redis://127.0.0.1:65536", "port must be 1..65535"},
                    bad_case{"PortNotNumber", "redis://127.0.0.1:x", "port must be"},
                    bad_case{"EmptyPort", "redis://127.0.0.1:/0", "empty port"},
                    bad_case{"DbTooBig", "redis://127.0.0.1:6379/16", "database must be 0..15"},
                    bad_case{"DbNotNumber", "redis://127.0.0.1:6379/a", "database must be"},
                    bad_case{"DbSigned", "redis://127.0.0.1:6379/-1", "database must be"},
                    bad_case{"Password", "redis://:secret@127.0.0.1:6379", "no user, password"},
                    bad_case{"Query", "redis://127.0.0.1?db=1", "no user, password"},
                    bad_case{"BadIpv6", "redis://[::g]:6379", "bad IPv6"},
                    bad_case{"UnclosedIpv6", "redis://[::1:6379", "missing ]"},
                    bad_case{"HostWithSpace", "redis://a b:6379", "bad host"},
                    bad_case{"EmptyLabel", "redis://a..b", "bad host"},
                    bad_case{"UnixRelative", "unix:redis.sock", "absolute path"},
                    bad_case{"UnixEmpty", "unix:", "absolute path"},
                    bad_case{"UnixTooLong", "unix:/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                             "longer than 107"}),
    [](const auto& info) { return std::string(info.param.label); });

}  // namespace
