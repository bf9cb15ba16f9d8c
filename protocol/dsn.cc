// protocol/dsn.cc: the DSN builder (RFC 3464, RFC 6522, RFC 6533).
// SECURITY: every input field goes through one of the clean_* filters below before it is
// written; lines are wrapped or cut so none exceeds 998 octets.
#include "protocol/dsn.h"

#include <algorithm>
#include <initializer_list>

#include "protocol/address.h"

namespace ringrelay::protocol {
namespace {

constexpr std::string_view crlf = "\r\n";
constexpr std::size_t wrap_width = 76;  // soft width of human text and folded fields

enum class charset : std::uint8_t { ascii, utf8 };

bool has_non_ascii(std::string_view s) noexcept {
    return std::any_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
}

// Joins pieces (instead of "a" + std::string(b), which trips GCC 12's -Wrestrict).
std::string concat(std::initializer_list<std::string_view> pieces) {
    std::string s;
    for (const std::string_view p : pieces) s.append(p);
    return s;
}

bool is_control(unsigned char u) noexcept { return u < 0x20 || u == 0x7f; }

// Appends `s` with controls (HT included unless `keep_tab`) as `control_as` and octets >= 0x80
// kept only as well-formed UTF-8 in utf8 mode, else '?'.
void append_filtered(std::string& out, std::string_view s, charset cs, char control_as, bool keep_tab) {
    for (std::size_t i = 0; i < s.size();) {
        const auto u = static_cast<unsigned char>(s[i]);
        if (u < 0x80) {
            out.push_back(is_control(u) && !(keep_tab && u == '\t') ? control_as : s[i]);
            ++i;
            continue;
        }
        const std::size_t n = cs == charset::utf8 ? utf8_sequence_length(s, i) : 0;
        if (n == 0) {
            out.push_back('?');
            ++i;
        } else {
            out.append(s.substr(i, n));
            i += n;
        }
    }
}

// Shortens `s` (which ends a line) to at most `max` octets without splitting a UTF-8 sequence.
void cut_at(std::string& s, std::size_t line_start, std::size_t max) {
    if (s.size() - line_start <= max) return;
    std::size_t end = line_start + max;
    while (end > line_start && (static_cast<unsigned char>(s[end]) & 0xc0) == 0x80) --end;
    s.resize(end);
}

// One header or report field "Name: value" + CRLF; the value filtered, the line cut at 998.
void append_field(std::string& out, std::string_view name, std::string_view value,
                  charset cs = charset::ascii) {
    const std::size_t start = out.size();
    out.append(name);
    out.append(": ");
    append_filtered(out, value, cs, '?', false);
    cut_at(out, start, max_dsn_line);
    out.append(crlf);
}

// The remote reply made one line of words: CR, LF, HT and other controls become spaces, runs
// of spaces collapse, invalid or (in ascii mode) non-ASCII octets become '?', and the result is
// cut to max_diagnostic_length with "..." appended.
std::string clean_diagnostic(std::string_view text, charset cs) {
    std::string filtered;
    append_filtered(filtered, text, cs, ' ', false);
    std::string out;
    out.reserve(filtered.size());
    for (const char c : filtered) {
        if (c == ' ' && (out.empty() || out.back() == ' ')) continue;
        out.push_back(c);
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    if (out.size() > max_diagnostic_length) {
        cut_at(out, 0, max_diagnostic_length);
        out.append("...");
    }
    return out;
}

// Appends the words of `text` (single spaces, no controls), breaking lines before `width` where
// a space allows and before 998 octets always (inside a word if it must, never inside a UTF-8
// sequence). `line_length` is what the current line already holds; continuation lines start
// with `indent` (a space or tab in a folded field: RFC 5322 §2.2.3). Ends without CRLF.
void append_wrapped(std::string& out, std::size_t line_length, std::string_view indent,
                    std::string_view text, std::size_t width) {
    bool line_has_word = false;
    std::size_t pos = 0;
    while (pos < text.size()) {
        std::size_t end = text.find(' ', pos);
        if (end == std::string_view::npos) end = text.size();
        std::string_view word = text.substr(pos, end - pos);
        pos = end + 1;
        while (!word.empty()) {
            const std::size_t sep = line_has_word ? 1 : 0;
            if (line_has_word && line_length + sep + word.size() > width) {
                out.append(crlf);
                out.append(indent);
                line_length = indent.size();
                line_has_word = false;
                continue;
            }
            std::size_t take = std::min(word.size(), max_dsn_line - line_length - sep);
            while (take < word.size() && take > 0 &&
                   (static_cast<unsigned char>(word[take]) & 0xc0) == 0x80) {
                --take;
            }
            if (sep != 0) out.push_back(' ');
            out.append(word.substr(0, take));
            line_length += sep + take;
            line_has_word = true;
            word.remove_prefix(take);
        }
    }
}

// A folded report field "Name: type; text" (the text already cleaned).
void append_folded_field(std::string& out, std::string_view name_and_type, std::string_view text) {
    out.append(name_and_type);
    append_wrapped(out, name_and_type.size(), " ", text, wrap_width);
    out.append(crlf);
}

// "rfc822; addr" for ASCII addresses, "utf-8; addr" (the utf-8-address form) otherwise
// (RFC 6533 §3); the latter only appears in message/global-delivery-status.
void append_address_field(std::string& out, std::string_view name, std::string_view address) {
    const std::size_t start = out.size();
    out.append(name);
    out.append(has_non_ascii(address) ? ": utf-8; " : ": rfc822; ");
    append_filtered(out, address, charset::utf8, '?', false);
    cut_at(out, start, max_dsn_line);
    out.append(crlf);
}

// Copies the header section of `message`: its lines up to the first empty one (or all of them
// when there is no body), each ended with CRLF whatever ended it before (CRLF or bare LF),
// controls other than HT as '?', invalid UTF-8 as '?', lines cut at 998 octets. Stops before
// the field that would take the copy past max_returned_header_section.
std::string copy_header_section(std::string_view message) {
    std::string out;
    std::size_t field_start = 0;
    std::size_t pos = 0;
    while (pos < message.size()) {
        std::size_t nl = message.find('\n', pos);
        if (nl == std::string_view::npos) nl = message.size();
        std::string_view line = message.substr(pos, nl - pos);
        pos = nl + 1;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.empty()) break;  // the blank line that ends the header section
        if (line.front() != ' ' && line.front() != '\t') field_start = out.size();
        const std::size_t line_start = out.size();
        append_filtered(out, line, charset::utf8, '?', true);
        cut_at(out, line_start, max_dsn_line);
        out.append(crlf);
        if (out.size() > max_returned_header_section) {
            out.resize(field_start);
            break;
        }
    }
    return out;
}

// RFC 3463 §2: class "." subject "." detail, 1-3 digits each; only classes 4 and 5 report a
// failure or a delay.
bool valid_status(std::string_view s) noexcept {
    if (s.size() < 5 || (s[0] != '4' && s[0] != '5') || s[1] != '.') return false;
    std::size_t pos = 2;
    for (int part = 0; part < 2; ++part) {
        std::size_t digits = 0;
        while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
            ++digits;
            ++pos;
        }
        if (digits == 0 || digits > 3) return false;
        if (part == 0) {
            if (pos >= s.size() || s[pos] != '.') return false;
            ++pos;
        }
    }
    return pos == s.size();
}

bool valid_address(std::string_view a) noexcept { return !a.empty() && a.size() <= max_path_length; }

// Part 1: the explanation for people (wording modelled on Postfix's bounce templates).
std::string human_part(const dsn_input& in, bool any_failed, charset cs) {
    std::string t;
    std::string line = "This is the mail system at host ";
    append_filtered(line, in.reporting_mta, charset::ascii, '?', false);
    line.push_back('.');
    cut_at(line, 0, max_dsn_line);
    t.append(line).append(crlf).append(crlf);
    if (any_failed) {
        t.append("Your message could not be delivered to one or more recipients.\r\n"
                 "Its header section is attached below; the reasons are listed here.\r\n");
    } else {
        t.append("####################################################################\r\n"
                 "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\r\n"
                 "####################################################################\r\n"
                 "\r\n"
                 "Your message could not be delivered to one or more recipients yet.\r\n"
                 "The mail system will keep trying. Its header section is attached\r\n"
                 "below; the reasons for the delay are listed here.\r\n");
    }
    t.append("\r\n"
             "If you ask your postmaster for help, include this report.\r\n"
             "\r\n"
             "Queue ID: ");
    t.append(format_queue_id(in.original_queue_id));
    t.append("\r\n\r\n                   The mail system\r\n");

    for (const dsn_recipient& r : in.recipients) {
        std::string words = "<";
        append_filtered(words, r.address, charset::utf8, '?', false);
        words.append(">:");
        const std::string diagnostic = clean_diagnostic(r.diagnostic, cs);
        if (r.diagnostic_kind == diagnostic_type::smtp && !r.remote_mta.empty()) {
            words.append(" host ");
            append_filtered(words, r.remote_mta, charset::ascii, '?', false);
            words.append(" said:");
        }
        if (!diagnostic.empty()) {
            words.push_back(' ');
            words.append(diagnostic);
        } else {
            words.append(" delivery status ");
            append_filtered(words, r.status, charset::ascii, '?', false);
        }
        if (r.action == dsn_action::delayed) {
            words.append(" (still being retried");
            if (!r.will_retry_until.empty()) {
                words.append(" until ");
                append_filtered(words, r.will_retry_until, charset::ascii, '?', false);
            }
            words.push_back(')');
        }
        // The filters above leave no controls; collapse any spaces the addresses held.
        std::string single;
        for (const char c : words) {
            if (c == ' ' && !single.empty() && single.back() == ' ') continue;
            single.push_back(c);
        }
        t.append(crlf);
        append_wrapped(t, 0, "    ", single, wrap_width);
        t.append(crlf);
    }
    return t;
}

// Part 2: the RFC 3464 §2.2 per-message fields, then §2.3 per-recipient fields, blocks
// separated by empty lines.
std::string report_part(const dsn_input& in, charset cs) {
    std::string t;
    append_field(t, "Reporting-MTA", concat({"dns; ", in.reporting_mta}));
    if (!in.arrival_date.empty()) append_field(t, "Arrival-Date", in.arrival_date);
    append_field(t, "X-Queue-ID", format_queue_id(in.original_queue_id));  // extension: last
    for (const dsn_recipient& r : in.recipients) {
        t.append(crlf);
        if (!r.original_recipient.empty()) append_address_field(t, "Original-Recipient", r.original_recipient);
        append_address_field(t, "Final-Recipient", r.address);
        append_field(t, "Action", r.action == dsn_action::failed ? "failed" : "delayed");
        append_field(t, "Status", r.status);
        if (!r.remote_mta.empty()) append_field(t, "Remote-MTA", concat({"dns; ", r.remote_mta}));
        const std::string diagnostic = clean_diagnostic(r.diagnostic, cs);
        if (!diagnostic.empty()) {
            append_folded_field(t, r.diagnostic_kind == diagnostic_type::smtp
                                       ? "Diagnostic-Code: smtp; " : "Diagnostic-Code: X-Ringrelay; ",
                                diagnostic);
        }
        if (!r.last_attempt_date.empty()) append_field(t, "Last-Attempt-Date", r.last_attempt_date);
        if (r.action == dsn_action::delayed && !r.will_retry_until.empty()) {
            append_field(t, "Will-Retry-Until", r.will_retry_until);
        }
    }
    return t;
}

}  // namespace

