// protocol/reply.h: every reply the SMTP server session sends, in one table with the RFC
// that defines its code (RFC 5321 §4.2, enhanced codes RFC 3463 / RFC 2034). Pure: formatting
// only appends to a caller-owned string.
// SECURITY: a reply may echo an argument taken from the network (an address, a keyword);
// callers pass only text their parser validated as printable (no CR, LF or controls).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace ringrelay::protocol {

enum class reply_id : std::uint8_t {
    none,
    banner,                // 220 <host> ESMTP ringrelay
    tls_ready,             // 220 2.0.0 Ready to start TLS
    auth_ok,               // 235 2.7.0 Authentication successful
    helo_ok,               // 250 <host>
    mail_ok,               // 250 2.1.0 Ok
    rcpt_ok,               // 250 2.1.5 Ok
    ok,                    // 250 2.0.0 Ok (RSET, NOOP)
    queued,                // 250 2.0.0 Ok: queued as <ID>
    chunk_ok,              // 250 2.0.0 Ok: <n> octets received
    help,                  // 214
    vrfy,                  // 252
    bye,                   // 221
    start_data,            // 354
    too_many_errors,       // 421 4.7.0 <host>
    auth_too_many_failures,// 421 4.7.0 <host> too many failed authentication attempts
    auth_throttled,        // 421 4.7.0 <host> (the client's address failed too often; host's verdict)
    timeout,               // 421 4.4.2 <host>
    shutdown,              // 421 4.3.2 <host>
    proxy_untrusted,       // 421 4.7.0 <host> (a PROXY header from an address not in --proxy-protocol-from)
    connection_limit,      // 421 4.7.0 too many connections from your IP (host's banner)
    io_error,              // 451 4.3.0
    message_deferred,      // 451 4.3.0 (host's refusal of a message)
    rate_limited,          // 451 4.7.1 ... for <ip> (host's refusal of MAIL)
    no_space,              // 452 4.3.1
    auth_temporary_failure,// 454 4.7.0
    too_many_recipients,   // 452 4.5.3
    command_unrecognized,  // 500 5.5.2
    command_too_long,      // 500 5.5.2
    bare_lf_command,       // 500 5.5.2
    bare_cr_command,       // 500 5.5.2
    auth_line_too_long,    // 500 5.5.6
    syntax_helo,           // 501 5.5.4
    syntax_ehlo,
    syntax_mail,
    syntax_rcpt,
    syntax_data,
    syntax_bdat,
    syntax_rset,
    syntax_quit,
    syntax_vrfy,
    syntax_noop,
    syntax_help,
    syntax_starttls,       // 501 5.5.4
    syntax_auth,           // 501 5.5.4
    auth_cancelled,        // 501 5.7.0
    auth_bad_base64,       // 501 5.5.2
    bad_parameter_syntax,  // 501 5.5.4
    bad_size_syntax,       // 501 5.5.4
    bad_sender,            // 501 5.1.7
    bad_recipient,         // 501 5.1.3
    not_implemented,       // 502 5.5.1
    need_helo,             // 503 5.5.1
    nested_mail,
    need_mail,
    need_rcpt,
    data_after_bdat,
    rcpt_after_bdat,
    tls_already_active,    // 503 5.5.1
    auth_not_enabled,      // 503 5.5.1
    auth_already,          // 503 5.5.1
    auth_in_transaction,   // 503 5.5.1
    auth_unknown_mechanism,// 504 5.5.4
    auth_required,         // 530 5.7.0 <addr>: ... (relaying needs AUTH)
    auth_failed,           // 535 5.7.8
    auth_encryption_required, // 538 5.7.11
    no_local_delivery,     // 550 5.1.1 <addr>: ...
    recipient_suppressed,  // 550 5.1.1 <addr>: recipient suppressed after a hard bounce on DATE (host's verdict)
    message_rejected,      // 550 5.7.1 [<ip>] ... (host's refusal of a message)
    size_exceeded,         // 552 5.3.4
    utf8_not_declared,     // 553 5.6.7
    bare_newline_data,     // 554 5.5.2
    data_line_too_long,    // 554 5.6.0
    too_many_hops,         // 554 5.4.6
    pipelining_violation,  // 554 5.5.0 (a command pipelined past a synchronisation point)
    relay_denied,          // 554 5.7.1 <addr>: ...
    unsupported_parameter, // 555 5.5.4
    host_text,             // the argument verbatim: a 4xx/5xx line the host was configured to
                           // answer (ringrelay-sink --defer-reply/--reject-reply); 421 closes
    count_                 // number of rows; not a reply
};

// Whether a reply counts towards server_config::max_errors.
enum class error_weight : std::uint8_t { none, counted };

// One row: the text is prefix + argument + suffix + CRLF. `argument` is empty for rows that
// take none.
struct reply_row {
    reply_id id;
    std::string_view prefix;
    std::string_view suffix;
    error_weight weight;
    std::string_view rfc;
};

// The row for `id`; `id` must not be none or count_.
[[nodiscard]] const reply_row& reply_for(reply_id id) noexcept;

// Appends one complete reply line (with CRLF) to `out`.
void append_reply(std::string& out, reply_id id, std::string_view argument = {});

}  // namespace ringrelay::protocol
