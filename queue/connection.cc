// queue/connection.cc: see connection.h.
#include "queue/connection.h"

#include <algorithm>

#include "core/clock.h"
#include "core/log.h"
#include "core/net.h"
#include "queue/shard.h"

namespace ringrelay::queue {

connection::connection(shard& owner, int fd, protocol::client_info client, listener_kind kind)
    : server_connection(owner, fd, std::move(client), kind, owner),
      _shard(owner),
      _acceptance(owner, *this),
      _auth_slot(owner.auth() != nullptr ? owner.auth()->failures().slot_of(this->peer()) : 0) {
    if (owner.dkim() != nullptr) session().set_body_observer(this);
}

connection::~connection() = default;

void connection::begin_commit() noexcept {
    _acceptance.begin(session().message_envelope(), session().message(),
                      reception_source{.client = peer(),
                                       .proxy = proxy(),
                                       .protocol = "SMTP",
                                       .auth_user = session().authenticated_user(),
                                       .tls = tls_text()});
}

void connection::acceptance_done(acceptance_result result) noexcept {
    switch (result) {
    case acceptance_result::committed: return commit_done(protocol::commit_result::ok);
    case acceptance_result::no_space: return commit_done(protocol::commit_result::no_space);
    case acceptance_result::io_error: return commit_done(protocol::commit_result::io_error);
    case acceptance_result::deferred: return commit_done(protocol::host_reply{protocol::reply_id::message_deferred, {}});
    }
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

}  // namespace ringrelay::queue
