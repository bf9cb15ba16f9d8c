// tests/protocol/sasl_test.cc: SASL PLAIN (RFC 4616) and LOGIN response decoding for SMTP
// AUTH (RFC 4954), labelled cases.
#include "protocol/sasl.h"

#include <gtest/gtest.h>

#include "core/base64.h"

namespace ringrelay::protocol {
namespace {

std::string b64(std::string_view s) { return core::base64_encode(s); }

TEST(sasl_plain, decodes_the_three_fields) {
    auto c = decode_plain(b64(std::string("\0alice\0s3cret", 13)));
    ASSERT_TRUE(c.has_value());
    EXPECT_EQ(c->authzid, "");
    EXPECT_EQ(c->authcid, "alice");
    EXPECT_EQ(c->password, "s3cret");
    auto z = decode_plain(b64(std::string("admin\0alice\0pw", 14)));
    ASSERT_TRUE(z.has_value());
    EXPECT_EQ(z->authzid, "admin");
    // RFC 4616 §4's example.
    auto r = decode_plain("dGltAHRpbQB0YW5zdGFhZnRhbnN0YWFm");
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->authcid, "tim");
    EXPECT_EQ(r->password, "tanstaaftanstaaf");
}

TEST(sasl_plain, refuses_bad_messages) {
    struct bad {
        std::string response;
        sasl_error error;
    };
    for (const auto& c : std::vector<bad>{
             {"*", sasl_error::cancelled},
             {"=", sasl_error::bad_base64},
             {"", sasl_error::bad_message},
             {"not base64!", sasl_error::bad_base64},
             {b64("alice"), sasl_error::bad_message},                                   // no NUL
             {b64(std::string("\0alice", 6)), sasl_error::bad_message},                 // one NUL
             {b64(std::string("\0\0pw", 4)), sasl_error::bad_message},                  // empty authcid
             {b64(std::string("\0alice\0", 7)), sasl_error::bad_message},               // empty password
             {b64(std::string("\0alice\0pw\0x", 11)), sasl_error::bad_message},         // NUL in password
             {b64(std::string("\0al\r\nice\0pw", 12)), sasl_error::bad_message},        // CR LF
             {b64(std::string("\0", 1) + std::string(256, 'a') + std::string("\0pw", 3)), sasl_error::bad_message},
             {std::string(max_sasl_response + 4, 'A'), sasl_error::too_long},
         }) {
        auto r = decode_plain(c.response);
        ASSERT_FALSE(r.has_value()) << c.response;
        EXPECT_EQ(r.error(), c.error) << c.response;
    }
}

TEST(sasl_login, decodes_fields_and_has_the_standard_challenges) {
    EXPECT_EQ(decode_login_field(b64("alice")).value_or(""), "alice");
    EXPECT_EQ(core::base64_decode(std::string(login_username_challenge)).value_or(""), "Username:");
    EXPECT_EQ(core::base64_decode(std::string(login_password_challenge)).value_or(""), "Password:");
    EXPECT_EQ(decode_login_field("*").error(), sasl_error::cancelled);
    EXPECT_EQ(decode_login_field("").error(), sasl_error::bad_message);
    EXPECT_EQ(decode_login_field(b64(std::string("a\0b", 3))).error(), sasl_error::bad_message);
    EXPECT_EQ(decode_login_field("YWxpY2U").error(), sasl_error::bad_base64);  // padding missing
}

}  // namespace
}  // namespace ringrelay::protocol
