// tests/fuzz/fuzz_client_session.cc: libFuzzer target for the SMTP client session fed arbitrary
// server bytes, with two messages queued (two and three recipients) and QUIT requested.
// Invariants: never more outcomes than messages, each outcome has exactly its message's
// recipient count, tags in submit order, a recipient's RCPT code set only if that RCPT was
// sent, client output made only of CRLF-terminated lines with no bare CR or LF, and once
// closed every message has its outcome. The server bytes are fed in pieces of a size the second
// byte gives (optionally also cut after each LF), and a connection loss ends every run.
// Input layout: [config bits][cut byte] server bytes...
// SECURITY: this is everything a next hop can make the client do.
#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <cstdlib>
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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) return 0;
    client_config config;
    config.helo_name = "relay.example.com";
    config.pipelining = (data[0] & 1) ? extension_use::never : extension_use::when_offered;
    config.chunking = (data[0] & 2) ? extension_use::never : extension_use::when_offered;
    // Pieces of `step` octets; unless the cut byte's top bit is set, a piece also ends after
    // each LF, so that lock-step dialogues (one reply per read) are reachable.
    const std::size_t step = 1 + data[1] % 64;
    const bool split_lines = (data[1] & 0x80) == 0;
    std::string_view in(reinterpret_cast<const char*>(data + 2), size - 2);

    const std::vector<std::string> rcpts1 = {"a@example.org", "b@example.org"};
    const std::vector<std::string> rcpts2 = {"c@example.org", "d@example.org", "e@example.org"};
    const std::string body1 = "Subject: x\r\n\r\n.leading dot\r\nbare\nlf\rcr\r\n";
    const std::string body2 = std::string(300, 'y');
    const outbound_message m1{1, "s@example.com", rcpts1, body1,
                              (data[0] & 4) ? body_kind::eight_bit_mime : body_kind::seven_bit, utf8_envelope::ascii};
    const outbound_message m2{2, "", rcpts2, body2, body_kind::seven_bit,
                              (data[0] & 8) ? utf8_envelope::smtputf8 : utf8_envelope::ascii};

    client_session s(config);
    std::string out;
    std::string all_out;
    s.submit(m1, out);
    s.submit(m2, out);
    s.quit(out);
    if (!out.empty()) std::abort();
    while (!in.empty() && !s.closed()) {
        std::size_t n = std::min(step, in.size());
        if (split_lines) {
            const std::size_t lf = in.substr(0, n).find('\n');
            if (lf != std::string_view::npos) n = lf + 1;
        }
        s.feed(in.substr(0, n), out);
        in.remove_prefix(n);
        check_output(out);
        all_out += out;
        out.clear();
        if (s.outcomes().size() > 2) std::abort();
    }
    s.on_connection_lost();
    if (!s.closed() || s.outcomes().size() != 2 || s.pending() != 0) std::abort();
    const std::size_t rcpts_sent = count_rcpts(all_out);
    std::size_t rcpt_replies = 0;
    const std::size_t expected_counts[2] = {rcpts1.size(), rcpts2.size()};
    for (std::size_t i = 0; i < 2; ++i) {
        const message_outcome& o = s.outcomes()[i];
        if (o.tag != i + 1 || o.recipients.size() != expected_counts[i]) std::abort();
        for (const recipient_outcome& r : o.recipients) {
            if (r.rcpt_code != 0) ++rcpt_replies;
            if (r.reply.text.find('\r') != std::string::npos) std::abort();
        }
        if (o.kind == outcome_kind::accepted && o.reply.origin != reply_origin::peer) std::abort();
    }
    if (rcpt_replies > rcpts_sent) std::abort();
    return 0;
}
