// core/stream.cc: see stream.h.
#include "core/stream.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

namespace ringrelay::core {

namespace {
// Decrypted input of one receive is at most a few records; a larger buffer is not kept.
constexpr std::size_t keep_plain_buffer = 4096;

void set_nodelay(int fd) noexcept {
    const int one = 1;
    (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // fails harmlessly on AF_UNIX
}
}  // namespace

void stream_batch::run() noexcept {
    // Re-arms first: a receive that ran the ring dry this turn finds this turn's buffers back.
    while (!_rearm.empty()) {
        _rearm_swap.swap(_rearm);
        for (stream* s : _rearm_swap) {
            s->_rearm_queued = false;
            s->rearm();
        }
        _rearm_swap.clear();
    }
    // Batched sends: one send per stream for everything its owner queued this turn. A flush
    // may queue more flushes (an owner handing work to another stream): the same pass serves
    // them.
    for (std::size_t i = 0; i < _flush.size(); ++i) {
        stream* s = _flush[i];
        s->_flush_queued = false;
        s->flush();
    }
    _flush.clear();
}

void stream_batch::forget(stream& s) noexcept {
    std::erase(_flush, &s);
    std::erase(_rearm, &s);
}

stream::stream(const stream_services& services, stream_owner& owner, std::size_t keep_send_buffer) noexcept
    : _services(services), _owner(owner), _keep_send(keep_send_buffer) {}

stream::~stream() {
    if (_flush_queued || _rearm_queued) _services.batch.forget(*this);
    if (_fd >= 0) ::close(_fd);
}

void stream::reset() noexcept {
    if (_fd >= 0) ::close(_fd);
    _fd = -1;
    _out.clear();
    _wire.clear();
    _sending.clear();
    _plain.clear();
    _sent = 0;
    _tls.reset();
    _tls_phase = tls_phase::off;
    _tls_engine = tls_engine::memory;
    _out_marks = _wire_marks = _sending_marks = 0;
    _connected = _receiving = _paused = _closing = _peer_gone = _finished = false;
    _deadline.unlink();
}

void stream::adopt(int fd) noexcept {
    reset();
    _fd = fd;
    _connected = true;
    set_nodelay(fd);
}

std::expected<void, std::error_code> stream::connect(const endpoint& to, const endpoint* from) noexcept {
    reset();
    _peer = to;
    _bind_failed = false;
    _fd = ::socket(to.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (_fd < 0) return std::unexpected(std::error_code(errno, std::system_category()));
    // Synchronous and quick: bind to port 0 takes a local port but sends nothing. (Linux 4.2+
    // IP_BIND_ADDRESS_NO_PORT defers the port choice to connect(), so that one source address
    // can serve as many peers as the 4-tuple allows rather than one port each.)
    if (from != nullptr) {
        const int one = 1;
        (void)::setsockopt(_fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (::bind(_fd, from->addr(), from->length) != 0) {
            const int e = errno;
            _bind_failed = true;
            ::close(_fd);
            _fd = -1;
            return std::unexpected(std::error_code(e, std::system_category()));
        }
    }
    set_nodelay(_fd);
    _connect_in_flight = true;
    io_uring_prep_connect(_services.ring.sqe(&_connect), _fd, _peer.addr(), _peer.length);
    return {};
}

void stream::on_connect(int res, std::uint32_t) noexcept {
    _connect_in_flight = false;
    if (_closing) return check_finished();
    if (res < 0) {
        end(stream_end::connect_failed, std::strerror(-res));
        return check_finished();
    }
    _connected = true;
    _owner.on_stream_connected();
    check_finished();
}

void stream::start_receiving() noexcept {
    _receiving = true;
    if (may_receive() && !_recv_armed) arm_receive();
}

bool stream::may_receive() const noexcept {
    return _receiving && _connected && _fd >= 0 && !_closing && !_paused && !_peer_gone && !socket_lent();
}

void stream::arm_receive() noexcept {
    io_uring_sqe* s = _services.ring.sqe(&_recv);
    io_uring_prep_recv_multishot(s, _fd, nullptr, 0, 0);
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = _services.buffers.group_id();
    _recv_armed = true;
}

void stream::rearm() noexcept {
    if (may_receive() && !_recv_armed) arm_receive();
    check_finished();
}

void stream::on_recv(int res, std::uint32_t flags) noexcept {
    const bool more = (flags & IORING_CQE_F_MORE) != 0;
    if (!more) _recv_armed = false;
    if (res > 0) {
        const auto bid = static_cast<std::uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT);
        const auto data = _services.buffers.data(bid, static_cast<std::size_t>(res));
        if (!_closing) input(std::string_view(data.data(), data.size()));
        _services.buffers.recycle(bid);
        if (!more && may_receive() && !_recv_armed) arm_receive();
    } else if (res == -ENOBUFS) {
        // The shard's buffer ring ran dry. Every completion gives its buffer back before it
        // returns, but the completions still waiting in this turn's batch hold theirs: a
        // receive re-armed now would find the ring as dry, fail again, and spin through the
        // loop turn. At the end of the turn every buffer of the turn is back, so that is
        // when it is re-armed (stream_batch::run, before the turn's sends).
        if (may_receive() && !_rearm_queued) {
            _rearm_queued = true;
            _services.batch.want_rearm(*this);
        }
    } else if (res == -ECANCELED) {
        // Only we cancel a receive: closing, pausing, or lending the socket to a kTLS
        // handshake. If the pause ended before this completion arrived, reading resumes now.
        if (!more && may_receive() && !_recv_armed) arm_receive();
    } else {
        // End of stream or a socket error: nothing more can be sent either.
        _peer_gone = true;
        end(res == 0 ? stream_end::peer_closed : stream_end::socket_error,
            res == 0 ? std::string_view("connection closed by the peer") : std::string_view(std::strerror(-res)));
    }
    // kTLS STARTTLS: our receive is gone now, so the 220 may leave (flush waited for this).
    if (!_recv_armed && socket_lent() && _tls_phase == tls_phase::after_output) want_flush();
    check_finished();
}

// Received bytes by TLS phase. `data` is the receive buffer, valid during the call only.
void stream::input(std::string_view data) noexcept {
    switch (_tls_phase) {
    case tls_phase::off:
    case tls_phase::kernel_on:  // the kernel has decrypted it already
        _owner.on_stream_data(data);
        return;
    case tls_phase::after_output:
        // The peer did not wait for our 220: these bytes are no ClientHello of a client that
        // read it, and never SMTP either (CVE-2011-0411).
    case tls_phase::kernel_handshaking:
        // No receive is armed in this phase; one in flight when it began carries bytes from
        // before the 220 left.
        _owner.on_stream_discarded(data.size());
        return;
    case tls_phase::handshaking:
    case tls_phase::on:
        decrypt(data);
        return;
    }
}

void stream::decrypt(std::string_view data) noexcept {
    const bool was_established = _tls->is_established();
    _plain.clear();
    const auto fed = _tls->feed_ciphertext(data, _plain);
    _tls->take_output(_wire);  // the handshake's answer, tickets, or an alert
    if (!fed) {
        const std::string reason = fed.error().text;
        end(was_established ? stream_end::tls_record : stream_end::tls_failed, reason);
        return;
    }
    if (!was_established && _tls->is_established()) {
        _tls_phase = tls_phase::on;
        _owner.on_stream_tls_ready();
    }
    // Data first: a reply often shares a read with the close_notify after it.
    if (!_plain.empty() && !_closing) _owner.on_stream_data(_plain);
    if (_tls->state() == tls_state::closed) end(stream_end::tls_closed, "the peer ended TLS (close_notify)");
    // An idle TLS connection keeps no receive-sized buffer (OpenSSL releases its own too:
    // SSL_MODE_RELEASE_BUFFERS).
    if (_plain.capacity() > keep_plain_buffer) std::string().swap(_plain);
    if (!_wire.empty() || !_out.empty()) want_flush();
}

std::expected<void, tls_error> stream::start_tls_server(const tls_context& context, tls_start when,
                                                        tls_engine engine) {
    auto session = engine == tls_engine::kernel ? tls_session::create_on_socket(context, _fd)
                                                : tls_session::create(context);
    if (!session) return std::unexpected(session.error());
    _tls.emplace(std::move(*session));
    _tls_engine = engine;
    if (when == tls_start::now) {
        if (engine == tls_engine::kernel) {
            _tls_phase = tls_phase::kernel_handshaking;
            kernel_handshake_step();
        } else {
            _tls_phase = tls_phase::handshaking;
        }
        return {};
    }
    // STARTTLS: what is queued (the 220) leaves in plaintext, then TLS.
    if (engine == tls_engine::kernel && _recv_armed) {
        // The handshake is OpenSSL's own reads on the socket, so our receive must be gone
        // before the 220 leaves (flush waits for it): a ClientHello must never land in one of
        // our buffers. The cancel's own completion is ignored.
        io_uring_prep_cancel64(_services.ring.sqe_ignored(), reinterpret_cast<std::uint64_t>(&_recv), 0);
    }
    _wire.append(_out);
    _out.clear();
    _wire_marks |= static_cast<std::uint8_t>(_out_marks | tls_switch_mark);
    _out_marks = 0;
    _tls_phase = tls_phase::after_output;
    want_flush();
    return {};
}

std::expected<void, tls_error> stream::start_tls_client(const tls_context& context, std::string_view server_name,
                                                        const tls_saved_session* resume) {
    auto session = tls_session::create(context, server_name, resume);
    if (!session) return std::unexpected(session.error());
    _tls.emplace(std::move(*session));
    _tls_engine = tls_engine::memory;
    _tls_phase = tls_phase::handshaking;
    _tls->take_output(_wire);  // the ClientHello
    want_flush();
    return {};
}

bool stream::tls_pending() const noexcept {
    return _tls_phase == tls_phase::after_output || _tls_phase == tls_phase::handshaking ||
           _tls_phase == tls_phase::kernel_handshaking;
}

// kTLS: one step of OpenSSL's handshake on the socket; waits for readiness on the shard's
// io_uring (POLL_ADD), never blocks. Once done, the kernel must hold the record layer both
// ways (the start-up probe said it would); then plain receives and sends resume.
void stream::kernel_handshake_step() noexcept {
    auto step = _tls->handshake_on_socket();
    if (!step) return end(stream_end::tls_failed, step.error().text);
    if (*step != tls_session::socket_step::done) {
        const bool read = *step == tls_session::socket_step::want_read;
        io_uring_prep_poll_add(_services.ring.sqe(&_poll), _fd, read ? POLLIN : POLLOUT);
        _poll_armed = true;
        return;
    }
    if (!_tls->kernel_sends() || !_tls->kernel_receives()) {
        return end(stream_end::tls_failed, "the kernel did not take the TLS record layer for " +
                                               std::string(_tls->protocol_name()) + " " +
                                               std::string(_tls->cipher_name()) +
                                               " (the start-up probe said it would; turn kTLS off if this repeats)");
    }
    _tls_phase = tls_phase::kernel_on;
    _owner.on_stream_tls_ready();
    if (may_receive() && !_recv_armed) arm_receive();
    want_flush();
}

void stream::on_poll(int res, std::uint32_t) noexcept {
    _poll_armed = false;
    if (!_closing && _tls_phase == tls_phase::kernel_handshaking) {
        if (res < 0) {
            end(stream_end::tls_failed,
                std::string("waiting for the socket during the handshake: ") + std::strerror(-res));
        } else {
            kernel_handshake_step();
        }
    }
    check_finished();
}

void stream::want_flush() noexcept {
    if (_flush_queued || _finished) return;
    _flush_queued = true;
    _services.batch.want_flush(*this);
}

void stream::flush() noexcept {
    if (_finished) return;
    _owner.on_stream_flush();
    send_queued();
}

void stream::send_queued() noexcept {
    if (_send_in_flight || _fd < 0 || !_connected || _peer_gone) return check_finished();
    // kTLS STARTTLS: the 220 waits until our receive is gone (start_tls_server cancelled it).
    if (_tls_phase == tls_phase::after_output && socket_lent() && _recv_armed) return;
    // Plaintext leaves as it is, or as TLS records; during a handshake it waits (a server
    // produces none then; an implicit-TLS banner only after it).
    if (!_out.empty()) {
        bool moved = true;
        switch (_tls_phase) {
        case tls_phase::off:
        case tls_phase::kernel_on:  // the kernel encrypts it
            if (_wire.empty()) {
                _wire.swap(_out);  // the common case: no copy
            } else {
                _wire.append(_out);
            }
            _out.clear();
            break;
        case tls_phase::on: {
            const auto sealed = _tls->encrypt(_out, _wire);
            _out.clear();
            if (!sealed) {
                const std::string reason = sealed.error().text;
                end(stream_end::tls_record, reason);
                moved = false;
            }
            break;
        }
        default:
            moved = false;
            break;
        }
        if (moved) {
            _wire_marks |= _out_marks;
            _out_marks = 0;
        }
    }
    if (_closing && _out.empty() && _tls) {
        if (_tls_phase == tls_phase::on) {
            // After the last word: close_notify (RFC 8446 §6.1), also in answer to the peer's.
            // Idempotent.
            _tls->close(_wire);
        } else if (_tls_phase == tls_phase::kernel_on && _wire.empty()) {
            // kTLS: OpenSSL writes the close_notify through the kernel itself, so only once
            // everything before it has left.
            std::string none;
            _tls->close(none);
        }
    }
    if (_wire.empty()) return check_finished();
    _sending.swap(_wire);
    _wire.clear();
    _sending_marks = _wire_marks;
    _wire_marks = 0;
    _sent = 0;
    _send_in_flight = true;
    io_uring_prep_send(_services.ring.sqe(&_send), _fd, _sending.data(), _sending.size(), MSG_NOSIGNAL);
}

void stream::on_send(int res, std::uint32_t) noexcept {
    _send_in_flight = false;
    if (res < 0) {
        _peer_gone = true;
        end(stream_end::socket_error, std::strerror(-res));
        return check_finished();
    }
    _sent += static_cast<std::size_t>(res);
    if (_sent < _sending.size()) {  // a short send: the rest, from where it stopped
        _send_in_flight = true;
        io_uring_prep_send(_services.ring.sqe(&_send), _fd, _sending.data() + _sent, _sending.size() - _sent,
                           MSG_NOSIGNAL);
        _owner.on_stream_progress();
        return;
    }
    _sending.clear();
    const std::uint8_t marks = std::exchange(_sending_marks, 0);
    if ((marks & tls_switch_mark) != 0 && _tls_phase == tls_phase::after_output) {
        // The 220 has left: what comes now is TLS.
        if (_tls_engine == tls_engine::kernel) {
            _tls_phase = tls_phase::kernel_handshaking;
            if (!_closing) kernel_handshake_step();
        } else {
            _tls_phase = tls_phase::handshaking;
        }
    }
    _owner.on_stream_sent(static_cast<std::uint8_t>(marks & ~tls_switch_mark));
    if (_sending.capacity() > _keep_send) std::string().swap(_sending);
    send_queued();  // what was produced meanwhile, in one send; or the end
}

void stream::touch_deadline(std::int64_t now_ms) noexcept {
    if (_services.deadlines != nullptr) _services.deadlines->touch(_deadline, now_ms);
}

void stream::pause_receive() noexcept {
    if (_paused) return;
    _paused = true;
    if (_recv_armed)
        io_uring_prep_cancel64(_services.ring.sqe_ignored(), reinterpret_cast<std::uint64_t>(&_recv), 0);
}

void stream::resume_receive() noexcept {
    if (!_paused) return;
    _paused = false;
    if (may_receive() && !_recv_armed) arm_receive();
}

void stream::close() noexcept {
    if (_closing) return;
    _closing = true;
    // Plaintext cannot go out before a handshake completes, nor anything before a connect.
    if (tls_pending()) _out.clear();
    if (!_connected) {
        _out.clear();
        _wire.clear();
    }
    if (_recv_armed)
        io_uring_prep_cancel64(_services.ring.sqe_ignored(), reinterpret_cast<std::uint64_t>(&_recv), 0);
    if (_poll_armed)
        io_uring_prep_poll_remove(_services.ring.sqe_ignored(), reinterpret_cast<std::uint64_t>(&_poll));
    if (_connect_in_flight)
        io_uring_prep_cancel64(_services.ring.sqe_ignored(), reinterpret_cast<std::uint64_t>(&_connect), 0);
    want_flush();  // the last output leaves, or the end is seen, at the end of the turn
}

void stream::abandon() noexcept {
    _peer_gone = true;
    _out.clear();
    _wire.clear();
    close();
}

void stream::abort() noexcept {
    if (_fd >= 0 && !_finished) (void)::shutdown(_fd, SHUT_RDWR);
    abandon();
}

void stream::end(stream_end why, std::string_view detail) noexcept {
    if (_closing) return;  // the owner is ending it already
    _owner.on_stream_end(why, detail);
    close();
}

void stream::check_finished() noexcept {
    // A flush still to come may have the last output to send (close_notify is made there).
    if (!_closing || _finished || _flush_queued || _recv_armed || _send_in_flight || _poll_armed || _connect_in_flight)
        return;
    if (!_peer_gone && (!_out.empty() || !_wire.empty())) return;
    _finished = true;
    _deadline.unlink();
    if (_fd >= 0) ::close(_fd);
    _fd = -1;
    _owner.on_stream_finished();  // last: the owner may connect() again from here
}

}  // namespace ringrelay::core