bool should_bounce(std::string_view mail_from) noexcept {
    return !mail_from.empty() && mail_from != "<>";
}

std::expected<dsn_message, dsn_error> build_dsn(const dsn_input& in) {
    if (!should_bounce(in.sender)) return std::unexpected(dsn_error::null_sender);
    if (in.recipients.empty()) return std::unexpected(dsn_error::no_recipients);
    if (!valid_address(in.sender)) return std::unexpected(dsn_error::bad_address);
    bool any_failed = false;
    bool utf8_addresses = false;
    for (const dsn_recipient& r : in.recipients) {
        if (!valid_address(r.address) || r.original_recipient.size() > max_path_length) {
            return std::unexpected(dsn_error::bad_address);
        }
        if (!valid_status(r.status)) return std::unexpected(dsn_error::bad_status);
        any_failed = any_failed || r.action == dsn_action::failed;
        utf8_addresses = utf8_addresses || has_non_ascii(r.address) || has_non_ascii(r.original_recipient);
    }
    // Parts 1 and 2 carry UTF-8 (addresses and remote text) only when an address needs it;
    // otherwise they stay 7-bit and non-ASCII remote text shows as '?'.
    const charset report_cs = utf8_addresses ? charset::utf8 : charset::ascii;

    const std::string human = human_part(in, any_failed, report_cs);
    const std::string report = report_part(in, report_cs);
    const std::string headers = copy_header_section(in.original_message);
    const bool headers_utf8 = has_non_ascii(headers);

    // The boundary must not occur in any part (RFC 2046 §5.1.1): derived from the DSN's queue
    // id, with a counter bumped until it is absent. "=_" cannot occur in quoted-printable
    // text; each candidate is distinct, so this ends within (total size + 1) tries.
    const std::string id = format_queue_id(in.dsn_queue_id);
    std::string boundary;
    for (std::uint64_t n = 0;; ++n) {
        boundary = concat({"=_ringrelay_", id, "_", std::to_string(n)});
        if (human.find(boundary) == std::string::npos && report.find(boundary) == std::string::npos &&
            headers.find(boundary) == std::string::npos) {
            break;
        }
    }
    const bool eight_bit = has_non_ascii(human) || has_non_ascii(report) || headers_utf8 ||
                           has_non_ascii(in.sender);

    dsn_message m;
    std::string& t = m.text;
    t.reserve(human.size() + report.size() + headers.size() + 1024);
    append_field(t, "Date", in.date);
    append_field(t, "From", concat({"Mail Delivery System <MAILER-DAEMON@", in.reporting_mta, ">"}));
    append_field(t, "To", concat({"<", in.sender, ">"}), charset::utf8);
    append_field(t, "Subject", any_failed ? "Undelivered Mail Returned to Sender"
                                          : "Delayed Mail (still being retried)");
    append_field(t, "Message-ID", concat({"<", id, ".dsn@", in.reporting_mta, ">"}));
    append_field(t, "Auto-Submitted", "auto-replied");
    append_field(t, "MIME-Version", "1.0");
    t.append("Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"");
    t.append(boundary);
    t.append("\"\r\n");
    if (eight_bit) t.append("Content-Transfer-Encoding: 8bit\r\n");
    t.append("\r\nThis is a MIME-encapsulated message.\r\n\r\n");

    t.append("--").append(boundary).append(crlf);
    t.append("Content-Description: Notification\r\n");
    if (report_cs == charset::utf8) {
        t.append("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n");
    } else {
        t.append("Content-Type: text/plain; charset=us-ascii\r\n");
    }
    t.append(crlf).append(human).append(crlf);

    t.append("--").append(boundary).append(crlf);
    t.append("Content-Description: Delivery report\r\n");
    if (report_cs == charset::utf8) {
        t.append("Content-Type: message/global-delivery-status\r\nContent-Transfer-Encoding: 8bit\r\n");
    } else {
        t.append("Content-Type: message/delivery-status\r\n");
    }
    t.append(crlf).append(report).append(crlf);

    t.append("--").append(boundary).append(crlf);
    t.append("Content-Description: Undelivered Message Headers\r\n");
    if (headers_utf8) {
        t.append("Content-Type: message/global-headers\r\nContent-Transfer-Encoding: 8bit\r\n");
    } else {
        t.append("Content-Type: text/rfc822-headers\r\n");
    }
    t.append(crlf).append(headers).append(crlf);
    t.append("--").append(boundary).append("--\r\n");

    m.body = eight_bit ? body_type::eight_bit_mime : body_type::seven_bit;
    m.smtputf8 = has_non_ascii(in.sender);
    return m;
}

}  // namespace ringrelay::protocol
