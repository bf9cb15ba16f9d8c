// protocol/client_session.h: the SMTP client side as a pure state machine (RFC 5321 §3.3,
// §4.1.1, §4.2; RFC 2920 PIPELINING; RFC 3030 CHUNKING/BDAT; RFC 1870 SIZE; RFC 6152
// 8BITMIME; RFC 6531 SMTPUTF8; RFC 2034 / RFC 3463 enhanced status codes). Server bytes in,
// command bytes out; no sockets, clocks, files or threads. Used by outbound delivery (queue/)
// and by ringrelay-bench; one per connection, owned and driven by one shard.
// SECURITY: every byte given to feed() comes from the next hop, which may be hostile. Replies
// are parsed by reply_parser (bounded lines and replies); a reply is attributed only to a
// command already handed to the caller, in order, so no reply can land on the wrong recipient;
// anything out of order closes the session with a protocol error.
//
// Lifecycle: construct -> submit()* (any time) -> feed()* -> quit() -> closed(). The session
// waits for the 220 greeting, says EHLO (HELO if EHLO gets 5xx), then STARTTLS and AUTH when
// configured (below), then runs one transaction per submitted message, in order, on the same
// connection (no RSET between successful transactions). When quit() was called and nothing is left it sends QUIT; closed() becomes
// true on the reply to QUIT (also after a refused greeting or RSET), on 421, on a protocol error, or on a failed greeting. The caller
// sends whatever is in `out`, then closes the connection. Timeouts are the caller's: on one it
// simply closes and calls on_connection_lost().
//
// Parts: this unit is the transaction engine; the opening up to the first MAIL (greeting,
// EHLO/HELO, STARTTLS, AUTH) is decided by client_negotiation, the EHLO reply is read by
// ehlo_reply, bodies are put on the wire by body_encoding, and the types are in client_types.h.
//
// Pipelining (RFC 2920 §3.1): when the peer offers PIPELINING, MAIL, every RCPT and DATA go in
// one write and replies are matched to them in order; otherwise one command per reply. With
// CHUNKING, BDAT waits for the RCPT replies (one more round trip) so that no body is sent when
// every recipient was refused. Every recipient refused: the body is not sent; a pipelined DATA
// that got 354 anyway is closed with a lone "." whose reply is ignored, a refused DATA (or the
// lock-step case) is followed by RSET. A refused DATA, BDAT or end of data fails the message
// with that reply. A negative reply to RSET ends the connection (QUIT).
//
// Transactions back to back (RFC 2920 §3.1: message content may be the first "command" of a
// group; client_config::pipeline_transactions): once a message's body has been appended, the
// next submitted message's MAIL, RCPTs and DATA (with CHUNKING: MAIL and RCPTs; its BDAT still
// waits for their replies) are appended right behind it, so each message costs one write and
// one round trip. At most two transactions are open then: one awaiting only its end-of-data
// reply, the next one's envelope. The end of data ends the transaction whatever its reply
// (RFC 5321 §4.1.1.4), so no RSET is ever needed between the two; the one exception is a
// refused BDAT LAST, after which this client sends RSET as for a lone message (the peer's state
// may be unknown: RFC 1830, before RFC 3030, required it): the envelope pipelined behind it is
// void, its replies are ignored, RSET follows, and that message is sent again from MAIL. A
// message whose MAIL was sent and that gets no final reply (421, protocol error, connection
// lost) ends as transient_failure (421) or protocol_error, never not_attempted.
//
// STARTTLS (RFC 3207), client_config::starttls: after a positive EHLO reply listing STARTTLS
// the session sends STARTTLS alone (it is a synchronisation point: nothing is pipelined behind
// it). On its 220, feed() stops right after that reply and returns how many octets it consumed;
// tls_requested() is then true and the host must start the TLS handshake on the connection.
// Whatever the peer sent behind the 220, in the same read or later, is not SMTP: response
// injection (the client-side twin of CVE-2011-0411) is defeated because feed() refuses to read
// anything until on_tls_established() (it returns 0), so the host can only discard those bytes
// (or hand them to the TLS engine, which fails the handshake on them). on_tls_established()
// forgets everything learnt before TLS (RFC 3207 §4.2) and says EHLO again; on_tls_failed()
// (the handshake failed, or the connection died during it) closes the session: every message
// fails transiently with a local 451 4.7.5, and the host decides whether to retry in plaintext
// on a new connection. With tls_use::required, a peer that does not list STARTTLS (or got
// HELO) or refuses it closes the session before any MAIL: QUIT is sent and every message fails
// transiently with a local 451 4.7.4 (not offered) or 451 4.7.5 (refused, the peer's reply
// quoted); mail is never sent in clear. With when_offered a refusal carries on in plaintext.
//
// AUTH (RFC 4954), client_config::auth_user non-empty: after the last EHLO (so after TLS), the
// session authenticates with PLAIN (initial response, §4) if offered, else LOGIN, before the
// first MAIL. Configured credentials are never skipped: a peer offering neither mechanism, a
// connection without TLS (unless auth_without_tls allows it), or a refused AUTH (535 5.7.8,
// or any 4xx/5xx) fails every message transiently and QUITs. Transient, not permanent,
// because a rejected login is the relay operator's configuration problem, not the mail's:
// Postfix's default smtp_sasl_auth_soft_bounce = yes defers in the same case, so fixing the
// credentials lets the queued mail go. The peer's reply is kept in the outcome.
//
// Every submitted message gets exactly one message_outcome, reported in submit order; once
// closed() every message has one. outcomes() views them until release_outcomes().
//
// Output: commands, and message bodies, are appended to the caller's `out`. A DATA body is
// copied with dot-stuffing (RFC 5321 §4.5.2) and line ends normalized (below); a BDAT body is
// copied normalized. Normalization (body_encoding.h): a bare LF or a bare CR becomes CRLF (what
// most MTAs do; RFC 5321 §2.3.8 forbids sending them), and a body not ending in CRLF gets one;
// SIZE and BDAT lengths count the normalized octets.
//
// Bodies in pieces (outbound_message::source == body_source::pieces; a large body streamed from
// the spool, never whole in memory): the envelope goes as for any message; when the body is due
// (DATA got 354; with CHUNKING, the RCPT replies are in) wants_body() becomes true and the
// caller feeds the body with feed_body(), piece by piece, as its pieces become available, the
// last one marked body_piece::last. The encoding state crosses the pieces (body_encoder), so a
// DATA body's octets on the wire are exactly those of the same body given whole. BDAT sends
// one chunk per piece (RFC 3030 §2: "BDAT n" CRLF, n the piece's normalized octets; the last
// "BDAT n LAST"); with PIPELINING the chunks go without waiting for their replies, else each
// waits for the previous one's (body_piece_welcome()). A refused chunk fails the message with
// that reply: no more chunks, the replies to the ones already sent are ignored, RSET follows
// (and a next envelope pipelined behind a LAST chunk is void, as behind a refused BDAT LAST).
// Nothing is pipelined behind a body until its last piece. A caller that cannot supply the
// rest calls abandon_body() and drops the connection: the end of data is never sent, so the
// peer discards the partial message (RFC 5321 §4.1.1.4: only the end of data completes it).
// The per-message path allocates nothing
// once its buffers have grown to the largest message/reply seen (outcome strings keep their
// capacity).
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/body_encoding.h"       // normalized_body_size(), append_normalized_body()
#include "protocol/client_negotiation.h"  // greeting, EHLO/HELO, STARTTLS, AUTH
#include "protocol/client_types.h"        // client_config, outbound_message, message_outcome, ...
#include "protocol/ehlo_reply.h"          // peer_extensions
#include "protocol/reply_parser.h"

