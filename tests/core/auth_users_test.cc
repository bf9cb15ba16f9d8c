// tests/core/auth_users_test.cc: the --auth-users file (core/auth_users.h): what is accepted,
// and every error names its line.
#include "core/auth_users.h"

#include <gtest/gtest.h>

#include "core/password_hash.h"

namespace ringrelay::core {
namespace {

std::string hash(const char* pw) {
    auto h = hash_password(pw, scrypt_params{10, 8, 1});
    EXPECT_TRUE(h.has_value());
    return h.value_or("");
}

TEST(auth_users, parses_users_comments_and_blank_lines) {
    const std::string a = hash("pa"), b = hash("pb");
    auto u = auth_users::parse("# users\n\nalice:" + a + "\r\nbob@example.org:" + b + "\n", "users");
    ASSERT_TRUE(u.has_value()) << u.error();
    EXPECT_EQ(u->size(), 2u);
    ASSERT_NE(u->hash_of("alice"), nullptr);
    EXPECT_EQ(*u->hash_of("alice"), a);
    EXPECT_EQ(*u->hash_of("bob@example.org"), b);
    EXPECT_EQ(u->hash_of("Alice"), nullptr);  // exact match
    EXPECT_EQ(u->hash_of("carol"), nullptr);
    EXPECT_EQ(verify_password("pb", *u->hash_of("bob@example.org")), password_match::yes);
}

TEST(auth_users, errors_name_the_line) {
    const std::string a = hash("pa");
    struct bad_case {
        std::string text;
        std::string expect;
    };
    for (const auto& c : std::vector<bad_case>{
             {"alice " + a + "\n", "users:1: expected user:hash"},
             {"\nalice:" + a + "\nalice:" + a + "\n", "users:3: user 'alice' appears twice"},
             {"al ice:" + a + "\n", "users:1: bad user name"},
             {":" + a + "\n", "users:1: bad user name"},
             {"alice:plaintext\n", "users:1: user 'alice': not a $scrypt$ hash"},
             {"# ok\nbob:$scrypt$ln=15,r=8,p=1$c2FsdHNhbHQ$AAAA\n", "users:2: user 'bob': bad key"},
             {std::string("al\0ce:", 6) + a + "\n", "users:1: bad user name"},
         }) {
        auto u = auth_users::parse(c.text, "users");
        ASSERT_FALSE(u.has_value()) << c.text;
        EXPECT_EQ(u.error().rfind(c.expect, 0), 0u) << u.error();
    }
}

TEST(auth_users, missing_file_is_an_error) {
    auto u = auth_users::load("/nonexistent/users");
    ASSERT_FALSE(u.has_value());
    EXPECT_NE(u.error().find("/nonexistent/users"), std::string::npos);
}

}  // namespace
}  // namespace ringrelay::core
