// queue/auth.h: SMTP AUTH for inbound connections (issue 5): the users file, the checks run
// on the work pool (never on a shard thread: scrypt is slow and memory-hard on purpose), the
// per-address and per-user failure counts behind "repeated failures slow down and then
// disconnect", and the per-shard queue where a check waits for room instead of failing.
// protocol::server_session runs the SASL exchange; queue::connection drives a check per
// attempt (auth_check) and answers the session with auth_done().
//
// Load is never a reason to refuse a good password at once: a check that finds no room (its
// address has checks in flight, its user is paced, the work pool's queue is full) waits in
// its shard's auth_wait_queue, first come first served, and starts when room appears. Only a
// full wait queue (--auth-queue-size) or a wait longer than --auth-queue-timeout answers
// 454 4.7.0 (temporary: the client tries again), and the shard says which on stderr.
//
// Threading: inbound_auth is shared by every shard (owned by the relay, outlives them):
// users() and reload() are atomic swaps of an immutable table; auth_failures and
// user_failures are fixed tables of atomics (no lock, nothing allocated after construction).
// An auth_wait_queue is shard-local (its shard's thread only).
// SECURITY: credentials come from the network. The password is wiped once checked; an
// unknown user is checked against a dummy hash so that timing does not reveal which users
// exist.
#pragma once
#include <atomic>
#include <cstdint>
#include <expected>
#include <memory>
#include <string>
#include <string_view>

#include "core/address_counter.h"
#include "core/auth_users.h"
#include "core/config.h"
#include "core/work_pool.h"
#include "protocol/server_session.h"

namespace ringrelay::queue {

// AUTH attempts per client address (IPv4 address, IPv6 /64), shared by every shard: failures
// within a fixed window (which begins with the first failure), and checks in flight. Once an
// address's failures reach `limit` its AUTH commands are refused (421 4.7.0) until the window
// has passed. Checks in flight count too, so that many parallel connections cannot all reach
// the password check before the first failure is counted: an address may have at most two
// at once, and never more than it has failures left. That cap is a throttle on bursts of
// failures, not a refusal: an attempt that finds it full (busy) waits in its shard's
// auth_wait_queue and starts when a check of the address ends. The table is a fixed array of atomics
// indexed by a keyed hash of the address (like core::address_counter): two addresses that
// share a slot share a count, which can only make the limit stricter, and no number of
// addresses can evict another's count or grow memory.
class auth_failures {
public:
    auth_failures(std::uint32_t limit, std::int64_t window_ms, std::size_t slots = 1u << 18);

    // The slot of an address in text form ("192.0.2.1", "2001:db8::1"); unparsable text
    // shares slot 0.
    [[nodiscard]] std::size_t slot_of(std::string_view address) const noexcept;

    [[nodiscard]] bool blocked(std::size_t slot, std::int64_t now_ms) const noexcept;
    enum class admission : std::uint8_t { ok, blocked, busy };
    // Before a password check: blocked (over the limit), busy (checks in flight use up what is
    // left), or ok (then end() must follow).
    [[nodiscard]] admission begin(std::size_t slot, std::int64_t now_ms) noexcept;
    // After the check; a failure is counted. Returns whether the address is blocked now.
    bool end(std::size_t slot, bool failed, std::int64_t now_ms) noexcept;
    // Gives back a begin() that was ok without a check having run (the pool refused it).
    void cancel(std::size_t slot) noexcept { _in_flight.release(slot); }
    [[nodiscard]] std::uint32_t in_flight(std::size_t slot) const noexcept { return _in_flight.count(slot); }

private:
    // A slot's failures: window start (monotonic seconds) << 32 | count.
    [[nodiscard]] std::uint32_t live_failures(std::size_t slot, std::int64_t now_ms) const noexcept;

