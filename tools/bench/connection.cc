// tools/bench/connection.cc: see connection.h.
#include "tools/bench/connection.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>

#include "core/ascii.h"
#include "core/invariant.h"
#include "tools/bench/shard.h"

namespace ringrelay::bench {
namespace {

std::string reply_text(const protocol::outcome_reply& r) {
    std::string s = std::to_string(r.code);
    if (!r.text.empty()) {
        s += ' ';
        s += r.text;
    }
    for (char& c : s)
        if (c == '\n') c = ' ';
    return s;
}

}  // namespace

connection::connection(shard& owner)
    : _owner(owner), _stream(owner.stream_services(), *this, std::numeric_limits<std::size_t>::max()) {
    for (slot& sl : _slots) {
        sl.body = owner.message().text();
        sl.rcpts.resize(owner.options().recipients);
        for (std::string& r : sl.rcpts) r.reserve(32 + 253);
    }
}

bool connection::waiting_for_peer() const noexcept {
    switch (_state) {
    case connection_state::connecting:
    case connection_state::greeting:
    case connection_state::busy:
        return true;
    case connection_state::ready:
        return _quit_requested;
    default:
        return false;
    }
}

void connection::open(std::int64_t now) noexcept {
    RR_ASSERT(_state == connection_state::down);
    _session.emplace(_owner.client_config());
    _quit_requested = false;
    _messages_here = 0;
    _oldest = 0;
    _in_flight = 0;
    _close_kind = close_kind::normal;
    _last_activity_ns = now;
    set_state(connection_state::connecting, now);
    if (auto started = _stream.connect(_owner.options().target); !started) {
        _owner.stats().connect_errors++;
        _owner.note_error("socket: " + started.error().message());
        begin_close(close_kind::failed, now);
    }
}

void connection::on_stream_connected() noexcept {
    const std::int64_t now = now_ns();
    _owner.stats().connections_opened++;
    _last_activity_ns = now;
    set_state(connection_state::greeting, now);
    _stream.start_receiving();
}

void connection::on_stream_end(core::stream_end why, std::string_view detail) noexcept {
    const std::int64_t now = now_ns();
    switch (why) {
    case core::stream_end::connect_failed:
        _owner.stats().connect_errors++;
        _owner.note_error("connect " + _owner.options().target_text + ": " + std::string(detail));
        begin_close(close_kind::failed, now);
        return;
    case core::stream_end::peer_closed: lost("connection closed by the server", now); return;
    case core::stream_end::socket_error: lost(detail, now); return;
    case core::stream_end::tls_failed:
        tls_failed(detail);
        after_input(now);  // the session is closed now
        return;
    case core::stream_end::tls_record: lost("TLS record error: " + std::string(detail), now); return;
    case core::stream_end::tls_closed:
        // After its reply (the data came first): a close_notify behind 221 is the normal end.
        if (!_session->closed()) lost("the server ended TLS", now);
        return;
    }
}

// Replies in plaintext, or decrypted once STARTTLS got its 220. `data` is valid during the
// call only.
void connection::on_stream_data(std::string_view data) noexcept {
    const std::int64_t now = now_ns();
    _last_activity_ns = now;
    _session->feed(data, _stream.out());
    // The session stops behind STARTTLS's 220; the rest of this read is dropped (RFC 3207 §5).
    if (_stream.tls() == nullptr && _session->tls_requested()) start_tls();
    if (_state != connection_state::closing) after_input(now);
}

void connection::on_stream_tls_ready() noexcept {
    _session->on_tls_established(_stream.out());  // EHLO again (RFC 3207 §4.2)
    _stream.want_flush();
}

void connection::on_stream_sent(std::uint8_t) noexcept {
    _last_send_done_ns = now_ns();
    _last_activity_ns = _last_send_done_ns;
}

void connection::on_stream_progress() noexcept { _last_activity_ns = now_ns(); }  // a long upload is progress

void connection::on_stream_finished() noexcept {
    const std::int64_t now = now_ns();
    set_state(connection_state::down, now);
    _owner.connection_down(*this, _close_kind, now);
}

void connection::start_tls() noexcept {
    core::tls_context* context = _owner.tls_context();
    if (context == nullptr) return tls_failed("no TLS context");
    if (auto started = _stream.start_tls_client(*context, {}, nullptr); !started) tls_failed(started.error().text);
}

void connection::tls_failed(std::string_view reason) noexcept {
    _owner.note_error(_owner.options().target_text + ": TLS failed: " + std::string(reason));
    _session->on_tls_failed(reason);  // its messages fail; after_input sees it closed
}

// Outcomes first (the shard counts them), then what the session's state means for us.
void connection::after_input(std::int64_t now) noexcept {
    take_outcomes(now);
    if (_session->closed()) {
        on_session_closed(now);
        return;
    }
    const protocol::client_state s = _session->state();
    if (_state == connection_state::greeting && s == protocol::client_state::idle) {
        failures = 0;
        _owner.session_up(now);
        set_state(connection_state::ready, now);
    } else if (_state == connection_state::busy && _session->pending() == 0) {
        set_state(connection_state::ready, now);
    }
    if (can_take_message()) {
        const std::uint32_t limit = _owner.options().max_messages_per_connection;
        if (limit != 0 && _messages_here >= limit) {
            quit(now);
        } else {
            _owner.connection_ready(*this, now);
        }
    }
    if (has_output()) _stream.want_flush();
}

void connection::take_outcomes(std::int64_t now) noexcept {
    const auto outcomes = _session->outcomes();
    if (outcomes.empty()) return;
    for (const protocol::message_outcome& o : outcomes) {
        const slot& sl = _slots[_oldest];
        _oldest ^= 1;
        if (_in_flight > 0) --_in_flight;
        // Outcomes come in submit order, so the oldest slot is this message's.
        const std::int64_t scheduled_ns = sl.scheduled_ns;
        const std::int64_t submitted_ns = sl.submitted_ns;
        std::int64_t ack = 0;
        std::int64_t transaction = 0;
        if (o.kind == protocol::outcome_kind::accepted) {
            // End of data sent -> reply; in open loop plus the wait for a connection.
            const std::int64_t data_end = _last_send_done_ns > submitted_ns ? _last_send_done_ns : submitted_ns;
            ack = (now - data_end) + (submitted_ns - scheduled_ns);
            transaction = now - scheduled_ns;
        }
        _owner.message_done(o, scheduled_ns, ack, transaction, now);
    }
    _session->release_outcomes();
}

void connection::send_message(std::uint64_t seq, std::int64_t scheduled_ns, std::int64_t now) noexcept {
    RR_ASSERT(can_take_message() && _session->pending() < 2);
    const bench_options& o = _owner.options();
    slot& sl = _slots[_oldest ^ _in_flight];
    ++_in_flight;
    _owner.message().stamp(sl.body, seq);
    for (std::uint32_t j = 0; j < sl.rcpts.size(); ++j) {
        std::string& rcpt = sl.rcpts[j];
        rcpt.assign("user");
        core::append_decimal(rcpt, (seq - 1) * o.recipients + j + 1);
        rcpt.push_back('@');
        rcpt.append(o.domains[_owner.pick_domain()].name);
    }
    protocol::outbound_message m;
    m.tag = seq;
    m.mail_from = o.from;
    m.rcpt_to = sl.rcpts;
    m.body = sl.body;
    sl.seq = seq;
    sl.scheduled_ns = scheduled_ns;
    sl.submitted_ns = now;
    ++_messages_here;
    set_state(connection_state::busy, now);
    _session->submit(m, _stream.out());
    _stream.want_flush();
    // A local refusal has its outcome already: taken at the turn end (flush), never from here,
    // so that a server refusing everything cannot recurse through connection_ready().
    _owner.want_flush(*this);
}

void connection::quit(std::int64_t now) noexcept {
    switch (_state) {
    case connection_state::connecting:
    case connection_state::greeting:
        begin_close(close_kind::normal, now);
        return;
    case connection_state::ready:
    case connection_state::busy:
        if (_quit_requested) return;
        _quit_requested = true;
        _last_activity_ns = now;  // the QUIT reply is awaited from now
        _session->quit(_stream.out());
        _stream.want_flush();
        return;
    default:
        return;
    }
}

void connection::abort(std::string_view why, std::int64_t now) noexcept {
    if (_state == connection_state::down || _state == connection_state::closing) return;
    if (_state == connection_state::connecting) {
        _owner.stats().connect_errors++;
        _owner.note_error("connect " + _owner.options().target_text + ": " + std::string(why));
        begin_close(close_kind::failed, now);
        return;
    }
    lost(why, now);
}

void connection::on_session_closed(std::int64_t now) noexcept {
    const protocol::close_reason why = _session->why_closed();
    if (why == protocol::close_reason::quit && _quit_requested) {
        begin_close(close_kind::normal, now);
        return;
    }
    const protocol::outcome_reply& r = _session->session_reply();
    const std::string& target = _owner.options().target_text;
    run_stats& stats = _owner.stats();
    switch (why) {
    case protocol::close_reason::greeting_refused:
        if (r.code < reply_code_slots) stats.session_replies[r.code]++;
        _owner.note_error(target + ": session refused: " + reply_text(r));
        break;
    case protocol::close_reason::peer_shutdown:
        // A 421 to a message is counted with the message; one between messages here.
        if (_state != connection_state::busy && r.code < reply_code_slots) stats.session_replies[r.code]++;
        _owner.note_error(target + ": closed by the server: " + reply_text(r));
        break;
    case protocol::close_reason::protocol_error:
        _owner.note_error(target + ": protocol error: " + r.text);
        break;
    case protocol::close_reason::reset_refused:
        _owner.note_error(target + ": RSET refused: " + reply_text(r));
        break;
    case protocol::close_reason::tls_required:
    case protocol::close_reason::tls_failed:
        _owner.note_error(target + ": " + r.text);
        break;
    case protocol::close_reason::auth_failed:
        _owner.note_error(target + ": AUTH failed: " + reply_text(r));
        break;
    default:
        _owner.note_error(target + ": session closed unexpectedly");
        break;
    }
    stats.connections_lost++;
    begin_close(close_kind::failed, now);
}

void connection::lost(std::string_view why, std::int64_t now) noexcept {
    if (_state == connection_state::down || _state == connection_state::closing) return;
    const bool quitting = _quit_requested && _state == connection_state::ready;
    _session->on_connection_lost();
    take_outcomes(now);
    if (quitting) {  // the server closed without answering QUIT: harmless
        begin_close(close_kind::normal, now);
        return;
    }
    _owner.stats().connections_lost++;
    _owner.note_error(_owner.options().target_text + ": " + std::string(why));
    begin_close(close_kind::failed, now);
}

void connection::begin_close(close_kind kind, std::int64_t now) noexcept {
    if (_state == connection_state::closing || _state == connection_state::down) return;
    _close_kind = kind;
    set_state(connection_state::closing, now);
    // The session's last command (QUIT after a refused greeting) goes out first; a send stuck
    // in flight is cut short (shutdown) instead.
    if (_stream.sending()) {
        _stream.abort();
    } else {
        _stream.close();
    }
}

void connection::flush(std::int64_t now) noexcept {
    if (_session && !_session->outcomes().empty() && _state != connection_state::closing &&
        _state != connection_state::down) {
        after_input(now);
    }
}

}  // namespace ringrelay::bench
