// protocol/reply.cc: the reply table of the SMTP server session. Codes from RFC 5321 §4.2.2
// and §4.2.3, enhanced status codes from RFC 3463 (announced per RFC 2034); texts follow
// Postfix so operators recognise them. The row order must match enum reply_id (checked at
// compile time below).
#include "protocol/reply.h"

#include <array>
#include <cstddef>

namespace ringrelay::protocol {
namespace {

using enum reply_id;
constexpr error_weight quiet = error_weight::none;
constexpr error_weight counted = error_weight::counted;

// clang-format off
constexpr std::array<reply_row, static_cast<std::size_t>(count_)> rows{{
    {reply_id::none, "", "", quiet, ""},
    {banner,              "220 ", " ESMTP ringrelay", quiet, "RFC 5321 §4.3.1"},
    {tls_ready,           "220 2.0.0 Ready to start TLS", "", quiet, "RFC 3207 §4"},
    {auth_ok,             "235 2.7.0 Authentication successful", "", quiet, "RFC 4954 §6"},
    {helo_ok,             "250 ", "", quiet, "RFC 5321 §4.1.1.1"},
    {mail_ok,             "250 2.1.0 Ok", "", quiet, "RFC 5321 §4.1.1.2, RFC 3463 X.1.0"},
    {rcpt_ok,             "250 2.1.5 Ok", "", quiet, "RFC 5321 §4.1.1.3, RFC 3463 X.1.5"},
    {ok,                  "250 2.0.0 Ok", "", quiet, "RFC 5321 §4.1.1.5, §4.1.1.9"},
    {queued,              "250 2.0.0 Ok: queued as ", "", quiet, "RFC 5321 §4.1.1.4, §6.1"},
    {chunk_ok,            "250 2.0.0 Ok: ", " octets received", quiet, "RFC 3030 §2"},
    {help,                "214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP", "", quiet, "RFC 5321 §4.1.1.8"},
    {vrfy,                "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery", "", quiet, "RFC 5321 §3.5.3"},
    {bye,                 "221 2.0.0 Bye", "", quiet, "RFC 5321 §4.1.1.10"},
    {start_data,          "354 End data with <CR><LF>.<CR><LF>", "", quiet, "RFC 5321 §4.1.1.4"},
    {too_many_errors,     "421 4.7.0 ", " Error: too many errors", quiet, "RFC 5321 §4.2.3, §3.8"},
    {auth_too_many_failures, "421 4.7.0 ", " Error: too many failed authentication attempts", quiet, "RFC 4954 §4, RFC 5321 §3.8"},
    {auth_throttled,      "421 4.7.0 ", " Error: too many failed authentication attempts from your address, try again later", quiet, "RFC 4954 §4, RFC 5321 §3.8"},
    {timeout,             "421 4.4.2 ", " Error: timeout exceeded", quiet, "RFC 5321 §4.5.3.2"},
    {shutdown,            "421 4.3.2 ", " Service shutting down", quiet, "RFC 5321 §3.8"},
    {proxy_untrusted,     "421 4.7.0 ", " Error: PROXY protocol header not accepted from your address", quiet, "RFC 5321 §3.8; HAProxy's PROXY protocol §2 (only from trusted balancers)"},
    // Host-chosen replies (session_host::check_mail, commit_done(host_reply)); texts shaped
    // like the big mailbox providers' so a sender's shaping and backoff can be tested.
    {connection_limit,    "421 4.7.0 Try again later, closing connection. (too many connections from your IP)", "", quiet, "RFC 5321 §3.1, §4.2.3, RFC 3463 X.7.0"},
    {io_error,            "451 4.3.0 Error: queue file write error", "", quiet, "RFC 5321 §4.2.3, §6.1"},
    {message_deferred,    "451 4.3.0 Mail server temporarily rejected message. Try again later.", "", quiet, "RFC 5321 §4.2.3, RFC 3463 X.3.0"},
    {rate_limited,        "451 4.7.1 Message rate limit exceeded for ", ", try again later", quiet, "RFC 5321 §4.2.3, RFC 3463 X.7.1"},
    {no_space,            "452 4.3.1 Insufficient system storage", "", quiet, "RFC 5321 §4.2.3, RFC 3463 X.3.1"},
    {auth_temporary_failure, "454 4.7.0 Temporary authentication failure", "", quiet, "RFC 4954 §6"},
    {too_many_recipients, "452 4.5.3 Error: too many recipients", "", counted, "RFC 5321 §4.5.3.1.10"},
    {command_unrecognized,"500 5.5.2 Error: command not recognized", "", counted, "RFC 5321 §4.2.4"},
    {command_too_long,    "500 5.5.2 Error: command line too long", "", counted, "RFC 5321 §4.5.3.1.4"},
    {bare_lf_command,     "500 5.5.2 Error: bare <LF> received", "", counted, "RFC 5321 §2.3.8"},
    {bare_cr_command,     "500 5.5.2 Error: bare <CR> received", "", counted, "RFC 5321 §2.3.8"},
    {auth_line_too_long,  "500 5.5.6 Authentication exchange line is too long", "", counted, "RFC 4954 §6"},
    {syntax_helo,         "501 5.5.4 Syntax: HELO hostname", "", counted, "RFC 5321 §4.1.1.1"},
    {syntax_ehlo,         "501 5.5.4 Syntax: EHLO hostname", "", counted, "RFC 5321 §4.1.1.1"},
    {syntax_mail,         "501 5.5.4 Syntax: MAIL FROM:<address>", "", counted, "RFC 5321 §4.1.1.2"},
    {syntax_rcpt,         "501 5.5.4 Syntax: RCPT TO:<address>", "", counted, "RFC 5321 §4.1.1.3"},
    {syntax_data,         "501 5.5.4 Syntax: DATA", "", counted, "RFC 5321 §4.1.1.4"},
    {syntax_bdat,         "501 5.5.4 Syntax: BDAT size [LAST]", "", counted, "RFC 3030 §2"},
    {syntax_rset,         "501 5.5.4 Syntax: RSET", "", counted, "RFC 5321 §4.1.1.5"},
    {syntax_quit,         "501 5.5.4 Syntax: QUIT", "", counted, "RFC 5321 §4.1.1.10"},
    {syntax_vrfy,         "501 5.5.4 Syntax: VRFY address", "", counted, "RFC 5321 §4.1.1.6"},
    {syntax_noop,         "501 5.5.4 Syntax: NOOP [string]", "", counted, "RFC 5321 §4.1.1.9"},
    {syntax_help,         "501 5.5.4 Syntax: HELP [string]", "", counted, "RFC 5321 §4.1.1.8"},
    {syntax_starttls,     "501 5.5.4 Syntax: STARTTLS", "", counted, "RFC 3207 §4"},
    {syntax_auth,         "501 5.5.4 Syntax: AUTH mechanism [initial-response]", "", counted, "RFC 4954 §4"},
    {auth_cancelled,      "501 5.7.0 Authentication aborted", "", counted, "RFC 4954 §4"},
    {auth_bad_base64,     "501 5.5.2 Cannot decode response", "", counted, "RFC 4954 §4"},
    {bad_parameter_syntax,"501 5.5.4 Bad parameter syntax", "", counted, "RFC 5321 §4.1.2 esmtp-param"},
    {bad_size_syntax,     "501 5.5.4 Bad message size syntax", "", counted, "RFC 1870 §3"},
    {bad_sender,          "501 5.1.7 Bad sender address syntax", "", counted, "RFC 5321 §4.1.2, RFC 3463 X.1.7"},
    {bad_recipient,       "501 5.1.3 Bad recipient address syntax", "", counted, "RFC 5321 §4.1.2, RFC 3463 X.1.3"},
    {not_implemented,     "502 5.5.1 Error: command not implemented", "", counted, "RFC 5321 §4.2.4"},
    {need_helo,           "503 5.5.1 Error: send HELO/EHLO first", "", counted, "RFC 5321 §4.1.4"},
    {nested_mail,         "503 5.5.1 Error: nested MAIL command", "", counted, "RFC 5321 §4.1.4"},
    {need_mail,           "503 5.5.1 Error: need MAIL command", "", counted, "RFC 5321 §4.1.4"},
    {need_rcpt,           "503 5.5.1 Error: need RCPT command", "", counted, "RFC 5321 §4.1.4"},
    {data_after_bdat,     "503 5.5.1 Error: DATA after BDAT in the same transaction", "", counted, "RFC 3030 §2"},
    {rcpt_after_bdat,     "503 5.5.1 Error: RCPT after BDAT in the same transaction", "", counted, "RFC 3030 §2"},
    {tls_already_active,  "503 5.5.1 Error: TLS already active", "", counted, "RFC 3207 §4.2"},
    {auth_not_enabled,    "503 5.5.1 Error: authentication not enabled", "", counted, "RFC 4954 §4"},
    {auth_already,        "503 5.5.1 Error: already authenticated", "", counted, "RFC 4954 §4"},
    {auth_in_transaction, "503 5.5.1 Error: MAIL transaction in progress", "", counted, "RFC 4954 §4"},
    {auth_unknown_mechanism, "504 5.5.4 Unrecognized authentication type", "", counted, "RFC 4954 §4"},
    {auth_required,       "530 5.7.0 ", ": Relay access denied; authentication required", counted, "RFC 4954 §6, RFC 3463 X.7.0"},
    {auth_failed,         "535 5.7.8 Error: authentication failed", "", quiet, "RFC 4954 §6"},
    {auth_encryption_required, "538 5.7.11 Encryption required for requested authentication mechanism", "", counted, "RFC 4954 §6, RFC 5248"},
    {no_local_delivery,   "550 5.1.1 ", ": no local delivery on this relay", counted, "RFC 5321 §4.1.1.3, §4.5.1"},
    // The argument is the host's: "<addr>: recipient suppressed after a hard bounce on DATE"
    // (queue/suppression.h), since the address and the date both vary.
    {recipient_suppressed,"550 5.1.1 ", "", quiet, "RFC 5321 §4.2.3, RFC 3463 X.1.1"},
    {message_rejected,    "550 5.7.1 [", "] Our system has detected that this message is likely unsolicited mail. To reduce the amount of spam, this message has been blocked.", quiet, "RFC 5321 §4.2.3, RFC 3463 X.7.1"},
    {size_exceeded,       "552 5.3.4 Message size exceeds fixed limit", "", counted, "RFC 1870 §6, RFC 3463 X.3.4"},
    {utf8_not_declared,   "553 5.6.7 Must declare SMTPUTF8 to send unicode address", "", counted, "RFC 6531 §3.4, RFC 6533"},
    {bare_newline_data,   "554 5.5.2 Error: bare <CR> or <LF> in message data", "", counted, "RFC 5321 §2.3.8, §4.1.1.4"},
    {data_line_too_long,  "554 5.6.0 Error: message line too long", "", counted, "RFC 5321 §4.5.3.1.6"},
    {too_many_hops,       "554 5.4.6 Too many hops", "", counted, "RFC 5321 §6.3, RFC 3463 X.4.6"},
    {pipelining_violation,"554 5.5.0 Error: SMTP protocol synchronization", "", counted, "RFC 2920 §3.1, RFC 3463 X.5.0"},
    {relay_denied,        "554 5.7.1 ", ": Relay access denied", counted, "RFC 5321 §3.9, RFC 3463 X.7.1"},
    {unsupported_parameter,"555 5.5.4 Unsupported option: ", "", counted, "RFC 5321 §4.1.1.11"},
    // The whole line is the host's (checked by it: printable, a 4xx or 5xx code and a space).
    {host_text,           "", "", quiet, "RFC 5321 §4.2"},
}};
// clang-format on

constexpr bool rows_in_enum_order() {
    for (std::size_t i = 0; i < rows.size(); ++i) {
        if (static_cast<std::size_t>(rows[i].id) != i) return false;
    }
    return true;
}
static_assert(rows_in_enum_order(), "reply rows must follow enum reply_id order");

}  // namespace

const reply_row& reply_for(reply_id id) noexcept { return rows[static_cast<std::size_t>(id)]; }

void append_reply(std::string& out, reply_id id, std::string_view argument) {
    const reply_row& row = reply_for(id);
    out.append(row.prefix);
    out.append(argument);
    out.append(row.suffix);
    out.append("\r\n");
}

}  // namespace ringrelay::protocol
