// queue/connection.cc: see connection.h.
#include "queue/connection.h"

#include <netinet/in.h>
#include <poll.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <cstring>

#include "core/clock.h"
#include "core/log.h"
#include "core/net.h"
#include "queue/shard.h"

namespace ringrelay::queue {

namespace {
// Input held while a commit is pending (pipelined BDAT chunks of the next message, say)
// beyond which the connection stops reading until the commit completes.
constexpr std::size_t max_held_input = 256 * 1024;
// Replies queued behind a send the peer does not drain, beyond which the peer is cut off.
constexpr std::size_t max_pending_output = 1024 * 1024;
// To a client that talks before our greeting (RFC 5321 §3.1: the client waits for it).
// Postfix's postscreen calls this PREGREET and, with "drop", answers the same way.
constexpr std::string_view early_talker_reply = "521 5.5.1 Protocol error: talking before the greeting\r\n";
}  // namespace

connection::connection(shard& owner, int fd, const sockaddr* peer, protocol::relay_trust trust, listener_kind kind)
    : _shard(owner),
      _fd(fd),
      _peer(core::address_text(peer)),
      _session(owner.server_config(), protocol::client_info{_peer, trust}, owner),
      _auth_slot(owner.auth() != nullptr ? owner.auth()->failures().slot_of(_peer) : 0),
      _kind(kind) {
    _recv.owner = this;
    _send.owner = this;
    _auth_delay.owner = this;
    _poll.owner = this;
    _kernel_tls = owner.kernel_tls();
}

connection::~connection() {
    if (!_fd_closed) ::close(_fd);
}

void connection::start() noexcept {
    const int one = 1;
    (void)setsockopt(_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (_kind == listener_kind::implicit_tls && _kernel_tls) {
        // kTLS: OpenSSL handshakes on the socket; the banner once it completes.
        core::tls_context* context = _shard.tls_context();
        auto session = context != nullptr ? core::tls_session::create_on_socket(*context, _fd)
                                          : std::unexpected(core::tls_error{core::tls_errc::setup, "no TLS context"});
        if (!session) {
            tls_failed(session.error().text);
            return;
        }
        _tls.emplace(std::move(*session));
        _tls_phase = tls_phase::kernel_handshaking;
        _progress_ms = core::monotonic_ms();
        _shard.deadlines().touch(*this, _progress_ms);
        kernel_handshake_step();
        return;
    }
    if (_kind == listener_kind::implicit_tls) {
        // RFC 8314 §3.3: the handshake first; the banner once it completes (on_ciphertext).
        core::tls_context* context = _shard.tls_context();
        auto session = context != nullptr ? core::tls_session::create(*context)
                                          : std::unexpected(core::tls_error{core::tls_errc::setup, "no TLS context"});
        if (!session) {
            tls_failed(session.error().text);
            return;
        }
        _tls.emplace(std::move(*session));
        _tls_phase = tls_phase::handshaking;
    } else {
        _session.start(_out);
        _banner_queued = true;
    }
    arm_recv();
    _progress_ms = core::monotonic_ms();
    _shard.deadlines().touch(*this, _progress_ms);
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
    if (!_closing && !_paused && !_recv_armed && !socket_lent()) arm_recv();
    maybe_retire();
}

void connection::on_recv(int res, std::uint32_t flags) noexcept {
    const bool more = (flags & IORING_CQE_F_MORE) != 0;
    if (!more) _recv_armed = false;
    if (res > 0) {
        const auto bid = static_cast<std::uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT);
        const auto data = _shard.buffers().data(bid, static_cast<std::size_t>(res));
        if (!_closing) on_input(std::string_view(data.data(), data.size()));
        _shard.buffers().recycle(bid);
        if (!more && !_closing && !_paused && !socket_lent()) arm_recv();
    } else if (res == -ENOBUFS) {
        // The shard's buffer ring ran dry: try again at the end of the turn, when this turn's
        // buffers are back.
        if (!_closing && !_paused && !socket_lent()) _shard.want_rearm(this);
    } else if (res == -ECANCELED) {
        // Only we cancel a receive: for closing, to pause input while a commit is pending, or
        // to lend the socket to a kTLS handshake. If the commit completed before this CQE
        // arrived, reading resumes now.
        if (!_closing && !_paused && !more && !socket_lent()) arm_recv();
    } else {
        // End of stream or a socket error: the client is gone. A pending commit still
        // completes (the message is spooled; the client will retry or not, RFC 5321 §6.1).
        _peer_gone = true;
        close();
    }
    // kTLS STARTTLS: our receive is gone now; the 220 may leave (flush waited for this).
    if (!_recv_armed && _kernel_tls && _tls_phase == tls_phase::ready_unsent) _shard.want_flush(this);
    maybe_retire();
}

// Received bytes, by TLS phase. `data` is the receive buffer, valid during the call only.
void connection::on_input(std::string_view data) noexcept {
    switch (_tls_phase) {
    case tls_phase::off:
    case tls_phase::kernel_on:  // the kernel has decrypted it already
        on_plaintext(data);
        return;
    case tls_phase::ready_unsent:
        // The client did not wait for our 220: these bytes are no ClientHello of a client
        // that read it. Never SMTP either (CVE-2011-0411): dropped.
        discard_before_handshake(data.size());
        return;
    case tls_phase::handshaking:
    case tls_phase::on:
        on_ciphertext(data);
        return;
    case tls_phase::kernel_handshaking:
        // No receive is armed in this phase; a completion already in flight when it began
        // carries bytes from before the 220 left (see ready_unsent).
        discard_before_handshake(data.size());
        return;
    }
}

void connection::on_plaintext(std::string_view data) noexcept {
    if (_greeted) {
        process(data);
    } else {
        early_talker(data);  // (implicit TLS: talked before the banner left)
    }
}

// kTLS: one step of OpenSSL's handshake on the socket; waits for readiness on the shard's
// io_uring (POLL_ADD), never blocks. Once done, the kernel must hold the record layer both
// ways (the start-up probe said it would); then SMTP resumes over plain receives and sends.
void connection::kernel_handshake_step() noexcept {
    auto step = _tls->handshake_on_socket();
    if (!step) {
        tls_failed(step.error().text);
        return;
    }
    if (*step != core::tls_session::socket_step::done) {
        const bool read = *step == core::tls_session::socket_step::want_read;
        io_uring_prep_poll_add(_shard.reactor().sqe(&_poll), _fd, read ? POLLIN : POLLOUT);
        _poll_armed = true;
        return;
    }
    if (!_tls->kernel_sends() || !_tls->kernel_receives()) {
        tls_failed(std::string("the kernel did not take the TLS record layer for ") +
                   std::string(_tls->protocol_name()) + " " + std::string(_tls->cipher_name()) +
                   " (run with --no-ktls if this repeats)");
        return;
    }
    _tls_phase = tls_phase::kernel_on;
    _shard.mutable_counters().tls_handshakes.fetch_add(1, std::memory_order_relaxed);
    _tls_text.assign(_tls->protocol_name()).append(" ").append(_tls->cipher_name()).append(" kTLS");
    _session.on_tls_established(protocol::tls_info{_tls->protocol_name(), _tls->cipher_name(), _tls->cipher_bits(),
                                                    _tls->cipher_algorithm_bits()});
    if (_kind == listener_kind::implicit_tls) {
        _session.start(_out);
        _banner_queued = true;
    }
    _progress_ms = core::monotonic_ms();
    _content_bytes = 0;
    _shard.deadlines().touch(*this, _progress_ms);
    if (!_recv_armed) arm_recv();
    _shard.want_flush(this);
}

void connection::on_poll(int res) noexcept {
    _poll_armed = false;
    if (_closing || _tls_phase != tls_phase::kernel_handshaking) {
        maybe_retire();
        return;
    }
    if (res < 0) {
        tls_failed(std::string("waiting for the socket during the handshake: ") + std::strerror(-res));
    } else {
        kernel_handshake_step();
    }
    maybe_retire();
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
        _shard.mutable_counters().tls_handshakes.fetch_add(1, std::memory_order_relaxed);
        _tls_text.assign(_tls->protocol_name()).append(" ").append(_tls->cipher_name());
        _session.on_tls_established(protocol::tls_info{_tls->protocol_name(), _tls->cipher_name(),
                                                        _tls->cipher_bits(), _tls->cipher_algorithm_bits()});
        if (_kind == listener_kind::implicit_tls) {
            _session.start(_out);
            _banner_queued = true;
        }
        _progress_ms = core::monotonic_ms();
        _content_bytes = 0;
        _shard.deadlines().touch(*this, _progress_ms);
    }
    if (_tls->state() == core::tls_state::closed) {
        // close_notify: the client has ended TLS, and with it the SMTP session.
        _peer_gone = true;
        close();
    } else if (!_plain.empty()) {
        on_plaintext(_plain);
    }
    // An idle TLS connection keeps no receive-sized buffer (OpenSSL releases its own too:
    // SSL_MODE_RELEASE_BUFFERS).
    if (_plain.capacity() > 4096) std::string().swap(_plain);
    if (!_wire.empty() || !_out.empty()) _shard.want_flush(this);
}

