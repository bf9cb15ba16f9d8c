// protocol/dsn.h: builds delivery status notifications (bounces and delay warnings): an RFC 5322
// message, multipart/report (RFC 6522) of report-type delivery-status (RFC 3464), from the null
// sender to the original envelope sender. Parts: 1. a human explanation (text/plain), 2. the
// machine-readable report (message/delivery-status, RFC 3464 §2; message/global-delivery-status
// with the utf-8 address type when an address is non-ASCII, RFC 6533 §3, §6.2), 3. the original
// message's header section only (text/rfc822-headers, RFC 6522 §3; message/global-headers when
// it holds UTF-8, RFC 6533 §6.3), so that bounces stay small. Status codes: RFC 3463.
// Auto-Submitted: auto-replied (RFC 3834 §5). Pure: no clocks (dates are passed in), no I/O.
// SECURITY: `diagnostic` and `remote_mta` come from remote servers; `original_message` and the
// addresses come from clients (via the spool, which may be corrupt). Every field is filtered:
// CR, LF and other controls never reach the output as such; the output has only CRLF line ends
// and no line longer than 998 octets (RFC 5322 §2.1.1), whatever the input.
#pragma once
#include <cstddef>
#include <cstdint>
#include <expected>
#include <span>
#include <string>
#include <string_view>

#include "protocol/server_session.h"

namespace ringrelay::protocol {

inline constexpr std::size_t max_dsn_line = 998;                 // RFC 5322 §2.1.1, without CRLF
inline constexpr std::size_t max_diagnostic_length = 2048;       // longer remote text is cut, "..." added
inline constexpr std::size_t max_returned_header_section = 102400;  // part 3; cut at a field boundary
                                                                    // (Postfix header_size_limit)

// RFC 3464 §2.3.3. Only the two a relay reports to a sender (no "delivered"/"relayed": we do
// not implement NOTIFY=SUCCESS).
enum class dsn_action : std::uint8_t {
    failed,   // permanent failure, or expiry (then status 4.4.7)
    delayed,  // a warning; delivery is still being retried
};

// RFC 3464 §2.3.6 diagnostic-type.
enum class diagnostic_type : std::uint8_t {
    smtp,   // "smtp; 550 5.1.1 ...": the reply of the remote server
    local,  // "X-Ringrelay; ...": our own reason (DNS failure, timeout, expiry)
};

// One recipient to report. Views are owned by the caller and read only during build_dsn().
struct dsn_recipient {
    std::string_view address;             // the RCPT TO mailbox, without angle brackets
    std::string_view original_recipient;  // decoded ORCPT address (RFC 3461 §4.2), or empty
    dsn_action action = dsn_action::failed;
    std::string_view status;              // RFC 3463 "4.x.x" or "5.x.x", e.g. "5.1.1"
    std::string_view remote_mta;          // host name (or [address]) that answered; empty if none
    diagnostic_type diagnostic_kind = diagnostic_type::smtp;
    std::string_view diagnostic;          // the reply text (lines may be joined by LF) or our
                                          // reason; hostile; empty to omit Diagnostic-Code
    std::string_view last_attempt_date;   // RFC 5322 date-time; empty to omit
    std::string_view will_retry_until;    // delayed only (RFC 3464 §2.3.9); empty to omit
};

// Views are owned by the caller and read only during build_dsn().
struct dsn_input {
    std::uint64_t original_queue_id = 0;  // the bounced message: X-Queue-ID and the text
    std::uint64_t dsn_queue_id = 0;       // the DSN's own queue id: Message-ID <ID.dsn@host>
                                          // and the MIME boundary
    std::string_view reporting_mta;       // our host name (From:, Message-ID, Reporting-MTA)
    std::string_view sender;              // the original envelope sender: the DSN's To: and
                                          // RCPT TO; should_bounce(sender) must be true
    std::string_view arrival_date;        // RFC 5322 date-time the original arrived; empty to omit
    std::string_view date;                // RFC 5322 date-time of the DSN (Date:)
    std::span<const dsn_recipient> recipients;
    std::string_view original_message;    // as spooled: header section, blank line, body (CRLF;
                                          // bare LF tolerated). Only the header section is read.
};

enum class dsn_error : std::uint8_t {
    null_sender,    // never a DSN to the null sender (RFC 5321 §4.5.5, §6.1): drop it
    no_recipients,  // nothing to report
    bad_address,    // the sender or a recipient address is empty or longer than max_path_length
    bad_status,     // a status that is not RFC 3463 "4.x.x"/"5.x.x"
};

struct dsn_message {
    std::string text;                      // the whole message, CRLF lines, each <= 998 octets
    body_type body = body_type::seven_bit; // eight_bit_mime when any octet is >= 0x80: send
                                           // with BODY=8BITMIME (RFC 6152)
    bool smtputf8 = false;                 // the sender (To:, RCPT TO) is non-ASCII: send with
                                           // SMTPUTF8 (RFC 6531 §3.4)
};

// False only for the null reverse-path ("" as the envelope stores it, or "<>"): RFC 5321 §6.1
// and §4.5.5 forbid a notification to a null sender, which is what stops DSN loops.
// A MAILER-DAEMON@... sender is not null and does get DSNs: the RFCs key on the null
// reverse-path only, and Postfix does the same.
[[nodiscard]] bool should_bounce(std::string_view mail_from) noexcept;

// Builds the DSN for `in.recipients` (all failed, all delayed, or both: the Subject says
// "Undelivered Mail Returned to Sender" when any failed, else "Delayed Mail (still being
// retried)"). Output is deterministic for a given input.
[[nodiscard]] std::expected<dsn_message, dsn_error> build_dsn(const dsn_input& in);

}  // namespace ringrelay::protocol
