// queue/outbound.cc: see outbound.h.
#include "queue/outbound.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>

#include "core/clock.h"
#include "core/invariant.h"
#include "core/log.h"
#include "queue/egress.h"
#include "queue/record.h"
#include "queue/spool.h"

namespace ringrelay::queue {

namespace {

// A connect() that failed on our side (issue 17): no local address or port, no descriptor, no
// memory, a local policy. The stream reports the failure as strerror's text.
bool local_connect_error(std::string_view detail) noexcept {
    for (const int e : {EADDRNOTAVAIL, EADDRINUSE, EMFILE, ENFILE, ENOBUFS, ENOMEM, EAGAIN, EPERM, EACCES, EINVAL})
        if (detail == std::strerror(e)) return true;
    return false;
}

}  // namespace

outbound::outbound(const core::stream_services& streams, tls_client_policy& tls, outbound_owner& owner,
                   connection_target target, const protocol::client_config& config, core::tls_verify verify)
    : _tls_policy(tls),
      _owner(owner),
      _target(std::move(target)),
      _target_address(core::to_string(_target.address)),
      _session(config),
      _stream(streams, *this, std::numeric_limits<std::size_t>::max()),
      _reactor(streams.ring),
      _fixed_buffers(streams.ring.fixed_buffers()),
      _tls_use(config.starttls),
      _verify(verify) {
    _last_activity_ms = core::monotonic_ms();
    _load_done.owner = this;
}

outbound::~outbound() {
    if (_load_fd >= 0) ::close(_load_fd);
    if (_piece_fd >= 0) ::close(_piece_fd);
    // The pool frees retirable() connections, so no read is in flight; one that still is (a
    // shard torn down mid-read, its ring about to go) keeps its buffer out of the pool.
    if (!_piece_reading) release_piece_buffer();
}

std::unique_ptr<outbound_link> outbound_factory::make(const connection_target& target,
                                                      const protocol::client_config& config, core::tls_verify verify,
                                                      outbound_owner& owner) {
    ++_made;
    return std::make_unique<outbound>(_streams, _tls, owner, target, config, verify);
}

void outbound::start() noexcept {
    // No socket: nothing is in flight; lost() closes the stream, which finishes at the turn's end.
    const core::endpoint* from = _target.source != nullptr ? &_target.source->address : nullptr;
    if (auto started = _stream.connect(_target.address, from); !started) {
        _local_failure = true;  // no socket, or the source address could not be bound: our side
        if (_stream.bind_failed()) {
            lost("egress source " + _target.source->name + " cannot bind " + _target.source->address_text + ": " +
                 started.error().message());
        } else {
            lost(started.error().message());
        }
    }
}

void outbound::on_stream_connected() noexcept {
    _last_activity_ms = core::monotonic_ms();
    _tcp_connected = true;
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
        _local_failure = local_connect_error(detail);
        lost(detail);
        return;
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

// A long upload is progress, not a stall; output that left makes room for a body's next piece.
void outbound::on_stream_sent(std::uint8_t) noexcept {
    _last_activity_ms = core::monotonic_ms();
    pump_body();
}
void outbound::on_stream_progress() noexcept {
    _last_activity_ms = core::monotonic_ms();
    pump_body();
}

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
    // A refused greeting (or EHLO and HELO refused) is answered with QUIT but is no session:
    // RFC 5321 §3.1, a 554 greeting means no SMTP service here, a 4xx one not now, so no job
    // takes it as its reply (nothing is bounced for it); the pool hears the connection closed
    // before the greeting, with the reply. A session refused for want of TLS or AUTH never got
    // that far either.
    return _session.state() == protocol::client_state::quitting &&
           _session.why_closed() != protocol::close_reason::greeting_refused &&
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
    pump_body();
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
    report.hop = next_hop_ref{_target.host, _target_address, "", _target.site};
    report.why = std::move(why);
    if (before_greeting) {
        report.stage = _tcp_connected ? attempt_stage::greeting : attempt_stage::connect;
        const protocol::outcome_reply& r = _session.session_reply();
        if (r.origin == protocol::reply_origin::peer) {
            report.code = r.code;
            report.text = r.text;
        }
        report.local_failure = _local_failure;
    }
    _owner.connection_closed(*this, report);
}

next_hop_ref outbound::hop() const { return next_hop_ref{_target.host, _target_address, _tls_text, _target.site}; }

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
        end_body_feed();
        RR_ASSERT(o.tag == job->outbound.tag);
        follow(_owner.job_done(*this, job, o, hop()));
    }
    _done.clear();
}