// The session accepted STARTTLS: its 220 leaves in plaintext, then TLS. Input not yet fed to
// the session (the rest of the read that carried STARTTLS, or pipelined input held behind a
// commit) is the CVE-2011-0411 injection and is dropped, as is anything that arrives before
// the 220 has left (on_input).
void connection::begin_starttls() noexcept {
    core::tls_context* context = _shard.tls_context();
    auto session = context == nullptr ? std::unexpected(core::tls_error{core::tls_errc::setup, "no TLS context"})
                   : _kernel_tls      ? core::tls_session::create_on_socket(*context, _fd)
                                      : core::tls_session::create(*context);
    if (!session) {
        tls_failed(session.error().text);
        return;
    }
    _tls.emplace(std::move(*session));
    if (!_held.empty()) {
        discard_before_handshake(_held.size());
        _held.clear();
    }
    // Input paused behind a commit (over max_held_input) was all dropped just now: the
    // handshake needs the receive back (user space) or the socket (kTLS).
    if (_paused) {
        _paused = false;
        if (!_kernel_tls && !_recv_armed && !_closing) arm_recv();
    }
    if (_kernel_tls && _recv_armed) {
        // kTLS: the handshake is OpenSSL's own reads on the socket, so our receive must be
        // gone before the 220 leaves (flush waits for it): a ClientHello must never land in
        // one of our buffers.
        io_uring_prep_cancel64(_shard.reactor().sqe_ignored(), reinterpret_cast<std::uint64_t>(&_recv), 0);
    }
    _wire.append(_out);
    _out.clear();
    _wire_marks |= tls_ready_mark;
    _tls_phase = tls_phase::ready_unsent;
    _shard.want_flush(this);
}

