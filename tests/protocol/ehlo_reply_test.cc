// Unit tests of protocol/ehlo_reply.h: the extensions a next hop's EHLO reply offers
// (RFC 5321 §4.1.1.1). Real replies (Postfix before and after STARTTLS, Exim, Gmail's MX and
// submission, Microsoft 365, an old Exchange with "AUTH="), case variants, SIZE with and
// without a usable number, and hostile shapes. Wire bytes go through reply_parser first, as in
// the client session; oversized and odd texts the parser would refuse are given directly.
#include "protocol/ehlo_reply.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <ostream>
#include <string>

#include "protocol/reply_parser.h"

namespace ringrelay::protocol {

void PrintTo(const peer_extensions& x, std::ostream* os) {
    *os << "{pipelining=" << x.pipelining << " chunking=" << x.chunking << " 8bitmime=" << x.eight_bit_mime
        << " smtputf8=" << x.smtputf8 << " enhanced=" << x.enhanced_status_codes << " starttls=" << x.starttls
        << " plain=" << x.auth_plain << " login=" << x.auth_login << " size_declared=" << x.size_declared
        << " size_limit=" << x.size_limit << "}";
}

namespace {

enum offer : unsigned {
    none = 0,
    pipelining = 1,
    chunking = 2,
    eight_bit = 4,
    smtputf8 = 8,
    enhanced = 16,
    starttls = 32,
    plain = 64,
    login = 128,
    size = 256,  // SIZE declared (size_limit is given separately)
};

peer_extensions offers(unsigned flags, std::uint64_t size_limit = 0) {
    peer_extensions x;
    x.pipelining = (flags & pipelining) != 0;
    x.chunking = (flags & chunking) != 0;
    x.eight_bit_mime = (flags & eight_bit) != 0;
    x.smtputf8 = (flags & smtputf8) != 0;
    x.enhanced_status_codes = (flags & enhanced) != 0;
    x.starttls = (flags & starttls) != 0;
    x.auth_plain = (flags & plain) != 0;
    x.auth_login = (flags & login) != 0;
    x.size_declared = (flags & size) != 0;
    x.size_limit = size_limit;
    return x;
}

// The text of the one reply in `wire`, as reply_parser gives it to the client session.
std::string reply_text(std::string_view wire) {
    reply_parser p;
    const auto r = p.feed(wire);
    EXPECT_TRUE(r.has_value() && r->complete && r->consumed == wire.size()) << "not one reply: " << wire;
    return r.has_value() && r->complete ? std::string(p.reply().text) : std::string();
}

struct wire_case {
    const char* name;
    std::string wire;  // the server's bytes: one complete 250 reply
    peer_extensions expected;
    friend void PrintTo(const wire_case& c, std::ostream* os) { *os << c.name; }
};

class EhloReply : public ::testing::TestWithParam<wire_case> {};

TEST_P(EhloReply, ListsWhatThePeerOffers) {
    const wire_case& c = GetParam();
    EXPECT_EQ(parse_ehlo_reply(reply_text(c.wire)), c.expected);
}

// clang-format off
INSTANTIATE_TEST_SUITE_P(Servers, EhloReply, ::testing::Values(
    wire_case{"PostfixBeforeTls",
        "250-mail.example.com\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n250-ETRN\r\n"
        "250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n",
        offers(pipelining | size | starttls | enhanced | eight_bit | smtputf8 | chunking, 10240000)},
    wire_case{"PostfixAfterTlsWithBrokenClientsAuth",  // smtpd_sasl_auth_enable, broken_sasl_auth_clients
        "250-mail.example.com\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n250-ETRN\r\n"
        "250-AUTH PLAIN LOGIN\r\n250-AUTH=PLAIN LOGIN\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n"
        "250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n",
        offers(pipelining | size | plain | login | enhanced | eight_bit | smtputf8 | chunking, 10240000)},
    wire_case{"Exim",
        "250-mx.example.org Hello relay.example.com [192.0.2.1]\r\n250-SIZE 52428800\r\n250-8BITMIME\r\n"
        "250-PIPELINING\r\n250-PIPECONNECT\r\n250-AUTH PLAIN LOGIN\r\n250-CHUNKING\r\n250-STARTTLS\r\n"
        "250-PRDR\r\n250 HELP\r\n",
        offers(size | eight_bit | pipelining | plain | login | chunking | starttls, 52428800)},
    wire_case{"GmailMx",
        "250-mx.google.com at your service, [203.0.113.5]\r\n250-SIZE 157286400\r\n250-8BITMIME\r\n"
        "250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n",
        offers(size | eight_bit | starttls | enhanced | pipelining | chunking | smtputf8, 157286400)},
    wire_case{"GmailSubmissionAfterTls",
        "250-smtp.gmail.com at your service, [203.0.113.5]\r\n250-SIZE 35882577\r\n250-8BITMIME\r\n"
        "250-AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH\r\n250-ENHANCEDSTATUSCODES\r\n"
        "250-PIPELINING\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n",
        offers(size | eight_bit | login | plain | enhanced | pipelining | chunking | smtputf8, 35882577)},
    wire_case{"Microsoft365Mx",
        "250-AM0PR01MB1234.eurprd01.prod.exchangelabs.com Hello [203.0.113.5]\r\n250-SIZE 157286400\r\n"
        "250-PIPELINING\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n250-STARTTLS\r\n250-8BITMIME\r\n"
        "250-BINARYMIME\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n",
        offers(size | pipelining | enhanced | starttls | eight_bit | chunking | smtputf8, 157286400)},
    wire_case{"Microsoft365SubmissionAfterTls",  // LOGIN and XOAUTH2 only: no PLAIN
        "250-LO2P265CA0001.outlook.office365.com Hello [203.0.113.5]\r\n250-SIZE 157286400\r\n"
        "250-PIPELINING\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n250-AUTH LOGIN XOAUTH2\r\n250-8BITMIME\r\n"
        "250-BINARYMIME\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n",
        offers(size | pipelining | enhanced | login | eight_bit | chunking | smtputf8, 157286400)},
    wire_case{"OldExchangeAuthEquals",  // the pre-RFC 4954 form only
        "250-mail.example.net Hello\r\n250-TURN\r\n250-SIZE\r\n250-ETRN\r\n250-PIPELINING\r\n250-DSN\r\n"
        "250-ENHANCEDSTATUSCODES\r\n250-8bitmime\r\n250-BINARYMIME\r\n250-CHUNKING\r\n250-VRFY\r\n"
        "250-X-EXPS GSSAPI NTLM LOGIN\r\n250-X-EXPS=LOGIN\r\n250-AUTH=LOGIN\r\n250 OK\r\n",
        offers(size | pipelining | enhanced | eight_bit | chunking | login)},
    wire_case{"OnlyTheGreetingLine", "250 mail.example.com\r\n", offers(none)},
    wire_case{"ServerNameLooksLikeKeyword", "250-PIPELINING\r\n250 8BITMIME\r\n", offers(eight_bit)},
    wire_case{"LowerCase",
        "250-mx\r\n250-pipelining\r\n250-chunking\r\n250-8bitmime\r\n250-smtputf8\r\n250-enhancedstatuscodes\r\n"
        "250-starttls\r\n250-auth plain login\r\n250 size 1000\r\n",
        offers(pipelining | chunking | eight_bit | smtputf8 | enhanced | starttls | plain | login | size, 1000)},
    wire_case{"MixedCase", "250-mx\r\n250-Pipelining\r\n250-StartTLS\r\n250-Auth=Login pLaIn\r\n250 Size 42\r\n",
        offers(pipelining | starttls | login | plain | size, 42)},
    wire_case{"BareLfLineEnds", "250-mx\n250-PIPELINING\n250 SIZE 5\n", offers(pipelining | size, 5)},
    wire_case{"SizeWithoutNumber", "250-mx\r\n250 SIZE\r\n", offers(size)},
    wire_case{"SizeZero", "250-mx\r\n250 SIZE 0\r\n", offers(size)},
    wire_case{"SizeNotANumber", "250-mx\r\n250 SIZE unlimited\r\n", offers(size)},
    wire_case{"SizeWithSign", "250-mx\r\n250 SIZE +1000\r\n", offers(size)},
    wire_case{"SizeTrailingSpace", "250-mx\r\n250 SIZE 1000 \r\n", offers(size)},
    wire_case{"SizeTwoSpaces", "250-mx\r\n250 SIZE  1000\r\n", offers(size)},
    wire_case{"SizeLargest", "250-mx\r\n250 SIZE 18446744073709551615\r\n", offers(size, 18446744073709551615u)},
    wire_case{"SizeOverflows", "250-mx\r\n250 SIZE 18446744073709551616\r\n", offers(size)},
    wire_case{"SizeTwentyDigits", "250-mx\r\n250 SIZE 99999999999999999999\r\n", offers(size)},
    wire_case{"SizeLastLineCounts", "250-mx\r\n250-SIZE 1000\r\n250 SIZE 2000\r\n", offers(size, 2000)},
    wire_case{"SizeLastLineWithoutNumber", "250-mx\r\n250-SIZE 1000\r\n250 SIZE\r\n", offers(size)},
    wire_case{"AuthLinesAddUp", "250-mx\r\n250-AUTH PLAIN\r\n250 AUTH LOGIN\r\n", offers(plain | login)},
    wire_case{"AuthWithoutMechanisms", "250-mx\r\n250-AUTH\r\n250 AUTH=\r\n", offers(none)},
    wire_case{"AuthOtherMechanismsOnly", "250-mx\r\n250 AUTH CRAM-MD5 DIGEST-MD5 GSSAPI\r\n", offers(none)},
    wire_case{"AuthMechanismPrefixNotEnough", "250-mx\r\n250 AUTH PLAINX XLOGIN PLAIN-CLIENTTOKEN\r\n", offers(none)},
    wire_case{"AuthManySpaces", "250-mx\r\n250 AUTH    LOGIN     PLAIN   \r\n", offers(plain | login)},
    wire_case{"KeywordWithParameterIgnoresIt", "250-mx\r\n250 PIPELINING please\r\n", offers(pipelining)},
    wire_case{"KeywordPrefixIsNotKeyword", "250-mx\r\n250-PIPELININGX\r\n250-STARTTLSX\r\n250 XSIZE 5\r\n", offers(none)},
    wire_case{"LeadingSpaceIgnored", "250-mx\r\n250- PIPELINING\r\n250  SIZE 5\r\n", offers(none)},
    wire_case{"EmptyLines", "250-mx\r\n250-\r\n250-\r\n250 STARTTLS\r\n", offers(starttls)},
    wire_case{"EnhancedCodeTextOnFirstLine", "250-2.0.0 mx.example.com\r\n250 CHUNKING\r\n", offers(chunking)}),
    [](const auto& info) { return std::string(info.param.name); });
// clang-format on

struct text_case {
    const char* name;
    std::string text;  // parsed_reply::text (lines joined by LF), given directly
    peer_extensions expected;
    friend void PrintTo(const text_case& c, std::ostream* os) { *os << c.name; }
};

class EhloReplyText : public ::testing::TestWithParam<text_case> {};

TEST_P(EhloReplyText, StaysWithinTheTextAndListsWhatItOffers) {
    const text_case& c = GetParam();
    EXPECT_EQ(parse_ehlo_reply(c.text), c.expected);
}

std::string many_lines(std::string_view line, std::size_t n) {
    std::string s = "mx";
    for (std::size_t i = 0; i < n; ++i) s.append("\n").append(line);
    return s;
}

// clang-format off
INSTANTIATE_TEST_SUITE_P(Hostile, EhloReplyText, ::testing::Values(
    text_case{"Empty", "", offers(none)},
    text_case{"OnlyLf", "\n", offers(none)},
    text_case{"TrailingLf", "mx\nCHUNKING\n", offers(chunking)},
    text_case{"HugeKeyword", "mx\n" + std::string(100000, 'A'), offers(none)},
    text_case{"HugeServerName", std::string(100000, 'x') + "\nSTARTTLS", offers(starttls)},
    text_case{"HugeSizeNumber", "mx\nSIZE " + std::string(100000, '9'), offers(size)},
    text_case{"HugeAuthList", "mx\nAUTH" + std::string(50000, ' ') + "LOGIN" + std::string(50000, ' '), offers(login)},
    text_case{"ManyMechanisms", "mx\nAUTH" + [] { std::string s; for (int i = 0; i < 10000; ++i) s += " X" + std::to_string(i); return s; }() + " PLAIN", offers(plain)},
    text_case{"TenThousandLines", many_lines("PIPELINING", 10000), offers(pipelining)},
    text_case{"TenThousandSizeLines", many_lines("SIZE 7", 10000), offers(size, 7)},
    text_case{"NulInKeyword", std::string("mx\nPIPE\0LINING\nSTARTTLS", 23), offers(starttls)},
    text_case{"NulAfterKeyword", std::string("mx\nSIZE 10\0", 11), offers(size)},
    text_case{"CrInLine", "mx\nSTARTTLS\r\nSIZE 9\r", offers(size)},  // "STARTTLS\r" is no keyword
    text_case{"TabSeparator", "mx\nSIZE\t1000\nAUTH\tPLAIN", offers(none)},
    text_case{"HighOctets", "mx\n\xff\xfe PIPELINING\nSMTPUTF8 \xc3\xa9", offers(smtputf8)}),
    [](const auto& info) { return std::string(info.param.name); });
// clang-format on

TEST(EhloReplyGreetingLine, OffersNothingWithoutASecondLine) {
    // A one-line reply (a minimal EHLO reply) lists no extension at all.
    EXPECT_EQ(parse_ehlo_reply("mail.example.com Hello"), offers(none));
    EXPECT_EQ(parse_ehlo_reply("STARTTLS"), offers(none));
    EXPECT_EQ(parse_ehlo_reply("mail.example.com Hello\nSTARTTLS"), offers(starttls));
}

}  // namespace
}  // namespace ringrelay::protocol