void outbound::assign(delivery_job* job) noexcept {
    _job = job;
    ++_messages;
    _last_activity_ms = core::monotonic_ms();
    end_body_feed();
    _body_submitted = false;
    if (!job->body) job->body = job->cached.lock();
    if (job->body) {
        if (job->body->text.size() > body_stream_threshold) {
            _feed = body_feed::memory;  // sliced from the cache's copy, never copied whole
            _feed_text = job->body->text;
            _feed_at = 0;
        }
        submit_job();
        return;
    }
    if (streams_from_spool(*job)) {
        start_spool_body();
        return;
    }
    load_body();
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
        if (auto text = message_read_back(_load_buffer, res, w, job->outbound.tag); !text) {
            error = std::move(text.error());
        } else {
            const auto at = static_cast<std::size_t>(text->data() - _load_buffer.data());
            const std::size_t length = text->size();
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
    failed.reply = unreadable_reply(*job, error);
    core::diag("outbound: " + protocol::format_queue_id(job->outbound.tag) + ": " + failed.reply.text);
    _job = nullptr;
    follow(_owner.job_done(*this, job, failed, hop()));
}

protocol::outcome_reply outbound::unreadable_reply(const delivery_job& job, const std::string& error) const {
    const record_location& w = job.where;
    const std::string where = job.spool_dir != nullptr ? *job.spool_dir + "/" + segment_file_name(w.segment) : "?";
    protocol::outcome_reply reply;
    reply.assign_local(451, protocol::enhanced_status{4, 3, 0},
                       "cannot read the message back from the spool (" + where + " offset " +
                           std::to_string(w.offset) + "): " + error);
    return reply;
}

// ---- a large body in pieces ----------------------------------------------------------------

// The record holds the message at its end (queue/record.h); a size that does not fit it is
// left to the whole read, which checks everything.
bool outbound::streams_from_spool(const delivery_job& job) const noexcept {
    return job.spool_dir != nullptr && job.message_size > body_stream_threshold &&
           job.message_size + record_header_size <= job.where.size;
}

void outbound::start_spool_body() noexcept {
    _feed = body_feed::spool;
    _feed_at = 0;
    _body_start = _job->where.size - _job->message_size;
    _check = record_stream_check(_job->where.size, _job->where.salt);
    _piece_full = false;
    // A read for an earlier job still in flight: this one's starts from its completion.
    if (!_piece_reading) open_and_read();
}

// Opens the job's segment (synchronously, as the whole read does) and reads the record's first
// piece. A failure is posted: reported from the completion, never from inside the report that
// gave this job.
void outbound::open_and_read() noexcept {
    const std::string path = *_job->spool_dir + "/" + segment_file_name(_job->where.segment);
    _piece_fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (_piece_fd < 0) {
        _piece_reading = true;
        _piece_job = _job;
        _reactor.post(&_piece_op, -errno);
        return;
    }
    read_piece();
}

void outbound::read_piece() noexcept {
    const record_location& w = _job->where;
    const auto length = static_cast<std::size_t>(std::min<std::uint64_t>(body_piece_size, w.size - _feed_at));
    if (_piece_data == nullptr) take_piece_buffer();
    _piece_length = length;
    _piece_reading = true;
    _piece_job = _job;
    if (_piece_fixed) {
        io_uring_prep_read_fixed(_reactor.sqe(&_piece_op), _piece_fd, _piece_data, static_cast<unsigned>(length),
                                 w.offset + _feed_at, _piece_fixed.index);
        _fixed_buffers.note_read(core::read_memory::fixed);
    } else {
        io_uring_prep_read(_reactor.sqe(&_piece_op), _piece_fd, _piece_data, static_cast<unsigned>(length),
                           w.offset + _feed_at);
        _fixed_buffers.note_read(core::read_memory::plain);
    }
}

// Held from the body's first read until the body is done with no read in flight (a new job's
// body may take it over from a read for the last one: see piece_read).
void outbound::take_piece_buffer() noexcept {
    if (_fixed_buffers.buffer_size() >= body_piece_size) _piece_fixed = _fixed_buffers.acquire();
    if (_piece_fixed) {
        _piece_data = _piece_fixed.data;
        return;
    }
    _piece_plain.resize(body_piece_size);  // the pool is empty, or has nothing registered
    _piece_data = _piece_plain.data();
}

void outbound::release_piece_buffer() noexcept {
    RR_ASSERT(!_piece_reading);  // the kernel may still write into it
    if (_piece_fixed) _fixed_buffers.release(std::exchange(_piece_fixed, core::fixed_buffer{}));
    std::string().swap(_piece_plain);  // an idle connection holds no piece
    _piece_data = nullptr;
    _piece_length = 0;
}

void outbound::piece_read(int res, std::uint32_t) noexcept {
    _piece_reading = false;
    delivery_job* job = std::exchange(_piece_job, nullptr);
    if (job == nullptr || job != _job || _closing || _feed != body_feed::spool || _piece_full) {
        // For a job given back meanwhile: its file goes; the current job's read starts now.
        if (_piece_fd >= 0) {
            ::close(_piece_fd);
            _piece_fd = -1;
        }
        if (!_closing && _job != nullptr && _feed == body_feed::spool && !_piece_full && _feed_at == 0) {
            open_and_read();
        } else if (_feed != body_feed::spool) {
            release_piece_buffer();
        }
        return;
    }
    const record_location& w = job->where;
    const std::uint64_t from = _feed_at;
    std::string error;
    if (res < 0) {
        error = std::strerror(-res);
    } else if (static_cast<std::size_t>(res) < _piece_length) {
        error = "the segment ends short of the record";
    } else if (auto added = _check.add(piece()); !added) {
        error = std::string(describe(added.error()));
    } else if (from == 0) {
        // The first piece: the record must be this message's, its envelope where the size says.
        const std::size_t descriptor = record_descriptor_size(piece());
        if (_check.header().queue_id != job->outbound.tag ||
            (descriptor != 0 && descriptor != _body_start))  // 0: an envelope longer than a piece
            error = "another record is there";
    }
    if (error.empty()) {
        _feed_at += _piece_length;
        _piece_skip = static_cast<std::size_t>(std::min<std::uint64_t>(
            _body_start > from ? _body_start - from : 0, _piece_length));
        // The end of the data is given only for a record whose every byte checked.
        if (_feed_at == w.size) {
            if (auto whole = _check.finish(); !whole) error = std::string(describe(whole.error()));
        }
    }
    if (!error.empty()) {
        fail_body(job, error);
        return;
    }
    _piece_full = true;
    if (!_body_submitted) {
        submit_job();  // its body is wanted once the envelope's replies are in
        return;
    }
    pump_body();
}

// Gives the session what it wants of the body while the output has room; the next read is
// issued once a piece was given, so reads follow the output as it drains.
void outbound::pump_body() noexcept {
    if (_feed == body_feed::none || _closing || _job == nullptr || !_body_submitted) return;
    while (_session.body_piece_welcome() && _stream.unsent() < body_piece_size) {
        if (_feed == body_feed::memory) {
            const std::string_view piece = _feed_text.substr(_feed_at, body_piece_size);
            _feed_at += piece.size();
            const bool last = _feed_at == _feed_text.size();
            _session.feed_body(piece, last ? protocol::body_piece::last : protocol::body_piece::more, _stream.out());
            if (last) end_body_feed();
            continue;
        }
        if (!_piece_full) break;  // its read is in flight
        const bool last = _feed_at == _job->where.size;
        _session.feed_body(piece().substr(_piece_skip),
                           last ? protocol::body_piece::last : protocol::body_piece::more, _stream.out());
        _piece_full = false;
        if (last) {
            end_body_feed();
            break;
        }
        read_piece();
    }
    if (!_stream.out().empty()) _stream.want_flush();
}

// The body is all given, or the job ended: nothing more is read for it. The file stays open
// while a read is in flight (piece_read closes it).
void outbound::end_body_feed() noexcept {
    _feed = body_feed::none;
    _feed_text = {};
    _piece_full = false;
    if (!_piece_reading && _piece_fd >= 0) {
        ::close(_piece_fd);
        _piece_fd = -1;
    }
    if (!_piece_reading) release_piece_buffer();  // an idle connection holds no piece
}

// A read failed or the record did not check: deferred with the reason, like a failed whole
// read. Mid-body the data is never ended: the session abandons the body and the connection is
// aborted, so the peer discards what it got.
void outbound::fail_body(delivery_job* job, const std::string& error) noexcept {
    end_body_feed();
    const protocol::outcome_reply reply = unreadable_reply(*job, error);
    core::diag("outbound: " + protocol::format_queue_id(job->outbound.tag) + ": " + reply.text +
               (_body_submitted ? " (connection dropped mid-body)" : ""));
    if (!_body_submitted) {
        protocol::message_outcome failed;
        failed.kind = protocol::outcome_kind::transient_failure;
        failed.reply = reply;
        _job = nullptr;
        follow(_owner.job_done(*this, job, failed, hop()));
        return;
    }
    if (!_session.wants_body()) return;  // the session gave the message up already: its outcome stands
    _session.abandon_body(reply);
    _stream.abort();
    lost("the message could not be read back from the spool mid-body");
}

void outbound::submit_job() noexcept {
    delivery_job* job = _job;
    _body_submitted = true;
    switch (_feed) {
    case body_feed::none:
        job->outbound.source = protocol::body_source::whole;
        job->outbound.body = job->body->text;
        break;
    case body_feed::memory:
        job->outbound.source = protocol::body_source::pieces;
        job->outbound.body = {};
        job->outbound.pieces_size = protocol::normalized_body_size(_feed_text);  // exact: one pass, no copy
        break;
    case body_feed::spool:
        // The size as spooled: exact for a message received over SMTP that ends in CRLF (the
        // inbound side refuses bare CR and LF, so nothing grows when normalized); an
        // estimate otherwise (RFC 1870 allows one).
        job->outbound.source = protocol::body_source::pieces;
        job->outbound.body = {};
        job->outbound.pieces_size = job->message_size;
        break;
    }
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
        end_body_feed();
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