    const std::uint32_t _limit;
    const std::int64_t _window_s;
    core::address_counter _in_flight;  // also supplies the keyed slot hash
    std::unique_ptr<std::atomic<std::uint64_t>[]> _failures;
};

// Failed AUTH attempts per user name, relay-wide (across addresses and shards), so that an
// attacker who spreads guesses for one user over many addresses is slowed down too. The
// limit and window are the per-address ones (--auth-max-failures-per-ip within
// --auth-failure-window). Reaching the limit does NOT block the user: a hard block would let
// anyone lock a user out with a few wrong passwords. It paces the user instead: from then on
// until the window has passed, at most one check for that user name starts per `pace_ms`
// (1 s in the relay), relay-wide. A check that must wait for its turn waits in the shard's
// auth_wait_queue like one whose address is busy, and its verdict is the real one: the
// right password still gets 235, a wrong one 535. So guessing one user's password is held
// to one guess per second however many addresses the guesses come from, and the real user
// is only delayed (the cost: while an attacker keeps more than --auth-queue-timeout seconds
// of the user's turns queued, the user's own attempts may end with 454 4.7.0, try again
// later; never with 535 or 421). Successes do not count and do not reset the count (else
// each real login would give an attacker a fresh set of fast guesses).
// Only well-formed attempts count here (a malformed one checks no password). The table is a
// fixed array of atomics indexed by a keyed hash of the name (random key per process): two
// names that share a slot share a count (stricter, never looser), and no number of names can
// evict another's count or grow memory.
class user_failures {
public:
    user_failures(std::uint32_t limit, std::int64_t window_ms, std::int64_t pace_ms, std::size_t slots = 1u << 16);

    [[nodiscard]] std::size_t slot_of(std::string_view user) const noexcept;
    // Over the limit within the window: checks for this name are paced.
    [[nodiscard]] bool paced(std::size_t slot, std::int64_t now_ms) const noexcept;
    // Before a check: true when it may start now (the name is not paced, or it is and this is
    // its turn, which is then taken); false: wait (try again after a pace at most).
    [[nodiscard]] bool try_start(std::size_t slot, std::int64_t now_ms) noexcept;
    // After a check of this name; a failure is counted. Returns whether the name is paced now.
    bool end(std::size_t slot, bool failed, std::int64_t now_ms) noexcept;

private:
    [[nodiscard]] std::uint32_t live_failures(std::size_t slot, std::int64_t now_ms) const noexcept;

    const std::uint32_t _limit;
    const std::int64_t _window_s;
    const std::int64_t _pace_ms;
    const std::size_t _mask;
    std::uint64_t _key = 0;
    std::unique_ptr<std::atomic<std::uint64_t>[]> _failures;  // window start (s) << 32 | count
    std::unique_ptr<std::atomic<std::int64_t>[]> _next_ms;    // a paced name's next turn
};

// How often a paced user name may start a check, relay-wide (user_failures).
inline constexpr std::int64_t user_pace_ms = 1000;

class auth_wait_queue;

// A connection whose password check waits for room (auth_wait_queue). Leaves its queue when
// destroyed.
class auth_waiter {
public:
    auth_waiter() = default;
    auth_waiter(const auth_waiter&) = delete;
    auth_waiter& operator=(const auth_waiter&) = delete;
    virtual ~auth_waiter() { leave(); }

    // What an offer of room came to.
    enum class outcome : std::uint8_t {
        waiting,    // still no room for it: it stays in the queue
        done,       // started, or answered (blocked): it leaves the queue
        pool_full,  // it stays, and no later waiter is offered room in this pass
    };
    // Shard thread, from auth_wait_queue::pump(): try to start the check now. Must not push
    // to or remove from the queue (other than by its return value).
    virtual outcome retry_auth(std::int64_t now_ms) noexcept = 0;
    // Its wait passed the queue's timeout: it has left the queue; answer 454 4.7.0.
    virtual void auth_wait_over(std::int64_t waited_ms) noexcept = 0;
    // The queue was drained (its shard stops): it has left the queue; answer 454 4.7.0.
    virtual void auth_wait_cancelled() noexcept = 0;

    [[nodiscard]] bool waiting() const noexcept { return _queue != nullptr; }
    [[nodiscard]] std::int64_t waiting_since_ms() const noexcept { return _since_ms; }
    // Leaves the queue it is in, if any (a connection closing while it waits).
    inline void leave() noexcept;

private:
    friend class auth_wait_queue;
    auth_wait_queue* _queue = nullptr;
    auth_waiter* _prev = nullptr;
    auth_waiter* _next = nullptr;
    std::int64_t _since_ms = 0;
};

// A shard's bounded FIFO of connections waiting for room for their password check. Intrusive
// (the connections are the nodes): push and leave are O(1) and nothing allocates. The shard
// pumps it on a short io_uring timeout while it is not empty (room can appear on another
// shard: a check of the same address ending there) and at the end of every turn in which
// one of its own checks ended. Shard-local.
class auth_wait_queue {
public:
    // capacity: waiters at most (0: none may wait); timeout_ms: the longest wait.
    auth_wait_queue(std::size_t capacity, std::int64_t timeout_ms) : _capacity(capacity), _timeout_ms(timeout_ms) {}
    auth_wait_queue(const auth_wait_queue&) = delete;
    auth_wait_queue& operator=(const auth_wait_queue&) = delete;
    ~auth_wait_queue() {
        while (_head != nullptr) _head->leave();
    }

