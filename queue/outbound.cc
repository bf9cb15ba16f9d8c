// queue/outbound.cc: see outbound.h.
#include "queue/outbound.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <utility>

#include "core/invariant.h"

#include "core/clock.h"
#include "core/log.h"

namespace ringrelay::queue {

outbound::outbound(core::reactor& reactor, core::buffer_ring& buffers, tls_client_policy& tls, outbound_owner& owner,
                   connection_target target, const protocol::client_config& config, core::tls_verify verify)
    : _reactor(reactor),
      _buffers(buffers),
      _tls_policy(tls),
      _owner(owner),
      _target(std::move(target)),
      _target_address(core::to_string(_target.address)),
      _session(config),
      _tls_use(config.starttls),
      _verify(verify) {
    _connect_op.owner = this;
    _connect_op.handler = &outbound::on_connect;
    _recv_op.owner = this;
    _recv_op.handler = &outbound::on_recv;
    _send_op.owner = this;
    _send_op.handler = &outbound::on_send;
    _last_activity_ms = core::monotonic_ms();
}

outbound::~outbound() {
    if (_fd >= 0) ::close(_fd);
}

std::unique_ptr<outbound_link> outbound_factory::make(const connection_target& target,
                                                      const protocol::client_config& config, core::tls_verify verify,
                                                      outbound_owner& owner) {
    return std::make_unique<outbound>(_reactor, _buffers, _tls, owner, target, config, verify);
}

void outbound::start() noexcept {
    _fd = ::socket(_target.address.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (_fd < 0) {
        lost(std::strerror(errno));
        return;
    }
    const int one = 1;
    (void)setsockopt(_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    _connect_in_flight = true;
    io_uring_prep_connect(_reactor.sqe(&_connect_op), _fd, _target.address.addr(), _target.address.length);
}

void outbound::on_connect(int res, std::uint32_t) noexcept {
    _connect_in_flight = false;
    _last_activity_ms = core::monotonic_ms();
    if (_closing) {
        lost("closed");
        return;
    }
    if (res < 0) {
        lost(std::strerror(-res));
        return;
    }
    arm_recv();
}

void outbound::arm_recv() noexcept {
    io_uring_sqe* s = _reactor.sqe(&_recv_op);
    io_uring_prep_recv_multishot(s, _fd, nullptr, 0, 0);
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = _buffers.group_id();
    _recv_armed = true;
}

void outbound::on_recv(int res, std::uint32_t flags) noexcept {
    const bool more = (flags & IORING_CQE_F_MORE) != 0;
    if (!more) _recv_armed = false;
    if (res > 0) {
        const auto bid = static_cast<std::uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT);
        const auto data = _buffers.data(bid, static_cast<std::size_t>(res));
        _last_activity_ms = core::monotonic_ms();
        if (!_closing) on_input(std::string_view(data.data(), data.size()));
        _buffers.recycle(bid);
        after_step();
        if (!more && !_closing && !_session.closed()) arm_recv();
        return;
    }
    if (res == -ENOBUFS && !_closing) {
        arm_recv();  // the shard's buffers come back within the turn; retry at once
        return;
    }
    if (res == -ECANCELED && _closing) {
        after_step();
        return;
    }
    lost(res == 0 ? "connection closed by the next hop" : std::strerror(-res));
}

// Received bytes: SMTP replies in plaintext, or TLS records once STARTTLS was answered.
// `data` is the receive buffer, valid during the call only.
void outbound::on_input(std::string_view data) noexcept {
    if (!_tls) {
        const std::size_t used = _session.feed(data, _out);
        if (_session.tls_requested()) {
            // RFC 3207 §5 (response injection): whatever came behind the 220 in this read was
            // sent before the handshake, so it is not the server's word under TLS. Dropped.
            if (used < data.size())
                core::diag("STARTTLS to " + peer_text() + ": " +
                           std::to_string(data.size() - used) + " byte(s) behind the 220 discarded, never read as SMTP");
            start_tls();
        }
        return;
    }
    const bool was_established = _tls->is_established();
    _plain.clear();
    const auto fed = _tls->feed_ciphertext(data, _plain);
    _tls->take_output(_wire);  // the handshake's next flight, or an alert
    if (!fed) {
        if (was_established) {
            // A bad record after the handshake: the session cannot go on (no plaintext retry,
            // the mail may have been half sent); treated like a lost connection.
            core::diag("TLS to " + peer_text() + ": " + fed.error().text + "; connection dropped");
            lost("TLS record error");
            return;
        }
        _tls_protocol_failure = true;  // the peer answered our handshake, badly
        fail_tls(fed.error().text);
        return;
    }
    if (!was_established && _tls->is_established()) {
        _tls_text.assign(_tls->protocol_name()).append(" ").append(_tls->cipher_name());
        if (_tls->session_reused()) {
            _tls_text.append(" resumed");
        } else {
            _tls_verified_ms = core::monotonic_ms();  // a full handshake: verified now
        }
        _session.on_tls_established(_out);  // EHLO again (RFC 3207 §4.2)
    }
    // Replies first: the reply to QUIT often shares a read with the close_notify after it.
    if (!_plain.empty()) _session.feed(_plain, _out);
    if (_tls->state() == core::tls_state::closed && !_session.closed()) {
        lost("the next hop ended TLS (close_notify)");
        return;
    }
    if (_plain.capacity() > 4096) std::string().swap(_plain);
    if (!_wire.empty()) _owner.want_flush(*this);
}

// The session's STARTTLS got 220: the ClientHello goes out next.
void outbound::start_tls() noexcept {
    std::string error;
    core::tls_context* context = _tls_policy.client_context(_verify, error);
    if (context == nullptr) {
        _tls_protocol_failure = true;
        fail_tls(error);
        return;
    }
    // The name for SNI and, when verifying, for the certificate check: the MX host, or the
    // static route's address.
    const std::string name = _target.by_mx ? _target.host : core::address_text(_target.address.addr());
    _tls_generation = _tls_policy.generation();
    auto offered = _tls_policy.take_session(tls_resumption_key());
    _tls_verified_ms = offered ? offered->verified_ms : 0;
    auto session = core::tls_session::create(*context, name, offered ? &offered->session : nullptr);
    if (!session) {
        _tls_protocol_failure = true;
        fail_tls(session.error().text);
        return;
    }
    _tls.emplace(std::move(*session));
    _tls->take_output(_wire);  // the ClientHello
    _owner.want_flush(*this);
}

// A session is resumable only with the same SNI name, next-hop address and verification.
std::string outbound::tls_resumption_key() const {
    std::string key = _target.by_mx ? _target.host : std::string();
    key += '|';
    key += peer_text();
    key += _verify == core::tls_verify::peer ? "|verify" : "|any";
    return key;
}

// TLS 1.3 tickets arrive after the handshake (with the server's first replies), so the
// session is taken when the connection ends.
void outbound::remember_tls_session() noexcept {
    // Established, or ended by the peer's close_notify after its 221: both clean.
    if (_tls && (_tls->state() == core::tls_state::established || _tls->state() == core::tls_state::closed) &&
        !_tls_text.empty())
        _tls_policy.keep_session(tls_resumption_key(),
                                         tls_client_policy::resumption{_tls->saved_session(), _tls_verified_ms, _tls_generation});
}

// The handshake failed: logged with the peer and the reason; the session fails its messages
// and closes (after_step tells the pool, which defers them or retries in plaintext).
void outbound::fail_tls(std::string_view reason) noexcept {
    _tls_failure.assign(reason);
    core::diag("TLS to " + peer_text() + " failed: " + _tls_failure +
               (_tls_use == protocol::tls_use::required ? " (TLS required: deferred)"
                                                        : " (opportunistic: retrying in plaintext)"));
    _session.on_tls_failed(reason);
    _out.clear();
    _owner.want_flush(*this);  // the alert, if any
}

// "mx.example.net [192.0.2.1:25]" (MX), or just "192.0.2.1:25" (static route); for domain
// "example.net" when the destination is a domain.
std::string outbound::peer_text() const {
    std::string text =
        _target.host == _target_address ? _target_address : _target.host + " [" + _target_address + "]";
    if (_target.by_mx) text += " for " + _target.destination;
    return text;
}

bool outbound::session_usable() const noexcept {
    if (_session.ready()) return true;
    // A refused greeting is answered with QUIT and counts as a session (as it always has);
    // a session refused for want of TLS or AUTH never got that far.
    return _session.state() == protocol::client_state::quitting &&
           _session.why_closed() != protocol::close_reason::tls_required &&
           _session.why_closed() != protocol::close_reason::auth_failed;
}

std::string outbound::closed_reason() const {
    const protocol::outcome_reply& r = _session.session_reply();
    if (_session.why_closed() == protocol::close_reason::tls_failed)
        return "TLS handshake with " + peer_text() + " failed: " + _tls_failure;
    if (r.text.empty()) return "the next hop refused the session";
    std::string text = r.origin == protocol::reply_origin::peer ? std::to_string(r.code) + " " : std::string();
    for (const char ch : r.text) text += ch == '\n' ? ' ' : ch;
    return text;
}

// Hands finished outcomes to the owner, then either sends, or closes.
void outbound::after_step() noexcept {
    deliver_outcomes();
    if (!_connected && !_closing && !_session.closed() && session_usable()) {
        _connected = true;
        follow(_owner.connection_ready(*this));
    }
    if (!_out.empty() || !_wire.empty()) _owner.want_flush(*this);
    if (_session.closed() && !_closing) {
        const bool before_greeting = !_connected;
        _closing = true;
        if (_recv_armed) io_uring_prep_cancel64(_reactor.sqe_ignored(), reinterpret_cast<std::uint64_t>(&_recv_op), 0);
        remember_tls_session();
        report_closed(before_greeting, before_greeting ? closed_reason() : "");
    }
}

void outbound::report_closed(bool before_greeting, std::string why) noexcept {
    close_report report;
    report.before_greeting = before_greeting;
    report.reason = _session.why_closed();
    report.tls_protocol_failure = _tls_protocol_failure;
    report.tls_use = _tls_use;
    report.hop = next_hop_ref{_target.host, _target_address, ""};
    report.why = std::move(why);
    _owner.connection_closed(*this, report);
}

next_hop_ref outbound::hop() const { return next_hop_ref{_target.host, _target_address, _tls_text}; }

void outbound::follow(const next_step& next) noexcept {
    if (next.quit) {
        finish();
    } else if (next.job != nullptr) {
        assign(next.job);
    }
}

// Hands the session's outcomes to the owner, each followed by what the owner answers (the
// next job, or QUIT). They are copied and released first: the next job's submit() (and a
// local refusal's outcome) must not meet the old outcomes, nor re-enter this loop.
void outbound::deliver_outcomes() noexcept {
    if (_session.outcomes().empty()) return;
    _done.assign(_session.outcomes().begin(), _session.outcomes().end());
    _session.release_outcomes();
    for (const protocol::message_outcome& o : _done) {
        delivery_job* job = std::exchange(_job, nullptr);
        if (job == nullptr) continue;
        RR_ASSERT(o.tag == job->outbound.tag);
        follow(_owner.job_done(*this, job, o, hop()));
    }
    _done.clear();
}

void outbound::assign(delivery_job* job) noexcept {
    _job = job;
    ++_messages;
    _last_activity_ms = core::monotonic_ms();
    _session.submit(job->outbound, _out);
    // A message refused locally has its outcome already; it is handed over at the end of the
    // turn (flush), never from inside the report whose answer gave this job.
    _owner.want_flush(*this);
}

bool outbound::ready_for_job() const noexcept {
    return _connected && !_closing && _job == nullptr && !_quit_requested &&
           _session.state() == protocol::client_state::idle;
}

void outbound::finish() noexcept {
    if (_closing || _quit_requested) return;
    _quit_requested = true;
    if (!_connected) {
        abort("not needed any more");
        return;
    }
    _session.quit(_out);
    after_step();
}

void outbound::abort(const char* why) noexcept {
    if (_closing) return;
    if (_fd >= 0) (void)::shutdown(_fd, SHUT_RDWR);
    lost(why);
}

void outbound::lost(const char* why) noexcept {
    if (_closing && _session.closed()) return;
    const bool before_greeting = !_connected;
    const bool in_handshake = _session.tls_requested();
    if (in_handshake) fail_tls(why);  // e.g. the peer hung up on our ClientHello
    _session.on_connection_lost();
    // Report outcomes (the job, if any, is deferred) before the connection goes.
    deliver_outcomes();
    if (_job != nullptr) {
        // No outcome for it (it was never submitted): give it back as not attempted.
        protocol::message_outcome none;
        none.kind = protocol::outcome_kind::not_attempted;
        delivery_job* job = _job;
        _job = nullptr;
        follow(_owner.job_done(*this, job, none, hop()));
    }
    if (_closing) return;
    _closing = true;
    _out.clear();
    _wire.clear();
    if (_recv_armed) io_uring_prep_cancel64(_reactor.sqe_ignored(), reinterpret_cast<std::uint64_t>(&_recv_op), 0);
    std::string reason;
    if (in_handshake) {
        reason = closed_reason();
    } else {
        reason = "cannot reach ";
        reason += _target.destination;
        reason += ": ";
        reason += why;
    }
    report_closed(before_greeting, std::move(reason));
}

void outbound::flush() noexcept {
    if (!_closing && _job != nullptr && !_session.outcomes().empty()) after_step();
    if (_send_in_flight || _fd < 0 || (_closing && !_session.closed())) return;
    // Session output goes on the wire as it is, or as TLS records; during the handshake the
    // session writes nothing.
    if (!_out.empty()) {
        if (!_tls) {
            if (_wire.empty()) {
                _wire.swap(_out);  // the common case: no copy of the message
            } else {
                _wire.append(_out);
            }
            _out.clear();
        } else if (_tls->is_established()) {
            const auto sealed = _tls->encrypt(_out, _wire);
            _out.clear();
            if (!sealed) {
                lost(sealed.error().text.c_str());
                return;
            }
        }
    }
    // After the session's last word under TLS: close_notify (RFC 8446 §6.1), also in answer
    // to the peer's. Idempotent.
    if (_closing && _tls && (_tls->is_established() || _tls->state() == core::tls_state::closed)) _tls->close(_wire);
    if (_wire.empty()) return;
    _sending.swap(_wire);
    _wire.clear();
    _sent = 0;
    _send_in_flight = true;
    io_uring_prep_send(_reactor.sqe(&_send_op), _fd, _sending.data(), _sending.size(), MSG_NOSIGNAL);
}

void outbound::on_send(int res, std::uint32_t) noexcept {
    _send_in_flight = false;
    if (res < 0) {
        lost(std::strerror(-res));
        return;
    }
    _sent += static_cast<std::size_t>(res);
    _last_activity_ms = core::monotonic_ms();  // a long upload is progress, not a stall
    if (_sent < _sending.size()) {
        _send_in_flight = true;
        io_uring_prep_send(_reactor.sqe(&_send_op), _fd, _sending.data() + _sent, _sending.size() - _sent,
                           MSG_NOSIGNAL);
        return;
    }
    _sending.clear();
    if (!_out.empty() || !_wire.empty()) flush();
}

bool outbound::retirable() const noexcept {
    return _closing && !_connect_in_flight && !_recv_armed && !_send_in_flight;
}

}  // namespace ringrelay::queue
