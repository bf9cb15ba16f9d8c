// queue/connection.cc: see connection.h.
#include "queue/connection.h"

#include <algorithm>

#include "core/clock.h"
#include "core/log.h"
#include "core/net.h"
#include "queue/campaign_header.h"
#include "queue/suppression.h"
#include "queue/unsubscribe.h"
#include "queue/shard.h"

namespace ringrelay::queue {

connection::connection(shard& owner, int fd, protocol::client_info client, listener_kind kind)
    : server_connection(owner, fd, std::move(client), kind, owner),
      _shard(owner),
      _auth_slot(owner.auth() != nullptr ? owner.auth()->failures().slot_of(this->peer()) : 0) {
    if (owner.dkim() != nullptr) session().set_body_observer(this);
}

connection::~connection() = default;

// A message's storage starts (its Received: field comes first): take the keys in force, and
// hash the body as it arrives if there are any.
void connection::body_begun() noexcept {
    _body_hash.reset();
    _dkim_table = _shard.dkim()->keys();
    if (!_dkim_table->empty()) _body_hash.emplace(_dkim_table->canon().body);
}

void connection::body_appended(std::string_view octets) noexcept {
    if (_body_hash) _body_hash->update(octets);
}

void connection::begin_commit() noexcept {
    _received_us = static_cast<std::uint64_t>(core::unix_us());
    _signed_used = false;
    _dkim_made.clear();
    _dkim_errors.clear();
    if (!take_campaign()) return;
    if (!add_unsubscribe()) return;
    if (!_body_hash) return append_to_spool();
    // Which keys sign: the header section is split here (a few hundred octets to scan); the
    // signatures are made on the signer's pool, or here when only Ed25519 keys sign.
    dkim_plan plan;
    try {
        plan = plan_signatures(*_dkim_table, unsigned_message());
    } catch (const std::bad_alloc&) {
        _dkim_errors.emplace_back("out of memory");
    }
    if (plan.keys.empty()) {
        _body_hash.reset();
        return append_to_spool();
    }
    const std::optional<protocol::dkim::sha256_digest> body_hash = _body_hash->finish();
    _body_hash.reset();
    if (!body_hash) {
        _dkim_errors.emplace_back("the body hash failed (OpenSSL)");
        return append_to_spool();
    }
    if (!_dkim_job) _dkim_job = std::make_unique<dkim_job>(this, &connection::dkim_signed, _shard.dkim());
    _dkim_job->prepare(_dkim_table, std::move(plan.keys), std::move(plan.fields), *body_hash,
                       static_cast<std::int64_t>(_received_us / 1000000));
    if (_dkim_job->ed25519_only()) {
        // Tens of microseconds: cheaper here than the round trip through the pool
        // (queue/dkim_signer.h). Then on as if the pool had handed it back.
        _dkim_job->sign_with(&_shard.dkim_cache());
        return _dkim_job->finish();
    }
    if (!_shard.dkim()->pool().submit(*_dkim_job, _shard.work_return())) {
        // Every signing thread is busy and as many messages wait as there may be connections:
        // the client tries again later; nothing is stored unsigned for want of a thread.
        _dkim_job->clear();
        if (_shard.may_report(shard::report::dkim_error))
            core::diag("DKIM: the signing queue is full; message from " + peer() +
                       " answered 451 4.3.0 (one report per second)");
        _shard.mutable_counters().messages_failed.fetch_add(1, std::memory_order_relaxed);
        commit_done(protocol::host_reply{protocol::reply_id::message_deferred, {}});
    }
}

// No memory for a copy of the message: 451 4.3.0, nothing stored (the client tries again).
void connection::refuse_for_memory() noexcept {
    _campaign.clear();
    _body_hash.reset();
    _shard.mutable_counters().messages_failed.fetch_add(1, std::memory_order_relaxed);
    commit_done(protocol::host_reply{protocol::reply_id::message_deferred, {}});
}

// The campaign header (issue 17): its value kept, every field of its name left out of the
// message that is signed, stored and delivered. False: the message was answered (451 4.3.0: no
// memory for the copy without it; the header is never passed on).
bool connection::take_campaign() noexcept {
    _campaign.clear();
    _stripped_used = false;
    const std::string_view name = _shard.outbound_delivery().campaign_field();
    if (name.empty()) return true;
    try {
        campaign_fields found = find_campaign_fields(session().message(), name);
        if (found.fields.empty()) return true;
        _stripped.clear();
        _stripped.reserve(session().message().size());
        append_without_fields(_stripped, session().message(), found.fields);
        _campaign = std::move(found.campaign);
        _stripped_used = true;
        return true;
    } catch (const std::bad_alloc&) {
        refuse_for_memory();
        return false;
    }
}

// One-click unsubscribe (RFC 8058, issue 18; queue/unsubscribe.h): List-Unsubscribe and
// List-Unsubscribe-Post put at the top of a single-recipient message of a tenant that has no
// List-Unsubscribe field, before the signatures are planned, so that they cover both. The body
// (and its hash, taken as it arrived) is untouched. False: the message was answered (451 4.3.0:
// no memory for the copy).
bool connection::add_unsubscribe() noexcept {
    const unsubscribe_links* links = _shard.unsubscribe();
    if (links == nullptr) return true;
    const protocol::envelope& env = session().message_envelope();
    if (env.rcpt_to.size() != 1) return true;
    const std::string_view tenant = tenant_of(env);
    if (tenant.empty()) return true;
    try {
        if (has_list_unsubscribe(unsigned_message())) return true;
        std::string fields = links->header_fields(tenant, env.rcpt_to.front());
        if (fields.empty()) return true;
        fields.reserve(fields.size() + unsigned_message().size());
        fields += unsigned_message();
        _stripped.swap(fields);
        _stripped_used = true;
        return true;
    } catch (const std::bad_alloc&) {
        refuse_for_memory();
        return false;
    }
}

// Shard thread: the signatures are made (or not: the reasons are in errors()).
void connection::dkim_signed(void* self, dkim_job& job) noexcept {
    auto* c = static_cast<connection*>(self);
    c->_dkim_made = job.summaries();
    c->_shard.mutable_counters().dkim_signatures.fetch_add(c->_dkim_made.size(), std::memory_order_relaxed);
    c->_dkim_errors.insert(c->_dkim_errors.end(), job.errors().begin(), job.errors().end());
    if (!job.fields().empty()) {
        try {
            c->_signed.clear();
            c->_signed.reserve(job.fields().size() + c->unsigned_message().size());
            c->_signed += job.fields();
            c->_signed += c->unsigned_message();
            c->_signed_used = true;
        } catch (const std::bad_alloc&) {
            c->_dkim_made.clear();
            c->_dkim_errors.emplace_back("out of memory for the signed copy");
        }
    }
    job.clear();
    c->append_to_spool();
}

std::string_view connection::unsigned_message() const noexcept {
    return _stripped_used ? std::string_view(_stripped) : session().message();
}

std::string_view connection::stored_message() const noexcept {
    return _signed_used ? std::string_view(_signed) : unsigned_message();
}

void connection::append_to_spool() noexcept {
    if (!_dkim_errors.empty() && _shard.may_report(shard::report::dkim_error))
        core::diag("DKIM: message from " + peer() + " not signed by every key: " + _dkim_errors.front() +
                   " (delivered as it is; the Reception record lists the reasons; one report per second)");
    _shard.message_spool().append(session().message_envelope(), peer(), stored_message(), _received_us, this, _campaign);
}

void connection::committed(protocol::commit_result result) noexcept {
    if (result == protocol::commit_result::ok) {
        _shard.mutable_counters().messages_queued.fetch_add(1, std::memory_order_relaxed);
        // From the end of the data (begin_commit) to now, when the 250 goes out.
        const std::int64_t waited = core::unix_us() - static_cast<std::int64_t>(_received_us);
        _shard.mutable_counters().ack_latency.record(waited > 0 ? static_cast<std::uint64_t>(waited) : 0);
        log_reception();
        _shard.outbound_delivery().accept(session().message_envelope(), peer(), stored_message(),
                                          _shard.message_spool().committed_location(), _received_us, _campaign);
    } else {
        _shard.mutable_counters().messages_failed.fetch_add(1, std::memory_order_relaxed);
    }
    if (_signed_used) {
        _signed_used = false;
        // A big signed copy is not kept for the next message (the session keeps its own buffer).
        if (_signed.capacity() > 1024 * 1024) std::string().swap(_signed);
    }
    if (_stripped_used) {
        _stripped_used = false;
        if (_stripped.capacity() > 1024 * 1024) std::string().swap(_stripped);
    }
    commit_done(result);
}

// Waiting for room for a password check: leave the queue; the answer (nowhere to go now)
// comes on the next turn and lets the connection retire.
void connection::on_closing() noexcept {
    if (!waiting()) return;
    leave();
    _auth_check->clear();
    answer_auth_later(protocol::auth_result::temporary_failure, 0);
}

// A complete AUTH attempt: malformed ones fail (after the delay) without the KDF, others go
// to the work pool, at once when there is room, else after a wait in the shard's
// auth_wait_queue (first come, first served: an attempt arriving while others wait queues
// behind them). No command deadline runs meanwhile: we, not the client, are working; the
// queue's own timeout bounds the wait. Results known at once are delivered on the next loop
// turn (answer_auth_later), never from inside this call: a pipelined run of AUTH lines must
// not recurse.
void connection::begin_auth() noexcept {
    inbound_auth* auth = _shard.auth();
    if (auth == nullptr) return answer_auth_later(protocol::auth_result::temporary_failure, 0);
    if (!_auth_check) _auth_check = std::make_unique<auth_check>(this, &connection::auth_checked);
    const protocol::auth_attempt attempt = session().pending_auth();
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
            core::diag("AUTH from " + peer() + ": queue full (" + std::to_string(queue.size()) +
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
        core::diag("AUTH from " + peer() + ": queued, " + why + " (" + std::to_string(queue.size()) +
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
        answer_auth_later(protocol::auth_result::throttled, 0);
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
        core::diag("AUTH from " + peer() + ": waited " + std::to_string(waited_ms) +
                   " ms for room for the password check (--auth-queue-timeout " +
                   std::to_string(_shard.config().auth_queue_timeout) + " s); answered 454 4.7.0 (one report per second)");
    refuse_auth_for_load();
}

void connection::auth_wait_cancelled() noexcept { refuse_auth_for_load(); }

void connection::refuse_auth_for_load() noexcept {
    _auth_check->clear();
    _shard.mutable_counters().auth_refused_for_load.fetch_add(1, std::memory_order_relaxed);
    answer_auth_later(protocol::auth_result::temporary_failure, 0);
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
        c->_shard.mutable_counters().auth_successes.fetch_add(1, std::memory_order_relaxed);
        c->auth_done(protocol::auth_result::ok);
        return;
    }
    // Repeated failures slow down (0.5 s more per failure on this connection, up to 4 s); the
    // session disconnects at --auth-max-failures, the address is refused at its own limit.
    c->_shard.mutable_counters().auth_failures.fetch_add(1, std::memory_order_relaxed);
    const protocol::auth_result result = blocked ? protocol::auth_result::throttled : protocol::auth_result::failed;
    if (c->peer_gone() || c->closing()) {
        c->auth_done(result);
        return;
    }
    const std::uint64_t failures = c->session().auth_failures() + 1;  // this one is not answered yet
    c->answer_auth_later(result, static_cast<std::uint32_t>(std::min<std::uint64_t>(500 * failures, 4000)));
}

namespace {
// ["a","b"] (escaped).
void append_json_strings(std::string& line, const std::vector<std::string>& items) {
    line += '[';
    for (std::size_t i = 0; i < items.size(); ++i) {
        if (i != 0) line += ',';
        line += '"';
        core::append_json_escaped(line, items[i]);
        line += '"';
    }
    line += ']';
}
}  // namespace

void connection::log_reception() noexcept {
    core::log_writer& log = _shard.log();
    if (!log.enabled()) return;
    const protocol::envelope& env = session().message_envelope();
    std::string& line = log.line_buffer();
    line += "{\"type\":\"Reception\",\"time\":\"";
    line += core::iso8601_us(static_cast<std::int64_t>(_received_us));
    line += "\",\"queue_id\":\"";
    line += protocol::format_queue_id(env.queue_id);
    line += "\",\"shard\":";
    line += std::to_string(_shard.index());
    line += ",\"client\":\"";
    core::append_json_escaped(line, peer());
    if (!proxy().empty()) {
        line += "\",\"proxy\":\"";
        core::append_json_escaped(line, proxy());
    }
    line += "\",\"helo\":\"";
    core::append_json_escaped(line, env.helo);
    line += "\",\"sender\":\"";
    core::append_json_escaped(line, env.mail_from);
    line += "\",\"recipients\":";
    append_json_strings(line, env.rcpt_to);
    line += ",\"size\":";
    line += std::to_string(stored_message().size());
    line += ",\"auth\":";
    if (session().authenticated_user().empty()) {
        line += "null";
    } else {
        line += '"';
        core::append_json_escaped(line, session().authenticated_user());
        line += '"';
    }
    line += ",\"tls\":";
    if (tls_text().empty()) {
        line += "null";
    } else {
        line += '"';
        core::append_json_escaped(line, tls_text());
        line += '"';
    }
    if (!_campaign.empty()) {
        line += ",\"campaign\":\"";  // issue 17: its header was stripped from the message stored
        core::append_json_escaped(line, _campaign);
        line += '"';
    }
    line += ",\"dkim\":";
    append_json_strings(line, _dkim_made);
    if (!_dkim_errors.empty()) {
        line += ",\"dkim_errors\":";
        append_json_strings(line, _dkim_errors);
    }
    line += "}\n";
}

}  // namespace ringrelay::queue
