// Unit tests of protocol/client_negotiation.h: the client's opening, greeting to first MAIL
// (RFC 5321 §3.1, §4.1.1.1, §4.1.4 HELO fallback; RFC 3207 STARTTLS; RFC 4954 AUTH PLAIN and
// LOGIN). A labelled table of dialogues: each server reply (or TLS event), the exact command it
// must provoke and the step the session is told to take, then how the negotiation ended. The
// whole session is tested in client_session_test.cc; this checks each decision on its own.
#include "protocol/client_negotiation.h"

#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

#include "protocol/reply_parser.h"

namespace ringrelay::protocol {
namespace {

inline constexpr std::string_view tls_ok = "<tls established>";
inline constexpr std::string_view tls_fail = "<tls failed>";

struct exchange {
    std::string reply;  // one server reply, or tls_ok / tls_fail
    std::string sent;   // what the client must append in answer
    negotiation_step step;
};

struct dialogue_case {
    const char* name;
    tls_use starttls;
    bool auth;              // credentials "user" / "secret"
    auth_plaintext in_clear;
    std::vector<exchange> exchanges;
    client_state end_state;
    close_reason why;       // none unless failed
    std::string failure;    // "<origin> <code> <text>" of failure(), or empty
    bool tls_active;
    bool authenticated;
    friend void PrintTo(const dialogue_case& c, std::ostream* os) { *os << c.name; }
};

std::string describe(const outcome_reply& r) {
    if (r.origin == reply_origin::none) return "";
    return std::string(r.origin == reply_origin::peer ? "peer " : "local ") + std::to_string(r.code) + " " + r.text;
}

class ClientNegotiation : public ::testing::TestWithParam<dialogue_case> {};

TEST_P(ClientNegotiation, SendsEachCommandAndEndsAsExpected) {
    const dialogue_case& c = GetParam();
    client_config config;
    config.helo_name = "relay.example";
    config.starttls = c.starttls;
    if (c.auth) {
        config.auth_user = "user";
        config.auth_password = "secret";
        config.auth_without_tls = c.in_clear;
    }
    client_negotiation n(config);
    EXPECT_EQ(n.state(), client_state::greeting);
    reply_parser parser;
    for (std::size_t i = 0; i < c.exchanges.size(); ++i) {
        const exchange& x = c.exchanges[i];
        std::string out;
        negotiation_step step = negotiation_step::failed;
        if (x.reply == tls_ok) {
            step = n.on_tls_established(out);
        } else if (x.reply == tls_fail) {
            n.on_tls_failed("certificate verify failed");
        } else {
            const auto p = parser.feed(x.reply);
            ASSERT_TRUE(p.has_value() && p->complete) << "exchange " << i;
            step = n.on_reply(parser.reply(), out);
        }
        EXPECT_EQ(out, x.sent) << "exchange " << i;
        EXPECT_EQ(step, x.step) << "exchange " << i;
    }
    EXPECT_EQ(n.state(), c.end_state);
    EXPECT_EQ(n.failure_reason(), c.why);
    EXPECT_EQ(describe(n.failure()), c.failure);
    EXPECT_EQ(n.tls_active(), c.tls_active);
    EXPECT_EQ(n.authenticated(), c.authenticated);
}

constexpr auto command = negotiation_step::command;
constexpr auto ready = negotiation_step::ready;
constexpr auto failed = negotiation_step::failed;
constexpr auto handshake = negotiation_step::tls_handshake;
constexpr auto refuse = auth_plaintext::refuse;
constexpr auto allow = auth_plaintext::allow;

const std::string greeting = "220 mx.example.org ESMTP\r\n";
const std::string ehlo = "EHLO relay.example\r\n";
const std::string ehlo_tls = "250-mx.example.org\r\n250-PIPELINING\r\n250 STARTTLS\r\n";
const std::string ehlo_auth = "250-mx.example.org\r\n250-PIPELINING\r\n250 AUTH PLAIN LOGIN\r\n";
const std::string ehlo_login = "250-mx.example.org\r\n250 AUTH LOGIN\r\n";
const std::string plain_response = "AUTH PLAIN AHVzZXIAc2VjcmV0\r\n";  // base64("\0user\0secret")

// clang-format off
INSTANTIATE_TEST_SUITE_P(Dialogues, ClientNegotiation, ::testing::Values(
    dialogue_case{"EhloThenReady", tls_use::never, false, refuse,
        {{greeting, ehlo, command}, {"250-mx\r\n250 PIPELINING\r\n", "", ready}},
        client_state::idle, close_reason::none, "", false, false},
    dialogue_case{"Ehlo5xxFallsBackToHelo", tls_use::never, false, refuse,
        {{greeting, ehlo, command}, {"502 5.5.2 what?\r\n", "HELO relay.example\r\n", command}, {"250 mx\r\n", "", ready}},
        client_state::idle, close_reason::none, "", false, false},
    dialogue_case{"Ehlo4xxRefuses", tls_use::never, false, refuse,
        {{greeting, ehlo, command}, {"450 4.3.2 busy\r\n", "", failed}},
        client_state::closed, close_reason::greeting_refused, "peer 450 4.3.2 busy", false, false},
    dialogue_case{"HeloRefused", tls_use::never, false, refuse,
        {{greeting, ehlo, command}, {"500 no\r\n", "HELO relay.example\r\n", command}, {"550 go away\r\n", "", failed}},
        client_state::closed, close_reason::greeting_refused, "peer 550 go away", false, false},
    dialogue_case{"GreetingRefused", tls_use::never, false, refuse,
        {{"554 5.7.1 no service\r\n", "", failed}},
        client_state::closed, close_reason::greeting_refused, "peer 554 5.7.1 no service", false, false},
    dialogue_case{"GreetingNot220", tls_use::never, false, refuse,
        {{"250 hello?\r\n", "", failed}},
        client_state::closed, close_reason::protocol_error, "local 0 unexpected greeting code", false, false},
    dialogue_case{"Ehlo3xx", tls_use::never, false, refuse,
        {{greeting, ehlo, command}, {"354 what\r\n", "", failed}},
        client_state::closed, close_reason::protocol_error, "local 0 unexpected reply to EHLO/HELO", false, false},
    dialogue_case{"StartTlsThenEhloAgain", tls_use::when_offered, false, refuse,
        {{greeting, ehlo, command}, {ehlo_tls, "STARTTLS\r\n", command}, {"220 2.0.0 go ahead\r\n", "", handshake},
         {std::string(tls_ok), ehlo, command}, {"250-mx\r\n250 PIPELINING\r\n", "", ready}},
        client_state::idle, close_reason::none, "", true, false},
    dialogue_case{"StartTlsNotOfferedGoesOnInClear", tls_use::when_offered, false, refuse,
        {{greeting, ehlo, command}, {"250-mx\r\n250 PIPELINING\r\n", "", ready}},
        client_state::idle, close_reason::none, "", false, false},
    dialogue_case{"StartTlsRefusedGoesOnInClear", tls_use::when_offered, false, refuse,
        {{greeting, ehlo, command}, {ehlo_tls, "STARTTLS\r\n", command}, {"454 4.7.0 TLS not available\r\n", "", ready}},
        client_state::idle, close_reason::none, "", false, false},
    dialogue_case{"StartTlsNeverEvenIfOffered", tls_use::never, false, refuse,
        {{greeting, ehlo, command}, {ehlo_tls, "", ready}},
        client_state::idle, close_reason::none, "", false, false},
    dialogue_case{"TlsRequiredNotOffered", tls_use::required, false, refuse,
        {{greeting, ehlo, command}, {"250-mx\r\n250 PIPELINING\r\n", "", failed}},
        client_state::closed, close_reason::tls_required, "local 451 4.7.4 TLS is required, but was not offered by the peer", false, false},
    dialogue_case{"TlsRequiredAfterHelo", tls_use::required, false, refuse,
        {{greeting, ehlo, command}, {"502 no\r\n", "HELO relay.example\r\n", command}, {"250 mx\r\n", "", failed}},
        client_state::closed, close_reason::tls_required, "local 451 4.7.4 TLS is required, but was not offered by the peer", false, false},
    dialogue_case{"TlsRequiredRefused", tls_use::required, false, refuse,
        {{greeting, ehlo, command}, {ehlo_tls, "STARTTLS\r\n", command}, {"454-4.7.0 TLS not\r\n454 4.7.0 available\r\n", "", failed}},
        client_state::closed, close_reason::tls_required,
        "local 451 4.7.5 TLS is required, but the peer refused STARTTLS: 454 4.7.0 TLS not 4.7.0 available", false, false},
    dialogue_case{"StartTls250IsProtocolError", tls_use::when_offered, false, refuse,
        {{greeting, ehlo, command}, {ehlo_tls, "STARTTLS\r\n", command}, {"250 ok\r\n", "", failed}},
        client_state::closed, close_reason::protocol_error, "local 0 unexpected reply to STARTTLS", false, false},
    dialogue_case{"HandshakeFails", tls_use::when_offered, false, refuse,
        {{greeting, ehlo, command}, {ehlo_tls, "STARTTLS\r\n", command}, {"220 go\r\n", "", handshake},
         {std::string(tls_fail), "", failed}},
        client_state::closed, close_reason::tls_failed, "local 451 4.7.5 TLS handshake failed: certificate verify failed", false, false},
    dialogue_case{"ExtensionsForgottenAtTls", tls_use::when_offered, true, refuse,
        {{greeting, ehlo, command}, {"250-mx\r\n250-STARTTLS\r\n250 AUTH PLAIN\r\n", "STARTTLS\r\n", command},
         {"220 go\r\n", "", handshake}, {std::string(tls_ok), ehlo, command}, {"250-mx\r\n250 PIPELINING\r\n", "", failed}},
        client_state::closed, close_reason::auth_failed, "local 451 4.7.0 AUTH is configured, but the peer offers neither PLAIN nor LOGIN", true, false},
    dialogue_case{"AuthPlainAfterTls", tls_use::required, true, refuse,
        {{greeting, ehlo, command}, {ehlo_tls, "STARTTLS\r\n", command}, {"220 go\r\n", "", handshake},
         {std::string(tls_ok), ehlo, command}, {ehlo_auth, plain_response, command}, {"235 2.7.0 ok\r\n", "", ready}},
        client_state::idle, close_reason::none, "", true, true},
    dialogue_case{"AuthPlainInClearWhenAllowed", tls_use::never, true, allow,
        {{greeting, ehlo, command}, {ehlo_auth, plain_response, command}, {"235 2.7.0 ok\r\n", "", ready}},
        client_state::idle, close_reason::none, "", false, true},
    dialogue_case{"AuthLoginStepByStep", tls_use::never, true, allow,
        {{greeting, ehlo, command}, {ehlo_login, "AUTH LOGIN\r\n", command}, {"334 VXNlcm5hbWU6\r\n", "dXNlcg==\r\n", command},
         {"334 UGFzc3dvcmQ6\r\n", "c2VjcmV0\r\n", command}, {"235 2.7.0 ok\r\n", "", ready}},
        client_state::idle, close_reason::none, "", false, true},
    dialogue_case{"AuthNotInClear", tls_use::never, true, refuse,
        {{greeting, ehlo, command}, {ehlo_auth, "", failed}},
        client_state::closed, close_reason::auth_failed, "local 451 4.7.0 AUTH credentials are not sent without TLS", false, false},
    dialogue_case{"AuthRefused", tls_use::never, true, allow,
        {{greeting, ehlo, command}, {ehlo_auth, plain_response, command}, {"535 5.7.8 bad credentials\r\n", "", failed}},
        client_state::closed, close_reason::auth_failed, "peer 535 5.7.8 bad credentials", false, false},
    dialogue_case{"AuthLoginRefusedAtPassword", tls_use::never, true, allow,
        {{greeting, ehlo, command}, {ehlo_login, "AUTH LOGIN\r\n", command}, {"334 VXNlcm5hbWU6\r\n", "dXNlcg==\r\n", command},
         {"454 4.7.0 try later\r\n", "", failed}},
        client_state::closed, close_reason::auth_failed, "peer 454 4.7.0 try later", false, false},
    dialogue_case{"AuthChallengeAfterPlain", tls_use::never, true, allow,
        {{greeting, ehlo, command}, {ehlo_auth, plain_response, command}, {"334 \r\n", "", failed}},
        client_state::closed, close_reason::protocol_error, "local 0 unexpected reply to AUTH", false, false},
    dialogue_case{"Auth235BeforePassword", tls_use::never, true, allow,
        {{greeting, ehlo, command}, {ehlo_login, "AUTH LOGIN\r\n", command}, {"235 ok\r\n", "", failed}},
        client_state::closed, close_reason::protocol_error, "local 0 unexpected reply to AUTH", false, false}),
    [](const auto& info) { return std::string(info.param.name); });
// clang-format on

TEST(ClientNegotiationState, FollowsTheCommandAwaited) {
    client_config config;
    config.starttls = tls_use::when_offered;
    config.auth_user = "user";
    config.auth_password = "secret";
    client_negotiation n(config);
    reply_parser parser;
    std::string out;
    const auto reply = [&](std::string_view wire) {
        EXPECT_TRUE(parser.feed(wire).has_value());
        return n.on_reply(parser.reply(), out);
    };
    EXPECT_EQ(reply(greeting), negotiation_step::command);
    EXPECT_EQ(n.state(), client_state::hello);
    EXPECT_EQ(reply(ehlo_tls), negotiation_step::command);
    EXPECT_EQ(n.state(), client_state::starttls);
    EXPECT_EQ(reply("220 go\r\n"), negotiation_step::tls_handshake);
    EXPECT_EQ(n.state(), client_state::tls_handshake);
    EXPECT_EQ(n.on_tls_established(out), negotiation_step::command);
    EXPECT_EQ(n.state(), client_state::hello);
    EXPECT_TRUE(n.tls_active());
    EXPECT_EQ(reply(ehlo_login), negotiation_step::command);
    EXPECT_EQ(n.state(), client_state::authenticating);
    EXPECT_TRUE(n.extensions().auth_login);
    EXPECT_FALSE(n.extensions().starttls);
}

}  // namespace
}  // namespace ringrelay::protocol
