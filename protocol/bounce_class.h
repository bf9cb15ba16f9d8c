// protocol/bounce_class.h: bounce classification (issue 16): which kind of failure a next hop's
// reply, or a failure of our own (DNS, TLS, connection, expiry), is, for the delivery log's
// "bounce_class" and the suppression list. The mechanism only: a table of rules, tried in order,
// the first that matches deciding. The rules themselves are data (etc/bounce-classes.json,
// loaded by queue/bounce_rules.h); this file knows no provider.
//
// A rule matches when every condition it has holds (a rule has at least one):
//   status: the reply's enhanced status code (RFC 3463 §2) matches one of these patterns, each
//           "C.S.D" where a part is a number, "*" or a range "A-B" ("5.7.606-649", "*.1.1");
//           a reply without an enhanced code never matches a status condition;
//   code:   the reply code is one of these (0 = no reply code: a failure of our own);
//   origin: "peer" (the next hop said it) or "local" (we made the failure up: DNS, TLS, a lost
//           connection, a local refusal, expiry);
//   text:   one of these substrings occurs in the reply text, compared without ASCII case and
//           with every run of white space as one space, the enhanced code that starts each line
//           of a multi-line reply removed ("550-5.7.26 a\n550 5.7.26 b" reads "a b").
//
// Pure: no I/O. classify() allocates nothing: the text is normalised into a fixed buffer.
// SECURITY: the reply text comes from the next hop and may be hostile; only its first
// max_classified_text octets (after normalisation) are looked at, and patterns are plain
// substrings (no regex, no backtracking), so the work per reply is bounded by
// rules x patterns x max_classified_text.
//
// Ownership: a bounce_rules table is immutable once built; verdicts view its strings and live as
// long as the table. Threading: any number of threads may classify with one table at once
// (classify() is const and writes only its own stack); the relay's one table is read by every
// shard.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <expected>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "protocol/reply_parser.h"

namespace ringrelay::protocol {

// The classes, in the words; the log writes to_string(c).
enum class bounce_class : std::uint8_t {
    invalid_recipient,  // no such mailbox (RFC 3463 X.1.1): suppress
    inactive_mailbox,   // it exists but is disabled or gone (X.2.1, X.1.6): suppress
    mailbox_full,       // over quota (X.2.2)
    message_too_large,  // size limits (X.2.3, X.3.4)
    spam_content,       // this message looked like spam, phishing or malware
    policy,             // the receiver's rules refuse it (X.7.1 and the like)
    reputation,         // the sending IP or domain is distrusted or blocklisted ("blocklist" names the list)
    rate_limited,       // too fast, too much: throttling and congestion
    authentication,     // SPF, DKIM, DMARC, reverse DNS or SMTP AUTH failed (RFC 7372)
    dns,                // the recipient's domain does not resolve: NXDOMAIN, no MX, null MX, lookup failed
    tls,                // TLS required but not offered, refused or failed
    routing,            // no route, the next hop unreachable or gone mid-transaction, a loop, expired
    protocol,           // a broken dialogue or a message the next hop cannot take in its form
    other,              // none of the above; also what no rule matched
};

inline constexpr std::size_t bounce_class_count = 14;

[[nodiscard]] std::string_view to_string(bounce_class c) noexcept;
// "invalid-recipient" ... "other"; nullopt for anything else (exact, lower case).
[[nodiscard]] std::optional<bounce_class> parse_bounce_class(std::string_view name) noexcept;

// One part of a status pattern: the values lo..hi (0..999) match.
struct status_range {
    std::uint16_t lo = 0;
    std::uint16_t hi = 999;
    friend bool operator==(const status_range&, const status_range&) = default;
};

// "C.S.D": class (2, 4, 5 or *), subject, detail.
struct status_pattern {
    status_range status_class{0, 999};
    status_range subject{0, 999};
    status_range detail{0, 999};
    [[nodiscard]] bool matches(const enhanced_status& s) const noexcept;
    friend bool operator==(const status_pattern&, const status_pattern&) = default;
};

// "5.7.26", "*.1.1", "4.7.500-699", "5.7.*". The error says what is wrong with it.
[[nodiscard]] std::expected<status_pattern, std::string> parse_status_pattern(std::string_view text);

enum class rule_origin : std::uint8_t { any, peer, local };

// Bounds on one rule (a rules file is operator input; these keep classify() cheap).
inline constexpr std::size_t max_rule_patterns = 64;   // per list: status, code, text
inline constexpr std::size_t max_pattern_length = 256;  // octets of one text pattern
inline constexpr std::size_t max_rules = 4096;

struct bounce_rule {
    std::string name;       // unique in a table; an override file replaces the rule of this name
    bounce_class cls = bounce_class::other;
    std::string blocklist;  // reputation only: the list the reply names ("Spamhaus"); may be empty
    std::vector<status_pattern> status;
    std::vector<std::uint16_t> code;
    rule_origin origin = rule_origin::any;
    std::vector<std::string> text;  // normalised: ASCII lower case, single spaces, trimmed
    std::string source;             // where the rule comes from (a URL, an RFC), for people
};

// What is known of one failure.
struct bounce_input {
    rule_origin origin = rule_origin::local;  // peer or local (any is treated as local)
    std::uint16_t code = 0;                   // the reply code; 0 = none
    enhanced_status enhanced;                 // status_class 0 = none
    std::string_view text;                    // reply text (lines LF-joined) or our reason; any bytes
};

// The decision. Views into the table (rule name, blocklist) or static text.
struct bounce_verdict {
    bounce_class cls = bounce_class::other;
    std::string_view blocklist;  // non-empty only for reputation
    std::string_view rule;       // the rule that matched; empty when none did (class other)
};

// Octets of normalised reply text that classify() looks at.
inline constexpr std::size_t max_classified_text = 2048;

// The text as rules see it (lower case, single spaces, per-line enhanced codes dropped), into
// `out`; returns the part of `out` written (at most out.size() octets).
[[nodiscard]] std::string_view normalize_bounce_text(std::string_view text, std::span<char> out) noexcept;

// A pattern as a rule stores it: lower case, white space runs as one space, trimmed.
[[nodiscard]] std::string normalize_bounce_pattern(std::string_view pattern);

// An immutable, ordered rule table.
class bounce_rules {
public:
    bounce_rules() = default;
    explicit bounce_rules(std::vector<bounce_rule> rules) : _rules(std::move(rules)) {}

    // The first rule that matches decides; none: class other.
    [[nodiscard]] bounce_verdict classify(const bounce_input& in) const noexcept;
    [[nodiscard]] std::span<const bounce_rule> rules() const noexcept { return _rules; }
    [[nodiscard]] const bounce_rule* find(std::string_view name) const noexcept;

private:
    std::vector<bounce_rule> _rules;
};

// Reads the start of a reason we wrote ourselves that may carry the next hop's reply (a refused
// greeting is passed on as "554 5.7.1 text", queue/outbound.cc): "ddd[ -][x.y.z ]text" with ddd
// 400..599 gives a peer input with that code and status; anything else is a local input with
// code 0 and the whole text.
[[nodiscard]] bounce_input bounce_input_from_reason(std::string_view reason) noexcept;

}  // namespace ringrelay::protocol
