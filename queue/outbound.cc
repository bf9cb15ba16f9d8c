// queue/outbound.cc: see outbound.h.
#include "queue/outbound.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>

#include "core/clock.h"
#include "core/invariant.h"
#include "core/log.h"
#include "queue/record.h"
#include "queue/spool.h"

namespace ringrelay::queue {

outbound::outbound(const core::stream_services& streams, tls_client_policy& tls, outbound_owner& owner,
                   connection_target target, const protocol::client_config& config, core::tls_verify verify)
    : _tls_policy(tls),
      _owner(owner),
      _target(std::move(target)),
      _target_address(core::to_string(_target.address)),
      _session(config),
      _stream(streams, *this, std::numeric_limits<std::size_t>::max()),
      _reactor(streams.ring),
      _tls_use(config.starttls),
      _verify(verify) {
    _last_activity_ms = core::monotonic_ms();
    _load_done.owner = this;
}

outbound::~outbound() {
    if (_load_fd >= 0) ::close(_load_fd);
}

std::unique_ptr<outbound_link> outbound_factory::make(const connection_target& target,
                                                      const protocol::client_config& config, core::tls_verify verify,
                                                      outbound_owner& owner) {
    return std::make_unique<outbound>(_streams, _tls, owner, target, config, verify);
}

void outbound::start() noexcept {
    // No socket: nothing is in flight; lost() closes the stream, which finishes at the turn's end.
    if (auto started = _stream.connect(_target.address); !started) lost(started.error().message());
}

void outbound::on_stream_connected() noexcept {
    _last_activity_ms = core::monotonic_ms();
    _stream.start_receiving();
}

// SMTP replies, in plaintext or decrypted once STARTTLS got its 220. `data` is the receive
// buffer (or the stream's decrypted copy), valid during the call only.
void outbound::on_stream_data(std::string_view data) noexcept {
    _last_activity_ms = core::monotonic_ms();
    if (_closing) return;
    const std::size_t used = _session.feed(data, _stream.out());
    if (_stream.tls() == nullptr && _session.tls_requested()) {
        // RFC 3207 §5 (response injection): whatever came behind the 220 in this read was
        // sent before the handshake, so it is not the server's word under TLS. Dropped.
        if (used < data.size())
            core::diag("STARTTLS to " + peer_text() + ": " + std::to_string(data.size() - used) +
                       " byte(s) behind the 220 discarded, never read as SMTP");
        start_tls();
    }
    after_step();
}

void outbound::on_stream_end(core::stream_end why, std::string_view detail) noexcept {
    _last_activity_ms = core::monotonic_ms();
    switch (why) {
    case core::stream_end::connect_failed:
    case core::stream_end::socket_error:
        lost(detail);
        return;
    case core::stream_end::peer_closed:
        lost("connection closed by the next hop");
        return;
    case core::stream_end::tls_failed:
        // The peer answered our handshake, badly (or a local TLS error): the session fails its
        // messages and closes; the alert, if any, leaves first.
        _tls_protocol_failure = true;
        fail_tls(detail);
        after_step();
        return;
    case core::stream_end::tls_record:
        // A bad record after the handshake: the session cannot go on (no plaintext retry, the
        // mail may have been half sent); treated like a lost connection.
        core::diag("TLS to " + peer_text() + ": " + std::string(detail) + "; connection dropped");
        lost("TLS record error");
        return;
    case core::stream_end::tls_closed:
        // After the reply it came behind (the data came first): a close_notify behind 221 is
        // the normal end, and the session has closed already.
        if (!_session.closed()) lost("the next hop ended TLS (close_notify)");
        return;
    }
}

void outbound::on_stream_tls_ready() noexcept {
    const core::tls_session& tls = *_stream.tls();
    _tls_text.assign(tls.protocol_name()).append(" ").append(tls.cipher_name());
    if (tls.session_reused()) {
        _tls_text.append(" resumed");
    } else {
        _tls_verified_ms = core::monotonic_ms();  // a full handshake: verified now
    }
    _last_activity_ms = core::monotonic_ms();
    _session.on_tls_established(_stream.out());  // EHLO again (RFC 3207 §4.2)
    after_step();
}

// A long upload is progress, not a stall.
void outbound::on_stream_sent(std::uint8_t) noexcept { _last_activity_ms = core::monotonic_ms(); }
void outbound::on_stream_progress() noexcept { _last_activity_ms = core::monotonic_ms(); }

// The session's STARTTLS got 220: the ClientHello goes out at the end of the turn.
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
    auto started = _stream.start_tls_client(*context, name, offered ? &offered->session : nullptr);
    if (!started) {
        _tls_protocol_failure = true;
        fail_tls(started.error().text);
    }
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
    const core::tls_session* tls = _stream.tls();
    // Established, or ended by the peer's close_notify after its 221: both clean.
    if (tls != nullptr && (tls->state() == core::tls_state::established || tls->state() == core::tls_state::closed) &&
        !_tls_text.empty())
        _tls_policy.keep_session(tls_resumption_key(),
                                 tls_client_policy::resumption{tls->saved_session(), _tls_verified_ms, _tls_generation});
}

