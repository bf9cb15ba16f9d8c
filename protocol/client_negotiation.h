// protocol/client_negotiation.h: the opening of an SMTP client session, up to the first MAIL:
// the 220 greeting, EHLO (HELO when EHLO gets 5xx, RFC 5321 §4.1.4), STARTTLS (RFC 3207) and
// AUTH PLAIN or LOGIN (RFC 4954, RFC 4616), as client_config asks. Every step is a
// synchronisation point (RFC 2920 §3.1), so exactly one reply is awaited at a time. Pure:
// replies in, commands appended to `out`; no sockets, clocks or threads. client_session.h
// describes the behaviour (STARTTLS, AUTH); this unit decides each step and the session acts
// on the outcome: it matches replies to commands, handles 421 and QUIT, and closes.
// SECURITY: replies come from the next hop. A reply a step cannot get (e.g. 250 to STARTTLS, a
// 334 challenge after PLAIN's initial response) fails the negotiation as a protocol error;
// after TLS everything learnt before it is forgotten (RFC 3207 §4.2); credentials are sent only
// as configured (never in clear unless auth_plaintext::allow), base64-encoded, so no octet of
// theirs can end a command line.
//
// Lifecycle: constructed with the session (it keeps a reference to the session's config);
// on_reply() for the greeting and for each command it appended, on_tls_established() or
// on_tls_failed() after tls_handshake, until ready or failed. Owned by one client_session.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "protocol/client_types.h"
#include "protocol/ehlo_reply.h"
#include "protocol/reply_parser.h"

namespace ringrelay::protocol {

// What the session does after a call below.
enum class negotiation_step : std::uint8_t {
    command,        // a command was appended to `out`: its reply goes to on_reply()
    tls_handshake,  // STARTTLS got 220: the host runs the handshake; no input is read meanwhile
    ready,          // greeted, and TLS and AUTH done as configured: mail may go
    failed,         // the session must close: failure_reason() and failure() say why
};

class client_negotiation {
public:
    explicit client_negotiation(const client_config& config) noexcept : _config(config) {}
    client_negotiation(const client_negotiation&) = delete;
    client_negotiation& operator=(const client_negotiation&) = delete;

    // The reply to the connection (the greeting) or to the command last appended. Positive:
    // the next command, or ready. Negative: failed (greeting_refused for the greeting, EHLO 4xx
    // and HELO; tls_required; auth_failed), except EHLO 5xx (HELO follows) and a refused
    // STARTTLS with tls_use::when_offered (plaintext goes on).
    [[nodiscard]] negotiation_step on_reply(const parsed_reply& r, std::string& out);
    // The handshake STARTTLS asked for completed: extensions forgotten, EHLO again into `out`.
    [[nodiscard]] negotiation_step on_tls_established(std::string& out);
    // It failed (or the connection died during it): the negotiation has failed, with
    // tls_failed and a local "451 4.7.5 TLS handshake failed: <reason>".
    void on_tls_failed(std::string_view reason);

    // greeting, hello, starttls, tls_handshake or authenticating; idle once ready; closed once
    // failed.
    [[nodiscard]] client_state state() const noexcept;
    [[nodiscard]] const peer_extensions& extensions() const noexcept { return _extensions; }
    [[nodiscard]] bool tls_active() const noexcept { return _tls_active; }
    [[nodiscard]] bool authenticated() const noexcept { return _authenticated; }
    // After failed: greeting_refused, tls_required, tls_failed, auth_failed or protocol_error,
    // and the reply that decided it: the peer's, or a local one (for a protocol error code 0
    // and what was wrong).
    [[nodiscard]] close_reason failure_reason() const noexcept { return _failure_reason; }
    [[nodiscard]] const outcome_reply& failure() const noexcept { return _failure; }

private:
    // The reply awaited, or where the negotiation ended.
    enum class step : std::uint8_t {
        greeting, ehlo, helo, starttls, tls_handshake,
        auth,           // AUTH PLAIN with its initial response, or LOGIN's password: 235 ends it
        auth_user,      // AUTH LOGIN: 334 asks for the user name
        auth_password,  // AUTH LOGIN: 334 asks for the password
        done, failed,
    };

    negotiation_step on_greeting_reply(const parsed_reply& r, std::string& out);
    negotiation_step on_hello_reply(const parsed_reply& r, std::string& out);
    negotiation_step after_hello(std::string& out);
    negotiation_step on_starttls_reply(const parsed_reply& r, std::string& out);
    negotiation_step greeted(std::string& out);
    negotiation_step begin_auth(std::string& out);
    negotiation_step on_auth_reply(const parsed_reply& r, std::string& out);
    negotiation_step send(step awaited);
    negotiation_step fail(close_reason why);
    negotiation_step refused_by_peer(close_reason why, const parsed_reply& r);
    negotiation_step protocol_error(std::string_view what);

    const client_config& _config;
    peer_extensions _extensions;
    outcome_reply _failure;
    close_reason _failure_reason = close_reason::none;
    step _step = step::greeting;
    bool _tls_active = false;
    bool _authenticated = false;
};

}  // namespace ringrelay::protocol