void connection::discard_before_handshake(std::size_t bytes) noexcept {
    _shard.mutable_counters().tls_discarded_bytes.fetch_add(bytes, std::memory_order_relaxed);
    if (_shard.may_report(shard::report::tls_discarded))
        core::diag("STARTTLS from " + _peer + ": " + std::to_string(bytes) +
                   " byte(s) sent before the TLS handshake discarded, never read as SMTP (one report per second)");
}

// The handshake or a record failed: log it, send the alert (already in _wire), close. No SMTP
// reply: the client expects TLS records now.
void connection::tls_failed(std::string_view reason) noexcept {
    _shard.mutable_counters().tls_failures.fetch_add(1, std::memory_order_relaxed);
    if (_shard.may_report(shard::report::tls_failure))
        core::diag("TLS with " + _peer + " failed: " + std::string(reason) + " (one report per second)");
    _out.clear();
    close();
    _shard.want_flush(this);
}

// Bytes arrived before the send carrying our banner completed: the client did not wait for
// the greeting, which a correct SMTP client always does (bots that blast a canned dialogue
// do not). Nothing it sent is executed; it gets 521 5.5.1 after the banner and is closed.
void connection::early_talker(std::string_view data) noexcept {
    if (_shard.may_report(shard::report::early_talker))
        core::diag("early talker " + _peer + ": " + std::to_string(data.size()) +
                   " byte(s) before the greeting; dropped with 521 5.5.1 (one report per second)");
    _shard.mutable_counters().early_talkers.fetch_add(1, std::memory_order_relaxed);
    _out.append(early_talker_reply);
    close();
    _shard.want_flush(this);
}

