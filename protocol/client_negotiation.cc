// protocol/client_negotiation.cc: see client_negotiation.h. Rules, by the reply awaited
// (RFC 5321 §4.3.2 lists the codes each command may get):
// | awaited   | 2xx / 235 / 334                      | 3xx            | 4xx / 5xx                    |
// |-----------|--------------------------------------|----------------|------------------------------|
// | greeting  | 220: EHLO (§4.1.1.1); else protocol  | protocol error | greeting_refused (QUIT, §3.1)|
// |           | error                                |                |                              |
// | EHLO      | extensions; STARTTLS, AUTH or ready  | protocol error | 5xx: HELO; 4xx: refused      |
// | HELO      | no extensions; STARTTLS... as above  | protocol error | greeting_refused             |
// | STARTTLS  | 220: tls_handshake; else protocol    | protocol error | required: tls_required       |
// |           | error                                |                | (4.7.5); else AUTH or ready  |
// | AUTH      | 235: ready (RFC 4954 §4)             | 334 (LOGIN):   | auth_failed (the peer's      |
// |           |                                      | next response  | reply kept)                  |
// After EHLO/HELO: STARTTLS when configured and offered (not yet under TLS); tls_required if
// it is required but not offered; then AUTH when configured: PLAIN if offered, else LOGIN,
// auth_failed if neither or if the connection is in clear and auth_plaintext::refuse.
#include "protocol/client_negotiation.h"

#include "core/ascii.h"
#include "core/base64.h"

