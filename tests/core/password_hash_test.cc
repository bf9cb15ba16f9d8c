// tests/core/password_hash_test.cc: scrypt password hashes (core/password_hash.h) against
// RFC 7914's test vector, round trips, and every malformed form refused.
#include "core/password_hash.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/base64.h"

namespace ringrelay::core {
namespace {

constexpr scrypt_params fast{10, 8, 1};  // keeps the tests quick; the default is ln=15

TEST(base64, round_trips_and_is_strict) {
    for (const std::string& s : std::vector<std::string>{"", "f", "fo", "foo", "foob", "fooba", "foobar",
                                                          std::string("\0\xff\x10", 3)}) {
        EXPECT_EQ(base64_decode(base64_encode(s)), s);
        EXPECT_EQ(base64_decode(base64_encode(s, base64_padding::none), base64_padding::none), s);
    }
    EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
    EXPECT_EQ(base64_encode("fooba"), "Zm9vYmE=");
    EXPECT_EQ(base64_encode("foob", base64_padding::none), "Zm9vYg");
    EXPECT_FALSE(base64_decode("Zm9vYg"));             // padding required
    EXPECT_FALSE(base64_decode("Zm9vYh=="));           // non-zero trailing bits
    EXPECT_FALSE(base64_decode("Zm9v YmFy"));          // whitespace
    EXPECT_FALSE(base64_decode("Zm9vYmE=", base64_padding::none));
    EXPECT_FALSE(base64_decode("Zm9=YmFy"));           // padding inside
    EXPECT_FALSE(base64_decode("Z", base64_padding::none));
}

TEST(password_hash, matches_rfc7914_test_vector) {
    // RFC 7914 §12: scrypt("password", "NaCl", N=1024, r=8, p=16, dkLen=64); our key is the
    // first 32 bytes of it.
    auto h = hash_password_with_salt("password", "NaCl", scrypt_params{10, 8, 16});
    ASSERT_TRUE(h.has_value()) << h.error();
    const std::string expected_hex = "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162";
    const auto key_b64 = h->substr(h->rfind('$') + 1);
    auto key = base64_decode(key_b64, base64_padding::none);
    ASSERT_TRUE(key);
    std::string hex;
    for (const unsigned char c : *key) {
        char b[3];
        std::snprintf(b, sizeof b, "%02x", c);
        hex += b;
    }
    EXPECT_EQ(hex, expected_hex);
    EXPECT_TRUE(h->starts_with("$scrypt$ln=10,r=8,p=16$TmFDbA$")) << *h;
}

TEST(password_hash, verifies_the_right_password_only) {
    auto h = hash_password("s3cret pass", fast);
    ASSERT_TRUE(h.has_value()) << h.error();
    EXPECT_EQ(verify_password("s3cret pass", *h), password_match::yes);
    EXPECT_EQ(verify_password("s3cret pasS", *h), password_match::no);
    EXPECT_EQ(verify_password("", *h), password_match::no);
    auto h2 = hash_password("s3cret pass", fast);
    ASSERT_TRUE(h2.has_value());
    EXPECT_NE(*h, *h2) << "the salt must be random";
}

TEST(password_hash, refuses_malformed_hashes) {
    auto good = hash_password("x", fast);
    ASSERT_TRUE(good.has_value());
    const std::string key = good->substr(good->rfind('$'));
    for (const std::string& bad : std::vector<std::string>{
             std::string(""), std::string("plain"), std::string("$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"),
             "$scrypt$ln=9,r=8,p=1$c2FsdHNhbHQ" + key,    // N too small
             "$scrypt$ln=23,r=8,p=1$c2FsdHNhbHQ" + key,   // N too large
             "$scrypt$ln=22,r=32,p=1$c2FsdHNhbHQ" + key,  // more than 1 GiB per check
             "$scrypt$r=8,ln=15,p=1$c2FsdHNhbHQ" + key,   // parameters out of order
             "$scrypt$ln=15,r=08,p=1$c2FsdHNhbHQ" + key,  // leading zero
             "$scrypt$ln=15,r=8,p=1$c2Fsd" + key,         // salt too short
             std::string("$scrypt$ln=15,r=8,p=1$c2FsdHNhbHQ$AAAA"),  // key too short
             "$scrypt$ln=15,r=8,p=1$c2FsdHNhbHQ=" + key,  // padding
         }) {
        EXPECT_FALSE(check_hash_format(bad).has_value()) << bad;
        EXPECT_FALSE(verify_password("x", bad).has_value()) << bad;
    }
    EXPECT_TRUE(check_hash_format(*good).has_value());
}

}  // namespace
}  // namespace ringrelay::core
