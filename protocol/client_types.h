// protocol/client_types.h: the SMTP client side's vocabulary: its configuration, the messages
// given to it, the outcomes it reports, its states and close reasons. client_session.h says how
// the session behaves; client_negotiation.h and client_session.h both use these types.
// Threading: plain values; each session's are owned by the shard that drives it.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/reply_parser.h"

namespace ringrelay::protocol {

enum class extension_use : std::uint8_t {
    never,          // do not use it even if offered
    when_offered,   // use it if the EHLO reply lists it
};

// Whether to use STARTTLS (RFC 3207).
enum class tls_use : std::uint8_t {
    never,         // do not even if offered
    when_offered,  // if the EHLO reply lists it; plaintext if not listed or refused
    required,      // TLS or no mail at all: never MAIL in clear
};

// Whether AUTH credentials may be sent over a connection without TLS.
enum class auth_plaintext : std::uint8_t {
    refuse,  // only under TLS (the default: a password never crosses the wire in clear)
    allow,   // also in clear (a trusted network, a test)
};

// Fixed after construction.
struct client_config {
    std::string helo_name = "localhost";  // our name in EHLO/HELO; printable, no spaces
    extension_use pipelining = extension_use::when_offered;  // RFC 2920
    extension_use chunking = extension_use::when_offered;    // RFC 3030 BDAT instead of DATA
    // With PIPELINING: the next message's envelope right behind the end of data (above).
    extension_use pipeline_transactions = extension_use::when_offered;
    tls_use starttls = tls_use::never;  // RFC 3207; the host must be able to run TLS otherwise
    // SMTP AUTH (RFC 4954) with these credentials; empty auth_user: no AUTH. Printable UTF-8;
    // they are sent base64-encoded, so no octet of theirs can end a command line.
    std::string auth_user;
    std::string auth_password;
    auth_plaintext auth_without_tls = auth_plaintext::refuse;
};

enum class body_kind : std::uint8_t {
    seven_bit,       // no BODY parameter
    eight_bit_mime,  // BODY=8BITMIME (RFC 6152); refused locally if the peer lacks 8BITMIME
};

enum class utf8_envelope : std::uint8_t {
    ascii,     // no SMTPUTF8 parameter
    smtputf8,  // SMTPUTF8 (RFC 6531 §3.4); refused locally if the peer lacks SMTPUTF8
};

// How a message's body reaches the session.
enum class body_source : std::uint8_t {
    whole,   // outbound_message::body holds all of it from submit() on
    pieces,  // given later, in order, through client_session::feed_body() (a large body
             // streamed from the spool: never whole in memory)
};

// One message to send. The caller owns every byte it points to (addresses, the recipient
// array and the body) and keeps them valid and unchanged until this message's outcome has
// been reported (appears in outcomes()).
struct outbound_message {
    std::uint64_t tag = 0;                 // the caller's id, echoed in the outcome
    std::string_view mail_from;            // without angle brackets; empty = null sender
    std::span<const std::string> rcpt_to;  // without angle brackets; at least one
    std::string_view body;                 // header + body, CRLF lines, no final "."; unused
                                           // with body_source::pieces
    body_kind body_type = body_kind::seven_bit;
    utf8_envelope utf8 = utf8_envelope::ascii;
    body_source source = body_source::whole;
    // body_source::pieces only: the body's normalized size (body_encoding.h), for SIZE and the
    // local size check. An estimate is allowed (RFC 1870 §2: the client's estimate); a
    // caller that has the whole body gives the exact figure.
    std::uint64_t pieces_size = 0;
};

enum class outcome_kind : std::uint8_t {
    accepted,           // 2xx after the data: the peer took responsibility (RFC 5321 §6.1)
    transient_failure,  // 4xx (or 421): try again later
    permanent_failure,  // 5xx, or refused locally (size, 8BITMIME, SMTPUTF8, bad address)
    protocol_error,     // the peer broke the protocol, or the connection was lost mid-transaction:
                        // treat as transient; the data may or may not have been accepted
    not_attempted,      // the session closed before this message started: requeue it
};

enum class reply_origin : std::uint8_t {
    peer,   // the reply came from the next hop
    local,  // made up by the session (code/enhanced/text say why), nothing sent for it
    none,   // no reply at all (not_attempted, connection lost, protocol error)
};

// The reply that decided an outcome. text: lines joined by LF, no CR (reply_parser).
struct outcome_reply {
    reply_origin origin = reply_origin::none;
    std::uint16_t code = 0;
    enhanced_status enhanced;
    std::string text;

    // Set from the peer's reply; the text is copied (it views the parser's buffer), into
    // storage kept from earlier replies.
    void assign_peer(const parsed_reply& r) {
        origin = reply_origin::peer;
        code = r.code;
        enhanced = r.enhanced;
        text.assign(r.text);
    }
    // Set to a reply made up by the session (nothing was sent for it).
    void assign_local(std::uint16_t local_code, enhanced_status local_enhanced, std::string_view local_text) {
        origin = reply_origin::local;
        code = local_code;
        enhanced = local_enhanced;
        text.assign(local_text);
    }
    void clear() noexcept {
        origin = reply_origin::none;
        code = 0;
        enhanced = {};
        text.clear();
    }
};

// Per recipient, in the order of outbound_message::rcpt_to. `reply` is the RCPT reply when
// the recipient was refused at RCPT; otherwise (accepted, or the transaction failed before or
// after RCPT) it is the message-level reply and `kind` is the message's kind.
struct recipient_outcome {
    outcome_kind kind = outcome_kind::not_attempted;
    outcome_reply reply;
    std::uint16_t rcpt_code = 0;  // the peer's RCPT reply code; 0 if RCPT got none
};

struct message_outcome {
    std::uint64_t tag = 0;
    outcome_kind kind = outcome_kind::not_attempted;
    outcome_reply reply;  // e.g. 250 "2.0.0 Ok: queued as X"
    std::vector<recipient_outcome> recipients;
};


enum class client_state : std::uint8_t {
    greeting,     // waiting for the 220
    hello,        // EHLO or HELO sent
    starttls,     // STARTTLS sent (RFC 3207)
    tls_handshake,  // STARTTLS got 220: the host runs the handshake; no input is read
    authenticating,  // AUTH sent (RFC 4954)
    idle,         // between transactions, nothing outstanding
    transaction,  // MAIL .. end of data (or RSET) outstanding, for one or two messages
    quitting,     // QUIT sent
    closed,
};

// Why the session closed.
enum class close_reason : std::uint8_t {
    none,              // not closed
    quit,              // QUIT answered (any reply)
    greeting_refused,  // the greeting, or EHLO and HELO, were refused
    peer_shutdown,     // 421 (RFC 5321 §3.8), solicited or not
    protocol_error,    // malformed reply, unexpected code, reply before its command
    connection_lost,   // on_connection_lost()
    reset_refused,     // RSET got a negative reply: the peer's state is unknown, QUIT sent
    tls_required,      // tls_use::required and the peer did not offer STARTTLS or refused it
    tls_failed,        // on_tls_failed(): the handshake failed; the connection is unusable
    auth_failed,       // AUTH was refused, or could not be attempted (see client_config)
    body_abandoned,    // abandon_body(): the caller could not supply the rest of a body
};

}  // namespace ringrelay::protocol
