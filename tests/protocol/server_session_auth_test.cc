// tests/protocol/server_session_auth_test.cc: SMTP AUTH in the server session (RFC 4954,
// PLAIN per RFC 4616, LOGIN): what EHLO offers with and without TLS, the 334 exchange, the
// host's asynchronous check (auth_pending / auth_done), failure counting to 421 4.7.0, the
// host's per-address refusal, every error reply, relaying after AUTH (and 530 5.7.0 before
// it), ESMTPA / ESMTPSA in Received:, pipelining after AUTH with an initial response, and
// the reset of authentication by STARTTLS. Dialogues are fed split at every offset and byte
// by byte (the replies must not depend on how the input was cut).
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "protocol/server_session.h"
#include "tests/protocol/session_harness.h"

namespace ringrelay::protocol {
namespace {

using testing::banner;
using testing::test_config;
using testing::test_date;
using testing::untrusted_client;

constexpr tls_info tls13{"TLSv1.3", "TLS_AES_256_GCM_SHA384", 256, 256};

// base64 of "\0alice\0secret", "\0alice\0wrong", "alice", "secret", "bob\0alice\0secret",
// "alice\0secret" (no authzid separator: malformed PLAIN).
constexpr std::string_view plain_ok = "AGFsaWNlAHNlY3JldA==";
constexpr std::string_view plain_wrong = "AGFsaWNlAHdyb25n";
constexpr std::string_view b64_alice = "YWxpY2U=";
constexpr std::string_view b64_secret = "c2VjcmV0";
constexpr std::string_view plain_other_authzid = "Ym9iAGFsaWNlAHNlY3JldA==";
constexpr std::string_view plain_malformed = "YWxpY2UAc2VjcmV0";

// A host that checks credentials against a fixed table the way the relay does: a malformed
// attempt or an authzid other than the user fails; `locked` makes check_auth refuse.
class auth_host final : public session_host {
public:
    std::uint64_t next_queue_id() noexcept override { return _next++; }
    std::string_view rfc5322_date() noexcept override { return test_date; }
    host_reply check_auth(const client_info&) noexcept override {
        ++checks;
        if (locked) return {reply_id::auth_throttled, "mx.example.net"};
        return {};
    }
    auth_result decide(const auth_attempt& a) {
        attempts.push_back(std::string(a.mechanism) + ":" + std::string(a.user));
        if (!a.well_formed) return auth_result::failed;
        if (!a.authzid.empty() && a.authzid != a.user) return auth_result::failed;
        const auto it = users.find(std::string(a.user));
        return it != users.end() && it->second == a.password ? auth_result::ok : auth_result::failed;
    }
    std::map<std::string, std::string> users{{"alice", "secret"}};
    std::vector<std::string> attempts;
    bool locked = false;
    int checks = 0;

private:
    std::uint64_t _next = 0x1A2B3C4D5E6F0001ULL;
};

struct auth_transcript {
    std::string out;
    std::vector<std::string> messages;
    std::vector<std::string> attempts;
    bool closed = false;
};

// Feeds pieces ending at `cuts`; completes messages, STARTTLS handshakes and AUTH checks
// whenever the session asks.
auth_transcript run_auth(const server_config& config, std::string_view input, const std::vector<std::size_t>& cuts,
                         bool locked = false) {
    auth_host host;
    host.locked = locked;
    server_session session(config, untrusted_client(), host);
    auth_transcript t;
    session.start(t.out);
    testing::feed_in_pieces(session, input, cuts, t.out, [&](server_session& s) {
        if (s.message_ready()) {
            t.messages.emplace_back(s.message());
            s.commit_done(commit_result::ok, t.out);
            return true;
        }
        if (s.tls_requested()) {
            t.out += "--- TLS ---\r\n";
            s.on_tls_established(tls13);
            return true;
        }
        if (!s.auth_pending()) return false;
        EXPECT_EQ(s.feed("NOOP\r\n", t.out), 0u) << "nothing is read while AUTH is checked";
        s.auth_done(host.decide(s.pending_auth()), t.out);
        EXPECT_FALSE(s.auth_pending());
        return true;
    });
    t.closed = session.closed();
    t.attempts = host.attempts;
    return t;
}

auth_transcript run_everywhere(const server_config& config, std::string_view input, bool locked = false) {
    const auth_transcript whole = run_auth(config, input, {}, locked);
    auto same = [&](const auth_transcript& x) {
        return x.out == whole.out && x.messages == whole.messages && x.closed == whole.closed &&
               x.attempts == whole.attempts;
    };
    for (std::size_t k = 1; k < input.size(); ++k) {
        const auth_transcript split = run_auth(config, input, {k}, locked);
        if (!same(split)) {
            ADD_FAILURE() << "differs when split at " << k << "\nwhole:\n" << whole.out << "\nsplit:\n" << split.out;
            return whole;
        }
    }
    std::vector<std::size_t> every;
    for (std::size_t k = 1; k < input.size(); ++k) every.push_back(k);
    if (!same(run_auth(config, input, every, locked))) ADD_FAILURE() << "differs when fed byte by byte";
    return whole;
}

server_config auth_config(auth_offer offer) {
    server_config c = test_config();
    c.tls = tls_offer::starttls;
    c.auth = offer;
    c.max_auth_failures = 3;
    return c;
}

const std::string ehlo_head = "250-mx.example.net\r\n250-PIPELINING\r\n250-SIZE 10000\r\n";
const std::string ehlo_tail = "250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";
const std::string ehlo_starttls_only = ehlo_head + "250-STARTTLS\r\n" + ehlo_tail;
const std::string ehlo_starttls_auth = ehlo_head + "250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n" + ehlo_tail;
const std::string ehlo_auth_only = ehlo_head + "250-AUTH PLAIN LOGIN\r\n" + ehlo_tail;
const std::string tls_mark = "--- TLS ---\r\n";

std::string s(std::string_view v) { return std::string(v); }

TEST(ServerSessionAuth, OfferedOnlyUnderTlsByDefault) {
    const auto t = run_everywhere(auth_config(auth_offer::under_tls),
                                  "EHLO c.example\r\nAUTH PLAIN " + s(plain_ok) +
                                      "\r\nSTARTTLS\r\nEHLO c.example\r\nQUIT\r\n");
    EXPECT_EQ(t.out, banner + ehlo_starttls_only +
                         "538 5.7.11 Encryption required for requested authentication mechanism\r\n"
                         "220 2.0.0 Ready to start TLS\r\n" + tls_mark + ehlo_auth_only + "221 2.0.0 Bye\r\n");
    EXPECT_TRUE(t.attempts.empty()) << "no credentials are checked in plaintext";
}

TEST(ServerSessionAuth, PlainWithInitialResponseThenRelayAnywhereWithEsmtpsa) {
    const auto t = run_everywhere(auth_config(auth_offer::under_tls),
                                  "STARTTLS\r\nEHLO c.example\r\nAUTH PLAIN " + s(plain_ok) +
                                      "\r\nMAIL FROM:<alice@c.example>\r\nRCPT TO:<bob@foreign.example>\r\nDATA\r\n"
                                      "Subject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n");
    EXPECT_EQ(t.out, banner + "220 2.0.0 Ready to start TLS\r\n" + tls_mark + ehlo_auth_only +
                         "235 2.7.0 Authentication successful\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
                         "354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as 1A2B3C4D5E6F0001\r\n"
                         "221 2.0.0 Bye\r\n");
    ASSERT_EQ(t.messages.size(), 1u);
    EXPECT_NE(t.messages[0].find("with ESMTPSA id 1A2B3C4D5E6F0001"), std::string::npos) << t.messages[0];
    EXPECT_EQ(t.attempts, std::vector<std::string>{"PLAIN:alice"});
}

TEST(ServerSessionAuth, PlainWithoutInitialResponse) {
    const auto t = run_everywhere(auth_config(auth_offer::always),
                                  "EHLO c.example\r\nAUTH plain\r\n" + s(plain_ok) + "\r\nQUIT\r\n");
    EXPECT_EQ(t.out, banner + ehlo_starttls_auth + "334 \r\n235 2.7.0 Authentication successful\r\n"
                                                   "221 2.0.0 Bye\r\n");
}

// RFC 4954 §4: "=" is an empty initial response, which neither mechanism accepts: a failed
// attempt (counted), then a well-formed one on the same session succeeds.
TEST(ServerSessionAuth, EmptyInitialResponseIsAFailedAttempt) {
    const auto t = run_everywhere(auth_config(auth_offer::always),
                                  "EHLO c.example\r\nAUTH PLAIN =\r\nAUTH LOGIN =\r\nAUTH PLAIN " + s(plain_ok) +
                                      "\r\n");
    EXPECT_EQ(t.out, banner + ehlo_starttls_auth + "535 5.7.8 Error: authentication failed\r\n"
                                                   "535 5.7.8 Error: authentication failed\r\n"
                                                   "235 2.7.0 Authentication successful\r\n");
    EXPECT_EQ(t.attempts, (std::vector<std::string>{"PLAIN:", "LOGIN:", "PLAIN:alice"}));
}

TEST(ServerSessionAuth, LoginWithAndWithoutInitialUser) {
    const server_config c = auth_config(auth_offer::always);
    auto t = run_everywhere(c, "EHLO c.example\r\nAUTH LOGIN\r\n" + s(b64_alice) + "\r\n" + s(b64_secret) +
                                   "\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<b@foreign.example>\r\nDATA\r\nx\r\n.\r\n");
    EXPECT_EQ(t.out, banner + ehlo_starttls_auth + "334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n"
                                                   "235 2.7.0 Authentication successful\r\n250 2.1.0 Ok\r\n"
                                                   "250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
                                                   "250 2.0.0 Ok: queued as 1A2B3C4D5E6F0001\r\n");
    ASSERT_EQ(t.messages.size(), 1u);
    EXPECT_NE(t.messages[0].find("with ESMTPA id"), std::string::npos) << "authenticated, no TLS";
    t = run_everywhere(c, "EHLO c.example\r\nAUTH LOGIN " + s(b64_alice) + "\r\n" + s(b64_secret) + "\r\n");
    EXPECT_EQ(t.out, banner + ehlo_starttls_auth + "334 UGFzc3dvcmQ6\r\n235 2.7.0 Authentication successful\r\n");
    EXPECT_EQ(t.attempts, std::vector<std::string>{"LOGIN:alice"});
}

TEST(ServerSessionAuth, FailuresAreCountedThenTheClientIsDisconnected) {
    const auto t = run_everywhere(auth_config(auth_offer::always),
                                  "EHLO c.example\r\nAUTH PLAIN " + s(plain_wrong) + "\r\nAUTH PLAIN " +
                                      s(plain_other_authzid) + "\r\nAUTH PLAIN " + s(plain_malformed) +
                                      "\r\nAUTH PLAIN " + s(plain_ok) + "\r\n");
    EXPECT_EQ(t.out, banner + ehlo_starttls_auth + "535 5.7.8 Error: authentication failed\r\n"
                                                   "535 5.7.8 Error: authentication failed\r\n"
                                                   "421 4.7.0 mx.example.net Error: too many failed "
                                                   "authentication attempts\r\n");
    EXPECT_TRUE(t.closed);
    EXPECT_EQ(t.attempts.size(), 3u) << "the fourth attempt is never read";
}

TEST(ServerSessionAuth, HostRefusalClosesBeforeAnyChallenge) {
    const auto t = run_everywhere(auth_config(auth_offer::always), "EHLO c.example\r\nAUTH LOGIN\r\nNOOP\r\n", true);
    EXPECT_EQ(t.out, banner + ehlo_starttls_auth +
                         "421 4.7.0 mx.example.net Error: too many failed authentication attempts from your "
                         "address, try again later\r\n");
    EXPECT_TRUE(t.closed);
    EXPECT_TRUE(t.attempts.empty());
}

TEST(ServerSessionAuth, ErrorReplies) {
    const server_config c = auth_config(auth_offer::always);
    struct row {
        std::string input;
        std::string replies;  // after banner (and EHLO reply when the input starts with EHLO)
    };
    const std::vector<row> rows{
        {"AUTH PLAIN " + s(plain_ok) + "\r\n", "503 5.5.1 Error: send HELO/EHLO first\r\n"},
        {"HELO c.example\r\nAUTH PLAIN " + s(plain_ok) + "\r\n",
         "250 mx.example.net\r\n503 5.5.1 Error: send HELO/EHLO first\r\n"},
        {"EHLO c.example\r\nAUTH CRAM-MD5\r\n", ehlo_starttls_auth + "504 5.5.4 Unrecognized authentication type\r\n"},
        {"EHLO c.example\r\nAUTH\r\n", ehlo_starttls_auth + "501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n"},
        {"EHLO c.example\r\nAUTH PLAIN a b\r\n",
         ehlo_starttls_auth + "501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n"},
        {"EHLO c.example\r\nAUTH PLAIN\r\n*\r\nNOOP\r\n",
         ehlo_starttls_auth + "334 \r\n501 5.7.0 Authentication aborted\r\n250 2.0.0 Ok\r\n"},
        {"EHLO c.example\r\nAUTH LOGIN\r\nYWxp!2U=\r\n",
         ehlo_starttls_auth + "334 VXNlcm5hbWU6\r\n501 5.5.2 Cannot decode response\r\n"},
        {"EHLO c.example\r\nAUTH PLAIN not-base64\r\n", ehlo_starttls_auth + "501 5.5.2 Cannot decode response\r\n"},
        {"EHLO c.example\r\nMAIL FROM:<a@c.example>\r\nAUTH PLAIN " + s(plain_ok) + "\r\n",
         ehlo_starttls_auth + "250 2.1.0 Ok\r\n503 5.5.1 Error: MAIL transaction in progress\r\n"},
        {"EHLO c.example\r\nAUTH PLAIN " + s(plain_ok) + "\r\nAUTH PLAIN " + s(plain_ok) + "\r\n",
         ehlo_starttls_auth + "235 2.7.0 Authentication successful\r\n503 5.5.1 Error: already authenticated\r\n"},
    };
    for (const row& r : rows) {
        const auto t = run_everywhere(c, r.input);
        EXPECT_EQ(t.out, banner + r.replies) << r.input;
    }
    // Without AUTH on offer: not advertised, and the command is refused.
    const auto t = run_everywhere(auth_config(auth_offer::none), "EHLO c.example\r\nAUTH PLAIN " + s(plain_ok) + "\r\n");
    EXPECT_EQ(t.out, banner + ehlo_starttls_only + "503 5.5.1 Error: authentication not enabled\r\n");
}

TEST(ServerSessionAuth, OverlongResponseLine) {
    const std::string huge(13000, 'A');
    const auto t = run_everywhere(auth_config(auth_offer::always), "EHLO c\r\nAUTH PLAIN\r\n" + huge + "\r\nNOOP\r\n");
    EXPECT_EQ(t.out, banner + ehlo_starttls_auth +
                         "334 \r\n500 5.5.6 Authentication exchange line is too long\r\n250 2.0.0 Ok\r\n");
    // A response of the largest allowed size is read whole (and fails as a bad message).
    const std::string big(12288, 'A');
    const auto u = run_auth(auth_config(auth_offer::always), "EHLO c\r\nAUTH PLAIN\r\n" + big + "\r\n", {});
    EXPECT_EQ(u.out, banner + ehlo_starttls_auth + "334 \r\n535 5.7.8 Error: authentication failed\r\n");
}

TEST(ServerSessionAuth, UnauthenticatedRelayingIsRefusedWith530WhenAuthIsOffered) {
    const std::string dialogue = "EHLO c.example\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<b@foreign.example>\r\n"
                                 "RCPT TO:<b@example.org>\r\n";
    auto t = run_everywhere(auth_config(auth_offer::under_tls), dialogue);
    EXPECT_EQ(t.out, banner + ehlo_starttls_only + "250 2.1.0 Ok\r\n"
                     "530 5.7.0 <b@foreign.example>: Relay access denied; authentication required\r\n"
                     "250 2.1.5 Ok\r\n");
    t = run_everywhere(auth_config(auth_offer::none), dialogue);
    EXPECT_EQ(t.out, banner + ehlo_starttls_only + "250 2.1.0 Ok\r\n"
                     "554 5.7.1 <b@foreign.example>: Relay access denied\r\n250 2.1.5 Ok\r\n");
}

TEST(ServerSessionAuth, MailMayBePipelinedBehindPlainWithInitialResponse) {
    server_config c = auth_config(auth_offer::always);
    c.sync = pipelining_sync::enforce;
    // One read: AUTH PLAIN + initial response, MAIL, RCPT (RFC 4954 §4 allows this).
    auto t = run_auth(c, "EHLO c.example\r\nAUTH PLAIN " + s(plain_ok) +
                        "\r\nMAIL FROM:<a@c.example> AUTH=<>\r\nRCPT TO:<b@foreign.example>\r\n",
                 {16});
    EXPECT_EQ(t.out, banner + ehlo_starttls_auth + "235 2.7.0 Authentication successful\r\n250 2.1.0 Ok\r\n"
                                                   "250 2.1.5 Ok\r\n");
    // AUTH LOGIN needs our 334: anything behind it in the same read is a protocol violation.
    t = run_auth(c, "EHLO c.example\r\nAUTH LOGIN\r\n" + s(b64_alice) + "\r\n", {16});
    EXPECT_EQ(t.out, banner + ehlo_starttls_auth + "554 5.5.0 Error: SMTP protocol synchronization\r\n");
    EXPECT_TRUE(t.closed);
}

TEST(ServerSessionAuth, StartTlsForgetsAPlaintextAuthentication) {
    const auto t = run_everywhere(auth_config(auth_offer::always),
                                  "EHLO c.example\r\nAUTH PLAIN " + s(plain_ok) +
                                      "\r\nSTARTTLS\r\nEHLO c.example\r\nMAIL FROM:<a@c.example>\r\n"
                                      "RCPT TO:<b@foreign.example>\r\n");
    EXPECT_EQ(t.out, banner + ehlo_starttls_auth + "235 2.7.0 Authentication successful\r\n"
                                                   "220 2.0.0 Ready to start TLS\r\n" + tls_mark + ehlo_auth_only +
                         "250 2.1.0 Ok\r\n530 5.7.0 <b@foreign.example>: Relay access denied; authentication "
                         "required\r\n");
}

TEST(ServerSessionAuth, AuthenticatedUserIsReported) {
    auth_host host;
    server_config c = auth_config(auth_offer::always);
    server_session session(c, untrusted_client(), host);
    std::string out;
    session.start(out);
    EXPECT_EQ(session.feed("EHLO c\r\nAUTH PLAIN " + s(plain_ok) + "\r\n", out), 8u + 11u + plain_ok.size() + 2u);
    ASSERT_TRUE(session.auth_pending());
    const auth_attempt a = session.pending_auth();
    EXPECT_EQ(a.user, "alice");
    EXPECT_EQ(a.password, "secret");
    EXPECT_EQ(a.mechanism, "PLAIN");
    EXPECT_TRUE(session.authenticated_user().empty());
    session.auth_done(auth_result::ok, out);
    EXPECT_EQ(session.authenticated_user(), "alice");
    EXPECT_EQ(host.checks, 1);
}

// The AUTH user goes into the envelope at MAIL (the relay stores it: the sender's tenant for
// the suppression list, issue 16), and only for transactions begun after AUTH.
TEST(ServerSessionAuth, TheEnvelopeCarriesTheAuthUserOfMail) {
    auth_host host;
    server_config c = auth_config(auth_offer::always);
    server_session session(c, untrusted_client(), host);
    std::string out;
    session.start(out);
    (void)session.feed("EHLO c\r\nMAIL FROM:<a@c.example>\r\n", out);
    EXPECT_EQ(session.message_envelope().auth_user, "");
    (void)session.feed("RSET\r\nAUTH PLAIN " + s(plain_ok) + "\r\n", out);
    ASSERT_TRUE(session.auth_pending());
    session.auth_done(auth_result::ok, out);
    (void)session.feed("MAIL FROM:<a@c.example>\r\nRCPT TO:<b@foreign.example>\r\nDATA\r\nx\r\n.\r\n", out);
    ASSERT_TRUE(session.message_ready()) << out;
    EXPECT_EQ(session.message_envelope().auth_user, "alice");
    session.commit_done(commit_result::ok, out);
    (void)session.feed("RSET\r\n", out);
    EXPECT_EQ(session.message_envelope().auth_user, "") << "cleared with the transaction";
}

TEST(ServerSessionAuth, TemporaryFailureLetsTheClientRetry) {
    auth_host host;
    server_config c = auth_config(auth_offer::always);
    server_session session(c, untrusted_client(), host);
    std::string out;
    session.start(out);
    (void)session.feed("EHLO c\r\nAUTH PLAIN " + s(plain_ok) + "\r\n", out);
    ASSERT_TRUE(session.auth_pending());
    out.clear();
    session.auth_done(auth_result::temporary_failure, out);
    EXPECT_EQ(out, "454 4.7.0 Temporary authentication failure\r\n");
    EXPECT_FALSE(session.closed());
    EXPECT_TRUE(session.authenticated_user().empty());
}

}  // namespace
}  // namespace ringrelay::protocol

namespace ringrelay::protocol {
namespace {

// RFC 4954 §5: AUTH= on MAIL only where AUTH is on offer (under TLS by default); elsewhere it
// is an unsupported parameter, as for Postfix without SASL.
TEST(ServerSessionAuth, MailAuthParameterOnlyWhereAuthIsOffered) {
    const std::string dialogue = "EHLO c.example\r\nMAIL FROM:<a@c.example> AUTH=<>\r\n";
    auto t = run_everywhere(auth_config(auth_offer::under_tls), dialogue);
    EXPECT_EQ(t.out, banner + ehlo_starttls_only + "555 5.5.4 Unsupported option: AUTH\r\n");
    t = run_everywhere(auth_config(auth_offer::under_tls), "STARTTLS\r\n" + dialogue);
    EXPECT_EQ(t.out, banner + "220 2.0.0 Ready to start TLS\r\n" + tls_mark + ehlo_auth_only + "250 2.1.0 Ok\r\n");
}

}  // namespace
}  // namespace ringrelay::protocol
