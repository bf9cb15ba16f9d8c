// protocol/client_session.cc: the SMTP client state machine (RFC 5321 §3.3 transactions,
// §4.1.1 commands, §4.2 reply classes; RFC 2920 §3.1 pipelined groups; RFC 3030 §2 BDAT;
// RFC 1870 SIZE). Reply syntax lives in reply_parser.cc, the opening (greeting, EHLO/HELO,
// STARTTLS, AUTH) in client_negotiation.cc, EHLO keywords in ehlo_reply.cc, dot-stuffing and
// line ends in body_encoding.cc; this file only sequences commands and attributes replies.
// SECURITY: replies come from the next hop. Each complete reply is matched to the oldest
// outstanding command already handed to the caller (_expected, _expected_sent); a reply with
// no such command, a reply class a command cannot get, or a parse error closes the session.
// Nothing here grows with peer input: _expected grows only with the caller's recipients.
//
// The opening (greeting, EHLO/HELO, STARTTLS, AUTH) follows client_negotiation.cc's table; when
// it fails, the session closes (close_setup). From MAIL on, by outstanding command (RFC 5321
// §4.3.2 lists the codes each may get):
// | command  | 2xx                        | 354                     | 4xx / 5xx                     |
// |----------|----------------------------|-------------------------|-------------------------------|
// | MAIL     | next RCPT (lock-step)      | protocol error          | message fails with it         |
// | RCPT i   | recipient i accepted       | protocol error          | recipient i refused with it   |
// | DATA     | protocol error             | body + "." if any RCPT  | message fails (RSET if MAIL   |
// |          |                            | accepted, else "." only | was accepted)                 |
// |          |                            | (RFC 2920 §3.1)         |                               |
// | "."      | accepted                   | protocol error          | message fails (§4.1.1.4); no  |
// |          |                            |                         | RSET: "." ends the transaction|
// | lone "." | ignored (RFC 2920 §3.1)    | ignored                 | ignored                       |
// | BDAT LAST| accepted                   | protocol error          | message fails, RSET (RFC 3030)|
// |          |                            |                         | and a next envelope sent      |
// |          |                            |                         | behind it is void (see below) |
// | (void)   | ignored                    | protocol error          | ignored                       |
// | RSET     | idle                       | protocol error          | QUIT (state unknown)          |
// | QUIT     | closed                     | closed                  | closed                        |
// Any 421, to any command or unsolicited, closes at once (§3.8): the open messages (one, or two
// when pipelined back to back) fail transiently, queued ones are not attempted.
//
// Back to back (RFC 2920 §3.1, client_config::pipeline_transactions): right after a body, the
// next message's envelope is opened in the second transaction slot. Its replies come after
// the first's end-of-data reply, so the first is always published before the second is
// decided, and the submit order of outcomes holds. A refused BDAT LAST is the one reply after
// which the first transaction still wants an RSET: the second's envelope is then void (its
// outstanding entries become `discarded`), RSET goes behind it, and on the RSET's 250 the
// second message starts over from MAIL.
#include "protocol/client_session.h"

#include <cstddef>
#include <utility>

#include "core/ascii.h"
#include "core/invariant.h"