// The command timeout runs per request, not per read (Postfix's smtpd_per_request_deadline):
// it restarts when the session makes progress: a reply (a whole command was read), a message
// completed, or message content arriving at --min-data-rate on average since the last
// restart. So a client dribbling a byte a second is cut off after --command-timeout however
// long it keeps dribbling, while a big message on a slow but real link is not.
void connection::process(std::string_view data) noexcept {
    if (!_closing && !_awaiting_commit && !_awaiting_auth && _held.empty() && !_session.tls_requested()) {
        const std::size_t out_before = _out.size();
        const std::size_t n = _session.feed(data, _out);
        if (n < data.size()) _held.assign(data.substr(n));  // dropped instead after STARTTLS
        const std::int64_t now = core::monotonic_ms();
        bool progress = _out.size() != out_before || _session.message_ready() || _session.auth_pending();
        if (!progress && _session.receiving_content()) {
            _content_bytes += n;
            const std::uint64_t rate = _shard.config().min_data_rate;
            const auto elapsed = static_cast<std::uint64_t>(now - _progress_ms);
            progress = rate != 0 && _content_bytes * 1000 >= rate * elapsed;
        }
        if (progress) {
            _progress_ms = now;
            _content_bytes = 0;
            if (!_session.message_ready() && !_session.auth_pending()) _shard.deadlines().touch(*this, now);
        }
    } else {
        _held.append(data);
        if (_held.size() > max_held_input && _recv_armed && !_paused) {
            // Backpressure: stop reading until the pending commit lets the session go on.
            _paused = true;
            // The cancel's own CQE is ignored (user_data 0): nothing of ours to outlive.
            io_uring_prep_cancel64(_shard.reactor().sqe_ignored(), reinterpret_cast<std::uint64_t>(&_recv), 0);
        }
    }
    after_session_step();
}

