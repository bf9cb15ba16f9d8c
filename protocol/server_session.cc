// protocol/server_session.cc: the SMTP server state machine (RFC 5321 §3.3, §4.1.4 command
// order; RFC 2920 pipelining; RFC 3030 BDAT; RFC 1870 SIZE; RFC 3207 STARTTLS). Parsing lives in
// command_parser / address / esmtp_params / data_reader, reply texts in reply.cc, relay
// policy in relay_control.cc; this file only sequences them.
// SECURITY: every byte given to feed() comes from the network. Command lines are bounded by
// max_command_line, message bodies by max_message_size; nothing else grows with input.
#include "protocol/server_session.h"

#include "protocol/proxy_header.h"

#include <cstring>

#include "core/ascii.h"
#include "core/invariant.h"
#include "protocol/address.h"
#include "protocol/esmtp_params.h"
#include "protocol/received_header.h"
#include "protocol/relay_control.h"

namespace ringrelay::protocol {
namespace {

// The reply for a known verb whose arguments did not parse.
constexpr reply_id syntax_reply(command_verb verb) noexcept {
    switch (verb) {
    case command_verb::helo: return reply_id::syntax_helo;
    case command_verb::ehlo: return reply_id::syntax_ehlo;
    case command_verb::mail: return reply_id::syntax_mail;
    case command_verb::rcpt: return reply_id::syntax_rcpt;
    case command_verb::data: return reply_id::syntax_data;
    case command_verb::bdat: return reply_id::syntax_bdat;
    case command_verb::rset: return reply_id::syntax_rset;
    case command_verb::quit: return reply_id::syntax_quit;
    case command_verb::vrfy: return reply_id::syntax_vrfy;
    case command_verb::noop: return reply_id::syntax_noop;
    case command_verb::help: return reply_id::syntax_help;
    case command_verb::starttls: return reply_id::syntax_starttls;
    case command_verb::auth: return reply_id::syntax_auth;
    case command_verb::unknown: break;
    }
    return reply_id::command_unrecognized;
}

// Received: fields in the header section (up to the first empty line) of `message`.
std::size_t received_headers(std::string_view message) noexcept {
    std::size_t count = 0;
    std::size_t pos = 0;
    while (pos < message.size()) {
        const std::size_t eol = message.find("\r\n", pos);
        const std::size_t end = eol == std::string_view::npos ? message.size() : eol;
        if (end == pos) break;  // the empty line: end of the header section
        if (core::istarts_with(message.substr(pos, end - pos), "received:")) ++count;
        pos = end + 2;
    }
    return count;
}

// Overwrites a secret before its buffer is reused or freed (the compiler may not elide
// volatile stores).
void wipe(std::string& secret) noexcept {
    volatile char* p = secret.data();
    for (std::size_t i = 0; i < secret.size(); ++i) p[i] = 0;
    secret.clear();
}

}  // namespace

server_session::server_session(const server_config& config, client_info client, session_host& host)
    : _config(config), _client(std::move(client)), _host(host) {}

server_session::~server_session() {
    wipe(_auth_password);
    if (_auth_step != auth_step::none) wipe(_line);
}

void server_session::start(std::string& out) { append_reply(out, reply_id::banner, _config.hostname); }

bool server_session::message_ready() const noexcept { return _message_ready; }
const envelope& server_session::message_envelope() const noexcept { return _envelope; }
std::string_view server_session::message() const noexcept { return _body; }
bool server_session::closed() const noexcept { return _closed; }
bool server_session::tls_requested() const noexcept { return _tls_requested; }
bool server_session::tls_active() const noexcept { return !_tls_description.empty(); }
bool server_session::auth_pending() const noexcept { return _auth_step == auth_step::pending; }
std::string_view server_session::authenticated_user() const noexcept {
    return _authenticated ? std::string_view(_auth_user) : std::string_view{};
}
auth_attempt server_session::pending_auth() const noexcept {
    return auth_attempt{_auth_mechanism, _auth_authzid, _auth_user, _auth_password, _auth_well_formed};
}
bool server_session::in_transaction() const noexcept { return _transaction != transaction::none; }
bool server_session::receiving_content() const noexcept {
    return _mode == input_mode::data || _mode == input_mode::chunk;
}

void server_session::say_uncounted(std::string& out, reply_id id, std::string_view argument) {
    append_reply(out, id, argument);
}

void server_session::say(std::string& out, reply_id id, std::string_view argument) {
    append_reply(out, id, argument);
    if (reply_for(id).weight != error_weight::counted) return;
    ++_errors;
    if (_config.max_errors != 0 && _errors >= _config.max_errors && !_closed) {
        append_reply(out, reply_id::too_many_errors, _config.hostname);
        _closed = true;
    }
}

std::size_t server_session::feed(std::string_view in, std::string& out) {
    std::size_t pos = 0;
    while (pos < in.size() && !_closed && !_message_ready && !_tls_requested && _auth_step != auth_step::pending) {
        const std::string_view rest = in.substr(pos);
        switch (_mode) {
        case input_mode::command:
        case input_mode::discard_line:
            pos += feed_command(rest, out);
            break;
        case input_mode::data: {
            const std::size_t before = _body.size();
            const data_progress p = _reader.feed(rest, _body);
            pos += p.consumed;
            if (_observer != nullptr && _body.size() > before) _observer->body_appended(std::string_view(_body).substr(before));
            if (p.complete) {
                _mode = input_mode::command;
                finish_message(out);
            }
            break;
        }
        case input_mode::chunk:
            pos += feed_chunk(rest, out);
            break;
        }
    }
    return pos;
}

// Splits command lines; a line straddling calls is kept in _line (bounded by
// max_command_line), a longer one is discarded up to its LF and answered once.
std::size_t server_session::feed_command(std::string_view in, std::string& out) {
    // A SASL response line may be longer than a command (RFC 4954 §4: 12288 octets).
    const std::size_t limit = _auth_step == auth_step::none ? max_command_line : max_sasl_response + 2;
    const void* lf_ptr = std::memchr(in.data(), '\n', in.size());
    if (lf_ptr == nullptr) {
        if (_mode == input_mode::command) {
            if (_line.size() + in.size() >= limit) {
                _mode = input_mode::discard_line;
                _line.clear();
            } else {
                _line.append(in);
            }
        }
        return in.size();
    }
    const std::size_t used = static_cast<std::size_t>(static_cast<const char*>(lf_ptr) - in.data()) + 1;
    const reply_id too_long = _auth_step == auth_step::none ? reply_id::command_too_long : reply_id::auth_line_too_long;
    if (_mode == input_mode::discard_line) {
        _mode = input_mode::command;
        end_auth();
        say(out, too_long);
        return used;
    }
    // Bytes after this line in the same read: the client did not wait for our reply.
    const pipelined after = used < in.size() ? pipelined::yes : pipelined::no;
    if (_line.size() + used > limit) {
        _line.clear();
        end_auth();
        say(out, too_long);
    } else if (_line.empty()) {
        handle_line(in.substr(0, used), after, out);  // parse in place: the common case
    } else {
        _line.append(in.substr(0, used));
        handle_line(_line, after, out);
        _line.clear();
    }
    return used;
}

std::size_t server_session::feed_chunk(std::string_view in, std::string& out) {
    const std::size_t n = _chunk_remaining < in.size() ? static_cast<std::size_t>(_chunk_remaining) : in.size();
    if (_chunk_error == reply_id::none && _bdat_failure == reply_id::none) {
        const std::size_t before = _body.size();
        (void)_reader.feed(in.substr(0, n), _body);  // raw framing: consumes all of it
        if (_observer != nullptr && _body.size() > before) _observer->body_appended(std::string_view(_body).substr(before));
    }
    _chunk_remaining -= n;
    if (_chunk_remaining == 0) finish_chunk(out);
    return n;
}

// RFC 2920 §3.1: EHLO, DATA, VRFY, EXPN, TURN, QUIT and NOOP "can only appear as the last
// command in a group"; so can HELO (no PIPELINING without EHLO) and STARTTLS (RFC 3207 §4.2;
// bytes after it are the CVE-2011-0411 injection). A client that sends more behind one of
// these before reading its reply is not a correct SMTP client and may be smuggling input
// past a state change: like Postfix (smtpd_forbid_unauth_pipelining), the command is not
// executed, the reply is 554 5.5.0 and the session ends. QUIT is exempt: whatever follows it
// is never read.
static bool synchronisation_point(command_verb verb) noexcept {
    switch (verb) {
    case command_verb::helo:
    case command_verb::ehlo:
    case command_verb::data:
    case command_verb::vrfy:
    case command_verb::noop:
    case command_verb::starttls:
        return true;
    default:
        return false;
    }
}

void server_session::handle_line(std::string_view line, pipelined after, std::string& out) {
    if (_auth_step != auth_step::none) return on_auth_response(line, out);
    if (line.starts_with(proxy_v1_signature)) {
        // A PROXY header on a connection that was not read as one (its address is not in
        // --proxy-protocol-from): a client forging its address, or a balancer the relay does
        // not trust. Issue 19: 421 and close, never "command not recognized" and go on.
        say_uncounted(out, reply_id::proxy_untrusted, _config.hostname);
        _closed = true;
        return;
    }
    const auto cmd = parse_command(line);
    if (cmd) {
        if (after == pipelined::yes && _config.sync == pipelining_sync::enforce && synchronisation_point(cmd->verb)) {
            say_uncounted(out, reply_id::pipelining_violation);
            _closed = true;
            return;
        }
        if (cmd->verb == command_verb::auth) return on_auth(*cmd, after, out);
        handle_command(*cmd, out);
        return;
    }
    switch (cmd.error().reason) {
    case parse_error::line_too_long: say(out, reply_id::command_too_long); break;
    case parse_error::bare_newline: say(out, reply_id::bare_lf_command); break;
    case parse_error::bare_carriage_return: say(out, reply_id::bare_cr_command); break;
    case parse_error::unknown_verb: say(out, reply_id::command_unrecognized); break;
    case parse_error::bad_arguments:
        // Not offering STARTTLS at all outranks its syntax (502, as for a bare STARTTLS).
        if (cmd.error().verb == command_verb::starttls && _config.tls == tls_offer::none) {
            say(out, reply_id::not_implemented);
        } else {
            say(out, syntax_reply(cmd.error().verb));
        }
        break;
    }
}

void server_session::handle_command(const command& cmd, std::string& out) {
    switch (cmd.verb) {
    case command_verb::helo:
    case command_verb::ehlo: on_helo(cmd, out); break;
    case command_verb::mail: on_mail(cmd, out); break;
    case command_verb::rcpt: on_rcpt(cmd, out); break;
    case command_verb::data: on_data(out); break;
    case command_verb::bdat: on_bdat(cmd, out); break;
    case command_verb::rset:
        end_transaction();
        say(out, reply_id::ok);
        break;
    case command_verb::noop: say(out, reply_id::ok); break;
    case command_verb::quit:
        say(out, reply_id::bye);
        _closed = true;
        break;
    case command_verb::vrfy: say(out, reply_id::vrfy); break;
    case command_verb::help: say(out, reply_id::help); break;
    case command_verb::starttls: on_starttls(out); break;
    case command_verb::auth: on_auth(cmd, pipelined::no, out); break;
    case command_verb::unknown: say(out, reply_id::command_unrecognized); break;
    }
}

// RFC 5321 §4.1.1.1: HELO/EHLO; a new greeting also resets any transaction (§4.1.4).
void server_session::on_helo(const command& cmd, std::string& out) {
    end_transaction();
    _envelope.helo.assign(cmd.argument);
    if (cmd.verb == command_verb::helo) {
        _greeting = greeting::helo;
        say(out, reply_id::helo_ok, _config.hostname);
        return;
    }
    _greeting = greeting::ehlo;
    // RFC 5321 §4.1.1.1 ehlo-ok-rsp; keywords: RFC 2920, 1870, 2034, 6152, 6531, 3030.
    out.append("250-").append(_config.hostname).append("\r\n250-PIPELINING\r\n250-SIZE");
    if (_config.max_message_size != 0) {
        out.push_back(' ');
        core::append_decimal(out, _config.max_message_size);
    }
    // RFC 3207 §4.2: not after TLS is active.
    if (_config.tls == tls_offer::starttls && !tls_active()) out.append("\r\n250-STARTTLS");
    if (auth_offered()) out.append("\r\n250-AUTH PLAIN LOGIN");
    out.append("\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n");
}

// RFC 3207 §4: STARTTLS. The session stops reading; the host answers for what follows.
void server_session::on_starttls(std::string& out) {
    if (_config.tls == tls_offer::none) return say(out, reply_id::not_implemented);
    if (tls_active()) return say(out, reply_id::tls_already_active);
    say(out, reply_id::tls_ready);
    _tls_requested = true;
}

bool server_session::auth_offered() const noexcept {
    return _config.auth == auth_offer::always || (_config.auth == auth_offer::under_tls && tls_active());
}

// RFC 4954 §4: AUTH mechanism [initial-response]. PLAIN (RFC 4616) and LOGIN.
void server_session::on_auth(const command& cmd, pipelined after, std::string& out) {
    const std::string_view arg = cmd.argument;
    const std::size_t space = arg.find(' ');
    const std::string_view mechanism = arg.substr(0, space);
    const bool has_initial = space != std::string_view::npos;
    const std::string_view initial = has_initial ? arg.substr(space + 1) : std::string_view{};
    // RFC 4954 §4: AUTH must end a pipelined group unless it carries the initial response of
    // a mechanism that completes in one round trip (PLAIN). Anything else pipelined behind it
    // is a client that did not wait for our 334.
    const bool one_round_trip = has_initial && core::iequals(mechanism, "PLAIN");
    if (after == pipelined::yes && _config.sync == pipelining_sync::enforce && !one_round_trip) {
        say_uncounted(out, reply_id::pipelining_violation);
        _closed = true;
        return;
    }
    if (_config.auth == auth_offer::none) return say(out, reply_id::auth_not_enabled);
    if (_greeting != greeting::ehlo) return say(out, reply_id::need_helo);
    if (!auth_offered()) return say(out, reply_id::auth_encryption_required);
    if (_authenticated) return say(out, reply_id::auth_already);
    if (_transaction != transaction::none) return say(out, reply_id::auth_in_transaction);
    if (mechanism.empty() || (has_initial && (initial.empty() || initial.find(' ') != std::string_view::npos)))
        return say(out, reply_id::syntax_auth);
    const bool plain = core::iequals(mechanism, "PLAIN");
    if (!plain && !core::iequals(mechanism, "LOGIN")) return say(out, reply_id::auth_unknown_mechanism);
    if (const host_reply refusal = _host.check_auth(_client); refusal.reply != reply_id::none) {
        say_uncounted(out, refusal.reply, refusal.argument);
        if (reply_for(refusal.reply).prefix.starts_with("421")) _closed = true;
        return;
    }
    _auth_mechanism = plain ? "PLAIN" : "LOGIN";
    _auth_authzid.clear();
    wipe(_auth_user);
    wipe(_auth_password);
    _auth_well_formed = true;
    // "=" is an empty initial response (RFC 4954 §4). Neither mechanism accepts an empty
    // message (PLAIN needs a user and a password, LOGIN a user name): a failed attempt.
    if (has_initial && initial == "=") {
        _auth_step = auth_step::pending;
        _auth_well_formed = false;
        return;
    }
    if (plain) {
        _auth_step = auth_step::plain;
        if (has_initial) return auth_plain_response(initial, out);
        out.append("334 \r\n");  // RFC 4616: an empty challenge
        return;
    }
    _auth_step = auth_step::login_user;
    if (has_initial) return auth_login_response(initial, out);
    out.append("334 ").append(login_username_challenge).append("\r\n");
}

void server_session::on_auth_response(std::string_view line, std::string& out) {
    if (line.ends_with('\n')) line.remove_suffix(1);
    if (line.ends_with('\r')) line.remove_suffix(1);
    if (_auth_step == auth_step::plain) return auth_plain_response(line, out);
    return auth_login_response(line, out);
}

void server_session::auth_plain_response(std::string_view response, std::string& out) {
    auto credentials = decode_plain(response);
    if (!credentials) return sasl_failed(credentials.error(), out);
    _auth_authzid = std::move(credentials->authzid);
    _auth_user = std::move(credentials->authcid);
    _auth_password.assign(credentials->password);  // copied, then the source wiped (a move
    wipe(credentials->password);                    // may leave the bytes in its SSO buffer)
    _auth_step = auth_step::pending;
}

void server_session::auth_login_response(std::string_view response, std::string& out) {
    auto field = decode_login_field(response);
    if (!field) return sasl_failed(field.error(), out);
    if (_auth_step == auth_step::login_user) {
        _auth_user = std::move(*field);
        _auth_step = auth_step::login_password;
        out.append("334 ").append(login_password_challenge).append("\r\n");
        return;
    }
    _auth_password.assign(*field);
    wipe(*field);
    _auth_step = auth_step::pending;
}

void server_session::sasl_failed(sasl_error error, std::string& out) {
    switch (error) {
    case sasl_error::cancelled: end_auth(); return say(out, reply_id::auth_cancelled);
    case sasl_error::bad_base64: end_auth(); return say(out, reply_id::auth_bad_base64);
    case sasl_error::too_long: end_auth(); return say(out, reply_id::auth_line_too_long);
    case sasl_error::bad_message:
        // Decoded, but no valid PLAIN message or LOGIN field: a failed attempt.
        _auth_well_formed = false;
        _auth_step = auth_step::pending;
        return;
    }
}

void server_session::auth_done(auth_result result, std::string& out) {
    RR_ASSERT(_auth_step == auth_step::pending);
    _auth_step = auth_step::none;
    wipe(_auth_password);
    _auth_authzid.clear();
    switch (result) {
    case auth_result::ok:
        _authenticated = true;
        return say(out, reply_id::auth_ok);
    case auth_result::failed:
        wipe(_auth_user);
        ++_auth_failures;
        if (_auth_failures >= _config.max_auth_failures) {
            say_uncounted(out, reply_id::auth_too_many_failures, _config.hostname);
            _closed = true;
            return;
        }
        return say(out, reply_id::auth_failed);
    case auth_result::temporary_failure:
        wipe(_auth_user);
        return say(out, reply_id::auth_temporary_failure);
    case auth_result::throttled:
        wipe(_auth_user);
        say_uncounted(out, reply_id::auth_throttled, _config.hostname);
        _closed = true;
        return;
    }
}

void server_session::end_auth() noexcept {
    if (_auth_step == auth_step::none) return;
    _auth_step = auth_step::none;
    wipe(_auth_password);
    if (!_authenticated) wipe(_auth_user);
    _auth_authzid.clear();
}

void server_session::on_tls_established(const tls_info& info) {
    _tls_requested = false;
    _tls_description.assign(info.protocol);
    if (_tls_description.empty()) _tls_description = "TLS";
    if (!info.cipher.empty()) {
        _tls_description.append(" with cipher ").append(info.cipher);
        _tls_description.append(" (");
        core::append_decimal(_tls_description, static_cast<std::uint64_t>(info.cipher_bits > 0 ? info.cipher_bits : 0));
        _tls_description.push_back('/');
        core::append_decimal(_tls_description, static_cast<std::uint64_t>(info.algorithm_bits > 0 ? info.algorithm_bits : 0));
        _tls_description.append(" bits)");
    }
    // RFC 3207 §4.2: discard all knowledge obtained from the client before TLS.
    end_transaction();
    end_auth();
    _authenticated = false;
    _auth_user.clear();
    _greeting = greeting::none;
    _envelope.helo.clear();
    _line.clear();
    _mode = input_mode::command;
    _chunk_error = reply_id::none;
    _chunk_remaining = 0;
    _chunk_size = 0;
}

// RFC 5321 §4.1.1.2 MAIL; SIZE check per RFC 1870 §6.
void server_session::on_mail(const command& cmd, std::string& out) {
    if (_greeting == greeting::none) return say(out, reply_id::need_helo);
    if (_transaction != transaction::none) return say(out, reply_id::nested_mail);
    const auto path = parse_path(cmd.argument, path_kind::reverse_path);
    if (!path) return say(out, reply_id::bad_sender);
    const auto params = parse_mail_parameters(cmd.parameters);
    if (!params) {
        switch (params.error().reason) {
        case param_error::unsupported: return say(out, reply_id::unsupported_parameter, params.error().keyword);
        case param_error::bad_syntax: return say(out, reply_id::bad_parameter_syntax);
        case param_error::bad_size: return say(out, reply_id::bad_size_syntax);
        }
    }
    if (params->size_declared && _config.max_message_size != 0 && params->size > _config.max_message_size) {
        return say(out, reply_id::size_exceeded);
    }
    if (path->non_ascii && !params->smtputf8) return say(out, reply_id::utf8_not_declared);
    // RFC 4954 §5: AUTH= belongs to the AUTH extension; where it is not offered it is an
    // unsupported parameter (as Postfix without SASL answers).
    if (params->auth_declared && !auth_offered()) return say(out, reply_id::unsupported_parameter, "AUTH");
    if (const host_reply refusal = _host.check_mail(_client); refusal.reply != reply_id::none) {
        return say_uncounted(out, refusal.reply, refusal.argument);
    }
    _envelope.mail_from.assign(path->mailbox);
    _envelope.body = params->body == body_parameter::eight_bit_mime ? body_type::eight_bit_mime : body_type::seven_bit;
    _envelope.smtputf8 = params->smtputf8;
    _envelope.auth_user.assign(authenticated_user());
    _transaction = transaction::mail;
    say(out, reply_id::mail_ok);
}

// RFC 5321 §4.1.1.3 RCPT; §4.5.3.1.10 recipient limit; §3.9 relaying.
void server_session::on_rcpt(const command& cmd, std::string& out) {
    if (_transaction == transaction::none) return say(out, reply_id::need_mail);
    if (_body_mode != body_mode::none) return say(out, reply_id::rcpt_after_bdat);
    const auto path = parse_path(cmd.argument, path_kind::forward_path);
    if (!path) return say(out, reply_id::bad_recipient);
    const auto params = parse_rcpt_parameters(cmd.parameters);
    if (!params) {
        if (params.error().reason == param_error::unsupported) {
            return say(out, reply_id::unsupported_parameter, params.error().keyword);
        }
        return say(out, reply_id::bad_parameter_syntax);
    }
    if (path->non_ascii && !_envelope.smtputf8) return say(out, reply_id::utf8_not_declared);
    if (_config.max_recipients != 0 && _envelope.rcpt_to.size() >= _config.max_recipients) {
        // Like Postfix's smtpd_recipient_overshoot_limit: a pipelining client that sends
        // more recipients than we take is not an abusive one; only the excess counts.
        if (_rcpt_overshoot < _config.max_recipients) {
            ++_rcpt_overshoot;
            return say_uncounted(out, reply_id::too_many_recipients);
        }
        return say(out, reply_id::too_many_recipients);
    }
    // RFC 5321 §4.5.1: the postmaster is reachable by everyone, relay control aside.
    const bool to_postmaster = !_config.postmaster.empty() && names_postmaster(*path, _config.hostname);
    if (path->postmaster_only && !to_postmaster) {
        return say(out, reply_id::no_local_delivery, cmd.argument);  // "<postmaster>" as written
    }
    // RFC 4954 §1: an authenticated client may relay anywhere.
    const relay_trust trust = _authenticated ? relay_trust::trusted : _client.trust;
    if (!to_postmaster && decide_relay(*path, trust, _config.relay_domains) != relay_decision::permit) {
        // Echo the path as written; parse_path() validated it (printable, no CR/LF). With AUTH
        // on offer the client is told what would let it relay (530 5.7.0).
        return say(out, _config.auth == auth_offer::none ? reply_id::relay_denied : reply_id::auth_required,
                    cmd.argument);
    }
    if (!to_postmaster) {
        if (const host_reply refusal = _host.check_rcpt(_client, _envelope, path->mailbox);
            refusal.reply != reply_id::none)
            return say_uncounted(out, refusal.reply, refusal.argument);
    }
    const std::string_view recipient = to_postmaster ? std::string_view{_config.postmaster} : path->mailbox;
    if (_spare_rcpts.empty()) {
        _envelope.rcpt_to.emplace_back(recipient);
    } else {
        _envelope.rcpt_to.push_back(std::move(_spare_rcpts.back()));
        _spare_rcpts.pop_back();
        _envelope.rcpt_to.back().assign(recipient);
    }
    _transaction = transaction::rcpt;
    say(out, reply_id::rcpt_ok);
}

// RFC 5321 §4.1.1.4 DATA.
void server_session::on_data(std::string& out) {
    if (_body_mode == body_mode::bdat) return say(out, reply_id::data_after_bdat);
    if (_transaction != transaction::rcpt) return say(out, reply_id::need_rcpt);
    begin_body(body_mode::data);
    _mode = input_mode::data;
    say(out, reply_id::start_data);
}

// RFC 3030 §2 BDAT: the chunk's octets are always consumed, even when the command fails,
// so that the command stream stays in step with the client.
void server_session::on_bdat(const command& cmd, std::string& out) {
    _chunk_size = cmd.chunk_size;
    _chunk_remaining = cmd.chunk_size;
    _chunk_end = cmd.chunk_end;
    _chunk_error = reply_id::none;
    if (_transaction == transaction::none) {
        _chunk_error = reply_id::need_mail;
    } else if (_transaction == transaction::mail) {
        _chunk_error = reply_id::need_rcpt;
    } else if (_body_mode == body_mode::none) {
        begin_body(body_mode::bdat);
    }
    _mode = input_mode::chunk;
    if (_chunk_remaining == 0) finish_chunk(out);
}

void server_session::begin_body(body_mode mode) {
    _body_mode = mode;
    _envelope.queue_id = _host.next_queue_id();
    // RFC 3848 (ESMTP, ESMTPS), RFC 6531 §3.7.3 (UTF8SMTP, UTF8SMTPS); HELO has no TLS
    // variant: the "(using ...)" line records the TLS either way.
    const bool tls = tls_active();
    // RFC 3848: ESMTPA / ESMTPSA once authenticated (RFC 6531: UTF8SMTPA / UTF8SMTPSA).
    std::string_view protocol = "SMTP";
    if (_envelope.smtputf8) {
        protocol = tls ? (_authenticated ? "UTF8SMTPSA" : "UTF8SMTPS") : (_authenticated ? "UTF8SMTPA" : "UTF8SMTP");
    } else if (_greeting == greeting::ehlo) {
        protocol = tls ? (_authenticated ? "ESMTPSA" : "ESMTPS") : (_authenticated ? "ESMTPA" : "ESMTP");
    }
    _body.clear();
    append_received_header(_body, received_fields{
        .helo = _envelope.helo,
        .client_address = _client.address,
        .hostname = _config.hostname,
        .protocol = protocol,
        .tls = _tls_description,
        .queue_id = _envelope.queue_id,
        .recipient = _envelope.rcpt_to.size() == 1 ? std::string_view{_envelope.rcpt_to.front()} : std::string_view{},
        .date = _host.rfc5322_date(),
    });
    _reader.reset(mode == body_mode::data ? data_framing::dot_stuffed : data_framing::raw,
                  _config.max_message_size);
    if (_observer != nullptr) {
        _observer->body_begun();
        _observer->body_appended(_body);
    }
}

void server_session::finish_chunk(std::string& out) {
    _mode = input_mode::command;
    const bool last = _chunk_end == bdat_end::last;
    if (_chunk_error != reply_id::none) {
        const reply_id error = _chunk_error;
        _chunk_error = reply_id::none;
        return say(out, error);
    }
    if (_bdat_failure != reply_id::none) {
        // Already answered (and counted) once; repeat the verdict for each pipelined chunk.
        say_uncounted(out, _bdat_failure);
        if (last) end_transaction();
        return;
    }
    if (_reader.over_limit()) {
        _bdat_failure = reply_id::size_exceeded;
        _body.clear();
        say(out, reply_id::size_exceeded);
        if (last) end_transaction();
        return;
    }
    if (last) {
        const std::size_t before = _body.size();
        _reader.finish(_body);
        if (_observer != nullptr && _body.size() > before) _observer->body_appended(std::string_view(_body).substr(before));
        return finish_message(out);
    }
    out.append("250 2.0.0 Ok: ");
    core::append_decimal(out, _chunk_size);
    out.append(" octets received\r\n");
}

// End of DATA or of the last BDAT chunk: refuse, or hand the message to the host.
void server_session::finish_message(std::string& out) {
    reply_id failure = reply_id::none;
    if (_reader.bare_cr() || _reader.bare_lf()) {
        failure = reply_id::bare_newline_data;  // RFC 5321 §2.3.8: SMTP smuggling defence
    } else if (_reader.line_too_long()) {
        failure = reply_id::data_line_too_long;
    } else if (_reader.over_limit()) {
        failure = reply_id::size_exceeded;
    } else if (received_headers(_body) > max_received_headers + 1) {  // + the one we prepended
        failure = reply_id::too_many_hops;  // a mail loop (RFC 5321 §6.3)
    }
    if (failure != reply_id::none) {
        end_transaction();
        return say(out, failure);
    }
    _message_ready = true;
}

void server_session::commit_done(commit_result result, std::string& out) {
    RR_ASSERT(_message_ready);
    _message_ready = false;
    switch (result) {
    case commit_result::ok: {
        char id[queue_id_length];
        write_queue_id(_envelope.queue_id, id);
        say(out, reply_id::queued, std::string_view(id, queue_id_length));
        break;
    }
    case commit_result::no_space: say(out, reply_id::no_space); break;
    case commit_result::io_error: say(out, reply_id::io_error); break;
    }
    end_transaction();
}

void server_session::commit_done(host_reply refusal, std::string& out) {
    RR_ASSERT(_message_ready);
    const std::string_view text =
        refusal.reply == reply_id::host_text ? refusal.argument : reply_for(refusal.reply).prefix;
    RR_ASSERT(!text.empty() && (text.front() == '4' || text.front() == '5'));
    _message_ready = false;
    say_uncounted(out, refusal.reply, refusal.argument);
    end_transaction();
    // 421: the service closes the transmission channel (RFC 5321 §3.8, §4.2.3).
    if (text.starts_with("421")) _closed = true;
}

void server_session::on_timeout(std::string& out) {
    if (_closed) return;
    append_reply(out, reply_id::timeout, _config.hostname);
    _closed = true;
}

void server_session::on_shutdown(std::string& out) {
    if (_closed) return;
    append_reply(out, reply_id::shutdown, _config.hostname);
    _closed = true;
}

void server_session::end_transaction() {
    // Keep the recipient strings' buffers for the next transaction.
    for (std::string& r : _envelope.rcpt_to) _spare_rcpts.push_back(std::move(r));
    _envelope.rcpt_to.clear();
    _envelope.mail_from.clear();
    _envelope.queue_id = 0;
    _envelope.body = body_type::seven_bit;
    _envelope.smtputf8 = false;
    _envelope.auth_user.clear();
    _transaction = transaction::none;
    _body_mode = body_mode::none;
    _bdat_failure = reply_id::none;
    _rcpt_overshoot = 0;
    _body.clear();
}

void server_session::shrink() noexcept {
    if (_message_ready || _body_mode != body_mode::none) return;
    std::string().swap(_body);
    if (_line.empty()) std::string().swap(_line);
    std::vector<std::string>().swap(_spare_rcpts);
}

}  // namespace ringrelay::protocol
