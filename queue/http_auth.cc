// queue/http_auth.cc: see http_auth.h.
#include "queue/http_auth.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <string>
#include <utility>

#include "core/clock.h"
#include "core/log.h"
#include "core/net.h"
#include "queue/shard.h"

namespace ringrelay::queue {

// One request's check: waits in the shard's auth_wait_queue when there is no room, then runs
// on the pool. Owned by http_basic_auth.
class http_basic_auth::pending_check final : public auth_waiter {
public:
    pending_check(http_basic_auth& owner, std::function<void(http_check_verdict)> done, std::string peer)
        : _owner(owner), _done(std::move(done)), _peer(std::move(peer)), _check(this, &pending_check::checked) {}

    // Starts now, or queues; the verdict comes later, or now if known at once.
    void begin(const core::basic_credentials& credentials) noexcept {
        inbound_auth& auth = *_owner._host.auth();
        _check.prepare(auth, protocol::auth_attempt{"BASIC", {}, credentials.user, credentials.password, true});
        _address_slot = auth.failures().slot_of(_peer);
        _user_slot = auth.user_limits().slot_of(credentials.user);
        const std::int64_t now = core::monotonic_ms();
        auth_wait_queue& queue = _owner._host.auth_queue();
        const bool behind_others = !queue.empty();  // first come, first served
        const outcome first = behind_others ? outcome::waiting : try_start(now);
        if (first == outcome::done) return;
        if (_owner._host.stopping() || !queue.push(*this, now)) {
            refuse_for_load();
            return;
        }
        _owner._host.mutable_counters().auth_queued.fetch_add(1, std::memory_order_relaxed);
        // Behind others: the queue is offered room at the end of this turn, in order.
        if (behind_others) _owner._host.auth_room_freed();
    }

    outcome retry_auth(std::int64_t now_ms) noexcept override { return try_start(now_ms); }
    void auth_wait_over(std::int64_t waited_ms) noexcept override {
        if (_owner._host.may_report(shard::report::auth_wait_over))
            core::diag("HTTP Basic credentials from " + _peer + ": waited " + std::to_string(waited_ms) +
                       " ms for room for the password check (--auth-queue-timeout); answered 503 (one report per second)");
        refuse_for_load();
    }
    void auth_wait_cancelled() noexcept override { refuse_for_load(); }

private:
    outcome try_start(std::int64_t now_ms) noexcept {
        inbound_auth& auth = *_owner._host.auth();
        switch (auth.failures().begin(_address_slot, now_ms)) {
        case auth_failures::admission::blocked:
            _check.clear();
            _owner._host.mutable_counters().auth_failures.fetch_add(1, std::memory_order_relaxed);
            give(http_check_verdict::throttled);
            return outcome::done;
        case auth_failures::admission::busy: return outcome::waiting;
        case auth_failures::admission::ok: break;
        }
        if (!auth.user_limits().try_start(_user_slot, now_ms)) {
            auth.failures().cancel(_address_slot);
            return outcome::waiting;
        }
        if (!auth.pool().submit(_check, _owner._host.work_return())) {
            auth.failures().cancel(_address_slot);
            return outcome::pool_full;
        }
        return outcome::done;
    }

    void refuse_for_load() noexcept {
        _check.clear();
        _owner._host.mutable_counters().auth_refused_for_load.fetch_add(1, std::memory_order_relaxed);
        give(http_check_verdict::busy);
    }

    // Shard thread (the work return): the check is done.
    static void checked(void* self, auth_check& check) noexcept {
        auto* c = static_cast<pending_check*>(self);
        shard& host = c->_owner._host;
        const bool ok = check.result() == auth_check::verdict::ok;
        if (check.result() == auth_check::verdict::error && host.may_report(shard::report::auth_busy))
            core::diag("HTTP Basic: " + check.error() + " (answered 401 like a wrong password)");
        const std::int64_t now = core::monotonic_ms();
        const bool blocked = host.auth()->failures().end(c->_address_slot, !ok, now);
        (void)host.auth()->user_limits().end(c->_user_slot, !ok, now);
        host.auth_room_freed();
        if (ok) {
            host.mutable_counters().auth_successes.fetch_add(1, std::memory_order_relaxed);
            c->give(http_check_verdict::ok);
            return;
        }
        host.mutable_counters().auth_failures.fetch_add(1, std::memory_order_relaxed);
        c->give(blocked ? http_check_verdict::throttled : http_check_verdict::failed);
    }

    // The verdict, once; then this check waits to be freed.
    void give(http_check_verdict verdict) noexcept {
        auto done = std::move(_done);
        _owner.retire(*this);
        if (done) done(verdict);
    }

    http_basic_auth& _owner;
    std::function<void(http_check_verdict)> _done;
    const std::string _peer;  // the client's address, for the throttles and reports
    auth_check _check;
    std::size_t _address_slot = 0;
    std::size_t _user_slot = 0;
};

http_basic_auth::http_basic_auth(shard& host) noexcept : _host(host) {}
http_basic_auth::~http_basic_auth() = default;

void http_basic_auth::check(core::basic_credentials&& credentials, const sockaddr* peer,
                            std::function<void(http_check_verdict)> done) noexcept {
    bury();
    if (_host.auth() == nullptr) {
        OPENSSL_cleanse(credentials.password.data(), credentials.password.size());
        done(http_check_verdict::failed);
        return;
    }
    _checks.push_back(std::make_unique<pending_check>(*this, std::move(done), core::address_text(peer)));
    pending_check& c = *_checks.back();
    c.begin(credentials);
    OPENSSL_cleanse(credentials.password.data(), credentials.password.size());
}

void http_basic_auth::malformed(const sockaddr* peer) noexcept {
    _host.mutable_counters().auth_failures.fetch_add(1, std::memory_order_relaxed);
    inbound_auth* auth = _host.auth();
    if (auth == nullptr) return;
    // A failure for the address, as SMTP counts a malformed AUTH (no password is checked).
    const std::size_t slot = auth->failures().slot_of(core::address_text(peer));
    const std::int64_t now = core::monotonic_ms();
    if (auth->failures().begin(slot, now) == auth_failures::admission::ok) (void)auth->failures().end(slot, true, now);
}

void http_basic_auth::retire(pending_check& c) noexcept { _answered.push_back(&c); }

// Frees the checks answered before now: by then neither the wait queue nor the work return
// holds them (a verdict is given from their last call into the check).
void http_basic_auth::bury() noexcept {
    if (_answered.empty()) return;
    std::erase_if(_checks, [this](const std::unique_ptr<pending_check>& c) {
        return std::find(_answered.begin(), _answered.end(), c.get()) != _answered.end();
    });
    _answered.clear();
}

}  // namespace ringrelay::queue