namespace ringrelay::protocol {
namespace {

inline constexpr std::size_t max_path_octets = 254;  // mailbox inside <...>; RFC 5321 §4.5.3.1.3

constexpr outcome_kind kind_of(std::uint16_t code) noexcept {
    if (code < 300) return outcome_kind::accepted;
    if (code >= 400 && code < 500) return outcome_kind::transient_failure;
    return outcome_kind::permanent_failure;
}

// An address we would put between angle brackets: no controls, brackets or spaces outside
// what the server side already validated, and short enough for one command line.
bool sendable_path(std::string_view path) noexcept {
    if (path.size() > max_path_octets) return false;
    for (const char ch : path) {
        const auto c = static_cast<unsigned char>(ch);
        if (c < 0x20 || c == 0x7f || c == '<' || c == '>') return false;
    }
    return true;
}

}  // namespace

client_session::client_session(client_config config) : _config(std::move(config)) {
    expect(awaiting::setup);
    mark_sent();  // the greeting answers the connection, not a command
}

bool client_session::use_pipelining() const noexcept {
    return extensions().pipelining && _config.pipelining == extension_use::when_offered;
}

bool client_session::use_chunking() const noexcept {
    return extensions().chunking && _config.chunking == extension_use::when_offered;
}

void client_session::expect(awaiting what, std::uint8_t slot, std::uint32_t rcpt) {
    _expected.push_back({what, slot, rcpt});
}

// Once every command sent has its reply the vector is emptied. That happens at least once per
// message, pipelined back to back or not: every group ends with a command (DATA, the last RCPT
// before BDAT, the end of data with nothing queued, RSET) whose reply is handled before the
// next group is written, and it is the last one outstanding.
void client_session::clear_if_answered() noexcept {
    if (_expected_head != _expected.size()) return;
    _expected.clear();
    _expected_head = 0;
    _expected_sent = 0;
}

std::span<const message_outcome> client_session::outcomes() const noexcept {
    return {_outcomes.data(), _outcome_count};
}

void client_session::release_outcomes() noexcept { _outcome_count = 0; }

void client_session::begin_outcome(const outbound_message& m, message_outcome& work) {
    work.tag = m.tag;
    work.kind = outcome_kind::not_attempted;
    work.reply.clear();
    work.recipients.resize(m.rcpt_to.size());
    for (recipient_outcome& r : work.recipients) {
        r.kind = outcome_kind::not_attempted;
        r.reply.clear();
        r.rcpt_code = 0;
    }
}

void client_session::publish_outcome(message_outcome& work) {
    if (_outcome_count == _outcomes.size()) _outcomes.emplace_back();
    std::swap(_outcomes[_outcome_count++], work);
}

// The message at _queue_head has its outcome. The queue is emptied when drained, and its
// finished prefix dropped when a caller keeps it from draining (messages submitted ahead).
void client_session::advance_queue() noexcept {
    ++_queue_head;
    if (_queue_head == _queue.size()) {
        _queue.clear();
        _queue_head = 0;
    } else if (_queue_head >= 32 && _queue_head * 2 >= _queue.size()) {
        _queue.erase(_queue.begin(), _queue.begin() + static_cast<std::ptrdiff_t>(_queue_head));
        _queue_head = 0;
    }
}

void client_session::submit(const outbound_message& message, std::string& out) {
    mark_sent();
    if (_state == client_state::closed || _state == client_state::quitting) {
        begin_outcome(message, _spare);
        _spare.kind = _late_kind;
        for (recipient_outcome& r : _spare.recipients) r.reply = _session_reply;
        _spare.reply = _session_reply;
        publish_outcome(_spare);
        return;
    }
    _queue.push_back(message);
    if (_state == client_state::idle) {
        start_next(out);
    } else if (_state == client_state::transaction) {
        pipeline_ahead(out);
    }
}

void client_session::quit(std::string& out) {
    mark_sent();
    _quit_requested = true;
    if (_state == client_state::idle) send_quit(out);
}

void client_session::send_quit(std::string& out) {
    out.append("QUIT\r\n");
    expect(awaiting::quit);
    _state = client_state::quitting;
}

std::size_t client_session::feed(std::string_view in, std::string& out) {
    mark_sent();
    const std::size_t size = in.size();
    // While the handshake is pending nothing is read (RFC 3207 §5: no byte received before TLS
    // may be taken as a reply after it).
    if (_state == client_state::tls_handshake) return 0;
    while (!in.empty() && _state != client_state::closed) {
        const auto progress = _parser.feed(in);
        if (!progress) {
            protocol_error(describe(progress.error()));
            return size;
        }
        in.remove_prefix(progress->consumed);
        if (progress->complete) {
            on_reply(_parser.reply(), out);
            if (_state == client_state::tls_handshake) return size - in.size();  // the 220 to STARTTLS
        }
    }
    return size;
}

void client_session::on_tls_established(std::string& out) {
    mark_sent();
    if (_state != client_state::tls_handshake) return;
    after_setup(_setup.on_tls_established(out), out);  // EHLO again
}

void client_session::on_tls_failed(std::string_view reason) {
    if (_state != client_state::tls_handshake) return;
    _setup.on_tls_failed(reason);
    close_setup();  // no QUIT: the connection is unusable
}

void client_session::after_setup(negotiation_step step, std::string& out) {
    switch (step) {
    case negotiation_step::command:
        expect(awaiting::setup);
        _state = _setup.state();
        return;
    case negotiation_step::tls_handshake:  // feed() stops right behind the 220
        _state = client_state::tls_handshake;
        return;
    case negotiation_step::ready:
        _state = client_state::idle;
        start_next(out);
        return;
    case negotiation_step::failed:
        close_setup();
        // Still say QUIT (RFC 5321 §3.1, §4.1.1.10), unless the stream is out of sync.
        if (_close_reason != close_reason::protocol_error) send_quit(out);
        return;
    }
}

// No transaction is open yet. A peer refusing us (greeting, EHLO/HELO) leaves the queued
// messages not attempted; a refusal over TLS or AUTH fails them transiently, as it would any
// message submitted later: it is the operator's to fix (or the peer's), not the mail's.
void client_session::close_setup() {
    const close_reason why = _setup.failure_reason();
    _session_reply = _setup.failure();
    const bool transient = why == close_reason::tls_required || why == close_reason::tls_failed ||
                           why == close_reason::auth_failed;
    if (transient) _late_kind = outcome_kind::transient_failure;
    _close_reason = why;
    fail_connection(why, transient ? outcome_kind::transient_failure : outcome_kind::not_attempted);
}

// Every open transaction still undecided ends as `kind` with `reply` (the connection is
// going): its MAIL was sent, so it is never not_attempted.
void client_session::fail_open(outcome_kind kind, const outcome_reply& reply) {
    for (std::uint8_t k = 0; k < _open; ++k) {
        transaction& t = _tx[_tx_first ^ k];
        if (t.decided) continue;
        t.work.kind = kind;
        t.work.reply = reply;
    }
}

void client_session::on_connection_lost() {
    if (_state == client_state::closed) return;
    if (_state == client_state::tls_handshake) {
        on_tls_failed("connection lost during the handshake");
        return;
    }
    if (_state == client_state::quitting && _queue_head == _queue.size()) {
        fail_connection(_close_reason == close_reason::none ? close_reason::quit : _close_reason);
        return;
    }
    outcome_reply lost;
    lost.assign_local(0, {}, "connection lost");
    fail_open(outcome_kind::protocol_error, lost);
    fail_connection(close_reason::connection_lost);
}

void client_session::protocol_error(std::string_view what) {
    _session_reply.assign_local(0, {}, what);
    fail_open(outcome_kind::protocol_error, _session_reply);
    fail_connection(close_reason::protocol_error);
}

// Closes the session: the open transactions (whose kinds the caller has set, fail_open) and
// then every queued message get their outcomes, in order.
void client_session::fail_connection(close_reason why, outcome_kind queued) {
    while (_open > 0) publish_transaction();
    while (_queue_head < _queue.size()) {
        begin_outcome(_queue[_queue_head], _spare);
        _spare.kind = queued;
        _spare.reply = _session_reply;
        for (recipient_outcome& r : _spare.recipients) {
            r.kind = queued;
            r.reply = _session_reply;
        }
        publish_outcome(_spare);
        advance_queue();
    }
    _queue.clear();
    _queue_head = 0;
    _expected.clear();
    _expected_head = 0;
    _expected_sent = 0;
    _body_wanted = false;
    _state = client_state::closed;
    if (_close_reason == close_reason::none) _close_reason = why;
}

void client_session::on_reply(const parsed_reply& r, std::string& out) {
    if (_expected_head == _expected.size()) {
        if (r.code == 421) {  // a server shutting down may say so unasked (RFC 5321 §3.8)
            _session_reply.assign_peer(r);
            fail_open(outcome_kind::transient_failure, _session_reply);
            fail_connection(close_reason::peer_shutdown);
            return;
        }
        protocol_error("unsolicited reply");
        return;
    }
    if (_expected_head >= _expected_sent) {
        protocol_error("reply before its command was sent (RFC 2920 §3.1)");
        return;
    }
    const expected_reply e = _expected[_expected_head++];
    clear_if_answered();
    if (e.what == awaiting::quit) {
        fail_connection(close_reason::quit);
        return;
    }
    if (r.code == 421) {
        _session_reply.assign_peer(r);
        fail_open(outcome_kind::transient_failure, _session_reply);
        fail_connection(close_reason::peer_shutdown);
        return;
    }
    if (e.what == awaiting::setup) {
        after_setup(_setup.on_reply(r, out), out);
        return;
    }
    on_transaction_reply(e, r, out);
}

// A message the peer must not see: refused here with a permanent, locally made reply in
// t.work (begun for m). Sets t.body_size either way.
bool client_session::refused_locally(const outbound_message& m, transaction& t) {
    const peer_extensions& x = extensions();
    std::uint16_t code = 0;
    enhanced_status enhanced;
    std::string_view text;
    bool rcpts_ok = !m.rcpt_to.empty();
    for (const std::string& rcpt : m.rcpt_to) rcpts_ok = rcpts_ok && !rcpt.empty() && sendable_path(rcpt);
    t.body_size = m.source == body_source::pieces ? m.pieces_size : normalized_body_size(m.body);
    if (!sendable_path(m.mail_from)) {
        code = 501, enhanced = {5, 1, 7}, text = "5.1.7 sender address cannot be sent";
    } else if (!rcpts_ok) {
        code = 501, enhanced = {5, 1, 3}, text = "5.1.3 missing or unsendable recipient address";
    } else if (m.body_type == body_kind::eight_bit_mime && !x.eight_bit_mime) {
        code = 554, enhanced = {5, 6, 3}, text = "5.6.3 8-bit message but the peer does not offer 8BITMIME";
    } else if (m.utf8 == utf8_envelope::smtputf8 && !x.smtputf8) {
        code = 553, enhanced = {5, 6, 7}, text = "5.6.7 SMTPUTF8 message but the peer does not offer SMTPUTF8";
    } else if (x.size_limit != 0 && t.body_size > x.size_limit) {
        code = 552, enhanced = {5, 3, 4}, text = "5.3.4 message size exceeds the peer's fixed maximum (SIZE)";
    } else {
        return false;
    }
    t.work.kind = outcome_kind::permanent_failure;
    t.work.reply.assign_local(code, enhanced, text);
    for (recipient_outcome& r : t.work.recipients) {
        r.kind = t.work.kind;
        r.reply = t.work.reply;
    }
    return true;
}

// Nothing open: starts the oldest queued message (publishing any refused locally), or says
// QUIT when asked and nothing is left, or goes idle.
void client_session::start_next(std::string& out) {
    RR_ASSERT(_open == 0);
    while (_queue_head < _queue.size()) {
        transaction& t = _tx[_tx_first];
        begin_outcome(_queue[_queue_head], t.work);
        if (refused_locally(_queue[_queue_head], t)) {
            publish_outcome(t.work);
            advance_queue();
            continue;
        }
        open_transaction(_tx_first, out);
        return;
    }
    _queue.clear();
    _queue_head = 0;
    if (_quit_requested) {
        send_quit(out);
    } else {
        _state = client_state::idle;
    }
}

// RFC 2920 §3.1: the message content may open a group, so the next message's envelope may
// follow the end of data at once. Only behind a body (every recipient refused sends none),
// only when that transaction awaits nothing but its end-of-data reply (never behind an RSET),
// and only for a message the peer will see: one refused locally must wait, or its outcome
// would come before the open one's.
void client_session::pipeline_ahead(std::string& out) {
    if (_config.pipeline_transactions != extension_use::when_offered || !use_pipelining()) return;
    if (_open != 1 || _queue_head + 1 >= _queue.size()) return;
    const transaction& first = _tx[_tx_first];
    if (!first.body_sent || first.decided) return;
    const auto slot = static_cast<std::uint8_t>(_tx_first ^ 1);
    transaction& t = _tx[slot];
    const outbound_message& m = _queue[_queue_head + 1];
    begin_outcome(m, t.work);
    if (refused_locally(m, t)) return;  // tried again by start_next once the first is done
    open_transaction(slot, out);
}

// Opens `slot` for its message (begun, not refused locally) and sends its envelope.
void client_session::open_transaction(std::uint8_t slot, std::string& out) {
    transaction& t = _tx[slot];
    t.rcpt_accepted = 0;
    t.decided = false;
    t.mail_accepted = false;
    t.mail_refused = false;
    t.body_sent = false;
    t.restart = false;
    ++_open;
    _state = client_state::transaction;
    send_mail(slot, out);
    if (use_pipelining()) {  // RFC 2920 §3.1: MAIL, every RCPT and DATA in one group
        const auto n = static_cast<std::uint32_t>(message_of(slot).rcpt_to.size());
        for (std::uint32_t i = 0; i < n; ++i) send_rcpt(slot, i, out);
        if (!use_chunking()) {
            out.append("DATA\r\n");
            expect(awaiting::data, slot);
        }
    }
}

void client_session::send_mail(std::uint8_t slot, std::string& out) {
    const outbound_message& m = message_of(slot);
    out.append("MAIL FROM:<").append(m.mail_from).append(">");
    if (extensions().size_declared) {  // RFC 1870 §6
        out.append(" SIZE=");
        core::append_decimal(out, _tx[slot].body_size);
    }
    if (m.body_type == body_kind::eight_bit_mime) out.append(" BODY=8BITMIME");
    if (m.utf8 == utf8_envelope::smtputf8) out.append(" SMTPUTF8");
    out.append("\r\n");
    expect(awaiting::mail, slot);
}

void client_session::send_rcpt(std::uint8_t slot, std::uint32_t index, std::string& out) {
    out.append("RCPT TO:<").append(message_of(slot).rcpt_to[index]).append(">\r\n");
    expect(awaiting::rcpt, slot, index);
}

// Every RCPT has its reply: send the body, or end a transaction nobody will receive.
void client_session::after_rcpts(std::uint8_t slot, std::string& out) {
    transaction& t = _tx[slot];
    if (t.mail_refused) {
        finish_transaction(slot, kind_of(t.work.reply.code), out);
        return;
    }
    if (t.rcpt_accepted == 0) {
        // The message fails as its recipients did: transiently if any of them may be retried.
        const recipient_outcome* first = nullptr;
        for (const recipient_outcome& r : t.work.recipients) {
            if (first == nullptr || (kind_of(r.rcpt_code) == outcome_kind::transient_failure &&
                                     kind_of(first->rcpt_code) != outcome_kind::transient_failure)) {
                first = &r;
            }
        }
        t.work.reply = first->reply;
        finish_transaction(slot, kind_of(first->rcpt_code), out);
        return;
    }
    if (use_chunking()) {
        send_bdat(slot, out);
    } else {
        out.append("DATA\r\n");
        expect(awaiting::data, slot);
    }
}

void client_session::send_body_data(std::uint8_t slot, std::string& out) {
    if (message_of(slot).source == body_source::pieces) return begin_body_pieces(dot_stuffing::on);
    const std::string_view body = message_of(slot).body;
    out.reserve(out.size() + body.size() + body.size() / 64 + 8);
    append_normalized_body(out, body, dot_stuffing::on);
    out.append(".\r\n");
    expect(awaiting::data_end, slot);
    _tx[slot].body_sent = true;
    pipeline_ahead(out);
}

void client_session::send_bdat(std::uint8_t slot, std::string& out) {
    if (message_of(slot).source == body_source::pieces) return begin_body_pieces(dot_stuffing::off);
    transaction& t = _tx[slot];
    out.append("BDAT ");
    core::append_decimal(out, t.body_size);
    out.append(" LAST\r\n");
    out.reserve(out.size() + t.body_size);
    append_normalized_body(out, message_of(slot).body, dot_stuffing::off);
    expect(awaiting::bdat, slot);
    t.body_sent = true;
    pipeline_ahead(out);
}

void client_session::begin_body_pieces(dot_stuffing stuffing) {
    _encoder.reset(stuffing);
    _body_wanted = true;
    _body_chunks = stuffing == dot_stuffing::off;
    _chunks_unanswered = 0;
}

bool client_session::body_piece_welcome() const noexcept {
    return _body_wanted && (!_body_chunks || _chunks_unanswered == 0 || use_pipelining());
}

void client_session::feed_body(std::string_view piece, body_piece which, std::string& out) {
    RR_ASSERT(body_piece_welcome());
    mark_sent();
    const std::uint8_t slot = _tx_first;
    if (!_body_chunks) {
        _encoder.append(out, piece, which);
        if (which == body_piece::last) {
            out.append(".\r\n");
            expect(awaiting::data_end, slot);
            body_complete(slot, out);
        }
        return;
    }
    const std::uint64_t octets = _encoder.size_of(piece, which);
    if (octets == 0 && which == body_piece::more) {
        _encoder.append(out, piece, which);  // e.g. the LF of a CRLF split across pieces
        return;
    }
    out.append("BDAT ");
    core::append_decimal(out, octets);
    out.append(which == body_piece::last ? " LAST\r\n" : "\r\n");
    _encoder.append(out, piece, which);
    if (which == body_piece::more) {
        expect(awaiting::bdat_chunk, slot);
        ++_chunks_unanswered;
        return;
    }
    expect(awaiting::bdat, slot);
    body_complete(slot, out);
}

void client_session::body_complete(std::uint8_t slot, std::string& out) {
    _body_wanted = false;
    _tx[slot].body_sent = true;
    pipeline_ahead(out);
}

void client_session::abandon_body(const outcome_reply& reply) {
    if (!_body_wanted) return;
    _body_wanted = false;
    _session_reply = reply;
    fail_open(outcome_kind::transient_failure, reply);
    _close_reason = close_reason::body_abandoned;
    fail_connection(close_reason::body_abandoned);
}

// RFC 3030 §2: a 4xx or 5xx to a chunk fails the transaction; no more chunks are sent, and
// the peer discards the ones already pipelined (their replies, and the LAST chunk's if it was
// sent, are ignored). RSET follows, as after a refused BDAT LAST, and an envelope pipelined
// behind the LAST chunk is void.
void client_session::chunk_refused(std::uint8_t slot, const parsed_reply& r, std::string& out) {
    _body_wanted = false;
    transaction& t = _tx[slot];
    t.work.reply.assign_peer(r);
    for (std::size_t i = _expected_head; i < _expected.size(); ++i) {
        if (_expected[i].tx == slot) _expected[i].what = awaiting::discarded;
    }
    if (_open == 2) void_next_envelope();
    finish_transaction(slot, kind_of(r.code), out);
}

// The BDAT LAST of the oldest transaction was refused and the next envelope is already on
// its way behind it: the peer may take that MAIL as nested in the failed transaction (503),
// or its RCPTs as added to it. Its replies are ignored, the RSET that follows clears both, and
// the message is sent again from MAIL (after_publish).
void client_session::void_next_envelope() {
    const auto next = static_cast<std::uint8_t>(_tx_first ^ 1);
    for (std::size_t i = _expected_head; i < _expected.size(); ++i) {
        if (_expected[i].tx == next) _expected[i].what = awaiting::discarded;
    }
    _tx[next].restart = true;
}

// Publishes the oldest transaction's outcome; a recipient refused at RCPT keeps its own
// reply, every other one shares the message's.
void client_session::publish_transaction() {
    RR_ASSERT(_open > 0);
    transaction& t = _tx[_tx_first];
    for (recipient_outcome& r : t.work.recipients) {
        if (!t.mail_refused && r.rcpt_code != 0 && !is_positive(r.rcpt_code)) {
            r.kind = kind_of(r.rcpt_code);
        } else {
            r.kind = t.work.kind;
            r.reply = t.work.reply;
        }
    }
    publish_outcome(t.work);
    t.decided = false;
    t.body_sent = false;
    t.restart = false;
    _tx_first ^= 1;
    --_open;
    advance_queue();
}

// The oldest transaction was published: carry on with the one behind it, if any (sending it
// again if it was made void), else with the queue.
void client_session::after_publish(std::string& out) {
    if (_open == 1 && _tx[_tx_first].restart) _open = 0;
    if (_open > 0) return;
    _state = client_state::idle;
    start_next(out);
}

// The message's fate is `kind` (with its work.reply). If the peer still holds an open
// transaction, RSET it first and publish on its reply. `slot` is the oldest open transaction:
// replies arrive in order, and the one behind it sends nothing before this one's body.
void client_session::finish_transaction(std::uint8_t slot, outcome_kind kind, std::string& out) {
    RR_ASSERT(slot == _tx_first);
    transaction& t = _tx[slot];
    t.work.kind = kind;
    t.decided = true;
    if (t.mail_accepted && kind != outcome_kind::accepted) {
        out.append("RSET\r\n");
        expect(awaiting::rset, slot);
        t.mail_accepted = false;
        return;
    }
    publish_transaction();
    after_publish(out);
}

void client_session::on_transaction_reply(const expected_reply& e, const parsed_reply& r, std::string& out) {
    const bool pipelined = use_pipelining();
    const std::uint8_t slot = e.tx;
    transaction& t = _tx[slot];
    // 354 is only for DATA (and ignored after a lone "."); nothing here may get 1xx.
    if (r.code == 354 ? (e.what != awaiting::data && e.what != awaiting::dot)
                      : (r.code >= 300 && r.code < 400)) {
        protocol_error("unexpected 3xx reply");
        return;
    }
    switch (e.what) {
    case awaiting::mail:
        if (is_positive(r.code)) {
            t.mail_accepted = true;
            if (!pipelined) send_rcpt(slot, 0, out);
            return;
        }
        t.mail_refused = true;
        t.work.reply.assign_peer(r);
        if (!pipelined) finish_transaction(slot, kind_of(r.code), out);
        return;
    case awaiting::rcpt: {
        if (e.rcpt >= t.work.recipients.size()) {  // cannot happen: we only expect our own
            protocol_error("reply for an unknown recipient");
            return;
        }
        recipient_outcome& rcpt = t.work.recipients[e.rcpt];
        rcpt.reply.assign_peer(r);
        rcpt.rcpt_code = r.code;
        if (is_positive(r.code)) ++t.rcpt_accepted;
        const bool last = e.rcpt + 1 == t.work.recipients.size();
        if (!pipelined) {
            if (last) {
                after_rcpts(slot, out);
            } else {
                send_rcpt(slot, e.rcpt + 1, out);
            }
        } else if (last && use_chunking()) {
            after_rcpts(slot, out);
        }
        return;
    }
    case awaiting::data:
        if (r.code == 354) {
            if (t.mail_refused || t.rcpt_accepted == 0) {
                out.append(".\r\n");  // RFC 2920 §3.1: an empty message ends the transaction
                expect(awaiting::dot, slot);
                if (!t.mail_refused) t.mail_accepted = false;  // the "." closes the transaction
                return;
            }
            send_body_data(slot, out);
            return;
        }
        if (is_positive(r.code)) {
            protocol_error("2xx reply to DATA");
            return;
        }
        if (t.mail_refused || t.rcpt_accepted == 0) {
            after_rcpts(slot, out);  // DATA's refusal adds nothing to the envelope's
            return;
        }
        t.work.reply.assign_peer(r);
        finish_transaction(slot, kind_of(r.code), out);
        return;
    case awaiting::dot:
        // Whatever the peer says to the lone "." is ignored; the failure is the envelope's.
        after_rcpts(slot, out);
        return;
    case awaiting::data_end:
    case awaiting::bdat:
        t.work.reply.assign_peer(r);
        if (e.what == awaiting::data_end || is_positive(r.code)) {
            t.mail_accepted = false;  // the end of data ends the transaction (§4.1.1.4)
        } else if (_open == 2) {
            void_next_envelope();  // a refused BDAT LAST is followed by RSET (below)
        }
        finish_transaction(slot, kind_of(r.code), out);
        return;
    case awaiting::bdat_chunk:
        if (_chunks_unanswered > 0) --_chunks_unanswered;
        if (!is_positive(r.code)) chunk_refused(slot, r, out);
        return;
    case awaiting::discarded:
        return;
    case awaiting::rset:
        if (is_positive(r.code)) {
            finish_transaction(slot, t.work.kind, out);
            return;
        }
        // The peer's state is unknown: end this message as decided, the rest are not attempted
        // (a void envelope behind it: transient, its MAIL was sent).
        publish_transaction();
        _session_reply.assign_peer(r);
        fail_open(outcome_kind::transient_failure, _session_reply);
        _close_reason = close_reason::reset_refused;
        fail_connection(close_reason::reset_refused);
        send_quit(out);
        return;
    default:
        protocol_error("reply in the wrong state");
        return;
    }
}

}  // namespace ringrelay::protocol
