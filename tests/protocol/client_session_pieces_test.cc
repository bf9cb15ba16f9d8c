// tests/protocol/client_session_pieces_test.cc: protocol/client_session.h with bodies given in
// pieces (body_source::pieces, feed_body(); issue 15: a large body streamed from the spool is
// never held whole). What is checked: over thousands of random bodies (CR, LF, '.', text) cut
// into random pieces, a DATA body given in pieces puts exactly the octets on the wire that the
// same body given whole does (the carried CR and line-start state); with CHUNKING one BDAT
// chunk per piece whose length is its normalized octets, the last one LAST, and the chunks
// together are the whole BDAT body; without PIPELINING each chunk waits for the previous
// one's reply; a refused chunk stops the body, ignores the replies to chunks already sent and
// resets; abandon_body() fails the message transiently with the caller's reply and closes
// without ending the data; a 421 mid-body stops the body.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/body_encoding.h"
#include "protocol/client_session.h"

namespace ringrelay::protocol {
namespace {

const std::string greeting = "220 mx.example.net ESMTP\r\n";
// SIZE without a limit, so that every random body is sent.
const std::string ehlo_data = "250-mx.example.net\r\n250-PIPELINING\r\n250-SIZE\r\n250 8BITMIME\r\n";
const std::string ehlo_chunking = "250-mx.example.net\r\n250-PIPELINING\r\n250-SIZE\r\n250 CHUNKING\r\n";
const std::string ehlo_chunking_lockstep = "250-mx.example.net\r\n250-SIZE\r\n250 CHUNKING\r\n";

client_config test_config() {
    client_config c;
    c.helo_name = "relay.example.com";
    return c;
}

// The pieces `cuts` (ascending offsets inside body) make of body.
std::vector<std::string_view> cut(std::string_view body, const std::vector<std::size_t>& cuts) {
    std::vector<std::string_view> pieces;
    std::size_t at = 0;
    for (const std::size_t c : cuts) {
        pieces.push_back(body.substr(at, c - at));
        at = c;
    }
    pieces.push_back(body.substr(at));
    return pieces;
}

// Submits message `tag` from a@example.com to `rcpts` (which must outlive the session), its body
// to come in pieces, `pieces_size` normalized octets in all; then feeds the greeting and
// `ehlo_reply`, so that the session has sent MAIL and RCPT and waits for their replies.
void submit_in_pieces(client_session& s, std::uint64_t tag, const std::vector<std::string>& rcpts,
                      std::uint64_t pieces_size, const std::string& ehlo_reply, std::string& out) {
    outbound_message m;
    m.tag = tag;
    m.mail_from = "a@example.com";
    m.rcpt_to = rcpts;
    m.source = body_source::pieces;
    m.pieces_size = pieces_size;
    s.submit(m, out);
    s.feed(greeting, out);
    s.feed(ehlo_reply, out);
}

// One message through a pipelined DATA dialogue up to QUIT; its body whole (cuts == nullptr)
// or in the pieces cuts make. Returns everything the client wrote.
std::string run_data(const std::string& body, const std::vector<std::size_t>* cuts) {
    client_session s(test_config());
    const std::vector<std::string> rcpts = {"b@example.org"};
    outbound_message m;
    m.tag = 1;
    m.mail_from = "a@example.com";
    m.rcpt_to = rcpts;
    if (cuts == nullptr) {
        m.body = body;
    } else {
        m.source = body_source::pieces;
        m.pieces_size = normalized_body_size(body);
    }
    std::string out;
    s.submit(m, out);
    s.quit(out);
    s.feed(greeting, out);
    s.feed(ehlo_data, out);
    s.feed("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n", out);
    if (cuts != nullptr) {
        EXPECT_TRUE(s.wants_body());
        const auto pieces = cut(body, *cuts);
        for (std::size_t i = 0; i < pieces.size(); ++i) {
            EXPECT_TRUE(s.body_piece_welcome());
            s.feed_body(pieces[i], i + 1 == pieces.size() ? body_piece::last : body_piece::more, out);
        }
        EXPECT_FALSE(s.wants_body());
    }
    s.feed("250 2.0.0 Ok: queued\r\n", out);
    s.feed("221 2.0.0 Bye\r\n", out);
    EXPECT_TRUE(s.closed());
    EXPECT_EQ(s.outcomes().size(), 1U);
    if (!s.outcomes().empty()) {
        EXPECT_EQ(s.outcomes()[0].kind, outcome_kind::accepted);
    }
    return out;
}

// Random bodies over the octets that matter (CR, LF, '.') and text; random cuts.
struct random_bodies {
    std::mt19937 rng{15};
    std::string body() {
        const char alphabet[] = {'\r', '\n', '.', 'a', 'b', ' '};
        std::string b(std::uniform_int_distribution<std::size_t>(0, 200)(rng), ' ');
        for (char& c : b) c = alphabet[std::uniform_int_distribution<int>(0, 5)(rng)];
        return b;
    }
    std::vector<std::size_t> cuts(std::size_t size) {
        std::vector<std::size_t> c;
        const int n = std::uniform_int_distribution<int>(0, 8)(rng);
        for (int i = 0; i < n; ++i) c.push_back(std::uniform_int_distribution<std::size_t>(0, size)(rng));
        std::sort(c.begin(), c.end());  // empty pieces (equal cuts) included
        return c;
    }
};

TEST(ClientSessionPieces, DataBodyInPiecesIsByteIdenticalToTheWholeBody) {
    random_bodies r;
    for (int i = 0; i < 3000; ++i) {
        const std::string body = r.body();
        const std::vector<std::size_t> cuts = r.cuts(body.size());
        const std::string whole = run_data(body, nullptr);
        const std::string pieces = run_data(body, &cuts);
        ASSERT_EQ(pieces, whole) << "body #" << i << " (" << body.size() << " octets, " << cuts.size() << " cuts)";
    }
}

// Every split of bodies whose pieces end on a CR, start with the LF after it, or a '.' at a
// line start.
TEST(ClientSessionPieces, CarriesCrAndLineStartAcrossEveryCut) {
    for (const std::string body : {"a\r\n.b\r\n", "\r\r\n..\r\n.", "x\r", ".\n.\r.\r\n", "\r\n", "."}) {
        const std::string whole = run_data(body, nullptr);
        for (std::size_t k = 0; k <= body.size(); ++k) {
            const std::vector<std::size_t> cuts = {k};
            EXPECT_EQ(run_data(body, &cuts), whole) << "cut at " << k;
        }
        std::vector<std::size_t> every;
        for (std::size_t k = 1; k < body.size(); ++k) every.push_back(k);
        EXPECT_EQ(run_data(body, &every), whole) << "octet by octet";
    }
}

struct chunk {
    std::uint64_t length = 0;
    bool last = false;
    std::string bytes;
};

// The BDAT chunks in `wire` (which must be nothing but chunks).
std::vector<chunk> parse_chunks(std::string_view wire) {
    std::vector<chunk> chunks;
    while (!wire.empty()) {
        const std::size_t eol = wire.find("\r\n");
        if (!wire.starts_with("BDAT ") || eol == std::string_view::npos) {
            ADD_FAILURE() << "not a BDAT chunk: " << wire.substr(0, 40);
            return chunks;
        }
        std::string_view command = wire.substr(5, eol - 5);
        chunk c;
        if (command.ends_with(" LAST")) {
            c.last = true;
            command.remove_suffix(5);
        }
        c.length = std::stoull(std::string(command));
        wire.remove_prefix(eol + 2);
        if (wire.size() < c.length) {
            ADD_FAILURE() << "a chunk shorter than its length";
            return chunks;
        }
        c.bytes = wire.substr(0, c.length);
        wire.remove_prefix(c.length);
        chunks.push_back(c);
    }
    return chunks;
}

TEST(ClientSessionPieces, BdatSendsOneChunkPerPieceWithItsNormalizedLength) {
    random_bodies r;
    for (int i = 0; i < 2000; ++i) {
        const std::string body = r.body();
        const auto pieces = cut(body, r.cuts(body.size()));
        client_session s(test_config());
        const std::vector<std::string> rcpts = {"b@example.org"};
        std::string out;
        submit_in_pieces(s, 1, rcpts, normalized_body_size(body), ehlo_chunking, out);
        out.clear();
        s.feed("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n", out);
        ASSERT_TRUE(out.empty()) << "nothing before the first piece";
        ASSERT_TRUE(s.wants_body());
        for (std::size_t k = 0; k < pieces.size(); ++k) {
            ASSERT_TRUE(s.body_piece_welcome()) << "pipelined: chunks go without waiting";
            s.feed_body(pieces[k], k + 1 == pieces.size() ? body_piece::last : body_piece::more, out);
        }
        const std::vector<chunk> chunks = parse_chunks(out);
        ASSERT_FALSE(chunks.empty());
        ASSERT_LE(chunks.size(), pieces.size());
        std::string joined;
        for (std::size_t k = 0; k < chunks.size(); ++k) {
            EXPECT_EQ(chunks[k].last, k + 1 == chunks.size()) << "LAST on the last chunk only";
            if (k + 1 < chunks.size()) {
                EXPECT_GT(chunks[k].length, 0U) << "no empty chunk before the last";
            }
            joined += chunks[k].bytes;
        }
        std::string whole;
        append_normalized_body(whole, body, dot_stuffing::off);
        ASSERT_EQ(joined, whole) << "body #" << i;
        // Every chunk gets its reply; the message is accepted on the LAST one's.
        std::string replies;
        for (std::size_t k = 0; k < chunks.size(); ++k) replies += "250 2.0.0 Ok\r\n";
        out.clear();
        s.feed(replies, out);
        ASSERT_EQ(s.outcomes().size(), 1U);
        EXPECT_EQ(s.outcomes()[0].kind, outcome_kind::accepted);
        EXPECT_EQ(s.state(), client_state::idle);
    }
}

// Submits one message in pieces to a session that offers `ehlo_reply` and has accepted MAIL and
// RCPT; `out` is cleared.
void open_chunked(client_session& s, const std::string& ehlo_reply, std::string& out,
                  const std::vector<std::string>& rcpts) {
    submit_in_pieces(s, 7, rcpts, 100, ehlo_reply, out);
    if (ehlo_reply == ehlo_chunking_lockstep) {
        s.feed("250 2.1.0 Ok\r\n", out);
        s.feed("250 2.1.5 Ok\r\n", out);
    } else {
        s.feed("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n", out);
    }
    out.clear();
}

TEST(ClientSessionPieces, BdatChunkLengthsFollowCarriedState) {
    client_session s(test_config());
    std::string out;
    const std::vector<std::string> rcpts = {"b@example.org"};
    open_chunked(s, ehlo_chunking, out, rcpts);
    s.feed_body("abc\r", body_piece::more, out);  // the CR is a line end at once
    s.feed_body("\n", body_piece::more, out);     // its LF: nothing, no chunk
    s.feed_body(".def", body_piece::more, out);   // no stuffing in BDAT
    s.feed_body("", body_piece::last, out);       // the unterminated line gets its CRLF
    EXPECT_EQ(out, "BDAT 5\r\nabc\r\nBDAT 4\r\n.defBDAT 2 LAST\r\n\r\n");
}

TEST(ClientSessionPieces, BdatWithoutPipeliningWaitsForEachChunksReply) {
    client_session s(test_config());
    std::string out;
    const std::vector<std::string> rcpts = {"b@example.org"};
    open_chunked(s, ehlo_chunking_lockstep, out, rcpts);
    ASSERT_TRUE(s.body_piece_welcome());
    s.feed_body("one\r\n", body_piece::more, out);
    EXPECT_EQ(out, "BDAT 5\r\none\r\n");
    EXPECT_TRUE(s.wants_body());
    EXPECT_FALSE(s.body_piece_welcome()) << "RFC 3030: one chunk at a time without PIPELINING";
    out.clear();
    s.feed("250 2.0.0 5 octets\r\n", out);
    EXPECT_TRUE(out.empty());
    ASSERT_TRUE(s.body_piece_welcome());
    s.feed_body("two\r\n", body_piece::last, out);
    EXPECT_EQ(out, "BDAT 5 LAST\r\ntwo\r\n");
    s.feed("250 2.0.0 queued\r\n", out);
    ASSERT_EQ(s.outcomes().size(), 1U);
    EXPECT_EQ(s.outcomes()[0].kind, outcome_kind::accepted);
}

TEST(ClientSessionPieces, RefusedChunkStopsTheBodyIgnoresLaterChunksAndResets) {
    client_session s(test_config());
    std::string out;
    const std::vector<std::string> rcpts = {"b@example.org"};
    open_chunked(s, ehlo_chunking, out, rcpts);
    s.feed_body("one\r\n", body_piece::more, out);
    s.feed_body("two\r\n", body_piece::more, out);
    out.clear();
    s.feed("552 5.3.4 too big\r\n", out);
    EXPECT_FALSE(s.wants_body()) << "RFC 3030 §2: no more chunks after a refused one";
    EXPECT_EQ(out, "RSET\r\n");
    EXPECT_TRUE(s.outcomes().empty()) << "decided on the RSET's reply";
    out.clear();
    s.feed("552 5.3.4 too big\r\n", out);  // the second chunk's, discarded by the peer
    EXPECT_TRUE(out.empty());
    s.feed("250 2.0.0 Reset\r\n", out);
    ASSERT_EQ(s.outcomes().size(), 1U);
    EXPECT_EQ(s.outcomes()[0].kind, outcome_kind::permanent_failure);
    EXPECT_EQ(s.outcomes()[0].reply.code, 552);
    EXPECT_EQ(s.state(), client_state::idle);
}

TEST(ClientSessionPieces, AbandonedBodyFailsTransientlyAndClosesWithoutEndingTheData) {
    client_session s(test_config());
    const std::vector<std::string> rcpts = {"b@example.org", "c@example.org"};
    std::string out;
    submit_in_pieces(s, 9, rcpts, 10, ehlo_data, out);
    s.feed("250 Ok\r\n250 Ok\r\n250 Ok\r\n354 go\r\n", out);
    out.clear();
    s.feed_body("half a\r\n", body_piece::more, out);
    EXPECT_EQ(out, "half a\r\n");
    out.clear();
    outcome_reply reply;
    reply.assign_local(451, enhanced_status{4, 3, 0}, "cannot read the message back from the spool (x offset 0): EIO");
    s.abandon_body(reply);
    EXPECT_TRUE(out.empty()) << "no end of data, no QUIT: the caller drops the connection";
    EXPECT_TRUE(s.closed());
    EXPECT_EQ(s.why_closed(), close_reason::body_abandoned);
    ASSERT_EQ(s.outcomes().size(), 1U);
    const message_outcome& o = s.outcomes()[0];
    EXPECT_EQ(o.kind, outcome_kind::transient_failure);
    EXPECT_EQ(o.reply.code, 451);
    EXPECT_EQ(o.reply.origin, reply_origin::local);
    ASSERT_EQ(o.recipients.size(), 2U);
    for (const recipient_outcome& r : o.recipients) {
        EXPECT_EQ(r.kind, outcome_kind::transient_failure);
        EXPECT_EQ(r.reply.text, reply.text);
    }
}

TEST(ClientSessionPieces, ShutdownMidBodyStopsTheBody) {
    client_session s(test_config());
    const std::vector<std::string> rcpts = {"b@example.org"};
    std::string out;
    submit_in_pieces(s, 3, rcpts, 0, ehlo_data, out);
    s.feed("250 Ok\r\n250 Ok\r\n354 go\r\n", out);
    s.feed_body("some\r\n", body_piece::more, out);
    s.feed("421 4.3.2 shutting down\r\n", out);
    EXPECT_FALSE(s.wants_body());
    EXPECT_TRUE(s.closed());
    ASSERT_EQ(s.outcomes().size(), 1U);
    EXPECT_EQ(s.outcomes()[0].kind, outcome_kind::transient_failure);
}

}  // namespace
}  // namespace ringrelay::protocol
