// tools/sink/connection.cc: see connection.h.
#include "tools/sink/connection.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <utility>

#include "core/clock.h"
#include "core/log.h"
#include "core/net.h"
#include "tools/sink/shard.h"

namespace ringrelay::sink {

namespace {
// Input held while an answer is pending (pipelined commands and data of the next messages)
// beyond which the connection stops reading until the answer went out.
constexpr std::size_t max_held_input = 256 * 1024;
// Replies queued behind a send the peer does not drain, beyond which the peer is cut off.
constexpr std::size_t max_pending_output = 1024 * 1024;
// A message body buffer larger than this is freed after its answer instead of being kept for
// the next message (which normally needs the same size: no allocation per message).
constexpr std::size_t keep_body_capacity = 1024 * 1024;
// Reply buffers up to this size are kept between sends.
constexpr std::size_t keep_send_capacity = 64 * 1024;
}  // namespace

connection::connection(shard& owner, int fd, const sockaddr* peer, ip_slot* slot)
    : _shard(owner),
      _fd(fd),
      _peer(core::address_text(peer)),
      _slot(slot),
      // The sink takes mail for anyone: every client may relay (no 554 5.7.1 at RCPT).
      _session(owner.server_config(), protocol::client_info{_peer, protocol::relay_trust::trusted}, *this) {
    const std::pair<op*, handler> ops[] = {{&_recv, &connection::on_recv}, {&_send, &connection::on_send},
                                           {&_save, &connection::on_save}, {&_delay, &connection::on_delay}};
    for (const auto& [o, fn] : ops) {
        o->owner = this;
        o->fn = fn;
    }
}

connection::~connection() {
    if (!_fd_closed) ::close(_fd);
    if (_save_fd >= 0) ::close(_save_fd);
    if (_slot != nullptr) _shard.shared().limits.release_connection(*_slot);
}

std::uint64_t connection::next_queue_id() noexcept { return _shard.next_queue_id(); }
std::string_view connection::rfc5322_date() noexcept { return _shard.rfc5322_date(); }

protocol::host_reply connection::check_mail(const protocol::client_info& client) noexcept {
    if (_slot == nullptr || _shard.shared().limits.acquire_message(*_slot, monotonic_ns())) return {};
    bump(_shard.mutable_stats().rate_limited);
    return {protocol::reply_id::rate_limited, client.address};
}

void connection::start() noexcept {
    const int one = 1;
    (void)setsockopt(_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    _session.start(_out);
    arm_recv();
    _shard.deadlines().touch(*this, core::monotonic_ms());
    _shard.want_flush(this);
}

void connection::arm_recv() noexcept {
    io_uring_sqe* s = _shard.reactor().sqe(&_recv);
    io_uring_prep_recv_multishot(s, _fd, nullptr, 0, 0);
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = _shard.buffers().group_id();
    _recv_armed = true;
}

void connection::rearm() noexcept {
    if (!_closing && !_paused && !_recv_armed) arm_recv();
    maybe_retire();
}

void connection::on_recv(int res, std::uint32_t flags) noexcept {
    const bool more = (flags & IORING_CQE_F_MORE) != 0;
    if (!more) _recv_armed = false;
    if (res > 0) {
        bump(_shard.mutable_stats().bytes, static_cast<std::uint64_t>(res));
        const auto bid = static_cast<std::uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT);
        const auto data = _shard.buffers().data(bid, static_cast<std::size_t>(res));
        if (!_closing) on_input(std::string_view(data.data(), data.size()));
        _shard.buffers().recycle(bid);
        if (!more && !_closing && !_paused) arm_recv();
    } else if (res == -ENOBUFS) {
        // The shard's buffer ring ran dry: again at the end of the turn, when this turn's
        // buffers are back.
        if (!_closing && !_paused) _shard.want_rearm(this);
    } else if (res == -ECANCELED) {
        // Only we cancel a receive: for closing, or to pause input while an answer is
        // pending. If the answer went out before this CQE arrived, reading resumes now.
        if (!_closing && !_paused && !more) arm_recv();
    } else {
        // End of stream or a socket error: the client is gone. A pending save still
        // completes (and counts); nobody is left to answer.
        _peer_gone = true;
        close();
    }
    maybe_retire();
}

// Received bytes, by TLS phase. `data` is the receive buffer, valid during the call only.
void connection::on_input(std::string_view data) noexcept {
    switch (_tls_phase) {
    case tls_phase::off:
        process(data);
        return;
    case tls_phase::ready_unsent:
        return;  // sent before our 220 left: never SMTP, never a ClientHello (CVE-2011-0411)
    case tls_phase::handshaking:
    case tls_phase::on:
        on_ciphertext(data);
        return;
    }
}

void connection::on_ciphertext(std::string_view data) noexcept {
    const bool was_established = _tls->is_established();
    _plain.clear();
    const auto fed = _tls->feed_ciphertext(data, _plain);
    _tls->take_output(_wire);  // the handshake's answer, tickets, or an alert
    if (!fed) {
        tls_failed(fed.error().text);
        return;
    }
    if (!was_established && _tls->is_established()) {
        _tls_phase = tls_phase::on;
        bump(_shard.mutable_stats().tls_handshakes);
        _session.on_tls_established(protocol::tls_info{_tls->protocol_name(), _tls->cipher_name(),
                                                        _tls->cipher_bits(), _tls->cipher_algorithm_bits()});
        _shard.deadlines().touch(*this, core::monotonic_ms());
    }
    if (_tls->state() == core::tls_state::closed) {
        _peer_gone = true;  // close_notify: the client ended TLS, and the session with it
        close();
    } else if (!_plain.empty()) {
        process(_plain);
    }
    if (_plain.capacity() > 4096) std::string().swap(_plain);
    if (!_wire.empty() || !_out.empty()) _shard.want_flush(this);
}

// The session accepted STARTTLS: its 220 leaves in plaintext, then TLS. Input not fed to the
// session (behind STARTTLS, or held behind a pending answer) is dropped.
void connection::begin_starttls() noexcept {
    core::tls_context* context = _shard.tls_context();
    auto session = context != nullptr ? core::tls_session::create(*context)
                                      : std::unexpected(core::tls_error{core::tls_errc::setup, "no TLS context"});
    if (!session) {
        tls_failed(session.error().text);
        return;
    }
    _tls.emplace(std::move(*session));
    _held.clear();
    _wire.append(_out);
    _out.clear();
    _wire_has_ready = true;
    _tls_phase = tls_phase::ready_unsent;
    _shard.want_flush(this);
}

// The handshake or a record failed: said on stderr (peer and reason), the alert (already in
// _wire) sent, closed. No SMTP reply: the client expects TLS records.
void connection::tls_failed(std::string_view reason) noexcept {
    bump(_shard.mutable_stats().tls_failures);
    core::diag("ringrelay-sink: TLS with " + _peer + " failed: " + std::string(reason));
    _out.clear();
    close();
    _shard.want_flush(this);
}

void connection::process(std::string_view data) noexcept {
    if (!_pending && _held.empty()) {
        _shard.deadlines().touch(*this, core::monotonic_ms());
        const std::size_t n = drive(data);
        if (n < data.size() && _pending) _held.assign(data.substr(n));
    } else {
        _held.append(data);
        if (_held.size() > max_held_input && _recv_armed && !_paused) {
            // Backpressure: stop reading until the pending answer lets the session go on.
            _paused = true;
            io_uring_prep_cancel64(_shard.reactor().sqe_ignored(), reinterpret_cast<std::uint64_t>(&_recv), 0);
        }
    }
    after_session_step();
}

std::size_t connection::drive(std::string_view data) noexcept {
    std::size_t used = 0;
    while (!_closing) {
        used += _session.feed(data.substr(used), _out);
        if (!_session.message_ready()) break;
        if (!begin_message()) break;
    }
    return used;
}

bool connection::begin_message() noexcept {
    _pending = true;
    _verdict = _shard.faults().next();
    if (_shard.options().delay_ms != 0) {
        unlink();  // no command deadline while we, not the client, are working
        arm_delay();
        return false;
    }
    if (must_save()) {
        unlink();
        start_save();
        return false;
    }
    answer();
    return true;
}

bool connection::must_save() const noexcept {
    return _verdict == verdict::accept && _shard.shared().save_dir_fd >= 0;
}

void connection::start_save() noexcept {
    const protocol::envelope& env = _session.message_envelope();
    const std::string_view message = _session.message();
    temp_name(env.queue_id, _temp_name);
    saved_name(env.queue_id, _final_name);
    _save_header.clear();
    append_save_header(_save_header, env, _peer, message.size());
    _save_ok = false;
    _save_step = save_step::open;
    _save_in_flight = true;
    io_uring_prep_openat(_shard.reactor().sqe(&_save), _shard.shared().save_dir_fd, _temp_name,
                         O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
}

void connection::submit_write() noexcept {
    // The header block then the message, from _save_offset on (a short write continues).
    const std::string_view message = _session.message();
    const std::uint64_t header = _save_header.size();
    int count = 0;
    if (_save_offset < header) {
        _iov[count++] = {const_cast<char*>(_save_header.data()) + _save_offset,
                         static_cast<std::size_t>(header - _save_offset)};
    }
    const std::uint64_t body_from = _save_offset > header ? _save_offset - header : 0;
    if (body_from < message.size()) {
        _iov[count++] = {const_cast<char*>(message.data()) + body_from,
                         static_cast<std::size_t>(message.size() - body_from)};
    }
    _save_step = save_step::write;
    _save_in_flight = true;
    io_uring_prep_writev(_shard.reactor().sqe(&_save), _save_fd, _iov, static_cast<unsigned>(count), _save_offset);
}

void connection::on_save(int res, std::uint32_t) noexcept {
    _save_in_flight = false;
    switch (_save_step) {
    case save_step::open:
        if (res < 0) return save_failed("open", res);
        _save_fd = res;
        _save_offset = 0;
        submit_write();
        return;
    case save_step::write: {
        if (res <= 0) return save_failed("write", res == 0 ? -EIO : res);
        _save_offset += static_cast<std::uint64_t>(res);
        if (_save_offset < _save_header.size() + _session.message().size()) return submit_write();
        _save_step = save_step::close;
        _save_in_flight = true;
        io_uring_prep_close(_shard.reactor().sqe(&_save), _save_fd);
        _save_fd = -1;
        return;
    }
    case save_step::close:
        if (res < 0) return save_failed("close", res);
        _save_step = save_step::rename;
        _save_in_flight = true;
        io_uring_prep_renameat(_shard.reactor().sqe(&_save), _shard.shared().save_dir_fd, _temp_name,
                               _shard.shared().save_dir_fd, _final_name, 0);
        return;
    case save_step::rename:
        if (res < 0) return save_failed("rename", res);
        _save_ok = true;
        return after_save();
    }
}

void connection::save_failed(const char* step, int res) noexcept {
    _shard.report_save_error(step, -res);
    if (_save_fd >= 0) {
        ::close(_save_fd);  // error path only: synchronous is fine
        _save_fd = -1;
    }
    (void)::unlinkat(_shard.shared().save_dir_fd, _temp_name, 0);
    _save_ok = false;
    after_save();
}

void connection::after_save() noexcept {
    answer();
    resume();
}

void connection::arm_delay() noexcept {
    const std::uint32_t ms = _shard.options().delay_ms;
    _delay_ts.tv_sec = ms / 1000;
    _delay_ts.tv_nsec = static_cast<long long>(ms % 1000) * 1000000LL;
    _delay_armed = true;
    io_uring_prep_timeout(_shard.reactor().sqe(&_delay), &_delay_ts, 0, 0);
}

void connection::on_delay(int res, std::uint32_t) noexcept {
    _delay_armed = false;
    if (res == -ECANCELED) {
        // Cut off at shutdown: the message goes unanswered, unsaved and uncounted.
        _pending = false;
        maybe_retire();
        return;
    }
    if (must_save()) return start_save();
    answer();
    resume();
}

void connection::answer() noexcept {
    _pending = false;
    shard_stats& stats = _shard.mutable_stats();
    const std::size_t size = _session.message().size();
    const bool saving = _shard.shared().save_dir_fd >= 0;
    switch (_verdict) {
    case verdict::accept:
        if (saving && !_save_ok) {
            _session.commit_done(protocol::commit_result::io_error, _out);  // 451 4.3.0
            break;
        }
        _shard.message_received();
        if (_tls_phase == tls_phase::on) bump(stats.received_tls);
        _session.commit_done(protocol::commit_result::ok, _out);
        break;
    case verdict::defer:
        bump(stats.deferred);
        _session.commit_done(protocol::host_reply{protocol::reply_id::message_deferred, {}}, _out);
        break;
    case verdict::reject:
        bump(stats.rejected);
        _session.commit_done(protocol::host_reply{protocol::reply_id::message_rejected, _peer}, _out);
        break;
    case verdict::disconnect:
        // Replies already given go out; the end of data gets none, the connection closes.
        bump(stats.disconnected);
        close();
        return;
    }
    if (size > keep_body_capacity) _session.shrink();
    if (!_closing) _shard.deadlines().touch(*this, core::monotonic_ms());
}

void connection::resume() noexcept {
    if (!_closing && !_held.empty()) {
        const std::size_t n = drive(_held);
        _held.erase(0, n);
    }
    if (_paused && !_pending && !_closing) {
        _paused = false;
        if (!_recv_armed) arm_recv();
    }
    after_session_step();
    maybe_retire();
}

void connection::after_session_step() noexcept {
    if (!_closing) {
        if (_session.tls_requested() && _tls_phase == tls_phase::off) {
            begin_starttls();
        } else if (_session.closed()) {
            close();
        } else if (_shard.stopping() && !_pending) {
            _session.on_shutdown(_out);
            close();
        }
    }
    if (_out.size() + _wire.size() > max_pending_output && _send_in_flight && !_peer_gone) {
        // The client pipelines commands but does not read the replies: cut it off rather than
        // buffer without bound.
        abort_connection();
        return;
    }
    if (!_out.empty()) _shard.want_flush(this);
}

void connection::abort_connection() noexcept {
    _peer_gone = true;
    _out.clear();
    _wire.clear();
    // Completes a send stuck on a full window and ends the receive.
    (void)::shutdown(_fd, SHUT_RDWR);
    close();
    if (_delay_armed) {
        io_uring_prep_timeout_remove(_shard.reactor().sqe_ignored(), reinterpret_cast<std::uint64_t>(&_delay), 0);
    }
}

void connection::flush() noexcept {
    if (_send_in_flight || _fd_closed || _peer_gone) {
        maybe_retire();
        return;
    }
    // Replies go on the wire as they are, or as TLS records; during a handshake they wait.
    if (!_out.empty() && (_tls_phase == tls_phase::off || _tls_phase == tls_phase::on)) {
        if (_tls_phase == tls_phase::off) {
            if (_wire.empty()) {
                _wire.swap(_out);
            } else {
                _wire.append(_out);
            }
        } else if (auto sealed = _tls->encrypt(_out, _wire); !sealed) {
            _out.clear();
            tls_failed(sealed.error().text);
        }
        _out.clear();
    }
    // After the session's last word under TLS: close_notify (RFC 8446 §6.1). Idempotent.
    if (_closing && _tls_phase == tls_phase::on && _out.empty()) _tls->close(_wire);
    if (_wire.empty()) {
        maybe_retire();
        return;
    }
    _sending.swap(_wire);
    _wire.clear();
    _sending_has_ready = _wire_has_ready;
    _wire_has_ready = false;
    _sent = 0;
    _send_in_flight = true;
    io_uring_prep_send(_shard.reactor().sqe(&_send), _fd, _sending.data(), _sending.size(), MSG_NOSIGNAL);
}

void connection::on_send(int res, std::uint32_t) noexcept {
    _send_in_flight = false;
    if (res < 0) {
        _peer_gone = true;
        close();
        maybe_retire();
        return;
    }
    _sent += static_cast<std::size_t>(res);
    if (_sent < _sending.size()) {
        _send_in_flight = true;
        io_uring_prep_send(_shard.reactor().sqe(&_send), _fd, _sending.data() + _sent, _sending.size() - _sent,
                           MSG_NOSIGNAL);
        return;
    }
    _sending.clear();
    if (_sending_has_ready && _tls_phase == tls_phase::ready_unsent)
        _tls_phase = tls_phase::handshaking;  // the 220 has left: what comes now is TLS
    _sending_has_ready = false;
    if (!_out.empty() || !_wire.empty()) {
        flush();
        return;
    }
    if (_sending.capacity() > keep_send_capacity) std::string().swap(_sending);
    maybe_retire();
}

void connection::close() noexcept {
    if (_closing) return;
    _closing = true;
    _held.clear();
    if (tls_pending()) _out.clear();  // no SMTP reply before the handshake
    // The last reply gets one more timeout period to leave; a peer that does not read it is
    // then cut off (on_deadline).
    if (!_pending) _shard.deadlines().touch(*this, core::monotonic_ms());
    if (_recv_armed) {
        io_uring_prep_cancel64(_shard.reactor().sqe_ignored(), reinterpret_cast<std::uint64_t>(&_recv), 0);
    }
    _shard.want_flush(this);
}

void connection::on_deadline() noexcept {
    if (_pending) return;
    if (_closing) {
        if (!_retired) abort_connection();
        return;
    }
    if (tls_pending()) {
        tls_failed("handshake not completed within --timeout");
        return;
    }
    _session.on_timeout(_out);
    close();
}

void connection::on_stop(bool force) noexcept {
    if (force) {
        if (!_retired) abort_connection();
        return;
    }
    if (_closing || _pending) return;  // a pending answer goes out first (after_session_step)
    if (tls_pending()) {
        close();
        return;
    }
    _session.on_shutdown(_out);
    close();
}

bool connection::retirable() const noexcept {
    return _closing && !_recv_armed && !_send_in_flight && !_save_in_flight && !_delay_armed &&
           ((_out.empty() && _wire.empty()) || _peer_gone);
}

void connection::maybe_retire() noexcept {
    if (!_retired && retirable()) {
        _retired = true;
        ::close(_fd);
        _fd_closed = true;
        _shard.retire(this);
    }
}

}  // namespace ringrelay::sink