    // Appends `w` (not waiting yet); false when the queue is full.
    [[nodiscard]] bool push(auth_waiter& w, std::int64_t now_ms) noexcept;
    // In arrival order: a waiter whose wait reached the timeout leaves and is told
    // (auth_wait_over); the others are offered room (retry_auth) and leave when done. After a
    // pool_full no later waiter is offered room in this pass (they still time out).
    void pump(std::int64_t now_ms) noexcept;
    // Every waiter leaves and is told (auth_wait_cancelled), in arrival order.
    void drain() noexcept;

    [[nodiscard]] bool empty() const noexcept { return _head == nullptr; }
    [[nodiscard]] std::size_t size() const noexcept { return _size; }
    [[nodiscard]] std::size_t capacity() const noexcept { return _capacity; }
    [[nodiscard]] std::int64_t timeout_ms() const noexcept { return _timeout_ms; }

private:
    friend class auth_waiter;
    void unlink(auth_waiter& w) noexcept;

    const std::size_t _capacity;
    const std::int64_t _timeout_ms;
    auth_waiter* _head = nullptr;
    auth_waiter* _tail = nullptr;
    std::size_t _size = 0;
};

inline void auth_waiter::leave() noexcept {
    if (_queue != nullptr) _queue->unlink(*this);
}

// The users in force and the hash an unknown user is checked against, swapped whole by a
// reload. The dummy hash has the cost most users' hashes have, so an unknown name takes as
// long as most known ones; `costs` counts the distinct costs in the file (more than one, and
// response time tells the groups apart: the start-up line says so).
struct user_table {
    core::auth_users users;
    std::string dummy_hash;
    std::size_t costs = 0;
    [[nodiscard]] static std::expected<std::shared_ptr<const user_table>, std::string> make(core::auth_users users);
};

class inbound_auth {
public:
    // Loads --auth-users and starts the check threads; an error names the file and line.
    [[nodiscard]] static std::expected<std::unique_ptr<inbound_auth>, std::string> create(const core::config& config);

    // Re-reads the users file (SIGHUP); on an error the table in use stays.
    [[nodiscard]] std::expected<std::size_t, std::string> reload();
    // The same from `path`, which becomes path() if it loads (a SIGHUP that changed
    // --auth-users). The owning thread only, like path().
    [[nodiscard]] std::expected<std::size_t, std::string> reload(const std::string& path);

    [[nodiscard]] std::shared_ptr<const user_table> users() const noexcept { return _users.load(); }
    [[nodiscard]] core::work_pool& pool() noexcept { return _pool; }
    [[nodiscard]] auth_failures& failures() noexcept { return _failures; }
    [[nodiscard]] user_failures& user_limits() noexcept { return _user_failures; }
    [[nodiscard]] const std::string& path() const noexcept { return _path; }

    inbound_auth(std::string path, std::shared_ptr<const user_table> users, const core::config& config);

private:
    std::string _path;
    std::atomic<std::shared_ptr<const user_table>> _users;
    auth_failures _failures;
    user_failures _user_failures;
    core::work_pool _pool;  // last: its threads stop first
};

// One password check, owned by the connection that asked for it.
class auth_check final : public core::work_item {
public:
    enum class verdict : std::uint8_t { ok, failed, error };

    // `done(owner, check)` runs on the shard thread when a check comes back.
    auth_check(void* owner_, void (*done)(void*, auth_check&) noexcept) : on_done(done), owner(owner_) {}
    ~auth_check() override;
    // Wipes the copied password (also done by run()).
    void clear() noexcept;

    // Shard thread: copies the attempt (the session's views die with auth_done()).
    void prepare(const inbound_auth& auth, const protocol::auth_attempt& attempt);
    void run(unsigned worker) noexcept override;  // pool thread
    void finish() noexcept override;  // shard thread: tells the owner

    [[nodiscard]] verdict result() const noexcept { return _verdict; }
    [[nodiscard]] const std::string& error() const noexcept { return _error; }
    [[nodiscard]] const std::string& user() const noexcept { return _user; }

    // Called by finish(): the connection's handler.
    void (*on_done)(void* owner, auth_check& check) noexcept = nullptr;
    void* owner = nullptr;

private:
    std::shared_ptr<const user_table> _users;
    std::string _user;
    std::string _password;
    verdict _verdict = verdict::failed;
    std::string _error;
};

}  // namespace ringrelay::queue