namespace ringrelay::protocol {

class client_session {
public:
    explicit client_session(client_config config);
    client_session(const client_session&) = delete;
    client_session& operator=(const client_session&) = delete;

    // Queues a message (see outbound_message for lifetimes); if the session is idle its MAIL
    // (and, when pipelining, the rest of the envelope) is appended to `out` now, as it is when
    // the only open transaction awaits just its end-of-data reply and transactions are
    // pipelined. A message the session refuses locally, or submitted after close, gets its
    // outcome immediately (or, refused while another is open, right after that one's).
    void submit(const outbound_message& message, std::string& out);

    // Reads replies from `in` (owned by the caller, only read during the call; a partial reply
    // is copied inside); appends commands and bodies to `out`. A reply is accepted only for a
    // command appended to `out` before this call: `out` is assumed sent. Input after close is
    // ignored (and counted as consumed). Returns the octets consumed: all of `in`, except when
    // the reply to STARTTLS was 220 (tls_requested() is then true): it stops right behind that
    // reply, and while the handshake is pending it consumes nothing. The octets it did not
    // consume must never be given to it again as SMTP (RFC 3207 §5, response injection).
    std::size_t feed(std::string_view in, std::string& out);

    // STARTTLS got 220: the host must start the TLS handshake now (see above).
    [[nodiscard]] bool tls_requested() const noexcept { return _state == client_state::tls_handshake; }
    // The handshake completed: EHLO again into `out` (to be sent encrypted).
    void on_tls_established(std::string& out);
    // The handshake failed (or the connection died during it): closed, every message fails
    // transiently with a local "451 4.7.5 TLS handshake failed: <reason>". No QUIT: the
    // connection is unusable. Ignored unless tls_requested().
    void on_tls_failed(std::string_view reason);
    [[nodiscard]] bool tls_active() const noexcept { return _setup.tls_active(); }
    [[nodiscard]] bool authenticated() const noexcept { return _setup.authenticated(); }
    // True once the session is past the greeting, EHLO, STARTTLS and AUTH: it can carry mail.
    [[nodiscard]] bool ready() const noexcept {
        return _state == client_state::idle || _state == client_state::transaction;
    }