void connection::after_session_step() noexcept {
    if (_session.message_ready() && !_awaiting_commit) {
        _awaiting_commit = true;
        unlink();  // no command deadline while we, not the client, are working
        _received_us = static_cast<std::uint64_t>(core::unix_us());
        _shard.message_spool().append(_session.message_envelope(), _peer, _session.message(), _received_us, this);
    }
    if (_session.auth_pending() && !_awaiting_auth && !_closing) begin_auth();
    if (!_closing) {
        if (_session.tls_requested() && _tls_phase == tls_phase::off) {
            begin_starttls();
        } else if (_session.closed()) {
            close();
        } else if (_shard.stopping() && !_awaiting_commit && !_awaiting_auth && !_session.in_transaction()) {
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
}

void connection::committed(protocol::commit_result result) noexcept {
    _awaiting_commit = false;
    if (result == protocol::commit_result::ok) {
        _shard.mutable_counters().messages_queued.fetch_add(1, std::memory_order_relaxed);
        log_reception();
        _shard.outbound_delivery().accept(_session.message_envelope(), _peer, _session.message(),
                                          _shard.message_spool().committed_segment(), _received_us);
    } else {
        _shard.mutable_counters().messages_failed.fetch_add(1, std::memory_order_relaxed);
    }
    if (_peer_gone) {
        maybe_retire();
        return;
    }
    _session.commit_done(result, _out);
    resume_input();
}

void connection::resume_input() noexcept {
    // Input pipelined behind the message or the AUTH (RFC 2920, RFC 4954 §4) is processed
    // now, in order.
    while (!_held.empty() && !_session.message_ready() && !_session.auth_pending() && !_session.closed() &&
           !_session.tls_requested()) {
        const std::size_t n = _session.feed(_held, _out);
        if (n == 0) break;
        _held.erase(0, n);
    }
    const bool waiting = _session.message_ready() || _session.auth_pending();
    if (_held.empty() && !waiting) _session.shrink();
    if (_paused && _held.size() <= max_held_input && !_closing) {
        _paused = false;
        if (!_recv_armed) arm_recv();
    }
    if (!waiting && !_closing) {
        _progress_ms = core::monotonic_ms();
        _content_bytes = 0;
        _shard.deadlines().touch(*this, _progress_ms);
    } else if (_closing && !linked()) {
        // Closed while the commit was pending (close() does not arm the deadline then, e.g. a
        // TLS failure right after the data): the last reply gets one timeout period to leave,
        // or the connection would be pinned with no deadline.
        _shard.deadlines().touch(*this, core::monotonic_ms());
    }
    after_session_step();
    _shard.want_flush(this);
    maybe_retire();
}

// A complete AUTH attempt: malformed ones fail (after the delay) without the KDF, others go
// to the work pool, at once when there is room, else after a wait in the shard's
// auth_wait_queue (first come, first served: an attempt arriving while others wait queues
// behind them). No command deadline runs meanwhile: we, not the client, are working; the
// queue's own timeout bounds the wait. Results known at once are delivered on the next loop
// turn (post_auth_result), never from inside this call: a pipelined run of AUTH lines must
// not recurse.
void connection::begin_auth() noexcept {
    _awaiting_auth = true;
    unlink();
    inbound_auth* auth = _shard.auth();
    if (auth == nullptr) return post_auth_result(protocol::auth_result::temporary_failure);
    if (!_auth_check) _auth_check = std::make_unique<auth_check>(this, &connection::auth_checked);
    const protocol::auth_attempt attempt = _session.pending_auth();
    // PLAIN's authorization identity must be the user itself (no proxy authorization).
    _auth_malformed = !attempt.well_formed || (!attempt.authzid.empty() && attempt.authzid != attempt.user);
    if (_auth_malformed) {
        _auth_check->prepare(*auth, protocol::auth_attempt{attempt.mechanism, {}, attempt.user, {}, false});
        _auth_user_slot = 0;
    } else {
        _auth_check->prepare(*auth, attempt);  // the copy waits with us if there is no room
        _auth_user_slot = auth->user_limits().slot_of(attempt.user);
    }
    const std::int64_t now = core::monotonic_ms();
    auth_wait_queue& queue = _shard.auth_queue();
    const auth_start start = queue.empty() ? try_start_auth(now) : auth_start::behind_others;
    if (start == auth_start::started || start == auth_start::answered) return;
    if (_shard.stopping() || !queue.push(*this, now)) {
        if (_shard.may_report(shard::report::auth_queue_full))
            core::diag("AUTH from " + _peer + ": queue full (" + std::to_string(queue.size()) +
                       " attempt(s) wait for room on shard " + std::to_string(_shard.index()) +
                       (_shard.stopping() ? ", which is stopping" : ", --auth-queue-size " + std::to_string(queue.capacity())) +
                       "); answered 454 4.7.0 (one report per second)");
        return refuse_auth_for_load();
    }
    _shard.mutable_counters().auth_queued.fetch_add(1, std::memory_order_relaxed);
    if (_shard.may_report(shard::report::auth_queued)) {
        std::string why;
        switch (start) {
        case auth_start::address_busy:
            why = std::to_string(auth->failures().in_flight(_auth_slot)) + " check(s) of its address in flight";
            break;
        case auth_start::user_paced: why = "its user name failed too often: one check a second"; break;
        case auth_start::pool_full: why = "every password check thread is busy and their queue is full"; break;
        default: why = std::to_string(queue.size() - 1) + " attempt(s) wait before it"; break;
        }
        core::diag("AUTH from " + _peer + ": queued, " + why + " (" + std::to_string(queue.size()) +
                   " waiting on shard " + std::to_string(_shard.index()) + "; one report per second)");
    }
    // Behind others: the queue is offered room at the end of this turn, in order.
    if (start == auth_start::behind_others) _shard.auth_room_freed();
}

connection::auth_start connection::try_start_auth(std::int64_t now_ms) noexcept {
    inbound_auth& auth = *_shard.auth();
    switch (auth.failures().begin(_auth_slot, now_ms)) {
    case auth_failures::admission::blocked:
        _auth_check->clear();
        post_auth_result(protocol::auth_result::throttled);
        return auth_start::answered;
    case auth_failures::admission::busy: return auth_start::address_busy;
    case auth_failures::admission::ok: break;
    }
    if (_auth_malformed) {
        auth_checked(this, *_auth_check);  // a failure without the KDF; answered after the delay
        return auth_start::answered;
    }
    if (!auth.user_limits().try_start(_auth_user_slot, now_ms)) {
        auth.failures().cancel(_auth_slot);
        return auth_start::user_paced;
    }
    // (A paced user's turn taken just above is lost if the pool refuses: the next comes a pace
    // later. The pool's queue is full only under a flood.)
    if (!auth.pool().submit(*_auth_check, _shard.work_return())) {
        auth.failures().cancel(_auth_slot);
        return auth_start::pool_full;
    }
    return auth_start::started;
}

auth_waiter::outcome connection::retry_auth(std::int64_t now_ms) noexcept {
    switch (try_start_auth(now_ms)) {
    case auth_start::started:
    case auth_start::answered: return outcome::done;
    case auth_start::pool_full: return outcome::pool_full;
    default: return outcome::waiting;
    }
}

void connection::auth_wait_over(std::int64_t waited_ms) noexcept {
    if (_shard.may_report(shard::report::auth_wait_over))
        core::diag("AUTH from " + _peer + ": waited " + std::to_string(waited_ms) +
                   " ms for room for the password check (--auth-queue-timeout " +
                   std::to_string(_shard.config().auth_queue_timeout) + " s); answered 454 4.7.0 (one report per second)");
    refuse_auth_for_load();
}

void connection::auth_wait_cancelled() noexcept { refuse_auth_for_load(); }

void connection::refuse_auth_for_load() noexcept {
    _auth_check->clear();
    _shard.mutable_counters().auth_refused_for_load.fetch_add(1, std::memory_order_relaxed);
    post_auth_result(protocol::auth_result::temporary_failure);
}

void connection::post_auth_result(protocol::auth_result result) noexcept {
    _auth_result = result;
    _auth_delay_armed = true;
    _auth_delay_is_timer = false;
    _shard.reactor().post(&_auth_delay, 0);
}

// Shard thread (work_return, or begin_auth for a malformed attempt): the check is done.
void connection::auth_checked(void* self, auth_check& check) noexcept {
    auto* c = static_cast<connection*>(self);
    const bool ok = check.result() == auth_check::verdict::ok;
    if (check.result() == auth_check::verdict::error && c->_shard.may_report(shard::report::auth_busy))
        core::diag("AUTH: " + check.error() + " (answered 535 like a wrong password)");
    const std::int64_t now = core::monotonic_ms();
    const bool blocked = c->_shard.auth()->failures().end(c->_auth_slot, !ok, now);
    if (!c->_auth_malformed) (void)c->_shard.auth()->user_limits().end(c->_auth_user_slot, !ok, now);
    c->_shard.auth_room_freed();  // its address (and user) may have room for a waiting attempt
    if (ok) {
        c->finish_auth(protocol::auth_result::ok);
        return;
    }
    // Repeated failures slow down (0.5 s more per failure on this connection, up to 4 s); the
    // session disconnects at --auth-max-failures, the address is refused at its own limit.
    c->_shard.mutable_counters().auth_failures.fetch_add(1, std::memory_order_relaxed);
    c->_auth_result = blocked ? protocol::auth_result::throttled : protocol::auth_result::failed;
    if (c->_peer_gone || c->_closing) {
        c->finish_auth(c->_auth_result);
        return;
    }
    const std::uint64_t failures = c->_session.auth_failures() + 1;  // this one is not answered yet
    const std::uint64_t ms = std::min<std::uint64_t>(500 * failures, 4000);
    c->_auth_delay.wait.tv_sec = static_cast<long long>(ms / 1000);
    c->_auth_delay.wait.tv_nsec = static_cast<long long>((ms % 1000) * 1000000);
    c->_auth_delay_armed = true;
    c->_auth_delay_is_timer = true;
    io_uring_prep_timeout(c->_shard.reactor().sqe(&c->_auth_delay), &c->_auth_delay.wait, 0, 0);
}

void connection::on_auth_delay() noexcept {
    _auth_delay_armed = false;
    finish_auth(_auth_result);
}

void connection::finish_auth(protocol::auth_result result) noexcept {
    _awaiting_auth = false;
    if (result == protocol::auth_result::ok) {
        _shard.mutable_counters().auth_successes.fetch_add(1, std::memory_order_relaxed);
    }
    if (_peer_gone || _closing) {
        std::string discarded;  // no reply can go out now; the session still wipes the password
        _session.auth_done(result, discarded);
        maybe_retire();
        return;
    }
    _session.auth_done(result, _out);
    resume_input();
}

void connection::log_reception() noexcept {
    core::log_writer& log = _shard.log();
    if (!log.enabled()) return;
    const protocol::envelope& env = _session.message_envelope();
    std::string& line = log.line_buffer();
    line += "{\"type\":\"Reception\",\"time\":\"";
    line += core::iso8601_us(static_cast<std::int64_t>(_received_us));
    line += "\",\"queue_id\":\"";
    line += protocol::format_queue_id(env.queue_id);
    line += "\",\"shard\":";
    line += std::to_string(_shard.index());
    line += ",\"client\":\"";
    core::append_json_escaped(line, _peer);
    line += "\",\"helo\":\"";
    core::append_json_escaped(line, env.helo);
    line += "\",\"sender\":\"";
    core::append_json_escaped(line, env.mail_from);
    line += "\",\"recipients\":[";
    for (std::size_t i = 0; i < env.rcpt_to.size(); ++i) {
        if (i != 0) line += ',';
        line += '"';
        core::append_json_escaped(line, env.rcpt_to[i]);
        line += '"';
    }
    line += "],\"size\":";
    line += std::to_string(_session.message().size());
    line += ",\"auth\":";
    if (_session.authenticated_user().empty()) {
        line += "null";
    } else {
        line += '"';
        core::append_json_escaped(line, _session.authenticated_user());
        line += '"';
    }
    line += ",\"tls\":";
    if (_tls_text.empty()) {
        line += "null";
    } else {
        line += '"';
        core::append_json_escaped(line, _tls_text);
        line += '"';
    }
    line += "}\n";
}

void connection::flush() noexcept {
    if (_send_in_flight || _fd_closed || _peer_gone) {
        maybe_retire();
        return;
    }
    // kTLS: the 220 to STARTTLS waits until our receive is gone (begin_starttls cancelled it).
    if (_tls_phase == tls_phase::ready_unsent && _kernel_tls && _recv_armed) return;
    // Session replies go on the wire as they are, or as TLS records; while a handshake is
    // pending they wait (an implicit-TLS banner is only produced after it).
    if (!_out.empty() &&
        (_tls_phase == tls_phase::off || _tls_phase == tls_phase::on || _tls_phase == tls_phase::kernel_on)) {
        if (_tls_phase != tls_phase::on) {  // plaintext; under kTLS the kernel encrypts it
            _wire.append(_out);
        } else if (auto sealed = _tls->encrypt(_out, _wire); !sealed) {
            _out.clear();
            tls_failed(sealed.error().text);
        }
        _out.clear();
        if (_banner_queued) {
            _banner_queued = false;
            _wire_marks |= banner_mark;
        }
    }
    // After the session's last word under TLS: close_notify (RFC 8446 §6.1). Idempotent.
    if (_closing && _tls_phase == tls_phase::on && _out.empty()) _tls->close(_wire);
    // kTLS: OpenSSL writes the close_notify through the kernel itself, so only once every
    // reply before it has left (nothing queued, no send in flight).
    if (_closing && _tls_phase == tls_phase::kernel_on && _out.empty() && _wire.empty()) {
        std::string none;
        _tls->close(none);
    }
    if (_wire.empty()) {
        maybe_retire();
        return;
    }
    _sending.swap(_wire);
    _wire.clear();
    _sending_marks = _wire_marks;
    _wire_marks = 0;
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
    if ((_sending_marks & banner_mark) != 0) _greeted = true;
    if ((_sending_marks & tls_ready_mark) != 0 && _tls_phase == tls_phase::ready_unsent) {
        // The 220 has left: what comes now is TLS.
        if (_kernel_tls) {
            _tls_phase = tls_phase::kernel_handshaking;
            _sending_marks = 0;
            if (!_closing) kernel_handshake_step();
            flush();
            return;
        }
        _tls_phase = tls_phase::handshaking;
    }
    _sending_marks = 0;
    if (_sending.capacity() > 4096) std::string().swap(_sending);
    flush();  // what was produced meanwhile; retires the connection if nothing is left
}

void connection::close() noexcept {
    if (_closing) return;
    _closing = true;
    _held.clear();
    // Waiting for room for a password check: leave the queue; the answer (nowhere to go now)
    // comes on the next turn and lets the connection retire.
    if (waiting()) {
        leave();
        _auth_check->clear();
        post_auth_result(protocol::auth_result::temporary_failure);
    }
    // Before TLS is up no SMTP reply can be sent: the client expects handshake records.
    if (tls_pending()) _out.clear();
    // The last reply gets one more timeout period to leave; a peer that does not read it is
    // then cut off (on_deadline).
    if (!_awaiting_commit) _shard.deadlines().touch(*this, core::monotonic_ms());
    if (_recv_armed) {
        io_uring_prep_cancel64(_shard.reactor().sqe_ignored(), reinterpret_cast<std::uint64_t>(&_recv), 0);
    }
    if (_poll_armed) {
        io_uring_prep_poll_remove(_shard.reactor().sqe_ignored(), reinterpret_cast<std::uint64_t>(&_poll));
    }
}

void connection::on_deadline() noexcept {
    if (_awaiting_commit || _awaiting_auth) return;
    if (_closing) {
        if (!_retired) abort_connection();
        return;
    }
    if (tls_pending()) {
        // The command deadline also bounds the handshake; there is no channel for a 421.
        tls_failed("handshake not completed within --command-timeout");
        return;
    }
    _session.on_timeout(_out);
    close();
    _shard.want_flush(this);
}

void connection::on_stop(bool force) noexcept {
    if (_awaiting_auth && force && !_closing) {
        // Grace period over during an AUTH check: close now. A pending failure delay is cut
        // short; a check in the pool cannot be, but the pool's queue is short.
        close();
        if (_auth_delay_armed && _auth_delay_is_timer)
            io_uring_prep_timeout_remove(_shard.reactor().sqe_ignored(), reinterpret_cast<std::uint64_t>(&_auth_delay), 0);
        _shard.want_flush(this);
        return;
    }
    if (_awaiting_commit || _awaiting_auth) return;
    if (_closing) {
        // Grace period over and the peer still has not taken its last reply.
        if (force && !_retired) abort_connection();
        return;
    }
    if (tls_pending()) {
        close();  // no SMTP reply before the handshake
        _shard.want_flush(this);
        return;
    }
    if (!force && _session.in_transaction()) return;
    _session.on_shutdown(_out);
    close();
    _shard.want_flush(this);
}

bool connection::retirable() const noexcept {
    return _closing && !_recv_armed && !_send_in_flight && !_awaiting_commit && !_awaiting_auth && !_poll_armed &&
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

}  // namespace ringrelay::queue
