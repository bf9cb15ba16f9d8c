// tests/protocol/esmtp_params_test.cc: MAIL/RCPT ESMTP parameters (RFC 5321 §4.1.2,
// RFC 1870 SIZE, RFC 6152 BODY, RFC 6531 SMTPUTF8).
#include "protocol/esmtp_params.h"

#include <gtest/gtest.h>

#include <string>

namespace ringrelay::protocol {
namespace {

struct accept_case {
    const char* name;
    std::string text;
    bool size_declared;
    std::uint64_t size;
    body_parameter body;
    bool smtputf8;
};

class MailParametersAccept : public ::testing::TestWithParam<accept_case> {};

TEST_P(MailParametersAccept, ParsesOfferedParameters) {
    const accept_case& c = GetParam();
    const auto p = parse_mail_parameters(c.text);
    ASSERT_TRUE(p.has_value()) << static_cast<int>(p.error().reason);
    EXPECT_EQ(p->size_declared, c.size_declared);
    EXPECT_EQ(p->size, c.size);
    EXPECT_EQ(p->body, c.body);
    EXPECT_EQ(p->smtputf8, c.smtputf8);
}

using enum body_parameter;

// clang-format off
INSTANTIATE_TEST_SUITE_P(Params, MailParametersAccept, ::testing::Values(
    accept_case{"None", "", false, 0, absent, false},
    accept_case{"Size", "SIZE=12345", true, 12345, absent, false},
    accept_case{"SizeZero", "SIZE=0", true, 0, absent, false},
    accept_case{"SizeLowerCase", "size=7", true, 7, absent, false},
    accept_case{"SizeTwentyDigitsSaturates", "SIZE=99999999999999999999", true, UINT64_MAX, absent, false},
    accept_case{"Body7Bit", "BODY=7BIT", false, 0, seven_bit, false},
    accept_case{"Body8BitMime", "BODY=8bitmime", false, 0, eight_bit_mime, false},
    accept_case{"Smtputf8", "SMTPUTF8", false, 0, absent, true},
    accept_case{"All", "SIZE=1 BODY=8BITMIME SMTPUTF8", true, 1, eight_bit_mime, true},
    accept_case{"ExtraSpaces", "SIZE=1   SMTPUTF8", true, 1, absent, true}),
    [](const auto& info) { return std::string(info.param.name); });
// clang-format on

struct reject_case {
    const char* name;
    std::string text;
    param_error reason;
    std::string keyword;
};

class MailParametersReject : public ::testing::TestWithParam<reject_case> {};

TEST_P(MailParametersReject, ReportsReasonAndKeyword) {
    const auto p = parse_mail_parameters(GetParam().text);
    ASSERT_FALSE(p.has_value());
    EXPECT_EQ(p.error().reason, GetParam().reason);
    EXPECT_EQ(p.error().keyword, GetParam().keyword);
}

using enum param_error;

// clang-format off
INSTANTIATE_TEST_SUITE_P(Params, MailParametersReject, ::testing::Values(
    reject_case{"BinaryMime", "BODY=BINARYMIME", unsupported, "BODY"},
    reject_case{"BodyUnknown", "BODY=9BIT", unsupported, "BODY"},
    reject_case{"Ret", "RET=FULL", unsupported, "RET"},
    reject_case{"Envid", "ENVID=abc", unsupported, "ENVID"},
    reject_case{"AuthNoValue", "AUTH", bad_syntax, "AUTH"},
    reject_case{"AuthTwice", "AUTH=<> AUTH=a+40b", bad_syntax, "AUTH"},
    reject_case{"AuthBadHexchar", "AUTH=a+4", bad_syntax, "AUTH"},
    reject_case{"AuthLowerHexchar", "AUTH=a+4a", bad_syntax, "AUTH"},
    reject_case{"UnknownAfterGood", "SIZE=1 XFOO", unsupported, "XFOO"},
    reject_case{"SizeLetters", "SIZE=1k", bad_size, "SIZE"},
    reject_case{"SizeMissingValue", "SIZE", bad_size, "SIZE"},
    reject_case{"SizeTooManyDigits", "SIZE=123456789012345678901", bad_size, "SIZE"},
    reject_case{"SizeNegative", "SIZE=-1", bad_size, "SIZE"},
    reject_case{"SizeEmptyValue", "SIZE=", bad_syntax, "SIZE"},
    reject_case{"SizeTwice", "SIZE=1 SIZE=2", bad_syntax, "SIZE"},
    reject_case{"BodyTwice", "BODY=7BIT BODY=7BIT", bad_syntax, "BODY"},
    reject_case{"BodyNoValue", "BODY", bad_syntax, "BODY"},
    reject_case{"Smtputf8WithValue", "SMTPUTF8=yes", bad_syntax, "SMTPUTF8"},
    reject_case{"KeywordBadChar", "SI_ZE=1", bad_syntax, ""},
    reject_case{"KeywordLeadingHyphen", "-X", bad_syntax, ""},
    reject_case{"EmptyKeyword", "=1", bad_syntax, ""},
    reject_case{"ValueWithEquals", "X=a=b", bad_syntax, "X"},
    reject_case{"ValueWithControl", "X=a\x01", bad_syntax, "X"}),
    [](const auto& info) { return std::string(info.param.name); });
// clang-format on

TEST(MailParameters, AcceptsAuthParameter) {  // RFC 4954 §5
    for (const char* text : {"AUTH=<>", "AUTH=alice+40example.org", "SIZE=5 auth=<>"}) {
        const auto p = parse_mail_parameters(text);
        ASSERT_TRUE(p.has_value()) << text;
        EXPECT_TRUE(p->auth_declared) << text;
    }
    EXPECT_FALSE(parse_mail_parameters("SIZE=5")->auth_declared);
}

TEST(RcptParameters, AcceptsNone) { EXPECT_TRUE(parse_rcpt_parameters("").has_value()); }

TEST(RcptParameters, RefusesNotify) {
    const auto p = parse_rcpt_parameters("NOTIFY=SUCCESS,FAILURE");
    ASSERT_FALSE(p.has_value());
    EXPECT_EQ(p.error().reason, param_error::unsupported);
    EXPECT_EQ(p.error().keyword, "NOTIFY");
}

TEST(RcptParameters, RefusesOrcpt) {
    const auto p = parse_rcpt_parameters("ORCPT=rfc822;u@example.org");
    ASSERT_FALSE(p.has_value());
    EXPECT_EQ(p.error().reason, param_error::unsupported);
}

TEST(RcptParameters, ReportsBadSyntaxBeforeSupport) {
    const auto p = parse_rcpt_parameters("=x");
    ASSERT_FALSE(p.has_value());
    EXPECT_EQ(p.error().reason, param_error::bad_syntax);
}

}  // namespace
}  // namespace ringrelay::protocol