    // A body given in pieces (above). wants_body(): the oldest open message wants its body now,
    // until its last piece is fed or the transaction no longer wants it (a chunk refused, 421,
    // the session closed). body_piece_welcome(): a piece may be fed now (wants_body(), and a
    // BDAT chunk without PIPELINING has its reply).
    [[nodiscard]] bool wants_body() const noexcept { return _body_wanted; }
    [[nodiscard]] bool body_piece_welcome() const noexcept;
    // Appends the next piece of the body (`piece` is the caller's, read during the call only),
    // encoded (DATA: normalized and dot-stuffed, the last followed by "." CRLF; BDAT: one
    // chunk, none for a non-last piece that adds no octet). Only while body_piece_welcome().
    void feed_body(std::string_view piece, body_piece which, std::string& out);
    // The caller cannot supply the rest of the body (a read failed or a record did not check
    // mid-body): the message fails with `reply` (transient_failure), the session closes
    // (close_reason::body_abandoned, session_reply() = reply) without ending the data, queued
    // messages are not attempted, and nothing more is written: the caller must drop the
    // connection (no QUIT). Only while wants_body().
    void abandon_body(const outcome_reply& reply);

    // No more messages: once every submitted message has its outcome, send QUIT.
    void quit(std::string& out);

    // The connection died (EOF, error, timeout): closed, every open message gets an outcome.
    void on_connection_lost();

    [[nodiscard]] std::span<const message_outcome> outcomes() const noexcept;
    // Forgets the outcomes reported so far (their storage is reused).
    void release_outcomes() noexcept;

    [[nodiscard]] bool closed() const noexcept { return _state == client_state::closed; }
    [[nodiscard]] client_state state() const noexcept { return _state; }
    [[nodiscard]] close_reason why_closed() const noexcept { return _close_reason; }
    [[nodiscard]] const peer_extensions& extensions() const noexcept { return _setup.extensions(); }
    // The last reply that failed the connection (greeting, EHLO/HELO, 421); empty otherwise.
    [[nodiscard]] const outcome_reply& session_reply() const noexcept { return _session_reply; }
    // Messages submitted that have no outcome yet.
    [[nodiscard]] std::size_t pending() const noexcept { return _queue.size() - _queue_head; }

private:
    // What each outstanding command's reply means, in send order.
    enum class awaiting : std::uint8_t {
        setup,      // the greeting, or a command of the negotiation (_setup): its reply goes there
        mail, rcpt, data, data_end, dot, bdat, rset, quit,
        bdat_chunk,  // a BDAT chunk before the LAST one of a body given in pieces
        discarded,  // a command of an envelope made void by a refused BDAT LAST: reply ignored
    };
    struct expected_reply {
        awaiting what;
        std::uint8_t tx = 0;     // the transaction slot (_tx) it belongs to
        std::uint32_t rcpt = 0;  // rcpt: index into rcpt_to
    };
    // One open transaction. The oldest open one is _tx[_tx_first] and sends _queue[_queue_head];
    // a second one (pipelined behind the first's end of data) is the other slot and
    // _queue[_queue_head + 1]. Slots and their buffers are reused.
    struct transaction {
        message_outcome work;            // its outcome, built up
        std::uint64_t body_size = 0;     // normalized size of its body
        std::uint32_t rcpt_accepted = 0;
        bool decided = false;            // work is final; only the RSET reply is outstanding
        bool mail_accepted = false;      // the peer has an open transaction (RFC 5321 §4.1.4)
        bool mail_refused = false;
        bool body_sent = false;          // only the end-of-data (BDAT) reply is outstanding
        bool restart = false;            // void (behind a refused BDAT LAST): send again after RSET
    };