// The handshake failed: logged with the peer and the reason; the session fails its messages
// and closes (after_step tells the pool, which defers them or retries in plaintext).
void outbound::fail_tls(std::string_view reason) noexcept {
    _tls_failure.assign(reason);
    core::diag("TLS to " + peer_text() + " failed: " + _tls_failure +
               (_tls_use == protocol::tls_use::required ? " (TLS required: deferred)"
                                                        : " (opportunistic: retrying in plaintext)"));
    _session.on_tls_failed(reason);
    _stream.out().clear();
    _stream.want_flush();  // the alert, if any
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
    if (!_stream.out().empty()) _stream.want_flush();
    if (_session.closed() && !_closing) {
        const bool before_greeting = !_connected;
        begin_close();
        remember_tls_session();
        report_closed(before_greeting, before_greeting ? closed_reason() : "");
    }
}

void outbound::begin_close() noexcept {
    _closing = true;
    _stream.close();
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
    if (!job->body) job->body = job->cached.lock();
    if (!job->body) {
        load_body();
        return;
    }
    submit_job();
}

void outbound::load_body() noexcept {
    _loading = true;
    _load_job = _job;
    _load_error.clear();
    const record_location& w = _job->where;
    if (_job->spool_dir == nullptr) {
        _load_error = "no spool to read it from";
        _reactor.post(&_load_done, -EINVAL);
        return;
    }
    const std::string path = *_job->spool_dir + "/" + segment_file_name(w.segment);
    _load_fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (_load_fd < 0) {
        // Reported from the completion, never from inside the report that gave this job.
        _reactor.post(&_load_done, -errno);
        return;
    }
    _load_buffer.resize(w.size);
    io_uring_prep_read(_reactor.sqe(&_load_done), _load_fd, _load_buffer.data(), static_cast<unsigned>(w.size), w.offset);
}

void outbound::body_loaded(int res) noexcept {
    _loading = false;
    if (_load_fd >= 0) {
        ::close(_load_fd);
        _load_fd = -1;
    }
    delivery_job* job = std::exchange(_load_job, nullptr);
    if (job == nullptr || job != _job || _closing) return;  // given back meanwhile (the connection was lost)
    const record_location& w = job->where;
    std::string error = _load_error;
    if (error.empty()) {
        if (res < 0) {
            error = std::strerror(-res);
        } else if (static_cast<std::uint64_t>(res) < w.size) {
            error = "the segment ends short of the record";
        } else if (auto rec = decode_record(_load_buffer, w.salt); !rec) {
            error = std::string(describe(rec.error()));
        } else if (rec->header.queue_id != job->outbound.tag ||
                   (rec->header.type != record_type::message && rec->header.type != record_type::message_copy)) {
            error = "another record is there";
        } else {
            const auto at = static_cast<std::size_t>(rec->message.data() - _load_buffer.data());
            const std::size_t length = rec->message.size();
            auto body = std::make_shared<message_body>();
            body->bytes = std::move(_load_buffer);
            body->text = std::string_view(body->bytes).substr(at, length);
            job->body = std::move(body);
            submit_job();
            return;
        }
    }
    // Deferred with the reason, like any transient failure; the next attempt reads it again.
    protocol::message_outcome failed;
    failed.kind = protocol::outcome_kind::transient_failure;
    failed.reply.origin = protocol::reply_origin::local;
    failed.reply.code = 451;
    failed.reply.enhanced.status_class = 4;
    failed.reply.enhanced.subject = 3;
    failed.reply.enhanced.detail = 0;
    failed.reply.text = "cannot read the message back from the spool (" + *job->spool_dir + "/" +
                        segment_file_name(w.segment) + " offset " + std::to_string(w.offset) + "): " + error;
    core::diag("outbound: " + protocol::format_queue_id(job->outbound.tag) + ": " + failed.reply.text);
    _job = nullptr;
    follow(_owner.job_done(*this, job, failed, hop()));
}

void outbound::submit_job() noexcept {
    delivery_job* job = _job;
    job->outbound.body = job->body->text;
    _session.submit(job->outbound, _stream.out());
    // The commands leave at the end of the turn. A message refused locally has its outcome
    // already: it is handed over then too (on_stream_flush), never from inside the report
    // whose answer gave this job.
    _stream.want_flush();
}

// At the turn's end, before the stream sends: the next job's commands (if the outcome's report
// answers with one) leave in the same send.
void outbound::hand_over_refusals() noexcept {
    if (!_closing && _job != nullptr && !_session.outcomes().empty()) after_step();
}

void outbound::flush() noexcept { hand_over_refusals(); }

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
    _session.quit(_stream.out());
    after_step();
}

void outbound::abort(const char* why) noexcept {
    if (_closing) return;
    _stream.abort();  // also completes a send stuck on a full window
    lost(why);
}

void outbound::lost(std::string_view why) noexcept {
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
    _stream.abandon();  // nothing queued can matter now
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

}  // namespace ringrelay::queue
