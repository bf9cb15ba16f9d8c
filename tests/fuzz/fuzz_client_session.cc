// tests/fuzz/fuzz_client_session.cc: libFuzzer target for the SMTP client session fed arbitrary
// server bytes, with three messages queued (two, three and one recipients) and QUIT requested;
// with PIPELINING offered, up to two transactions are open at once (pipelined back to back).
// Invariants: at most one outcome per message, in submit order at every step (tags 1, 2, 3),
// each outcome has exactly its message's recipient count, a recipient's RCPT code set only if
// that RCPT was sent, client output made only of CRLF-terminated lines with no bare CR or LF,
// DATA only as the last command of a write (RFC 2920 §3.1), no MAIL in the same write after an
// RSET (its reply decides whether the peer's state is known), an accepted message only on a
// peer's reply, and once closed every message has its outcome. The server bytes are fed in
// pieces of a size the second byte gives (optionally also cut after each LF), and a connection
// loss ends every run.
// STARTTLS and AUTH (config bits 32/64: never, when_offered, required; 128: AUTH with
// credentials, in clear allowed when 32 is clear): when the session asks for TLS, the fake
// host completes the handshake, or fails it when the cut byte's 0x40 bit is set, and discards
// what feed() left unread. Invariants: feed() consumes nothing while the handshake is pending
// and stops only then; STARTTLS is the last command of its write; with TLS required, no MAIL
// and no AUTH before the handshake; credentials never leave in clear unless allowed; after a
// failed handshake nothing more is written.
// The third message's body is given in pieces (body_source::pieces, issue 15): whenever the
// session welcomes a piece the host feeds the next one (1..8 octets from the cut byte, every
// third piece empty), starting over when the session wants the body again (a void envelope
// sent again). Invariants: the octets of a complete body are exactly the whole body's encoding
// (DATA: dot-stuffed and "." CRLF; BDAT: every chunk's length is its octets, LAST only on the
// last, and the chunks joined are the normalized body).
// Input layout: [config bits][cut byte] server bytes...
// SECURITY: this is everything a next hop can make the client do.
#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/client_session.h"

using namespace ringrelay::protocol;

