// queue/server_connection.cc: see server_connection.h.
#include "queue/server_connection.h"

#include <algorithm>
#include <utility>

#include "core/clock.h"
#include "protocol/proxy_header.h"
#include "protocol/reply.h"

namespace ringrelay::queue {

namespace {
// Input held while the session waits (pipelined BDAT chunks of the next message, say) beyond
// which the connection stops reading until the wait is over.
constexpr std::size_t max_held_input = 256 * 1024;
// Replies queued behind a send the peer does not drain, beyond which the peer is cut off.
constexpr std::size_t max_pending_output = 1024 * 1024;
// To a client that talks before our greeting (RFC 5321 §3.1: the client waits for it).
// Postfix's postscreen calls this PREGREET and, with "drop", answers the same way.
constexpr std::string_view early_talker_reply = "521 5.5.1 Protocol error: talking before the greeting\r\n";
}  // namespace

server_connection::server_connection(server_host& host, int fd, protocol::client_info client, listener_kind kind,
                                     protocol::session_host& session_host)
    : _host(host),
      _reactor(host.stream_services().ring),
      _peer(client.address),
      _proxy(client.proxy),
      _session(host.server_config(), std::move(client), session_host),
      _stream(host.stream_services(), *this),
      _kind(kind) {
    _stream.adopt(fd);
}

server_connection::~server_connection() = default;

void server_connection::start() noexcept {
    if (_kind == listener_kind::implicit_tls) {
        // RFC 8314 §3.3: the handshake first (bounded by the command deadline); the banner
        // once it completes (on_stream_tls_ready).
        core::tls_context* context = _host.tls_context();
        if (context == nullptr) return tls_failed("no TLS context");
        restart_deadline();
        auto started = _stream.start_tls_server(*context, core::tls_start::now,
                                                _host.kernel_tls() ? core::tls_engine::kernel : core::tls_engine::memory);
        if (!started) return tls_failed(started.error().text);
    } else {
        _session.start(_stream.out());
        _stream.mark(banner_mark);
        restart_deadline();
    }
    _stream.start_receiving();  // under kTLS, once the handshake on the socket is done
    _stream.want_flush();
}

void server_connection::restart_deadline() noexcept {
    _progress_ms = core::monotonic_ms();
    _content_bytes = 0;
    _stream.touch_deadline(_progress_ms);
}

// SMTP text from the client: to the session once the banner has left, else an early talker
// (implicit TLS: it talked before the banner that follows the handshake).
void server_connection::on_stream_data(std::string_view data) noexcept {
    if (_closing) return;
    _host.count(server_event::input_bytes, data.size());
    if (_greeted) {
        process(data);
    } else {
        early_talker(data);
    }
}

void server_connection::on_stream_sent(std::uint8_t marks) noexcept {
    if ((marks & banner_mark) != 0) _greeted = true;
}

void server_connection::process(std::string_view data) noexcept {
    if (!_awaiting_commit && !_awaiting_auth && _held.empty() && !_session.tls_requested()) {
        const std::size_t n = feed(data);
        // What the session did not take waits (dropped instead after STARTTLS).
        if (n < data.size() && !_closing) _held.assign(data.substr(n));
    } else {
        _held.append(data);
        // Backpressure: stop reading until the session can go on.
        if (_held.size() > max_held_input) _stream.pause_receive();
    }
    after_session_step();
}

std::size_t server_connection::feed(std::string_view data) noexcept {
    std::size_t used = 0;
    _feeding = true;
    while (!_closing && !_awaiting_commit && !_awaiting_auth) {
        std::string& out = _stream.out();
        const std::size_t before = out.size();
        const std::size_t n = _session.feed(data.substr(used), out);
        used += n;
        note_progress(n, out.size() != before);
        if (!_session.message_ready()) break;
        start_commit();  // answered at once: go on with the rest
        if (used == data.size()) break;
    }
    _feeding = false;
    return used;
}

void server_connection::note_progress(std::size_t consumed, bool replied) noexcept {
    const std::int64_t now = core::monotonic_ms();
    const bool waiting = _session.message_ready() || _session.auth_pending();
    bool progress = replied || waiting;
    if (!progress && _session.receiving_content()) {
        _content_bytes += consumed;
        const std::uint64_t rate = _host.settings().min_data_rate;
        const auto elapsed = static_cast<std::uint64_t>(now - _progress_ms);
        progress = rate != 0 && _content_bytes * 1000 >= rate * elapsed;
    }
    if (progress) {
        _progress_ms = now;
        _content_bytes = 0;
        if (!waiting) _stream.touch_deadline(now);
    }
}

void server_connection::start_commit() noexcept {
    _awaiting_commit = true;
    _stream.stop_deadline();  // no command deadline while we, not the client, are working
    begin_commit();
}

void server_connection::commit_done(protocol::commit_result result) noexcept {
    const std::size_t size = _session.message().size();
    _awaiting_commit = false;
    if (peer_gone()) return maybe_retire();  // nobody to answer; the message is stored anyway
    _session.commit_done(result, _stream.out());
    answered(size);
}

void server_connection::commit_done(protocol::host_reply refusal) noexcept {
    const std::size_t size = _session.message().size();
    _awaiting_commit = false;
    if (peer_gone()) return maybe_retire();
    _session.commit_done(refusal, _stream.out());
    answered(size);
}

void server_connection::commit_dropped() noexcept {
    _awaiting_commit = false;
    close();  // replies already given go out; the end of data gets none
    if (!_feeding) maybe_retire();
}

void server_connection::answered(std::size_t message_size) noexcept {
    const std::size_t keep = _host.settings().keep_body_capacity;
    if (keep != 0 && message_size > keep) _session.shrink();
    _stream.want_flush();
    if (_feeding) {
        // Answered from inside begin_commit(): feed() goes on with the same input.
        if (!_closing) restart_deadline();
        return;
    }
    resume_input();
}

void server_connection::resume_input() noexcept {
    // Input pipelined behind the message or the AUTH (RFC 2920, RFC 4954 §4), in order.
    if (!_held.empty() && !_closing && !_session.tls_requested() && !_session.closed()) {
        const std::size_t used = feed(_held);
        if (_closing) {
            _held.clear();
        } else {
            _held.erase(0, used);
        }
    }
    const bool waiting = _session.message_ready() || _session.auth_pending();
    if (_held.empty() && !waiting && _host.settings().keep_body_capacity == 0) _session.shrink();
    if (_stream.paused() && _held.size() <= max_held_input && !_closing) _stream.resume_receive();
    if (!waiting && !_closing) {
        restart_deadline();
    } else if (_closing && !_stream.deadline_running()) {
        // Closed while the host worked (close() does not start the deadline then, e.g. a TLS
        // failure right after the data): the last reply gets one timeout period to leave, or
        // the connection would be pinned with no deadline.
        _stream.touch_deadline(core::monotonic_ms());
    }
    after_session_step();
    _stream.want_flush();
    maybe_retire();
}

void server_connection::after_session_step() noexcept {
    if (_session.auth_pending() && !_awaiting_auth && !_closing) {
        _awaiting_auth = true;
        _stream.stop_deadline();  // the host works; its own wait is bounded
        begin_auth();
    }
    if (!_closing) {
        if (_session.tls_requested() && _stream.tls() == nullptr) {
            begin_starttls();
        } else if (_session.closed()) {
            close();
        } else if (_host.stopping() && !_awaiting_commit && !_awaiting_auth && !_session.in_transaction()) {
            _session.on_shutdown(_stream.out());
            close();
        }
    }
    if (_stream.unsent() > max_pending_output && _stream.sending() && !peer_gone()) {
        // The client pipelines commands but does not read the replies: cut it off rather than
        // buffer without bound.
        abort();
        return;
    }
    if (!_stream.out().empty()) _stream.want_flush();
}

// The session accepted STARTTLS: its 220 leaves in plaintext, then TLS. Input not yet fed to
// the session (the rest of the read that carried STARTTLS, or pipelined input held behind a
// commit) is the CVE-2011-0411 injection and is dropped, as is anything that arrives before
// the 220 has left (the stream discards it).
void server_connection::begin_starttls() noexcept {
    core::tls_context* context = _host.tls_context();
    if (context == nullptr) return tls_failed("no TLS context");
    auto started = _stream.start_tls_server(*context, core::tls_start::after_output,
                                            _host.kernel_tls() ? core::tls_engine::kernel : core::tls_engine::memory);
    if (!started) return tls_failed(started.error().text);
    if (!_held.empty()) {
        on_stream_discarded(_held.size());
        _held.clear();
    }
    // Input paused behind a commit was all dropped just now: the handshake needs the receive
    // back (user space; under kTLS the stream leaves the socket to OpenSSL).
    _stream.resume_receive();
}

void server_connection::on_stream_discarded(std::size_t bytes) noexcept {
    _host.count(server_event::tls_discarded_bytes, bytes);
    if (_host.may_report(server_report::tls_discarded))
        _host.write_report(server_report::tls_discarded,
                     "STARTTLS from " + _peer + ": " + std::to_string(bytes) +
                         " byte(s) sent before the TLS handshake discarded, never read as SMTP");
}

void server_connection::on_stream_tls_ready() noexcept {
    _host.count(server_event::tls_handshake);
    const core::tls_session& tls = *_stream.tls();
    _tls_text.assign(tls.protocol_name()).append(" ").append(tls.cipher_name());
    if (_stream.kernel_tls()) _tls_text.append(" kTLS");
    _session.on_tls_established(
        protocol::tls_info{tls.protocol_name(), tls.cipher_name(), tls.cipher_bits(), tls.cipher_algorithm_bits()});
    if (_kind == listener_kind::implicit_tls) {
        _session.start(_stream.out());
        _stream.mark(banner_mark);
    }
    restart_deadline();
    _stream.want_flush();
}

void server_connection::on_stream_end(core::stream_end why, std::string_view detail) noexcept {
    switch (why) {
    case core::stream_end::tls_failed:
    case core::stream_end::tls_record:
        tls_failed(detail);
        return;
    case core::stream_end::tls_closed:
        // close_notify: the client has ended TLS, and with it the SMTP session.
        _stream.abandon();
        close();
        return;
    case core::stream_end::peer_closed:
    case core::stream_end::socket_error:
    case core::stream_end::connect_failed:
        // The client is gone. A pending commit still completes (the message is stored; the
        // client will retry or not, RFC 5321 §6.1).
        close();
        return;
    }
}

// The handshake or a record failed: reported, the alert (if any) sent, closed. No SMTP reply:
// the client expects TLS records.
void server_connection::tls_failed(std::string_view reason) noexcept {
    _host.count(server_event::tls_failure);
    if (_host.may_report(server_report::tls_failure))
        _host.write_report(server_report::tls_failure, "TLS with " + _peer + " failed: " + std::string(reason));
    _stream.out().clear();
    close();
}

// Nothing the early talker sent is executed: 521 5.5.1 after the banner (421 4.7.0 for a PROXY
// header), then closed.
void server_connection::early_talker(std::string_view data) noexcept {
    const bool proxy_header = protocol::starts_with_proxy_signature(data);
    if (_host.may_report(server_report::early_talker))
        _host.write_report(server_report::early_talker,
                           "early talker " + _peer + ": " + std::to_string(data.size()) + " byte(s) before the greeting" +
                               (proxy_header ? ", a PROXY header (not in --proxy-protocol-from); dropped with 421 4.7.0"
                                             : "; dropped with 521 5.5.1"));
    _host.count(server_event::early_talker);
    if (proxy_header) {
        protocol::append_reply(_stream.out(), protocol::reply_id::proxy_untrusted, _host.server_config().hostname);
    } else {
        _stream.out().append(early_talker_reply);
    }
    close();
}

void server_connection::on_stream_timeout() noexcept {
    if (_awaiting_commit || _awaiting_auth) return;
    if (_closing) {
        // The last reply did not leave within its period: the client does not read.
        if (!_retired) abort();
        return;
    }
    if (_stream.tls_pending()) {
        // The deadline also bounds the handshake; there is no channel for a 421.
        tls_failed("handshake not completed within " + std::string(_host.settings().timeout_flag));
        return;
    }
    _session.on_timeout(_stream.out());
    close();
}

void server_connection::on_stop(bool force) noexcept {
    if (_awaiting_auth && force && !_closing) {
        // Grace period over during an AUTH check: close now. A pending failure delay is cut
        // short; a check in the work pool cannot be, but the pool's queue is short.
        close();
        if (_auth_answer_armed && _auth_answer_is_timer)
            io_uring_prep_timeout_remove(_reactor.sqe_ignored(), reinterpret_cast<std::uint64_t>(&_auth_answer), 0);
        return;
    }
    if (_awaiting_commit || _awaiting_auth) {
        if (_awaiting_commit && force) cancel_commit();
        return;
    }
    if (_closing) {
        // Grace period over and the peer still has not taken its last reply.
        if (force && !_retired) abort();
        return;
    }
    if (_stream.tls_pending()) {
        close();  // no SMTP reply before the handshake
        return;
    }
    if (!force && _session.in_transaction()) return;
    _session.on_shutdown(_stream.out());
    close();
}

void server_connection::close() noexcept {
    if (_closing) return;
    _closing = true;
    if (!_feeding) _held.clear();  // (feed() is reading it; cleared when it returns)
    on_closing();
    // The last reply gets one more timeout period to leave; a peer that does not read it is
    // then cut off (on_stream_timeout).
    if (!_awaiting_commit) _stream.touch_deadline(core::monotonic_ms());
    _stream.close();
}

void server_connection::abort() noexcept {
    if (_awaiting_commit) cancel_commit();
    _stream.abort();
    close();
}

void server_connection::begin_auth() noexcept { answer_auth_later(protocol::auth_result::temporary_failure, 0); }

void server_connection::answer_auth_later(protocol::auth_result result, std::uint32_t delay_ms) noexcept {
    _auth_result = result;
    _auth_answer_armed = true;
    if (delay_ms == 0) {
        _auth_answer_is_timer = false;
        _reactor.post(&_auth_answer, 0);
        return;
    }
    _auth_answer_is_timer = true;
    _auth_wait.tv_sec = static_cast<long long>(delay_ms / 1000);
    _auth_wait.tv_nsec = static_cast<long long>(delay_ms % 1000) * 1000000;
    io_uring_prep_timeout(_reactor.sqe(&_auth_answer), &_auth_wait, 0, 0);
}

void server_connection::on_auth_answer(int, std::uint32_t) noexcept {
    _auth_answer_armed = false;
    auth_done(_auth_result);
}

void server_connection::auth_done(protocol::auth_result result) noexcept {
    _awaiting_auth = false;
    if (peer_gone() || _closing) {
        std::string discarded;  // no reply can go out now; the session still wipes the password
        _session.auth_done(result, discarded);
        maybe_retire();
        return;
    }
    _session.auth_done(result, _stream.out());
    resume_input();
}

void server_connection::maybe_retire() noexcept {
    if (_retired || !_closing || !_stream.finished() || _awaiting_commit || _awaiting_auth || _auth_answer_armed)
        return;
    _retired = true;
    _host.retire(*this);
}

}  // namespace ringrelay::queue
