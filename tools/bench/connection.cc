// tools/bench/connection.cc: see connection.h.
#include "tools/bench/connection.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

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

connection::connection(shard& owner) : _owner(owner) {
    _connect_op.owner = this;
    _connect_op.handler = &connection::on_connect;
    _recv_op.owner = this;
    _recv_op.handler = &connection::on_recv;
    _send_op.owner = this;
    _send_op.handler = &connection::on_send;
    for (slot& sl : _slots) {
        sl.body = owner.message().text();
        sl.rcpts.resize(owner.options().recipients);
        for (std::string& r : sl.rcpts) r.reserve(32 + 253);
    }
}

connection::~connection() {
    if (_fd >= 0) ::close(_fd);
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
    RR_ASSERT(_state == connection_state::down && _fd < 0);
    _session.emplace(_owner.client_config());
    _out.clear();
    _wire.clear();
    _tls.reset();
    _sending.clear();
    _quit_requested = false;
    _shutdown_after_send = false;
    _messages_here = 0;
    _oldest = 0;
    _in_flight = 0;
    _close_kind = close_kind::normal;
    _last_activity_ns = now;
    set_state(connection_state::connecting, now);
    const core::endpoint& target = _owner.options().target;
    _fd = ::socket(target.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (_fd < 0) {
        _owner.stats().connect_errors++;
        _owner.note_error("socket: " + std::string(std::strerror(errno)));
        begin_close(close_kind::failed, now);
        return;
    }
    const int one = 1;
    (void)setsockopt(_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    _connect_in_flight = true;
    io_uring_prep_connect(_owner.reactor().sqe(&_connect_op), _fd, target.addr(), target.length);
}

void connection::on_connect(int res, std::uint32_t) noexcept {
    _connect_in_flight = false;
    const std::int64_t now = now_ns();
    if (_state == connection_state::closing) {
        finish_close_if_idle(now);
        return;
    }
    if (res < 0) {
        _owner.stats().connect_errors++;
        _owner.note_error("connect " + _owner.options().target_text + ": " + std::strerror(-res));
        begin_close(close_kind::failed, now);
        return;
    }
    _owner.stats().connections_opened++;
    _last_activity_ns = now;
    set_state(connection_state::greeting, now);
    arm_recv();
}

void connection::arm_recv() noexcept {
    io_uring_sqe* s = _owner.reactor().sqe(&_recv_op);
    io_uring_prep_recv_multishot(s, _fd, nullptr, 0, 0);
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = _owner.buffers().group_id();
    _recv_armed = true;
}

void connection::on_recv(int res, std::uint32_t flags) noexcept {
    const bool more = (flags & IORING_CQE_F_MORE) != 0;
    if (!more) _recv_armed = false;
    const std::int64_t now = now_ns();
    if (res > 0) {
        const auto bid = static_cast<std::uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT);
        if (_state != connection_state::closing) {
            const auto data = _owner.buffers().data(bid, static_cast<std::size_t>(res));
            _last_activity_ns = now;
            on_input(std::string_view(data.data(), data.size()), now);
            _owner.buffers().recycle(bid);
            if (_state != connection_state::closing) after_input(now);
        } else {
            _owner.buffers().recycle(bid);
        }
        if (_state == connection_state::closing) {
            finish_close_if_idle(now);
        } else if (!_recv_armed) {
            arm_recv();
        }
        return;
    }
    if (_state == connection_state::closing) {
        finish_close_if_idle(now);
        return;
    }
    if (res == -ENOBUFS) {  // every buffer is in use; they come back within the turn
        if (!_recv_armed) arm_recv();
        return;
    }
    lost(res == 0 ? "connection closed by the server" : std::strerror(-res), now);
}

// Replies in plaintext, or TLS records once STARTTLS got its 220.
void connection::on_input(std::string_view data, std::int64_t now) noexcept {
    if (!_tls) {
        _session->feed(data, _out);  // stops behind STARTTLS's 220; the rest is dropped (RFC 3207 §5)
        if (_session->tls_requested()) start_tls();
        return;
    }
    const bool was_established = _tls->is_established();
    _plain.clear();
    const auto fed = _tls->feed_ciphertext(data, _plain);
    _tls->take_output(_wire);
    if (!fed) {
        if (was_established) {
            lost("TLS record error: " + fed.error().text, now);  // the session cannot go on
        } else {
            tls_failed(fed.error().text);
        }
        return;
    }
    if (!was_established && _tls->is_established()) _session->on_tls_established(_out);
    // Replies first: the reply to QUIT often shares a read with the close_notify after it.
    if (!_plain.empty()) _session->feed(_plain, _out);
    if (_tls->state() == core::tls_state::closed && !_session->closed()) {
        lost("the server ended TLS", now);
        return;
    }
    if (!_wire.empty()) _owner.want_flush(*this);
}

void connection::start_tls() noexcept {
    core::tls_context* context = _owner.tls_context();
    auto session = context != nullptr ? core::tls_session::create(*context)
                                      : std::unexpected(core::tls_error{core::tls_errc::setup, "no TLS context"});
    if (!session) {
        tls_failed(session.error().text);
        return;
    }
    _tls.emplace(std::move(*session));
    _tls->take_output(_wire);  // the ClientHello
    _owner.want_flush(*this);
}

void connection::tls_failed(std::string_view reason) noexcept {
    _owner.note_error(_owner.options().target_text + ": TLS failed: " + std::string(reason));
    _session->on_tls_failed(reason);  // its messages fail; after_input sees it closed
}

bool connection::seal(std::int64_t now) noexcept {
    if (_out.empty()) return true;
    if (!_tls) {
        if (_wire.empty()) {
            _wire.swap(_out);
        } else {
            _wire.append(_out);
        }
        _out.clear();
        return true;
    }
    if (!_tls->is_established()) return true;  // the session writes nothing during the handshake
    const auto sealed = _tls->encrypt(_out, _wire);
    _out.clear();
    if (!sealed) {
        lost("TLS: " + sealed.error().text, now);
        return false;
    }
    return true;
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
    if (has_output()) _owner.want_flush(*this);
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
    _session->submit(m, _out);
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
        _session->quit(_out);
        _owner.want_flush(*this);
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
    const bool connected = _state != connection_state::connecting;
    _close_kind = kind;
    set_state(connection_state::closing, now);
    if (connected && _fd >= 0 && !_send_in_flight && has_output()) {
        // The session's last command (QUIT after a refused greeting) goes out first.
        _shutdown_after_send = true;
        start_send();
        if (!_send_in_flight) {  // nothing could be sealed (a handshake cut short)
            _shutdown_after_send = false;
            shutdown_socket();
        }
    } else {
        shutdown_socket();
    }
    finish_close_if_idle(now);
}

void connection::shutdown_socket() noexcept {
    if (_fd >= 0) (void)::shutdown(_fd, SHUT_RDWR);
    if (_recv_armed)
        io_uring_prep_cancel64(_owner.reactor().sqe_ignored(), reinterpret_cast<std::uint64_t>(&_recv_op), 0);
    if (_connect_in_flight)
        io_uring_prep_cancel64(_owner.reactor().sqe_ignored(), reinterpret_cast<std::uint64_t>(&_connect_op), 0);
}

void connection::finish_close_if_idle(std::int64_t now) noexcept {
    if (_state != connection_state::closing || _connect_in_flight || _recv_armed || _send_in_flight) return;
    if (_fd >= 0) ::close(_fd);
    _fd = -1;
    _out.clear();
    _wire.clear();
    _tls.reset();
    _sending.clear();
    set_state(connection_state::down, now);
    _owner.connection_down(*this, _close_kind, now);
}

void connection::flush(std::int64_t now) noexcept {
    if (_session && !_session->outcomes().empty() && _state != connection_state::closing &&
        _state != connection_state::down) {
        after_input(now);
    }
    if (_send_in_flight || !has_output() || _fd < 0 || _state == connection_state::closing ||
        _state == connection_state::connecting || _state == connection_state::down) {
        return;
    }
    start_send();
}

void connection::start_send() noexcept {
    if (!seal(now_ns()) || _wire.empty()) return;
    _sending.swap(_wire);
    _wire.clear();
    _sent = 0;
    _send_in_flight = true;
    io_uring_prep_send(_owner.reactor().sqe(&_send_op), _fd, _sending.data(), _sending.size(), MSG_NOSIGNAL);
}

void connection::on_send(int res, std::uint32_t) noexcept {
    _send_in_flight = false;
    const std::int64_t now = now_ns();
    if (res < 0) {
        if (_state == connection_state::closing) {
            finish_close_if_idle(now);
        } else {
            lost(std::strerror(-res), now);
        }
        return;
    }
    _sent += static_cast<std::size_t>(res);
    _last_activity_ns = now;  // a long upload is progress, not a stall
    if (_sent < _sending.size()) {
        _send_in_flight = true;
        io_uring_prep_send(_owner.reactor().sqe(&_send_op), _fd, _sending.data() + _sent, _sending.size() - _sent,
                           MSG_NOSIGNAL);
        return;
    }
    _sending.clear();
    _last_send_done_ns = now;
    if (_state == connection_state::closing) {
        if (_shutdown_after_send) {
            _shutdown_after_send = false;
            shutdown_socket();
        }
        finish_close_if_idle(now);
        return;
    }
    if (has_output()) start_send();
}

}  // namespace ringrelay::bench
