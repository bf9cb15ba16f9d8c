// tests/protocol/server_session_message_test.cc: message transfer through the server
// session: DATA and BDAT, the Received: header, dot-unstuffing, SMTP smuggling variants,
// size limits, commit outcomes. Every dialogue is fed split at every offset.
#include "protocol/server_session.h"

#include <gtest/gtest.h>

#include <string>

#include "tests/protocol/session_harness.h"

namespace ringrelay::protocol {
namespace {

using testing::banner;
using testing::ehlo_reply;
using testing::run_everywhere;
using testing::test_config;
using testing::untrusted_client;

const std::string prologue = "EHLO client.example\r\nMAIL FROM:<sender@example.net>\r\nRCPT TO:<user@example.org>\r\n";
const std::string prologue_reply = ehlo_reply + "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n";
const std::string received_one =
    "Received: from client.example (192.0.2.1)\r\n"
    "\tby mx.example.net (ringrelay) with ESMTP id 1A2B3C4D5E6F0001\r\n"
    "\tfor <user@example.org>; Sat, 28 Nov 2026 03:35:26 +0000\r\n";

TEST(ServerSessionData, QueuesMessageWithReceivedHeader) {
    const auto t = run_everywhere(test_config(), untrusted_client(),
                                  prologue + "DATA\r\nSubject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n");
    EXPECT_EQ(t.out, banner + prologue_reply +
                         "354 End data with <CR><LF>.<CR><LF>\r\n"
                         "250 2.0.0 Ok: queued as 1A2B3C4D5E6F0001\r\n221 2.0.0 Bye\r\n");
    ASSERT_EQ(t.messages.size(), 1U);
    EXPECT_EQ(t.messages[0].text, received_one + "Subject: hi\r\n\r\nbody\r\n");
    EXPECT_EQ(t.messages[0].env.queue_id, 0x1A2B3C4D5E6F0001ULL);
    EXPECT_EQ(t.messages[0].env.helo, "client.example");
    EXPECT_EQ(t.messages[0].env.mail_from, "sender@example.net");
    EXPECT_EQ(t.messages[0].env.rcpt_to, std::vector<std::string>{"user@example.org"});
    EXPECT_FALSE(t.in_transaction);
}

TEST(ServerSessionData, ReceivedHeaderOmitsForClauseWithTwoRecipients) {
    const auto t = run_everywhere(test_config(), untrusted_client(),
                                  prologue + "RCPT TO:<b@example.org>\r\nDATA\r\nx\r\n.\r\n");
    ASSERT_EQ(t.messages.size(), 1U);
    EXPECT_EQ(t.messages[0].text,
              "Received: from client.example (192.0.2.1)\r\n"
              "\tby mx.example.net (ringrelay) with ESMTP id 1A2B3C4D5E6F0001; Sat, 28 Nov 2026 03:35:26 +0000\r\n"
              "x\r\n");
}

TEST(ServerSessionData, ReceivedHeaderSaysSmtpAfterHelo) {
    const auto t = run_everywhere(test_config(), untrusted_client(),
                                  "HELO old.example\r\nMAIL FROM:<>\r\nRCPT TO:<u@example.org>\r\nDATA\r\n.\r\n");
    ASSERT_EQ(t.messages.size(), 1U);
    EXPECT_EQ(t.messages[0].text,
              "Received: from old.example (192.0.2.1)\r\n"
              "\tby mx.example.net (ringrelay) with SMTP id 1A2B3C4D5E6F0001\r\n"
              "\tfor <u@example.org>; Sat, 28 Nov 2026 03:35:26 +0000\r\n");
    EXPECT_EQ(t.messages[0].env.mail_from, "");
}

TEST(ServerSessionData, ReceivedHeaderSaysUtf8SmtpWithSmtputf8) {
    const auto t = run_everywhere(
        test_config(), untrusted_client(),
        "EHLO c\r\nMAIL FROM:<s@example.net> SMTPUTF8 BODY=8BITMIME\r\nRCPT TO:<j\xC3\xB6rg@example.org>\r\nDATA\r\n.\r\n");
    ASSERT_EQ(t.messages.size(), 1U);
    EXPECT_NE(t.messages[0].text.find("with UTF8SMTP id"), std::string::npos);
    EXPECT_TRUE(t.messages[0].env.smtputf8);
    EXPECT_EQ(t.messages[0].env.body, body_type::eight_bit_mime);
    EXPECT_EQ(t.messages[0].env.rcpt_to[0], "j\xC3\xB6rg@example.org");
}

TEST(ServerSessionData, RemovesDotStuffing) {
    const auto t = run_everywhere(test_config(), untrusted_client(),
                                  prologue + "DATA\r\n..leading\r\n..\r\n...\r\nmid.dle\r\n..\r\n.\r\n");
    ASSERT_EQ(t.messages.size(), 1U);
    EXPECT_EQ(t.messages[0].text, received_one + ".leading\r\n.\r\n..\r\nmid.dle\r\n.\r\n");
}

TEST(ServerSessionData, EmptyMessageIsQueued) {
    const auto t = run_everywhere(test_config(), untrusted_client(), prologue + "DATA\r\n.\r\n");
    ASSERT_EQ(t.messages.size(), 1U);
    EXPECT_EQ(t.messages[0].text, received_one);
}

TEST(ServerSessionData, PipelinedMessagesGetFreshQueueIds) {
    const std::string msg = "MAIL FROM:<a@example.net>\r\nRCPT TO:<u@example.org>\r\nDATA\r\nm\r\n.\r\n";
    const auto t = run_everywhere(test_config(), untrusted_client(), "EHLO c\r\n" + msg + msg + "QUIT\r\n");
    EXPECT_EQ(t.out, banner + ehlo_reply +
                         "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
                         "250 2.0.0 Ok: queued as 1A2B3C4D5E6F0001\r\n"
                         "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
                         "250 2.0.0 Ok: queued as 1A2B3C4D5E6F0002\r\n221 2.0.0 Bye\r\n");
    ASSERT_EQ(t.messages.size(), 2U);
}

TEST(ServerSessionData, FeedStopsRightAfterEndOfData) {
    testing::fake_host host;
    const server_config config = test_config();
    server_session s(config, untrusted_client(), host);
    std::string out;
    const std::string head = prologue + "DATA\r\nx\r\n.\r\n";
    EXPECT_EQ(s.feed(head + "NOOP\r\n", out), head.size());
    EXPECT_TRUE(s.message_ready());
    EXPECT_EQ(s.feed("NOOP\r\n", out), 0U);  // nothing more until commit_done
    out.clear();
    s.commit_done(commit_result::ok, out);
    EXPECT_EQ(out, "250 2.0.0 Ok: queued as 1A2B3C4D5E6F0001\r\n");
    EXPECT_FALSE(s.message_ready());
    EXPECT_FALSE(s.in_transaction());
}

struct commit_case {
    const char* name;
    commit_result result;
    std::string reply;
};

class CommitOutcome : public ::testing::TestWithParam<commit_case> {};

TEST_P(CommitOutcome, RepliesAndEndsTransaction) {
    const auto t = run_everywhere(test_config(), untrusted_client(), prologue + "DATA\r\nx\r\n.\r\nRCPT TO:<u@example.org>\r\n",
                                  {GetParam().result});
    EXPECT_EQ(t.out, banner + prologue_reply + "354 End data with <CR><LF>.<CR><LF>\r\n" + GetParam().reply +
                         "503 5.5.1 Error: need MAIL command\r\n");
}

INSTANTIATE_TEST_SUITE_P(
    Results, CommitOutcome,
    ::testing::Values(commit_case{"Ok", commit_result::ok, "250 2.0.0 Ok: queued as 1A2B3C4D5E6F0001\r\n"},
                      commit_case{"NoSpace", commit_result::no_space, "452 4.3.1 Insufficient system storage\r\n"},
                      commit_case{"IoError", commit_result::io_error, "451 4.3.0 Error: queue file write error\r\n"}),
    [](const auto& info) { return std::string(info.param.name); });

// SMTP smuggling (CVE-2023-51764 and relatives): only CRLF "." CRLF ends DATA; the other
// would-be terminators are data, and their bare CR/LF fails the message once it ends.
struct smuggling_case {
    const char* name;
    std::string body;  // between DATA's 354 and the real terminator
};

class Smuggling : public ::testing::TestWithParam<smuggling_case> {};

TEST_P(Smuggling, FakeTerminatorIsDataAndMessageIsRefused) {
    const std::string smuggled = "MAIL FROM:<evil@example.net>\r\nRCPT TO:<v@example.org>\r\nDATA\r\n";
    const auto t = run_everywhere(test_config(), untrusted_client(),
                                  prologue + "DATA\r\n" + GetParam().body + smuggled + "x\r\n.\r\nNOOP\r\n");
    EXPECT_EQ(t.out, banner + prologue_reply + "354 End data with <CR><LF>.<CR><LF>\r\n"
                                               "554 5.5.2 Error: bare <CR> or <LF> in message data\r\n"
                                               "250 2.0.0 Ok\r\n");
    EXPECT_TRUE(t.messages.empty());
}

INSTANTIATE_TEST_SUITE_P(Variants, Smuggling,
                         ::testing::Values(smuggling_case{"LfDotLf", "a\n.\n"},
                                           smuggling_case{"CrDotCr", "a\r.\r"},
                                           smuggling_case{"LfDotCrLf", "a\n.\r\n"},
                                           smuggling_case{"CrLfDotLf", "a\r\n.\n"},
                                           smuggling_case{"CrDotCrLf", "a\r.\r\n"},
                                           smuggling_case{"CrLfDotCr", "a\r\n.\rb\r\n"},
                                           smuggling_case{"BareLfInLine", "a\nb\r\n"},
                                           smuggling_case{"BareCrInLine", "a\rb\r\n"}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(ServerSessionData, RefusesLineOver1000Octets) {
    const std::string ok_line(998, 'a');
    const auto ok = run_everywhere(test_config(), untrusted_client(), prologue + "DATA\r\n" + ok_line + "\r\n.\r\n");
    EXPECT_EQ(ok.messages.size(), 1U);
    const auto t = run_everywhere(test_config(), untrusted_client(), prologue + "DATA\r\n" + ok_line + "a\r\n.\r\n");
    EXPECT_EQ(t.out, banner + prologue_reply + "354 End data with <CR><LF>.<CR><LF>\r\n"
                                               "554 5.6.0 Error: message line too long\r\n");
    EXPECT_TRUE(t.messages.empty());
}

TEST(ServerSessionData, StuffedDotDoesNotCountTowardsLineLength) {
    const auto t = run_everywhere(test_config(), untrusted_client(),
                                  prologue + "DATA\r\n." + std::string(998, '.') + "\r\n.\r\n");
    EXPECT_EQ(t.messages.size(), 1U);
}

TEST(ServerSessionData, RefusesMessageOverSizeLimitAndKeepsReading) {
    server_config config = test_config();
    config.max_message_size = 20;
    const std::string at_limit(18, 'a');  // 18 + CRLF = 20 octets
    const auto ok = run_everywhere(config, untrusted_client(), prologue + "DATA\r\n" + at_limit + "\r\n.\r\n");
    ASSERT_EQ(ok.messages.size(), 1U);
    EXPECT_EQ(ok.messages[0].text, received_one + at_limit + "\r\n");
    const auto t = run_everywhere(config, untrusted_client(),
                                  prologue + "DATA\r\n" + at_limit + "a\r\nmore\r\n.\r\nNOOP\r\n");
    EXPECT_EQ(t.out, banner + "250-mx.example.net\r\n250-PIPELINING\r\n250-SIZE 20\r\n250-ENHANCEDSTATUSCODES\r\n"
                              "250-8BITMIME\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
                              "354 End data with <CR><LF>.<CR><LF>\r\n"
                              "552 5.3.4 Message size exceeds fixed limit\r\n250 2.0.0 Ok\r\n");
    EXPECT_TRUE(t.messages.empty());
}

TEST(ServerSessionData, ShrinkAfterMessageKeepsWorking) {
    testing::fake_host host;
    const server_config config = test_config();
    server_session s(config, untrusted_client(), host);
    std::string out;
    (void)s.feed(prologue + "DATA\r\nabc\r\n.\r\n", out);
    ASSERT_TRUE(s.message_ready());
    s.shrink();  // must not free the ready message
    EXPECT_EQ(s.message(), received_one + "abc\r\n");
    s.commit_done(commit_result::ok, out);
    s.shrink();
    EXPECT_EQ(s.message(), "");
    out.clear();
    (void)s.feed("MAIL FROM:<a@example.net>\r\nRCPT TO:<u@example.org>\r\nDATA\r\nz\r\n.\r\n", out);
    ASSERT_TRUE(s.message_ready());
    EXPECT_NE(s.message().find("\r\nz\r\n"), std::string_view::npos);
}

// ---- BDAT (RFC 3030) ----

TEST(ServerSessionBdat, MultiChunkMessageIsQueuedRaw) {
    const auto t = run_everywhere(test_config(), untrusted_client(),
                                  prologue + "BDAT 9\r\n.a\r\nb\r\n.\rBDAT 3 LAST\r\n\nc\n" + "NOOP\r\n");
    // ".\r" + "\n" across chunks is a CRLF; "c\n" is a bare LF -> refused.
    EXPECT_EQ(t.out, banner + prologue_reply + "250 2.0.0 Ok: 9 octets received\r\n"
                                               "554 5.5.2 Error: bare <CR> or <LF> in message data\r\n"
                                               "250 2.0.0 Ok\r\n");
    const auto good = run_everywhere(test_config(), untrusted_client(),
                                     prologue + "BDAT 8\r\n.a\r\nb\r\n.BDAT 3 LAST\r\nc\r\nNOOP\r\n");
    EXPECT_EQ(good.out, banner + prologue_reply + "250 2.0.0 Ok: 8 octets received\r\n"
                                                  "250 2.0.0 Ok: queued as 1A2B3C4D5E6F0001\r\n"
                                                  "250 2.0.0 Ok\r\n");
    ASSERT_EQ(good.messages.size(), 1U);
    EXPECT_EQ(good.messages[0].text, received_one + ".a\r\nb\r\n.c\r\n");  // no unstuffing
}

TEST(ServerSessionBdat, CrAndLfSplitAcrossChunksFormOneLineEnd) {
    const auto t = run_everywhere(test_config(), untrusted_client(),
                                  prologue + "BDAT 2\r\nx\rBDAT 1 LAST\r\n\n");
    ASSERT_EQ(t.messages.size(), 1U);
    EXPECT_EQ(t.messages[0].text, received_one + "x\r\n");
}

TEST(ServerSessionBdat, ZeroLastEndsMessage) {
    const auto t = run_everywhere(test_config(), untrusted_client(), prologue + "BDAT 3\r\nab\nBDAT 0 LAST\r\n");
    EXPECT_EQ(t.out, banner + prologue_reply + "250 2.0.0 Ok: 3 octets received\r\n"
                                               "554 5.5.2 Error: bare <CR> or <LF> in message data\r\n");
    const auto ok = run_everywhere(test_config(), untrusted_client(), prologue + "BDAT 4\r\nab\r\nBDAT 0 LAST\r\n");
    ASSERT_EQ(ok.messages.size(), 1U);
    EXPECT_EQ(ok.messages[0].text, received_one + "ab\r\n");
}

TEST(ServerSessionBdat, UnterminatedLastLineGetsCrLf) {
    const auto t = run_everywhere(test_config(), untrusted_client(), prologue + "BDAT 2 LAST\r\nab");
    ASSERT_EQ(t.messages.size(), 1U);
    EXPECT_EQ(t.messages[0].text, received_one + "ab\r\n");
}

TEST(ServerSessionBdat, DataAfterBdatIsRefused) {
    const auto t = run_everywhere(test_config(), untrusted_client(), prologue + "BDAT 3\r\nab\nDATA\r\nRCPT TO:<u@example.org>\r\n");
    EXPECT_EQ(t.out, banner + prologue_reply + "250 2.0.0 Ok: 3 octets received\r\n"
                                               "503 5.5.1 Error: DATA after BDAT in the same transaction\r\n"
                                               "503 5.5.1 Error: RCPT after BDAT in the same transaction\r\n");
}

TEST(ServerSessionBdat, OversizedChunkIsConsumedAndLaterChunksFail) {
    server_config config = test_config();
    config.max_message_size = 10;
    const std::string chunk(12, 'x');
    const auto t = run_everywhere(config, untrusted_client(),
                                  prologue + "BDAT 12\r\n" + chunk + "BDAT 2 LAST\r\nyyNOOP\r\nRCPT TO:<u@example.org>\r\n");
    EXPECT_EQ(t.out, banner + "250-mx.example.net\r\n250-PIPELINING\r\n250-SIZE 10\r\n250-ENHANCEDSTATUSCODES\r\n"
                              "250-8BITMIME\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
                              "552 5.3.4 Message size exceeds fixed limit\r\n"
                              "552 5.3.4 Message size exceeds fixed limit\r\n"
                              "250 2.0.0 Ok\r\n503 5.5.1 Error: need MAIL command\r\n");
    EXPECT_TRUE(t.messages.empty());
}

TEST(ServerSessionBdat, SizeCountedAcrossChunks) {
    server_config config = test_config();
    config.max_message_size = 10;
    const auto t = run_everywhere(config, untrusted_client(), prologue + "BDAT 6\r\nab\r\ncdBDAT 7 LAST\r\nef\r\ng\r\n");
    EXPECT_TRUE(t.messages.empty());
    EXPECT_NE(t.out.find("250 2.0.0 Ok: 6 octets received\r\n552 5.3.4"), std::string::npos) << t.out;
}

TEST(ServerSessionBdat, CommitFailureEndsTransaction) {
    const auto t = run_everywhere(test_config(), untrusted_client(), prologue + "BDAT 3 LAST\r\nab\nRSET\r\n",
                                  {commit_result::no_space});
    EXPECT_EQ(t.out, banner + prologue_reply + "554 5.5.2 Error: bare <CR> or <LF> in message data\r\n250 2.0.0 Ok\r\n");
    const auto ok = run_everywhere(test_config(), untrusted_client(), prologue + "BDAT 4 LAST\r\nab\r\nRSET\r\n",
                                   {commit_result::io_error});
    EXPECT_EQ(ok.out, banner + prologue_reply + "451 4.3.0 Error: queue file write error\r\n250 2.0.0 Ok\r\n");
    EXPECT_EQ(ok.messages.size(), 1U);
}


// RFC 5321 §6.3: a message that has passed through too many relays is a loop; refuse it.
TEST(ServerSessionData, RefusesMessageWithTooManyReceivedHeaders) {
    std::string hops;
    for (std::size_t i = 0; i < max_received_headers + 1; ++i) hops += "Received: from hop" + std::to_string(i) + "\r\n";
    const auto t = run_everywhere(test_config(), untrusted_client(), prologue + "DATA\r\n" + hops + "\r\nbody\r\n.\r\n");
    EXPECT_EQ(t.out, banner + prologue_reply + "354 End data with <CR><LF>.<CR><LF>\r\n554 5.4.6 Too many hops\r\n");
    EXPECT_TRUE(t.messages.empty());
}

TEST(ServerSessionData, AcceptsMessageAtTheHopLimit) {
    std::string hops;
    for (std::size_t i = 0; i < max_received_headers; ++i) hops += "received: from hop" + std::to_string(i) + "\r\n";
    // Received: lines in the body do not count.
    const auto t = run_everywhere(test_config(), untrusted_client(),
                                  prologue + "DATA\r\n" + hops + "\r\nReceived: in the body\r\n.\r\n");
    ASSERT_EQ(t.messages.size(), 1U);
}


// The body observer sees exactly what message() holds, piece by piece, for DATA (stuffed dots
// removed) and BDAT, whatever the input's split; a refused message's storage starts afresh.
struct recording_observer final : body_observer {
    std::string seen;
    int begun = 0;
    void body_begun() noexcept override {
        seen.clear();
        ++begun;
    }
    void body_appended(std::string_view octets) noexcept override { seen.append(octets); }
};

TEST(ServerSessionData, BodyObserverSeesWhatMessageHolds) {
    const std::string input = prologue + "DATA\r\nSubject: a\r\n\r\n..dot\r\nline\r\n.\r\n" + prologue.substr(prologue.find("MAIL")) +
                              "BDAT 6\r\nX: 1\r\nBDAT 8 LAST\r\n\r\nbody\r\n" + prologue.substr(prologue.find("MAIL")) +
                              "DATA\r\nbare\nlf\r\n.\r\nQUIT\r\n";
    const server_config config = test_config();  // the session keeps references to both
    const client_info client = untrusted_client();
    for (std::size_t cut = 0; cut <= input.size(); ++cut) {
        testing::fake_host host;
        server_session session(config, client, host);
        recording_observer observer;
        session.set_body_observer(&observer);
        std::string out;
        session.start(out);
        std::vector<std::string> ready;
        std::vector<std::size_t> cuts;
        if (cut > 0 && cut < input.size()) cuts.push_back(cut);
        testing::feed_in_pieces(session, input, cuts, out, [&](server_session& s) {
            if (!s.message_ready()) return false;
            EXPECT_EQ(observer.seen, s.message()) << "cut at " << cut;
            ready.emplace_back(s.message());
            s.commit_done(commit_result::ok, out);
            return true;
        });
        ASSERT_EQ(ready.size(), 2U) << "cut at " << cut;
        EXPECT_EQ(ready[0], received_one + "Subject: a\r\n\r\n.dot\r\nline\r\n");
        EXPECT_NE(ready[1].find("X: 1\r\n\r\nbody\r\n"), std::string::npos);
        EXPECT_EQ(observer.begun, 3) << "one start per message, the refused one included";
    }
}

}  // namespace
}  // namespace ringrelay::protocol
