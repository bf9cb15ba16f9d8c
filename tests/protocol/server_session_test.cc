// tests/protocol/server_session_test.cc: the SMTP server session's command dialogue:
// greeting, command order, every command reply, pipelining, error limit, timeouts. Every
// dialogue is also fed split at every offset and byte by byte (session_harness.h).
#include "protocol/server_session.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/protocol/session_harness.h"

namespace ringrelay::protocol {
namespace {

using namespace std::string_literals;

using testing::banner;
using testing::ehlo_reply;
using testing::run_everywhere;
using testing::test_config;
using testing::untrusted_client;

struct dialogue_case {
    const char* name;
    std::string input;
    std::string expected;  // after the banner
};

class SessionDialogue : public ::testing::TestWithParam<dialogue_case> {};

TEST_P(SessionDialogue, RepliesMatchGoldenTranscriptAtEverySplit) {
    const dialogue_case& c = GetParam();
    const auto t = run_everywhere(test_config(), untrusted_client(), c.input);
    EXPECT_EQ(t.out, banner + c.expected);
}

const std::string ehlo = "EHLO client.example\r\n";
const std::string mail = "MAIL FROM:<sender@example.net>\r\n";
const std::string rcpt = "RCPT TO:<user@example.org>\r\n";

// clang-format off
const dialogue_case dialogues[] = {
    {"EhloListsExtensions", ehlo, ehlo_reply},
    {"EhloIsCaseInsensitive", "ehlo client.example\r\n", ehlo_reply},
    {"HeloRepliesHostname", "HELO client.example\r\n", "250 mx.example.net\r\n"},
    {"EhloWithoutArgument", "EHLO\r\n", "501 5.5.4 Syntax: EHLO hostname\r\n"},
    {"EhloWithOnlySpaces", "EHLO   \r\n", "501 5.5.4 Syntax: EHLO hostname\r\n"},
    {"HeloWithoutArgument", "HELO\r\n", "501 5.5.4 Syntax: HELO hostname\r\n"},
    {"MailBeforeEhlo", mail, "503 5.5.1 Error: send HELO/EHLO first\r\n"},
    {"MailOk", ehlo + mail, ehlo_reply + "250 2.1.0 Ok\r\n"},
    {"MailNullSender", ehlo + "MAIL FROM:<>\r\n", ehlo_reply + "250 2.1.0 Ok\r\n"},
    {"MailSpaceAfterColonTolerated", ehlo + "MAIL FROM: <a@example.net>\r\n", ehlo_reply + "250 2.1.0 Ok\r\n"},
    {"NestedMail", ehlo + mail + mail, ehlo_reply + "250 2.1.0 Ok\r\n503 5.5.1 Error: nested MAIL command\r\n"},
    {"MailWithoutBrackets", ehlo + "MAIL FROM:a@example.net\r\n", ehlo_reply + "501 5.5.4 Syntax: MAIL FROM:<address>\r\n"},
    {"MailWithoutFrom", ehlo + "MAIL <a@example.net>\r\n", ehlo_reply + "501 5.5.4 Syntax: MAIL FROM:<address>\r\n"},
    {"MailBadAddress", ehlo + "MAIL FROM:<a@@example.net>\r\n", ehlo_reply + "501 5.1.7 Bad sender address syntax\r\n"},
    {"MailDeclaredSizeTooBig", ehlo + "MAIL FROM:<a@example.net> SIZE=10001\r\n", ehlo_reply + "552 5.3.4 Message size exceeds fixed limit\r\n"},
    {"MailDeclaredSizeAtLimit", ehlo + "MAIL FROM:<a@example.net> SIZE=10000\r\n", ehlo_reply + "250 2.1.0 Ok\r\n"},
    {"MailBadSize", ehlo + "MAIL FROM:<a@example.net> SIZE=12k\r\n", ehlo_reply + "501 5.5.4 Bad message size syntax\r\n"},
    {"MailBody8BitMime", ehlo + "MAIL FROM:<a@example.net> BODY=8BITMIME\r\n", ehlo_reply + "250 2.1.0 Ok\r\n"},
    {"MailBodyBinaryMime", ehlo + "MAIL FROM:<a@example.net> BODY=BINARYMIME\r\n", ehlo_reply + "555 5.5.4 Unsupported option: BODY\r\n"},
    {"MailRetRefused", ehlo + "MAIL FROM:<a@example.net> RET=HDRS\r\n", ehlo_reply + "555 5.5.4 Unsupported option: RET\r\n"},
    {"MailEnvidRefused", ehlo + "MAIL FROM:<a@example.net> ENVID=x\r\n", ehlo_reply + "555 5.5.4 Unsupported option: ENVID\r\n"},
    {"MailAuthParameterWithoutAuthOffered", ehlo + "MAIL FROM:<a@example.net> AUTH=<>\r\n", ehlo_reply + "555 5.5.4 Unsupported option: AUTH\r\n"},
    {"MailUnicodeWithoutSmtputf8", ehlo + "MAIL FROM:<j\xC3\xB6rg@example.net>\r\n", ehlo_reply + "553 5.6.7 Must declare SMTPUTF8 to send unicode address\r\n"},
    {"MailUnicodeWithSmtputf8", ehlo + "MAIL FROM:<j\xC3\xB6rg@example.net> SMTPUTF8\r\n", ehlo_reply + "250 2.1.0 Ok\r\n"},
    {"RcptWithoutMail", ehlo + rcpt, ehlo_reply + "503 5.5.1 Error: need MAIL command\r\n"},
    {"RcptBeforeEhlo", rcpt, "503 5.5.1 Error: need MAIL command\r\n"},
    {"RcptOk", ehlo + mail + rcpt, ehlo_reply + "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"},
    {"RcptBadAddress", ehlo + mail + "RCPT TO:<user@-bad.example.org>\r\n", ehlo_reply + "250 2.1.0 Ok\r\n501 5.1.3 Bad recipient address syntax\r\n"},
    {"RcptNullPath", ehlo + mail + "RCPT TO:<>\r\n", ehlo_reply + "250 2.1.0 Ok\r\n501 5.1.3 Bad recipient address syntax\r\n"},
    {"RcptSyntax", ehlo + mail + "RCPT user@example.org\r\n", ehlo_reply + "250 2.1.0 Ok\r\n501 5.5.4 Syntax: RCPT TO:<address>\r\n"},
    {"RcptNotifyRefused", ehlo + mail + "RCPT TO:<user@example.org> NOTIFY=NEVER\r\n", ehlo_reply + "250 2.1.0 Ok\r\n555 5.5.4 Unsupported option: NOTIFY\r\n"},
    {"RcptPostmaster", ehlo + mail + "RCPT TO:<postmaster>\r\n", ehlo_reply + "250 2.1.0 Ok\r\n550 5.1.1 <postmaster>: no local delivery on this relay\r\n"},
    {"RcptTooMany", ehlo + mail + rcpt + rcpt + rcpt + rcpt, ehlo_reply + "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n452 4.5.3 Error: too many recipients\r\n"},
    {"DataWithoutRcpt", ehlo + mail + "DATA\r\n", ehlo_reply + "250 2.1.0 Ok\r\n503 5.5.1 Error: need RCPT command\r\n"},
    {"DataWithoutMail", ehlo + "DATA\r\n", ehlo_reply + "503 5.5.1 Error: need RCPT command\r\n"},
    {"DataWithArgument", ehlo + mail + rcpt + "DATA now\r\n", ehlo_reply + "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n501 5.5.4 Syntax: DATA\r\n"},
    {"RsetEndsTransaction", ehlo + mail + "RSET\r\n" + rcpt, ehlo_reply + "250 2.1.0 Ok\r\n250 2.0.0 Ok\r\n503 5.5.1 Error: need MAIL command\r\n"},
    {"RsetWithArgument", "RSET x\r\n", "501 5.5.4 Syntax: RSET\r\n"},
    {"EhloResetsTransaction", ehlo + mail + ehlo + rcpt, ehlo_reply + "250 2.1.0 Ok\r\n" + ehlo_reply + "503 5.5.1 Error: need MAIL command\r\n"},
    {"Noop", "NOOP\r\n", "250 2.0.0 Ok\r\n"},
    {"NoopWithArgument", "noop hello there\r\n", "250 2.0.0 Ok\r\n"},
    {"Vrfy", "VRFY user\r\n", "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery\r\n"},
    {"VrfyWithoutArgument", "VRFY\r\n", "501 5.5.4 Syntax: VRFY address\r\n"},
    {"Help", "HELP\r\n", "214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP\r\n"},
    {"Starttls", "STARTTLS\r\n", "502 5.5.1 Error: command not implemented\r\n"},
    {"AuthNotEnabled", "AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n", "503 5.5.1 Error: authentication not enabled\r\n"},
    {"UnknownVerb", "XYZZY\r\n", "500 5.5.2 Error: command not recognized\r\n"},
    {"EmptyLine", "\r\n", "500 5.5.2 Error: command not recognized\r\n"},
    {"VerbPrefixIsNotVerb", "NOOPX\r\n", "500 5.5.2 Error: command not recognized\r\n"},
    {"BareLfCommand", "NOOP\n", "500 5.5.2 Error: bare <LF> received\r\n"},
    {"BareLfThenGoodCommand", "NOOP\nNOOP\r\n", "500 5.5.2 Error: bare <LF> received\r\n250 2.0.0 Ok\r\n"},
    {"BareCrInsideCommand", "NOOP\rRSET\r\n", "500 5.5.2 Error: bare <CR> received\r\n"},
    {"NulInsideArgument", ehlo + "MAIL FROM:<a@exa\0mple.net>\r\n"s, ehlo_reply + "501 5.5.4 Syntax: MAIL FROM:<address>\r\n"},
    {"CommandAtLengthLimit", "NOOP " + std::string(505, 'x') + "\r\n", "250 2.0.0 Ok\r\n"},
    {"CommandOverLengthLimit", "NOOP " + std::string(506, 'x') + "\r\nNOOP\r\n", "500 5.5.2 Error: command line too long\r\n250 2.0.0 Ok\r\n"},
    {"VeryLongLineDiscarded", std::string(5000, 'A') + "\r\nNOOP\r\n", "500 5.5.2 Error: command line too long\r\n250 2.0.0 Ok\r\n"},
    {"QuitClosesAndStopsReading", "QUIT\r\nNOOP\r\n", "221 2.0.0 Bye\r\n"},
    {"QuitWithArgument", "QUIT now\r\n", "501 5.5.4 Syntax: QUIT\r\n"},
    {"BdatBadSize", ehlo + mail + rcpt + "BDAT x\r\n", ehlo_reply + "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n501 5.5.4 Syntax: BDAT size [LAST]\r\n"},
    {"BdatBadEndMarker", ehlo + mail + rcpt + "BDAT 3 FIRST\r\n", ehlo_reply + "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n501 5.5.4 Syntax: BDAT size [LAST]\r\n"},
    {"BdatSizeOverflow", ehlo + mail + rcpt + "BDAT 99999999999999999999999\r\n", ehlo_reply + "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n501 5.5.4 Syntax: BDAT size [LAST]\r\n"},
    {"BdatWithoutMailConsumesChunk", ehlo + "BDAT 6\r\nNOOP\r\nNOOP\r\n", ehlo_reply + "503 5.5.1 Error: need MAIL command\r\n250 2.0.0 Ok\r\n"},
    {"BdatWithoutRcptConsumesChunk", ehlo + mail + "BDAT 6 LAST\r\nNOOP\r\nNOOP\r\n", ehlo_reply + "250 2.1.0 Ok\r\n503 5.5.1 Error: need RCPT command\r\n250 2.0.0 Ok\r\n"},
    {"PipelinedTransactionAllRepliesInOrder", ehlo + mail + rcpt + "RCPT TO:<x@elsewhere.example>\r\nRSET\r\nNOOP\r\nQUIT\r\n",
     ehlo_reply + "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n554 5.7.1 <x@elsewhere.example>: Relay access denied\r\n250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n"},
};
// clang-format on

INSTANTIATE_TEST_SUITE_P(Replies, SessionDialogue, ::testing::ValuesIn(dialogues),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(ServerSession, BannerNamesHostname) {
    testing::fake_host host;
    const server_config config = test_config();
    server_session s(config, untrusted_client(), host);
    std::string out;
    s.start(out);
    EXPECT_EQ(out, "220 mx.example.net ESMTP ringrelay\r\n");
}

TEST(ServerSession, EhloAdvertisesPlainSizeWhenUnlimited) {
    server_config config = test_config();
    config.max_message_size = 0;
    const auto t = run_everywhere(config, untrusted_client(), "EHLO c\r\n");
    EXPECT_NE(t.out.find("\r\n250-SIZE\r\n"), std::string::npos) << t.out;
}

TEST(ServerSession, ClosesAfterTooManyErrors) {
    server_config config = test_config();
    config.max_errors = 3;
    const auto t = run_everywhere(config, untrusted_client(), "XA\r\nXB\r\nNOOP\r\nXC\r\nXD\r\n");
    EXPECT_EQ(t.out, banner +
                         "500 5.5.2 Error: command not recognized\r\n"
                         "500 5.5.2 Error: command not recognized\r\n"
                         "250 2.0.0 Ok\r\n"
                         "500 5.5.2 Error: command not recognized\r\n"
                         "421 4.7.0 mx.example.net Error: too many errors\r\n");
    EXPECT_TRUE(t.closed);
    EXPECT_EQ(t.consumed, std::string("XA\r\nXB\r\nNOOP\r\nXC\r\n").size());
}

TEST(ServerSession, QuitConsumesOnlyItsOwnLine) {
    const auto t = run_everywhere(test_config(), untrusted_client(), "NOOP\r\nQUIT\r\nNOOP\r\n");
    EXPECT_TRUE(t.closed);
    EXPECT_EQ(t.consumed, 12U);
}

TEST(ServerSession, PipelinedRecipientsBeyondLimitDoNotCloseSession) {
    // max_recipients 3, max_errors 5: up to 3 refusals past the limit are overshoot and not
    // errors (6 RCPT: still open); beyond that they count (16 RCPT: closed).
    server_config config = test_config();
    config.max_errors = 5;
    std::string in = "EHLO c\r\nMAIL FROM:<a@example.net>\r\n";
    for (int i = 0; i < 6; ++i) in += "RCPT TO:<u@example.org>\r\n";
    const auto t = testing::run_dialogue(config, untrusted_client(), in, {});
    EXPECT_FALSE(t.closed);
    std::string many = in;
    for (int i = 0; i < 10; ++i) many += "RCPT TO:<u@example.org>\r\n";
    const auto t2 = testing::run_dialogue(config, untrusted_client(), many, {});
    EXPECT_TRUE(t2.closed);
}

TEST(ServerSession, TimeoutSays421AndCloses) {
    testing::fake_host host;
    const server_config config = test_config();
    server_session s(config, untrusted_client(), host);
    std::string out;
    s.start(out);
    out.clear();
    s.on_timeout(out);
    EXPECT_EQ(out, "421 4.4.2 mx.example.net Error: timeout exceeded\r\n");
    EXPECT_TRUE(s.closed());
    EXPECT_EQ(s.feed("NOOP\r\n", out), 0U);
}

TEST(ServerSession, ShutdownSays421AndCloses) {
    testing::fake_host host;
    const server_config config = test_config();
    server_session s(config, untrusted_client(), host);
    std::string out;
    s.on_shutdown(out);
    EXPECT_EQ(out, "421 4.3.2 mx.example.net Service shutting down\r\n");
    EXPECT_TRUE(s.closed());
}

TEST(ServerSession, InTransactionBetweenMailAndRset) {
    testing::fake_host host;
    const server_config config = test_config();
    server_session s(config, untrusted_client(), host);
    std::string out;
    s.start(out);
    (void)s.feed("EHLO c\r\nMAIL FROM:<a@example.net>\r\n", out);
    EXPECT_TRUE(s.in_transaction());
    (void)s.feed("RSET\r\n", out);
    EXPECT_FALSE(s.in_transaction());
}

TEST(ServerSession, PartialLineIsConsumedAndCompletedLater) {
    testing::fake_host host;
    const server_config config = test_config();
    server_session s(config, untrusted_client(), host);
    std::string out;
    EXPECT_EQ(s.feed("NO", out), 2U);
    EXPECT_EQ(out, "");
    s.shrink();  // must keep the partial line
    EXPECT_EQ(s.feed("OP\r\n", out), 4U);
    EXPECT_EQ(out, "250 2.0.0 Ok\r\n");
}

// A host that answers MAIL with a reply of its own (session_host::check_mail), like the
// relay's full spool or ringrelay-sink's per-IP rate limit.
class refusing_host final : public session_host {
public:
    explicit refusing_host(reply_id refusal) : _refusal(refusal) {}
    std::uint64_t next_queue_id() noexcept override { return 0x1A2B3C4D5E6F0001ULL; }
    std::string_view rfc5322_date() noexcept override { return testing::test_date; }
    host_reply check_mail(const client_info& client) noexcept override {
        ++checks;
        if (_refusal == reply_id::rate_limited) return {_refusal, client.address};
        return {_refusal, {}};
    }
    int checks = 0;

private:
    reply_id _refusal;
};

const std::string host_mail_dialogue = "EHLO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<u@example.org>\r\n";

TEST(ServerSession, HostRefusesMailWithItsOwnReply) {
    refusing_host host(reply_id::rate_limited);
    const server_config config = test_config();
    server_session s(config, untrusted_client(), host);
    std::string out;
    EXPECT_EQ(s.feed(host_mail_dialogue, out), host_mail_dialogue.size());
    EXPECT_EQ(out, ehlo_reply +
                       "451 4.7.1 Message rate limit exceeded for 192.0.2.1, try again later\r\n"
                       "503 5.5.1 Error: need MAIL command\r\n");
    EXPECT_EQ(host.checks, 1);
    EXPECT_FALSE(s.in_transaction());
}

TEST(ServerSession, HostMailRefusalWithoutArgumentKeepsRelayNoSpaceReply) {
    refusing_host host(reply_id::no_space);
    const server_config config = test_config();
    server_session s(config, untrusted_client(), host);
    std::string out;
    (void)s.feed("EHLO c\r\nMAIL FROM:<a@example.net>\r\n", out);
    EXPECT_EQ(out, ehlo_reply + "452 4.3.1 Insufficient system storage\r\n");
}

TEST(ServerSession, HostIsNotAskedAboutMailWithBadSyntax) {
    refusing_host host(reply_id::rate_limited);
    const server_config config = test_config();
    server_session s(config, untrusted_client(), host);
    std::string out;
    (void)s.feed("EHLO c\r\nMAIL FROM:<a@@example.net>\r\n", out);
    EXPECT_EQ(out, ehlo_reply + "501 5.1.7 Bad sender address syntax\r\n");
    EXPECT_EQ(host.checks, 0);
}

TEST(ServerSession, HostMailRefusalsDoNotCountAsErrors) {
    refusing_host host(reply_id::rate_limited);
    server_config config = test_config();
    config.max_errors = 2;
    server_session s(config, untrusted_client(), host);
    std::string out;
    for (int i = 0; i < 5; ++i) (void)s.feed("MAIL FROM:<a@example.net>\r\n", out);
    EXPECT_TRUE(s.closed()) << "MAIL before EHLO is a client error: counted";
    server_session t(config, untrusted_client(), host);
    out.clear();
    (void)t.feed("EHLO c\r\n", out);
    for (int i = 0; i < 5; ++i) (void)t.feed("MAIL FROM:<a@example.net>\r\n", out);
    EXPECT_FALSE(t.closed()) << out;
    EXPECT_EQ(host.checks, 5);
}

// A host that refuses chosen recipients at RCPT (session_host::check_rcpt), as the relay
// refuses its tenants' suppressed addresses (issue 16); it records what it was asked.
class rcpt_refusing_host final : public session_host {
public:
    std::uint64_t next_queue_id() noexcept override { return 0x1A2B3C4D5E6F0001ULL; }
    std::string_view rfc5322_date() noexcept override { return testing::test_date; }
    host_reply check_rcpt(const client_info& client, const envelope& transaction,
                          std::string_view recipient) noexcept override {
        asked.push_back(std::string(client.address) + " " + transaction.mail_from + " " +
                        std::to_string(transaction.rcpt_to.size()) + " " + std::string(recipient));
        if (recipient != "gone@example.org") return {};
        _text = "<" + std::string(recipient) + ">: recipient suppressed after a hard bounce on 2026-03-14";
        return {reply_id::recipient_suppressed, _text};
    }
    std::vector<std::string> asked;

private:
    std::string _text;
};

TEST(ServerSession, HostRefusesARecipientAndTheOthersAreKept) {
    rcpt_refusing_host host;
    const server_config config = test_config();
    server_session s(config, untrusted_client(), host);
    std::string out;
    const std::string input = "EHLO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<u@example.org>\r\n"
                              "RCPT TO:<gone@example.org>\r\nRCPT TO:<v@example.org>\r\nDATA\r\nhi\r\n.\r\n";
    EXPECT_EQ(s.feed(input, out), input.size());
    EXPECT_EQ(out, ehlo_reply + "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
                                "550 5.1.1 <gone@example.org>: recipient suppressed after a hard bounce on 2026-03-14\r\n"
                                "250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
    ASSERT_TRUE(s.message_ready());
    EXPECT_EQ(s.message_envelope().rcpt_to, (std::vector<std::string>{"u@example.org", "v@example.org"}));
    EXPECT_EQ(host.asked, (std::vector<std::string>{"192.0.2.1 a@example.net 0 u@example.org",
                                                     "192.0.2.1 a@example.net 1 gone@example.org",
                                                     "192.0.2.1 a@example.net 1 v@example.org"}));
}

TEST(ServerSession, RcptRefusalsDoNotCountAsErrors) {
    rcpt_refusing_host host;
    server_config config = test_config();
    config.max_errors = 2;
    server_session s(config, untrusted_client(), host);
    std::string out;
    (void)s.feed("EHLO c\r\nMAIL FROM:<a@example.net>\r\n", out);
    for (int i = 0; i < 5; ++i) (void)s.feed("RCPT TO:<gone@example.org>\r\n", out);
    EXPECT_FALSE(s.closed()) << out;
    out.clear();
    (void)s.feed("DATA\r\n", out);
    EXPECT_EQ(out, "503 5.5.1 Error: need RCPT command\r\n") << "no recipient was added";
}

TEST(ServerSession, HostIsNotAskedAboutRefusedRelayingOrThePostmaster) {
    rcpt_refusing_host host;
    server_config config = test_config();
    config.postmaster = "gone@example.org";  // even where the postmaster's mailbox is "suppressed"
    server_session s(config, untrusted_client(), host);
    std::string out;
    (void)s.feed("EHLO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<x@foreign.example>\r\n"
                 "RCPT TO:<Postmaster>\r\nRCPT TO:<bad@@example.org>\r\n", out);
    EXPECT_EQ(out, ehlo_reply + "250 2.1.0 Ok\r\n554 5.7.1 <x@foreign.example>: Relay access denied\r\n"
                                "250 2.1.5 Ok\r\n501 5.1.3 Bad recipient address syntax\r\n");
    EXPECT_TRUE(host.asked.empty());
}

struct refusal_case {
    const char* name;
    host_reply refusal;
    std::string expected;
};

class SessionHostRefusal : public ::testing::TestWithParam<refusal_case> {};

TEST_P(SessionHostRefusal, EndOfDataGetsHostReplyAndNextMessageIsAccepted) {
    const refusal_case& c = GetParam();
    testing::fake_host host;
    server_config config = test_config();
    config.max_errors = 1;  // a refusal must not count as the client's error
    server_session s(config, untrusted_client(), host);
    std::string out;
    const std::string message = host_mail_dialogue + "DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n";
    const std::string next = "MAIL FROM:<a@example.net>\r\nRCPT TO:<u@example.org>\r\nDATA\r\nhi\r\n.\r\n";
    ASSERT_EQ(s.feed(message + next, out), message.size());
    ASSERT_TRUE(s.message_ready());
    out.clear();
    s.commit_done(c.refusal, out);
    EXPECT_EQ(out, c.expected);
    EXPECT_FALSE(s.message_ready());
    EXPECT_FALSE(s.in_transaction());
    EXPECT_FALSE(s.closed());
    out.clear();
    ASSERT_EQ(s.feed(next, out), next.size());
    ASSERT_TRUE(s.message_ready());
    s.commit_done(commit_result::ok, out);
    EXPECT_EQ(out, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
                   "250 2.0.0 Ok: queued as 1A2B3C4D5E6F0002\r\n");
}

INSTANTIATE_TEST_SUITE_P(
    Replies, SessionHostRefusal,
    ::testing::Values(
        refusal_case{"Deferred", {reply_id::message_deferred, {}},
                     "451 4.3.0 Mail server temporarily rejected message. Try again later.\r\n"},
        refusal_case{"Rejected", {reply_id::message_rejected, "192.0.2.1"},
                     "550 5.7.1 [192.0.2.1] Our system has detected that this message is likely unsolicited mail. "
                     "To reduce the amount of spam, this message has been blocked.\r\n"},
        refusal_case{"HostText451", {reply_id::host_text, "451 4.7.1 Rate limited [GL01], try again later"},
                     "451 4.7.1 Rate limited [GL01], try again later\r\n"},
        refusal_case{"HostText554", {reply_id::host_text, "554 5.7.1 [BL21] Connections not accepted"},
                     "554 5.7.1 [BL21] Connections not accepted\r\n"}),
    [](const auto& info) { return std::string(info.param.name); });

// A host's own 421 line (a provider's throttle text, e.g. Yahoo's [TSS04]) is sent verbatim
// and closes the session: 421 means the service is closing the channel (RFC 5321 §3.8).
TEST(SessionHostText, A421LineClosesTheSession) {
    testing::fake_host host;
    const server_config config = test_config();
    server_session s(config, untrusted_client(), host);
    std::string out;
    const std::string message = host_mail_dialogue + "DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n";
    const std::string next = "MAIL FROM:<a@example.net>\r\n";
    ASSERT_EQ(s.feed(message + next, out), message.size());
    ASSERT_TRUE(s.message_ready());
    out.clear();
    s.commit_done(host_reply{reply_id::host_text, "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred"},
                  out);
    EXPECT_EQ(out, "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred\r\n");
    EXPECT_TRUE(s.closed());
    EXPECT_FALSE(s.message_ready());
    out.clear();
    EXPECT_EQ(s.feed(next, out), 0U);  // nothing more is read after the 421
    EXPECT_EQ(out, "");
}

TEST(Reply, ConnectionLimitIsProviderShaped421) {
    std::string out;
    append_reply(out, reply_id::connection_limit);
    EXPECT_EQ(out, "421 4.7.0 Try again later, closing connection. (too many connections from your IP)\r\n");
}

TEST(FormatQueueId, PrintsSixteenUpperCaseHexDigits) {
    EXPECT_EQ(format_queue_id(0), "0000000000000000");
    EXPECT_EQ(format_queue_id(0xABCDEF0123456789ULL), "ABCDEF0123456789");
    EXPECT_EQ(format_queue_id(0x1F), "000000000000001F");
}

}  // namespace
}  // namespace ringrelay::protocol