    void on_reply(const parsed_reply& r, std::string& out);
    void on_transaction_reply(const expected_reply& e, const parsed_reply& r, std::string& out);
    // Acts on the negotiation's step: await its command, wait for the handshake, start the
    // transactions, or close.
    void after_setup(negotiation_step step, std::string& out);
    // The negotiation failed: closes before any transaction (no QUIT sent here).
    void close_setup();
    void start_next(std::string& out);
    void pipeline_ahead(std::string& out);
    void open_transaction(std::uint8_t slot, std::string& out);
    [[nodiscard]] bool refused_locally(const outbound_message& m, transaction& t);
    void send_mail(std::uint8_t slot, std::string& out);
    void send_rcpt(std::uint8_t slot, std::uint32_t index, std::string& out);
    void after_rcpts(std::uint8_t slot, std::string& out);
    void send_body_data(std::uint8_t slot, std::string& out);
    void send_bdat(std::uint8_t slot, std::string& out);
    // The body is due and comes in pieces: wants_body() from now on.
    void begin_body_pieces(dot_stuffing stuffing);
    // The body of `slot` is all on its way: the end-of-data reply is all it awaits.
    void body_complete(std::uint8_t slot, std::string& out);
    // A BDAT chunk before the last was refused (RFC 3030 §2).
    void chunk_refused(std::uint8_t slot, const parsed_reply& r, std::string& out);
    void void_next_envelope();
    void finish_transaction(std::uint8_t slot, outcome_kind kind, std::string& out);
    void publish_transaction();
    void after_publish(std::string& out);
    void advance_queue() noexcept;
    void fail_open(outcome_kind kind, const outcome_reply& reply);
    // Queued messages get `queued` (not_attempted: requeue them; transient_failure: the
    // session's reply is their failure).
    void fail_connection(close_reason why, outcome_kind queued = outcome_kind::not_attempted);
    void send_quit(std::string& out);
    void expect(awaiting what, std::uint8_t slot = 0, std::uint32_t rcpt = 0);
    void clear_if_answered() noexcept;
    void begin_outcome(const outbound_message& m, message_outcome& work);
    void publish_outcome(message_outcome& work);
    void protocol_error(std::string_view what);
    void mark_sent() noexcept { _expected_sent = _expected.size(); }
    // The message sent in `slot` (which must be open).
    [[nodiscard]] const outbound_message& message_of(std::uint8_t slot) const noexcept {
        return _queue[_queue_head + (slot == _tx_first ? 0 : 1)];
    }
    [[nodiscard]] bool use_pipelining() const noexcept;
    [[nodiscard]] bool use_chunking() const noexcept;

    // Fixed after construction.
    const client_config _config;
    client_negotiation _setup{_config};  // up to the first MAIL; then only read (extensions)

    // Shard-local; buffers reused across transactions.
    reply_parser _parser;
    std::vector<outbound_message> _queue;     // submitted; [_queue_head] is the oldest unfinished
    std::size_t _queue_head = 0;
    std::vector<expected_reply> _expected;    // outstanding commands; [_expected_head] is next
    std::size_t _expected_head = 0;
    std::size_t _expected_sent = 0;           // entries below this were handed to the caller
    std::vector<message_outcome> _outcomes;   // [0, _outcome_count) reported; the rest spare
    std::size_t _outcome_count = 0;
    transaction _tx[2];                       // open transactions, oldest _tx[_tx_first]
    std::uint8_t _tx_first = 0;
    std::uint8_t _open = 0;                   // open transactions: 0, 1 or 2
    message_outcome _spare;                   // outcomes of messages never started
    outcome_reply _session_reply;
    client_state _state = client_state::greeting;
    close_reason _close_reason = close_reason::none;
    bool _quit_requested = false;
    // The body being given in pieces: always the oldest open transaction's.
    body_encoder _encoder;
    bool _body_wanted = false;
    bool _body_chunks = false;             // BDAT chunks, else DATA
    std::uint32_t _chunks_unanswered = 0;  // bdat_chunk replies outstanding
    outcome_kind _late_kind = outcome_kind::not_attempted;  // for messages submitted after close
};

}  // namespace ringrelay::protocol
