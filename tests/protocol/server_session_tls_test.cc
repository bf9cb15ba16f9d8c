// tests/protocol/server_session_tls_test.cc: STARTTLS in the SMTP server session (RFC 3207):
// what EHLO offers, the replies to STARTTLS in every state, the reset after the handshake
// (a fresh EHLO is required), the Received: header under TLS (ESMTPS and the cipher), implicit
// TLS, and the plaintext-injection defence (CVE-2011-0411) at the session's edge. Dialogues
// run through a host that "completes the handshake" whenever the session asks, fed split at
// every offset and byte by byte.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "protocol/server_session.h"
#include "tests/protocol/session_harness.h"

namespace ringrelay::protocol {
namespace {

using testing::banner;
using testing::fake_host;
using testing::test_config;
using testing::untrusted_client;

constexpr tls_info tls13{"TLSv1.3", "TLS_AES_256_GCM_SHA384", 256, 256};
// The harness writes this where the handshake happened, so golden transcripts show it.
const std::string handshake_mark = "--- TLS handshake ---\r\n";

server_config tls_config() {
    server_config c = test_config();
    c.tls = tls_offer::starttls;
    return c;
}

const std::string ehlo_reply_tls =
    "250-mx.example.net\r\n250-PIPELINING\r\n250-SIZE 10000\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n"
    "250-8BITMIME\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";
const std::string ehlo_reply_plain = testing::ehlo_reply;  // STARTTLS not offered, or TLS active

struct tls_transcript {
    std::string out;
    std::vector<std::string> messages;
    std::size_t handshakes = 0;
    bool closed = false;
};

// Like testing::run_dialogue, plus a host that completes a handshake whenever the session
// requests one and goes on feeding the rest of the input as if it had been decrypted.
tls_transcript run_tls_dialogue(const server_config& config, std::string_view input,
                                const std::vector<std::size_t>& cuts) {
    fake_host host;
    server_session session(config, untrusted_client(), host);
    tls_transcript t;
    session.start(t.out);
    testing::feed_in_pieces(session, input, cuts, t.out, [&](server_session& s) {
        if (s.message_ready()) {
            t.messages.emplace_back(s.message());
            s.commit_done(commit_result::ok, t.out);
            return true;
        }
        if (!s.tls_requested()) return false;
        EXPECT_EQ(s.feed("NOOP\r\n", t.out), 0u) << "nothing is read before the handshake";
        t.out += handshake_mark;
        ++t.handshakes;
        s.on_tls_established(tls13);
        EXPECT_FALSE(s.tls_requested());
        EXPECT_TRUE(s.tls_active());
        return true;
    });
    t.closed = session.closed();
    return t;
}

tls_transcript run_tls_everywhere(const server_config& config, std::string_view input) {
    const tls_transcript whole = run_tls_dialogue(config, input, {});
    auto same = [](const tls_transcript& a, const tls_transcript& b) {
        return a.out == b.out && a.messages == b.messages && a.handshakes == b.handshakes && a.closed == b.closed;
    };
    for (std::size_t k = 1; k < input.size(); ++k) {
        const tls_transcript split = run_tls_dialogue(config, input, {k});
        if (!same(whole, split)) {
            ADD_FAILURE() << "output differs when split at offset " << k << "\nwhole:\n" << whole.out << "\nsplit:\n"
                          << split.out;
            return whole;
        }
    }
    std::vector<std::size_t> every;
    for (std::size_t k = 1; k < input.size(); ++k) every.push_back(k);
    const tls_transcript bytes = run_tls_dialogue(config, input, every);
    EXPECT_TRUE(same(whole, bytes)) << "byte by byte:\n" << bytes.out;
    return whole;
}

const std::string ehlo = "EHLO client.example\r\n";
const std::string mail = "MAIL FROM:<sender@example.net>\r\n";
const std::string rcpt = "RCPT TO:<user@example.org>\r\n";
const std::string ready = "220 2.0.0 Ready to start TLS\r\n";

struct tls_case {
    const char* name;
    bool offered;
    std::string input;
    std::string expected;  // after the banner
};

class StartTlsDialogue : public ::testing::TestWithParam<tls_case> {};

TEST_P(StartTlsDialogue, RepliesMatchGoldenTranscriptAtEverySplit) {
    const tls_case& c = GetParam();
    server_config config = c.offered ? tls_config() : test_config();
    const auto t = run_tls_everywhere(config, c.input);
    EXPECT_EQ(t.out, banner + c.expected);
}

// clang-format off
const tls_case tls_cases[] = {
    {"EhloOffersStartTlsWhenConfigured", true, ehlo, ehlo_reply_tls},
    {"EhloOmitsStartTlsWhenNotConfigured", false, ehlo, ehlo_reply_plain},
    {"NotOfferedIsNotImplemented", false, "STARTTLS\r\n", "502 5.5.1 Error: command not implemented\r\n"},
    {"NotOfferedWithArgumentIsNotImplemented", false, "STARTTLS now\r\n", "502 5.5.1 Error: command not implemented\r\n"},
    {"ArgumentIsASyntaxError", true, ehlo + "STARTTLS now\r\n", ehlo_reply_tls + "501 5.5.4 Syntax: STARTTLS\r\n"},
    {"LowerCaseVerb", true, ehlo + "starttls\r\n", ehlo_reply_tls + ready + handshake_mark},
    {"ReadyThenHandshake", true, ehlo + "STARTTLS\r\n", ehlo_reply_tls + ready + handshake_mark},
    {"AllowedBeforeEhlo", true, "STARTTLS\r\n", ready + handshake_mark},
    {"EhloAfterTlsOmitsStartTls", true, ehlo + "STARTTLS\r\n" + ehlo, ehlo_reply_tls + ready + handshake_mark + ehlo_reply_plain},
    {"GreetingIsForgotten", true, ehlo + "STARTTLS\r\n" + mail,
     ehlo_reply_tls + ready + handshake_mark + "503 5.5.1 Error: send HELO/EHLO first\r\n"},
    {"TransactionIsForgotten", true, ehlo + mail + "STARTTLS\r\n" + ehlo + rcpt,
     ehlo_reply_tls + "250 2.1.0 Ok\r\n" + ready + handshake_mark + ehlo_reply_plain + "503 5.5.1 Error: need MAIL command\r\n"},
    {"SecondStartTlsIsRefused", true, ehlo + "STARTTLS\r\n" + ehlo + "STARTTLS\r\n",
     ehlo_reply_tls + ready + handshake_mark + ehlo_reply_plain + "503 5.5.1 Error: TLS already active\r\n"},
    {"SecondStartTlsBeforeEhloIsRefused", true, "STARTTLS\r\nSTARTTLS\r\n",
     ready + handshake_mark + "503 5.5.1 Error: TLS already active\r\n"},
    {"CommandsAfterTheHandshakeAreAnswered", true, "STARTTLS\r\nNOOP\r\n",
     ready + handshake_mark + "250 2.0.0 Ok\r\n"},
};
// clang-format on

INSTANTIATE_TEST_SUITE_P(ServerSessionTls, StartTlsDialogue, ::testing::ValuesIn(tls_cases),
                         [](const ::testing::TestParamInfo<tls_case>& info) { return info.param.name; });

TEST(ServerSessionTls, StopsConsumingAtStartTls) {
    fake_host host;
    const server_config config = tls_config();
    server_session s(config, untrusted_client(), host);
    std::string out;
    s.start(out);
    const std::string first = ehlo + "STARTTLS\r\n";
    const std::string input = first + "EHLO injected.example\r\n";
    EXPECT_EQ(s.feed(input, out), first.size()) << "the bytes after STARTTLS are left to the host";
    EXPECT_TRUE(s.tls_requested());
    EXPECT_FALSE(s.tls_active());
    EXPECT_FALSE(s.closed());
    EXPECT_EQ(out, banner + ehlo_reply_tls + ready);
    EXPECT_EQ(s.feed("EHLO injected.example\r\n", out), 0u);
    EXPECT_EQ(out, banner + ehlo_reply_tls + ready) << "no reply to anything before the handshake";
}

TEST(ServerSessionTls, StartTlsPipelinedWithMoreInputIsRefusedWhenSyncEnforced) {
    // CVE-2011-0411: a command behind STARTTLS in the same read is not executed; the session
    // ends (554 5.5.0) and no TLS starts.
    fake_host host;
    server_config config = tls_config();
    config.sync = pipelining_sync::enforce;
    server_session s(config, untrusted_client(), host);
    std::string out;
    s.start(out);
    (void)s.feed(ehlo, out);
    out.clear();
    (void)s.feed("STARTTLS\r\nRSET\r\n", out);
    EXPECT_EQ(out, "554 5.5.0 Error: SMTP protocol synchronization\r\n");
    EXPECT_TRUE(s.closed());
    EXPECT_FALSE(s.tls_requested());
}

TEST(ServerSessionTls, StartTlsAloneIsAcceptedWhenSyncEnforced) {
    fake_host host;
    server_config config = tls_config();
    config.sync = pipelining_sync::enforce;
    server_session s(config, untrusted_client(), host);
    std::string out;
    s.start(out);
    (void)s.feed(ehlo, out);
    out.clear();
    EXPECT_EQ(s.feed("STARTTLS\r\n", out), 10u);
    EXPECT_EQ(out, ready);
    EXPECT_TRUE(s.tls_requested());
}

// The message that a TLS dialogue stores: its Received: header names ESMTPS and the cipher.
std::string message_after_tls(const std::string& greeting, const std::string& mail_command) {
    const std::string input = "STARTTLS\r\n" + greeting + mail_command + rcpt + "DATA\r\nSubject: t\r\n\r\nhi\r\n.\r\n";
    const auto t = run_tls_everywhere(tls_config(), input);
    EXPECT_EQ(t.messages.size(), 1u) << t.out;
    return t.messages.empty() ? std::string() : t.messages.front();
}

TEST(ServerSessionTls, ReceivedHeaderSaysEsmtpsWithTheCipher) {
    EXPECT_EQ(message_after_tls(ehlo, mail),
              "Received: from client.example (192.0.2.1)\r\n"
              "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n"
              "\tby mx.example.net (ringrelay) with ESMTPS id 1A2B3C4D5E6F0001\r\n"
              "\tfor <user@example.org>; Sat, 28 Nov 2026 03:35:26 +0000\r\n"
              "Subject: t\r\n\r\nhi\r\n");
}

TEST(ServerSessionTls, ReceivedHeaderSaysUtf8SmtpsForSmtputf8) {
    const std::string m = message_after_tls(ehlo, "MAIL FROM:<sender@example.net> SMTPUTF8\r\n");
    EXPECT_NE(m.find("\tby mx.example.net (ringrelay) with UTF8SMTPS id "), std::string::npos) << m;
}

TEST(ServerSessionTls, ReceivedHeaderUnderHeloKeepsSmtpAndRecordsTls) {
    const std::string m = message_after_tls("HELO client.example\r\n", mail);
    EXPECT_NE(m.find("\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n"), std::string::npos) << m;
    EXPECT_NE(m.find(" with SMTP id "), std::string::npos) << m;
}

TEST(ServerSessionTls, ReceivedHeaderWithoutTlsIsUnchanged) {
    const auto t = run_tls_everywhere(tls_config(), ehlo + mail + rcpt + "DATA\r\nx\r\n.\r\n");
    ASSERT_EQ(t.messages.size(), 1u);
    EXPECT_EQ(t.messages.front().find("(using"), std::string::npos);
    EXPECT_NE(t.messages.front().find(" with ESMTP id "), std::string::npos);
}

TEST(ServerSessionTls, ImplicitTlsStartsEstablished) {
    // RFC 8314: the handshake comes first, then the banner; STARTTLS is never offered.
    fake_host host;
    const server_config config = tls_config();
    server_session s(config, untrusted_client(), host);
    s.on_tls_established(tls13);
    std::string out;
    s.start(out);
    (void)s.feed(ehlo + "STARTTLS\r\n" + mail + rcpt + "DATA\r\nx\r\n.\r\n", out);
    EXPECT_EQ(out, banner + ehlo_reply_plain + "503 5.5.1 Error: TLS already active\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n" +
                       "354 End data with <CR><LF>.<CR><LF>\r\n");
    ASSERT_TRUE(s.message_ready());
    EXPECT_NE(s.message().find(" with ESMTPS id "), std::string::npos);
    EXPECT_TRUE(s.tls_active());
}

TEST(ServerSessionTls, AlreadyActiveCountsAsAnError) {
    server_config config = tls_config();
    config.max_errors = 2;
    const auto t = run_tls_everywhere(config, "STARTTLS\r\nSTARTTLS\r\nSTARTTLS\r\n");
    EXPECT_EQ(t.out, banner + ready + handshake_mark + "503 5.5.1 Error: TLS already active\r\n" +
                         "503 5.5.1 Error: TLS already active\r\n421 4.7.0 mx.example.net Error: too many errors\r\n");
    EXPECT_TRUE(t.closed);
}

TEST(ServerSessionTls, HandshakeDescriptionWithoutCipherIsStillTls) {
    fake_host host;
    const server_config config = tls_config();
    server_session s(config, untrusted_client(), host);
    std::string out;
    s.start(out);
    s.on_tls_established(tls_info{});
    EXPECT_TRUE(s.tls_active());
    (void)s.feed(ehlo + mail + rcpt + "DATA\r\nx\r\n.\r\n", out);
    ASSERT_TRUE(s.message_ready());
    EXPECT_NE(s.message().find("\t(using TLS)\r\n"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace ringrelay::protocol