namespace {

// Client output never carries a bare CR or LF (RFC 5321 §2.3.8).
void check_output(std::string_view out) {
    for (std::size_t i = 0; i < out.size(); ++i) {
        if (out[i] == '\r' && (i + 1 == out.size() || out[i + 1] != '\n')) std::abort();
        if (out[i] == '\n' && (i == 0 || out[i - 1] != '\r')) std::abort();
    }
    if (!out.empty() && out.back() != '\n') std::abort();
}

// Counts "RCPT TO:" commands at line starts: an upper bound on recipients that can get a reply.
std::size_t count_rcpts(std::string_view out) {
    std::size_t n = 0;
    for (std::size_t pos = 0; (pos = out.find("RCPT TO:<", pos)) != std::string_view::npos; ++pos) {
        if (pos == 0 || out[pos - 1] == '\n') ++n;
    }
    return n;
}

// DATA ends a group: nothing may follow it in the same write. After RSET, no MAIL.
void check_groups(std::string_view out) {
    const std::size_t data = out.find("\r\nDATA\r\n");
    if (data != std::string_view::npos && data + 8 != out.size()) std::abort();
    if (out.starts_with("DATA\r\n") && out.size() != 6) std::abort();
    const std::size_t rset = out.starts_with("RSET\r\n") ? 0 : out.find("\r\nRSET\r\n");
    if (rset != std::string_view::npos && out.find("MAIL FROM:<", rset) != std::string_view::npos) std::abort();
}

// Outcomes so far: tags 1, 2, .. in order, each message at most once.
void check_order(std::span<const message_outcome> outcomes) {
    if (outcomes.size() > 3) std::abort();
    for (std::size_t i = 0; i < outcomes.size(); ++i) {
        if (outcomes[i].tag != i + 1) std::abort();
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) return 0;
    client_config config;
    config.helo_name = "relay.example.com";
    config.pipelining = (data[0] & 1) ? extension_use::never : extension_use::when_offered;
    config.chunking = (data[0] & 2) ? extension_use::never : extension_use::when_offered;
    config.pipeline_transactions = (data[0] & 16) ? extension_use::never : extension_use::when_offered;
    const unsigned tls_mode = (data[0] >> 5) & 3;
    config.starttls = tls_mode == 0 ? tls_use::never : tls_mode == 1 ? tls_use::when_offered : tls_use::required;
    const bool auth = (data[0] & 128) != 0;
    if (auth) {
        config.auth_user = "user";
        config.auth_password = "pass\r\nword";  // base64-encoded: cannot end a line
        config.auth_without_tls = (data[0] & 32) ? auth_plaintext::refuse : auth_plaintext::allow;
    }
    const bool fail_handshake = (data[1] & 0x40) != 0;
    // Pieces of `step` octets; unless the cut byte's top bit is set, a piece also ends after
    // each LF, so that lock-step dialogues (one reply per read) are reachable.
    const std::size_t step = 1 + data[1] % 64;
    const bool split_lines = (data[1] & 0x80) == 0;
    std::string_view in(reinterpret_cast<const char*>(data + 2), size - 2);

    const std::vector<std::string> rcpts1 = {"a@example.org", "b@example.org"};
    const std::vector<std::string> rcpts2 = {"c@example.org", "d@example.org", "e@example.org"};
    const std::vector<std::string> rcpts3 = {"f@example.org"};
    const std::string body1 = "Subject: x\r\n\r\n.leading dot\r\nbare\nlf\rcr\r\n";
    const std::string body2 = std::string(300, 'y');
    const std::string body3 = "Subject: z\r\n\r\n.\r\n..\r\nend";
    const outbound_message m1{1, "s@example.com", rcpts1, body1,
                              (data[0] & 4) ? body_kind::eight_bit_mime : body_kind::seven_bit, utf8_envelope::ascii};
    const outbound_message m2{2, "", rcpts2, body2, body_kind::seven_bit,
                              (data[0] & 8) ? utf8_envelope::smtputf8 : utf8_envelope::ascii};
    outbound_message m3{3, "t@example.com", rcpts3, {}, body_kind::seven_bit, utf8_envelope::ascii};
    m3.source = body_source::pieces;
    m3.pieces_size = normalized_body_size(body3);
    std::string whole_data;
    append_normalized_body(whole_data, body3, dot_stuffing::on);
    whole_data += ".\r\n";
    std::string whole_bdat;
    append_normalized_body(whole_bdat, body3, dot_stuffing::off);
    const std::size_t piece_step = 1 + data[1] % 8;  // 1..8 octets a piece, every third one empty
    std::size_t pieces = 0;
    bool feeding = false;
    std::size_t fed = 0;
    std::string body_wire;

    client_session s(config);
    std::string out;
    std::string all_out;
    s.submit(m1, out);
    s.submit(m2, out);
    s.submit(m3, out);
    s.quit(out);
    if (!out.empty()) std::abort();
    bool tls_done = false;
    bool tls_failed = false;
    while (!in.empty() && !s.closed()) {
        std::size_t n = std::min(step, in.size());
        if (split_lines) {
            const std::size_t lf = in.substr(0, n).find('\n');
            if (lf != std::string_view::npos) n = lf + 1;
        }
        const bool handshake_before = s.tls_requested();
        const std::size_t used = s.feed(in.substr(0, n), out);
        if (used > n) std::abort();
        if (handshake_before && used != 0) std::abort();  // nothing is read during the handshake
        if (used < n && !s.tls_requested()) std::abort();  // only STARTTLS's 220 stops it early
        in.remove_prefix(n);  // the rest is discarded, as a host must
        check_output(out);
        check_groups(out);
        if (out.find("STARTTLS\r\n") != std::string::npos && !out.ends_with("STARTTLS\r\n")) std::abort();
        if (!tls_done) {
            if (config.starttls == tls_use::required &&
                (out.find("MAIL FROM:") != std::string::npos || out.find("AUTH ") != std::string::npos))
                std::abort();
            if (auth && config.auth_without_tls == auth_plaintext::refuse && out.find("AUTH ") != std::string::npos)
                std::abort();
        }
        if (tls_failed && !out.empty()) std::abort();
        all_out += out;
        out.clear();
        if (s.tls_requested()) {
            if (tls_done) std::abort();  // STARTTLS at most once
            if (fail_handshake) {
                s.on_tls_failed("fuzzed failure");
                tls_failed = true;
                if (!s.closed()) std::abort();
            } else {
                s.on_tls_established(out);
                tls_done = true;
                if (!s.tls_active() || out != "EHLO relay.example.com\r\n") std::abort();
            }
            all_out += out;
            out.clear();
        }
        // The third message's body, piece by piece, while the session takes pieces.
        if (!s.wants_body()) feeding = false;
        while (s.body_piece_welcome()) {
            if (!feeding) {
                feeding = true;
                fed = 0;
                body_wire.clear();
            }
            const std::size_t n = std::min(pieces++ % 3 == 2 ? 0 : piece_step, body3.size() - fed);
            const body_piece which = fed + n == body3.size() ? body_piece::last : body_piece::more;
            s.feed_body(std::string_view(body3).substr(fed, n), which, out);
            fed += n;
            body_wire += out;
            all_out += out;
            out.clear();
            if (which == body_piece::last) {
                feeding = false;
                if (body_wire.starts_with("BDAT ")) {
                    std::string joined;
                    std::string_view w = body_wire;
                    while (!w.empty()) {
                        const std::size_t eol = w.find("\r\n");
                        if (!w.starts_with("BDAT ") || eol == std::string_view::npos) std::abort();
                        std::string_view command = w.substr(5, eol - 5);
                        const bool last = command.ends_with(" LAST");
                        if (last) command.remove_suffix(5);
                        std::size_t length = 0;
                        for (const char ch : command) {
                            if (ch < '0' || ch > '9') std::abort();
                            length = length * 10 + static_cast<std::size_t>(ch - '0');
                        }
                        w.remove_prefix(eol + 2);
                        if (w.size() < length) std::abort();
                        joined.append(w.substr(0, length));
                        w.remove_prefix(length);
                        if (last != w.empty()) std::abort();  // LAST on the last chunk only
                    }
                    if (joined != whole_bdat) std::abort();
                } else if (body_wire != whole_data) {
                    std::abort();
                }
            }
            if (!s.wants_body()) break;
        }
        check_order(s.outcomes());
    }
    s.on_connection_lost();
    check_order(s.outcomes());
    if (!s.closed() || s.outcomes().size() != 3 || s.pending() != 0) std::abort();
    const std::size_t rcpts_sent = count_rcpts(all_out);
    std::size_t rcpt_replies = 0;
    const std::size_t expected_counts[3] = {rcpts1.size(), rcpts2.size(), rcpts3.size()};
    for (std::size_t i = 0; i < 3; ++i) {
        const message_outcome& o = s.outcomes()[i];
        if (o.recipients.size() != expected_counts[i]) std::abort();
        for (const recipient_outcome& r : o.recipients) {
            if (r.rcpt_code != 0) ++rcpt_replies;
            if (r.reply.text.find('\r') != std::string::npos) std::abort();
        }
        if (o.kind == outcome_kind::accepted && o.reply.origin != reply_origin::peer) std::abort();
    }
    if (rcpt_replies > rcpts_sent) std::abort();
    return 0;
}
