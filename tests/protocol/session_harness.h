// tests/protocol/session_harness.h: drives a server_session through a scripted dialogue the
// way the shard wiring does (start, feed, commit when a message is ready), with the input
// cut at chosen offsets, and records everything the client and the spool would see.
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/server_session.h"

namespace ringrelay::protocol::testing {

inline constexpr std::string_view test_date = "Sat, 28 Nov 2026 03:35:26 +0000";

class fake_host final : public session_host {
public:
    std::uint64_t next_queue_id() noexcept override { return _next++; }
    std::string_view rfc5322_date() noexcept override { return test_date; }

private:
    std::uint64_t _next = 0x1A2B3C4D5E6F0001ULL;
};

inline server_config test_config() {
    server_config c;
    c.hostname = "mx.example.net";
    c.max_message_size = 10000;
    c.max_recipients = 3;
    c.max_errors = 20;
    c.relay_domains = {"example.org", ".sub.example.com"};
    // Golden transcripts must not depend on how the input is split into reads; the RFC 2920
    // synchronisation check (which does) has its own tests.
    c.sync = pipelining_sync::off;
    return c;
}

inline client_info untrusted_client() { return client_info{"192.0.2.1", relay_trust::untrusted}; }
inline client_info trusted_client() { return client_info{"192.0.2.7", relay_trust::trusted}; }

struct stored_message {
    envelope env;
    std::string text;
};

struct transcript {
    std::string out;
    std::vector<stored_message> messages;
    bool closed = false;
    bool in_transaction = false;
    std::size_t consumed = 0;
};

// Feeds `input` to `session` in pieces ending at each offset in `cuts` (ascending), the way
// the shard wiring does: after every feed(), `on_stop(session)` handles what the session
// stopped for (a ready message, STARTTLS, an AUTH check) and returns true, or returns false
// when nothing is pending; a session that stops for no reason fails the test. Returns the
// bytes consumed.
template <typename OnStop>
std::size_t feed_in_pieces(server_session& session, std::string_view input, const std::vector<std::size_t>& cuts,
                           std::string& out, OnStop on_stop) {
    std::size_t consumed = 0;
    std::size_t begin = 0;
    for (std::size_t i = 0; i <= cuts.size() && !session.closed(); ++i) {
        const std::size_t end = i < cuts.size() ? cuts[i] : input.size();
        std::string_view piece = input.substr(begin, end - begin);
        begin = end;
        for (;;) {
            const std::size_t n = session.feed(piece, out);
            consumed += n;
            piece.remove_prefix(n);
            if (on_stop(session)) continue;
            if (session.closed() || piece.empty()) break;
            ADD_FAILURE() << "feed() stopped early without a reason";
            return consumed;
        }
    }
    return consumed;
}

// Feeds `input` in pieces ending at each offset in `cuts` (ascending), committing ready
// messages with `results` in turn (ok once they run out).
inline transcript run_dialogue(const server_config& config, const client_info& client,
                               std::string_view input, const std::vector<std::size_t>& cuts,
                               const std::vector<commit_result>& results = {}) {
    fake_host host;
    server_session session(config, client, host);
    transcript t;
    session.start(t.out);
    std::size_t next_result = 0;
    t.consumed = feed_in_pieces(session, input, cuts, t.out, [&](server_session& s) {
        if (!s.message_ready()) return false;
        t.messages.push_back({s.message_envelope(), std::string(s.message())});
        const commit_result r = next_result < results.size() ? results[next_result++] : commit_result::ok;
        s.commit_done(r, t.out);
        return true;
    });
    t.closed = session.closed();
    t.in_transaction = session.in_transaction();
    return t;
}

inline bool same(const transcript& a, const transcript& b) {
    if (a.out != b.out || a.closed != b.closed || a.consumed != b.consumed ||
        a.messages.size() != b.messages.size()) {
        return false;
    }
    for (std::size_t i = 0; i < a.messages.size(); ++i) {
        const envelope& x = a.messages[i].env;
        const envelope& y = b.messages[i].env;
        if (a.messages[i].text != b.messages[i].text || x.queue_id != y.queue_id || x.helo != y.helo ||
            x.mail_from != y.mail_from || x.rcpt_to != y.rcpt_to || x.body != y.body || x.smtputf8 != y.smtputf8) {
            return false;
        }
    }
    return true;
}

// Runs the dialogue unsplit, then split at every single offset, then byte by byte; every
// run must equal the unsplit one. Returns the unsplit transcript.
inline transcript run_everywhere(const server_config& config, const client_info& client, std::string_view input,
                                 const std::vector<commit_result>& results = {}) {
    const transcript whole = run_dialogue(config, client, input, {}, results);
    for (std::size_t k = 1; k < input.size(); ++k) {
        const transcript split = run_dialogue(config, client, input, {k}, results);
        if (!same(whole, split)) {
            ADD_FAILURE() << "output differs when split at offset " << k << "\nwhole:\n" << whole.out
                          << "\nsplit:\n" << split.out;
            return whole;
        }
    }
    std::vector<std::size_t> every;
    for (std::size_t k = 1; k < input.size(); ++k) every.push_back(k);
    const transcript bytes = run_dialogue(config, client, input, every, results);
    if (!same(whole, bytes)) {
        ADD_FAILURE() << "output differs when fed byte by byte\nwhole:\n" << whole.out << "\nbytes:\n" << bytes.out;
    }
    return whole;
}

inline const std::string banner = "220 mx.example.net ESMTP ringrelay\r\n";
inline const std::string ehlo_reply =
    "250-mx.example.net\r\n250-PIPELINING\r\n250-SIZE 10000\r\n250-ENHANCEDSTATUSCODES\r\n"
    "250-8BITMIME\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";

}  // namespace ringrelay::protocol::testing
