// tests/protocol/command_parser_test.cc: one SMTP command line -> verb, argument,
// parameters, or the failure that picks the reply (RFC 5321 §4.1.1, RFC 3030).
#include "protocol/command_parser.h"

#include <gtest/gtest.h>

#include <string>

namespace ringrelay::protocol {
namespace {

using namespace std::string_literals;

struct accept_case {
    const char* name;
    std::string line;
    command_verb verb;
    std::string argument;
    std::string parameters;
};

class CommandParserAccepts : public ::testing::TestWithParam<accept_case> {};

TEST_P(CommandParserAccepts, SplitsVerbArgumentAndParameters) {
    const accept_case& c = GetParam();
    const auto cmd = parse_command(c.line);
    ASSERT_TRUE(cmd.has_value()) << static_cast<int>(cmd.error().reason);
    EXPECT_EQ(cmd->verb, c.verb);
    EXPECT_EQ(cmd->argument, c.argument);
    EXPECT_EQ(cmd->parameters, c.parameters);
}

using enum command_verb;

// clang-format off
INSTANTIATE_TEST_SUITE_P(Lines, CommandParserAccepts, ::testing::Values(
    accept_case{"Ehlo", "EHLO client.example\r\n", ehlo, "client.example", ""},
    accept_case{"EhloLowerCase", "ehlo client.example\r\n", ehlo, "client.example", ""},
    accept_case{"EhloMixedCase", "eHlO client.example\r\n", ehlo, "client.example", ""},
    accept_case{"EhloAddressLiteral", "EHLO [192.0.2.1]\r\n", ehlo, "[192.0.2.1]", ""},
    accept_case{"EhloTrailingSpace", "EHLO c.example \r\n", ehlo, "c.example", ""},
    accept_case{"Helo", "HELO c\r\n", helo, "c", ""},
    accept_case{"Mail", "MAIL FROM:<a@example.org>\r\n", mail, "<a@example.org>", ""},
    accept_case{"MailLowerCase", "mail from:<a@example.org>\r\n", mail, "<a@example.org>", ""},
    accept_case{"MailNull", "MAIL FROM:<>\r\n", mail, "<>", ""},
    accept_case{"MailSpaceAfterColon", "MAIL FROM: <a@example.org>\r\n", mail, "<a@example.org>", ""},
    accept_case{"MailParameters", "MAIL FROM:<a@example.org> SIZE=10  BODY=8BITMIME \r\n", mail, "<a@example.org>", "SIZE=10  BODY=8BITMIME"},
    accept_case{"MailQuotedGreaterThan", "MAIL FROM:<\"a>b\"@example.org> SIZE=1\r\n", mail, "<\"a>b\"@example.org>", "SIZE=1"},
    accept_case{"MailQuotedEscapedQuote", "MAIL FROM:<\"a\\\">\"@example.org>\r\n", mail, "<\"a\\\">\"@example.org>", ""},
    accept_case{"Rcpt", "RCPT TO:<u@example.org>\r\n", rcpt, "<u@example.org>", ""},
    accept_case{"RcptPostmaster", "RCPT TO:<postmaster>\r\n", rcpt, "<postmaster>", ""},
    accept_case{"Data", "DATA\r\n", data, "", ""},
    accept_case{"DataTrailingSpace", "DATA \r\n", data, "", ""},
    accept_case{"Rset", "RSET\r\n", rset, "", ""},
    accept_case{"Noop", "NOOP\r\n", noop, "", ""},
    accept_case{"NoopArgument", "NOOP hello\r\n", noop, "hello", ""},
    accept_case{"Quit", "QUIT\r\n", quit, "", ""},
    accept_case{"Vrfy", "VRFY someone\r\n", vrfy, "someone", ""},
    accept_case{"Help", "HELP\r\n", help, "", ""},
    accept_case{"HelpTopic", "HELP MAIL\r\n", help, "MAIL", ""},
    accept_case{"Starttls", "STARTTLS\r\n", starttls, "", ""},
    accept_case{"Auth", "AUTH PLAIN\r\n", auth, "PLAIN", ""},
    accept_case{"NoLineEnding", "NOOP", noop, "", ""},
    accept_case{"Utf8Helo", "EHLO b\xC3\xBC" "cher.example\r\n", ehlo, "b\xC3\xBC" "cher.example", ""}),
    [](const auto& info) { return std::string(info.param.name); });
// clang-format on

struct bdat_case {
    const char* name;
    std::string line;
    std::uint64_t size;
    bdat_end end;
};

class CommandParserBdat : public ::testing::TestWithParam<bdat_case> {};

TEST_P(CommandParserBdat, ReadsChunkSizeAndLast) {
    const auto cmd = parse_command(GetParam().line);
    ASSERT_TRUE(cmd.has_value());
    EXPECT_EQ(cmd->verb, command_verb::bdat);
    EXPECT_EQ(cmd->chunk_size, GetParam().size);
    EXPECT_EQ(cmd->chunk_end, GetParam().end);
}

INSTANTIATE_TEST_SUITE_P(Lines, CommandParserBdat,
                         ::testing::Values(bdat_case{"Plain", "BDAT 100\r\n", 100, bdat_end::more},
                                           bdat_case{"Last", "BDAT 5 LAST\r\n", 5, bdat_end::last},
                                           bdat_case{"LastLowerCase", "bdat 5 last\r\n", 5, bdat_end::last},
                                           bdat_case{"ZeroLast", "BDAT 0 LAST\r\n", 0, bdat_end::last},
                                           bdat_case{"LeadingZeros", "BDAT 007\r\n", 7, bdat_end::more},
                                           bdat_case{"Max", "BDAT 18446744073709551615\r\n", UINT64_MAX, bdat_end::more}),
                         [](const auto& info) { return std::string(info.param.name); });

struct reject_case {
    const char* name;
    std::string line;
    parse_error reason;
    command_verb verb;
};

class CommandParserRejects : public ::testing::TestWithParam<reject_case> {};

TEST_P(CommandParserRejects, ReportsReasonAndVerb) {
    const auto cmd = parse_command(GetParam().line);
    ASSERT_FALSE(cmd.has_value());
    EXPECT_EQ(cmd.error().reason, GetParam().reason);
    EXPECT_EQ(cmd.error().verb, GetParam().verb);
}

using enum parse_error;

// clang-format off
INSTANTIATE_TEST_SUITE_P(Lines, CommandParserRejects, ::testing::Values(
    reject_case{"MailWithoutBrackets", "MAIL FROM:a@example.org\r\n", bad_arguments, mail},
    reject_case{"MailUnclosedBracket", "MAIL FROM:<a@example.org\r\n", bad_arguments, mail},
    reject_case{"MailUnclosedQuote", "MAIL FROM:<\"a>@example.org>\r\n", bad_arguments, mail},
    reject_case{"MailJunkAfterPath", "MAIL FROM:<a@example.org>x\r\n", bad_arguments, mail},
    reject_case{"MailWrongKeyword", "MAIL TO:<a@example.org>\r\n", bad_arguments, mail},
    reject_case{"MailNoArgument", "MAIL\r\n", bad_arguments, mail},
    reject_case{"RcptWrongKeyword", "RCPT FROM:<a@example.org>\r\n", bad_arguments, rcpt},
    reject_case{"EhloEmpty", "EHLO\r\n", bad_arguments, ehlo},
    reject_case{"EhloTwoWords", "EHLO a b\r\n", bad_arguments, ehlo},
    reject_case{"HeloTab", "HELO a\tb\r\n", bad_arguments, helo},
    reject_case{"HeloNul", "HELO a\0b\r\n"s, bad_arguments, helo},
    reject_case{"DataArgument", "DATA x\r\n", bad_arguments, data},
    reject_case{"QuitArgument", "QUIT x\r\n", bad_arguments, quit},
    reject_case{"RsetArgument", "RSET x\r\n", bad_arguments, rset},
    reject_case{"VrfyEmpty", "VRFY\r\n", bad_arguments, vrfy},
    reject_case{"BdatNoSize", "BDAT\r\n", bad_arguments, bdat},
    reject_case{"BdatNegative", "BDAT -1\r\n", bad_arguments, bdat},
    reject_case{"BdatOverflow", "BDAT 18446744073709551616\r\n", bad_arguments, bdat},
    reject_case{"BdatJunk", "BDAT 5 LAST x\r\n", bad_arguments, bdat},
    reject_case{"BdatSizeSuffix", "BDAT 5k\r\n", bad_arguments, bdat},
    reject_case{"Unknown", "XYZZY\r\n", unknown_verb, unknown},
    reject_case{"Empty", "\r\n", unknown_verb, unknown},
    reject_case{"LeadingSpace", " NOOP\r\n", unknown_verb, unknown},
    reject_case{"VerbWithTab", "NOOP\t\r\n", unknown_verb, unknown},
    reject_case{"BareLf", "NOOP\n", bare_newline, unknown},
    reject_case{"LfOnly", "\n", bare_newline, unknown},
    reject_case{"EmbeddedLf", "NOOP\nQUIT\r\n", bare_newline, unknown},
    reject_case{"BareCr", "NOOP\rQUIT\r\n", bare_carriage_return, unknown},
    reject_case{"CrOnlyEnding", "NOOP\r", bare_carriage_return, unknown},
    reject_case{"TooLong", "NOOP " + std::string(506, 'x') + "\r\n", line_too_long, unknown}),
    [](const auto& info) { return std::string(info.param.name); });
// clang-format on

TEST(CommandParser, KeepsVerbWhenArgumentsAreMalformed) {
    const auto cmd = parse_command("MAIL FROM:a@example.org\r\n");
    ASSERT_FALSE(cmd.has_value());
    EXPECT_EQ(cmd.error().reason, parse_error::bad_arguments);
    EXPECT_EQ(cmd.error().verb, command_verb::mail);
}

TEST(CommandParser, AcceptsLineOfExactlyMaxLength) {
    const std::string line = "NOOP " + std::string(505, 'x') + "\r\n";
    ASSERT_EQ(line.size(), max_command_line);
    EXPECT_TRUE(parse_command(line).has_value());
}

TEST(CommandParser, ViewsPointIntoTheLine) {
    const std::string line = "RCPT TO:<u@example.org> X=1\r\n";
    const auto cmd = parse_command(line);
    ASSERT_TRUE(cmd.has_value());
    EXPECT_EQ(cmd->argument.data(), line.data() + 8);
    EXPECT_EQ(cmd->parameters.data(), line.data() + 24);
}

}  // namespace
}  // namespace ringrelay::protocol