namespace ringrelay::protocol {

client_state client_negotiation::state() const noexcept {
    switch (_step) {
    case step::greeting: return client_state::greeting;
    case step::ehlo:
    case step::helo: return client_state::hello;
    case step::starttls: return client_state::starttls;
    case step::tls_handshake: return client_state::tls_handshake;
    case step::auth:
    case step::auth_user:
    case step::auth_password: return client_state::authenticating;
    case step::done: return client_state::idle;
    case step::failed: break;
    }
    return client_state::closed;
}

negotiation_step client_negotiation::send(step awaited) {
    _step = awaited;
    return negotiation_step::command;
}

negotiation_step client_negotiation::fail(close_reason why) {
    _step = step::failed;
    _failure_reason = why;
    return negotiation_step::failed;
}

negotiation_step client_negotiation::refused_by_peer(close_reason why, const parsed_reply& r) {
    _failure.assign_peer(r);
    return fail(why);
}

negotiation_step client_negotiation::protocol_error(std::string_view what) {
    _failure.assign_local(0, {}, what);
    return fail(close_reason::protocol_error);
}

negotiation_step client_negotiation::on_reply(const parsed_reply& r, std::string& out) {
    switch (_step) {
    case step::greeting: return on_greeting_reply(r, out);
    case step::ehlo:
    case step::helo: return on_hello_reply(r, out);
    case step::starttls: return on_starttls_reply(r, out);
    case step::auth:
    case step::auth_user:
    case step::auth_password: return on_auth_reply(r, out);
    case step::tls_handshake:
    case step::done:
    case step::failed: break;
    }
    return protocol_error("reply in the wrong state");  // the session never asks: no command
}

negotiation_step client_negotiation::on_tls_established(std::string& out) {
    if (_step != step::tls_handshake) return protocol_error("no TLS handshake was requested");
    _tls_active = true;
    _extensions = {};  // RFC 3207 §4.2: discard what the peer said before TLS
    out.append("EHLO ").append(_config.helo_name).append("\r\n");
    return send(step::ehlo);
}

void client_negotiation::on_tls_failed(std::string_view reason) {
    std::string text = "4.7.5 TLS handshake failed: ";
    text.append(reason);
    _failure.assign_local(451, {4, 7, 5}, text);
    (void)fail(close_reason::tls_failed);
}

negotiation_step client_negotiation::on_greeting_reply(const parsed_reply& r, std::string& out) {
    if (r.code == 220) {
        out.append("EHLO ").append(_config.helo_name).append("\r\n");
        return send(step::ehlo);
    }
    if (!is_negative(r.code)) return protocol_error("unexpected greeting code");
    return refused_by_peer(close_reason::greeting_refused, r);
}

negotiation_step client_negotiation::on_hello_reply(const parsed_reply& r, std::string& out) {
    if (is_positive(r.code)) {
        _extensions = _step == step::ehlo ? parse_ehlo_reply(r.text) : peer_extensions{};
        return after_hello(out);
    }
    if (!is_negative(r.code)) return protocol_error("unexpected reply to EHLO/HELO");
    if (_step == step::ehlo && r.code >= 500) {  // RFC 5321 §4.1.4: fall back to HELO
        out.append("HELO ").append(_config.helo_name).append("\r\n");
        return send(step::helo);
    }
    return refused_by_peer(close_reason::greeting_refused, r);
}

// EHLO (or HELO) was accepted: STARTTLS, then AUTH, as configured, then mail.
negotiation_step client_negotiation::after_hello(std::string& out) {
    if (!_tls_active && _config.starttls != tls_use::never) {
        if (_extensions.starttls) {
            out.append("STARTTLS\r\n");  // alone: a synchronisation point (RFC 3207 §4, RFC 2920 §3.1)
            return send(step::starttls);
        }
        if (_config.starttls == tls_use::required) {
            _failure.assign_local(451, {4, 7, 4}, "4.7.4 TLS is required, but was not offered by the peer");
            return fail(close_reason::tls_required);
        }
    }
    return greeted(out);
}

negotiation_step client_negotiation::on_starttls_reply(const parsed_reply& r, std::string& out) {
    if (r.code == 220) {
        _step = step::tls_handshake;  // the host runs the handshake now
        return negotiation_step::tls_handshake;
    }
    if (!is_negative(r.code)) return protocol_error("unexpected reply to STARTTLS");
    if (_config.starttls == tls_use::required) {
        std::string text = "4.7.5 TLS is required, but the peer refused STARTTLS: ";
        core::append_decimal(text, r.code);
        text.push_back(' ');
        for (const char ch : r.text) text += ch == '\n' ? ' ' : ch;
        _failure.assign_local(451, {4, 7, 5}, text);
        return fail(close_reason::tls_required);
    }
    // Opportunistic: the session goes on in plaintext with what the first EHLO offered.
    return greeted(out);
}

// The greeting (and TLS, if any) is settled: AUTH if configured, then the transactions.
negotiation_step client_negotiation::greeted(std::string& out) {
    if (!_config.auth_user.empty() && !_authenticated) return begin_auth(out);
    _step = step::done;
    return negotiation_step::ready;
}

// RFC 4954 §4: PLAIN with an initial response (RFC 4616: authzid empty, authcid, password),
// else LOGIN (user name and password, each on a 334 prompt).
negotiation_step client_negotiation::begin_auth(std::string& out) {
    if (!_tls_active && _config.auth_without_tls == auth_plaintext::refuse) {
        _failure.assign_local(451, {4, 7, 0}, "4.7.0 AUTH credentials are not sent without TLS");
        return fail(close_reason::auth_failed);
    }
    if (_extensions.auth_plain) {
        std::string response;
        response.reserve(_config.auth_user.size() + _config.auth_password.size() + 2);
        response.push_back('\0');
        response.append(_config.auth_user);
        response.push_back('\0');
        response.append(_config.auth_password);
        out.append("AUTH PLAIN ").append(core::base64_encode(response)).append("\r\n");
        return send(step::auth);
    }
    if (_extensions.auth_login) {
        out.append("AUTH LOGIN\r\n");
        return send(step::auth_user);
    }
    _failure.assign_local(451, {4, 7, 0}, "4.7.0 AUTH is configured, but the peer offers neither PLAIN nor LOGIN");
    return fail(close_reason::auth_failed);
}

negotiation_step client_negotiation::on_auth_reply(const parsed_reply& r, std::string& out) {
    if (r.code == 334 && _step == step::auth_user) {
        out.append(core::base64_encode(_config.auth_user)).append("\r\n");
        return send(step::auth_password);
    }
    if (r.code == 334 && _step == step::auth_password) {
        out.append(core::base64_encode(_config.auth_password)).append("\r\n");
        return send(step::auth);
    }
    if (r.code == 235 && _step == step::auth) {
        _authenticated = true;
        _step = step::done;
        return negotiation_step::ready;
    }
    // A 334 challenge after PLAIN's initial response, a 2xx before the password: the exchange
    // is not one we know how to finish.
    if (!is_negative(r.code)) return protocol_error("unexpected reply to AUTH");
    // Any 4xx/5xx ends the AUTH exchange (RFC 4954 §4), at whichever step; the peer's reply
    // (e.g. 535 5.7.8) is kept for the log and the DSN.
    return refused_by_peer(close_reason::auth_failed, r);
}

}  // namespace ringrelay::protocol
