// queue/auth.cc: see auth.h.
#include "queue/auth.h"

#include <arpa/inet.h>
#include <sys/random.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <thread>
#include <tuple>

#include "core/password_hash.h"

namespace ringrelay::queue {

namespace {
// Adds a failure to a window word (window start in seconds << 32 | count): a window that has
// passed (or none yet) starts afresh with this failure. Returns the new count.
std::uint32_t count_failure(std::atomic<std::uint64_t>& word, std::int64_t window_s, std::int64_t now_ms) noexcept {
    const auto now_s = static_cast<std::uint64_t>(now_ms / 1000);
    std::uint64_t v = word.load(std::memory_order_acquire);
    std::uint64_t next = 0;
    do {
        const std::uint64_t start = v >> 32;
        const auto count = static_cast<std::uint32_t>(v);
        const bool expired = static_cast<std::int64_t>(now_s - start) >= window_s || v == 0;
        next = expired ? (now_s << 32 | 1u) : (start << 32 | (count == UINT32_MAX ? count : count + 1));
    } while (!word.compare_exchange_weak(v, next, std::memory_order_acq_rel, std::memory_order_acquire));
    return static_cast<std::uint32_t>(next);
}

std::uint32_t live_count(const std::atomic<std::uint64_t>& word, std::int64_t window_s, std::int64_t now_ms) noexcept {
    const std::uint64_t v = word.load(std::memory_order_acquire);
    const auto start = static_cast<std::int64_t>(v >> 32);
    if (now_ms / 1000 - start >= window_s) return 0;
    return static_cast<std::uint32_t>(v);
}

std::uint64_t mix64(std::uint64_t x) noexcept {
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

std::size_t power_of_two(std::size_t n) noexcept {
    std::size_t p = 1;
    while (p < n) p <<= 1;
    return p;
}
}  // namespace

auth_failures::auth_failures(std::uint32_t limit, std::int64_t window_ms, std::size_t slots)
    : _limit(limit),
      _window_s(std::max<std::int64_t>(1, window_ms / 1000)),
      _in_flight(slots),
      _failures(std::make_unique<std::atomic<std::uint64_t>[]>(slots)) {
    for (std::size_t i = 0; i < slots; ++i) _failures[i].store(0, std::memory_order_relaxed);
}

// IPv6 clients count per /64 and IPv4-mapped addresses as IPv4 (address_counter::slot_of).
std::size_t auth_failures::slot_of(std::string_view address) const noexcept {
    char text[INET6_ADDRSTRLEN + 1] = {};
    if (address.size() >= sizeof text) return 0;
    std::memcpy(text, address.data(), address.size());
    sockaddr_in v4{};
    sockaddr_in6 v6{};
    if (::inet_pton(AF_INET, text, &v4.sin_addr) == 1) {
        v4.sin_family = AF_INET;
        return _in_flight.slot_of(reinterpret_cast<const sockaddr*>(&v4));
    }
    if (::inet_pton(AF_INET6, text, &v6.sin6_addr) == 1) {
        v6.sin6_family = AF_INET6;
        return _in_flight.slot_of(reinterpret_cast<const sockaddr*>(&v6));
    }
    return 0;
}

std::uint32_t auth_failures::live_failures(std::size_t slot, std::int64_t now_ms) const noexcept {
    return live_count(_failures[slot], _window_s, now_ms);
}

bool auth_failures::blocked(std::size_t slot, std::int64_t now_ms) const noexcept {
    return live_failures(slot, now_ms) >= _limit;
}

auth_failures::admission auth_failures::begin(std::size_t slot, std::int64_t now_ms) noexcept {
    const std::uint32_t failures = live_failures(slot, now_ms);
    if (failures >= _limit) return admission::blocked;
    const std::uint32_t room = std::min<std::uint32_t>(2, _limit - failures);
    return _in_flight.acquire(slot, room) ? admission::ok : admission::busy;
}

bool auth_failures::end(std::size_t slot, bool failed, std::int64_t now_ms) noexcept {
    _in_flight.release(slot);
    if (!failed) return blocked(slot, now_ms);
    return count_failure(_failures[slot], _window_s, now_ms) >= _limit;
}


user_failures::user_failures(std::uint32_t limit, std::int64_t window_ms, std::int64_t pace_ms, std::size_t slots)
    : _limit(limit),
      _window_s(std::max<std::int64_t>(1, window_ms / 1000)),
      _pace_ms(pace_ms),
      _mask(power_of_two(slots) - 1),
      _failures(std::make_unique<std::atomic<std::uint64_t>[]>(_mask + 1)),
      _next_ms(std::make_unique<std::atomic<std::int64_t>[]>(_mask + 1)) {
    // As address_counter: a random key, so that no client can aim at a victim's slot.
    if (::getrandom(&_key, sizeof _key, 0) != static_cast<ssize_t>(sizeof _key))
        _key = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) *
               0x9e3779b97f4a7c15ULL;
    for (std::size_t i = 0; i <= _mask; ++i) {
        _failures[i].store(0, std::memory_order_relaxed);
        _next_ms[i].store(0, std::memory_order_relaxed);
    }
}

// A keyed hash of the name's bytes: 8 at a time through splitmix64's finaliser, then the length.
std::size_t user_failures::slot_of(std::string_view user) const noexcept {
    std::uint64_t h = mix64(_key);
    std::size_t i = 0;
    for (; i + 8 <= user.size(); i += 8) {
        std::uint64_t chunk = 0;
        std::memcpy(&chunk, user.data() + i, 8);
        h = mix64(h ^ chunk ^ _key);
    }
    std::uint64_t tail = 0;
    if (user.size() > i) std::memcpy(&tail, user.data() + i, user.size() - i);
    h = mix64(h ^ tail ^ (static_cast<std::uint64_t>(user.size()) << 56));
    return static_cast<std::size_t>(h) & _mask;
}

std::uint32_t user_failures::live_failures(std::size_t slot, std::int64_t now_ms) const noexcept {
    return live_count(_failures[slot], _window_s, now_ms);
}

bool user_failures::paced(std::size_t slot, std::int64_t now_ms) const noexcept {
    return live_failures(slot, now_ms) >= _limit;
}

bool user_failures::try_start(std::size_t slot, std::int64_t now_ms) noexcept {
    if (!paced(slot, now_ms)) return true;
    std::int64_t next = _next_ms[slot].load(std::memory_order_acquire);
    do {
        if (next > now_ms) return false;
    } while (!_next_ms[slot].compare_exchange_weak(next, now_ms + _pace_ms, std::memory_order_acq_rel,
                                                   std::memory_order_acquire));
    return true;
}

bool user_failures::end(std::size_t slot, bool failed, std::int64_t now_ms) noexcept {
    if (!failed) return paced(slot, now_ms);
    return count_failure(_failures[slot], _window_s, now_ms) >= _limit;
}

bool auth_wait_queue::push(auth_waiter& w, std::int64_t now_ms) noexcept {
    if (w._queue != nullptr || _size >= _capacity) return false;
    w._queue = this;
    w._since_ms = now_ms;
    w._prev = _tail;
    w._next = nullptr;
    if (_tail != nullptr) {
        _tail->_next = &w;
    } else {
        _head = &w;
    }
    _tail = &w;
    ++_size;
    return true;
}

void auth_wait_queue::unlink(auth_waiter& w) noexcept {
    if (w._prev != nullptr) {
        w._prev->_next = w._next;
    } else {
        _head = w._next;
    }
    if (w._next != nullptr) {
        w._next->_prev = w._prev;
    } else {
        _tail = w._prev;
    }
    w._queue = nullptr;
    w._prev = w._next = nullptr;
    --_size;
}

void auth_wait_queue::pump(std::int64_t now_ms) noexcept {
    bool offer = true;
    // Only the waiter being visited can leave during the pass (retry_auth and auth_wait_over
    // must not touch the queue otherwise), so the next one is taken before it is visited.
    // Waiters pushed meanwhile (at the tail) are visited too.
    for (auth_waiter* w = _head; w != nullptr;) {
        auth_waiter* next = w->_next;
        const std::int64_t waited = now_ms - w->_since_ms;
        if (waited >= _timeout_ms) {
            unlink(*w);
            w->auth_wait_over(waited);
        } else if (offer) {
            switch (w->retry_auth(now_ms)) {
            case auth_waiter::outcome::waiting: break;
            case auth_waiter::outcome::done:
                if (w->_queue == this) unlink(*w);
                break;
            case auth_waiter::outcome::pool_full: offer = false; break;
            }
        }
        w = next;
    }
}

void auth_wait_queue::drain() noexcept {
    while (_head != nullptr) {
        auth_waiter* w = _head;
        unlink(*w);
        w->auth_wait_cancelled();
    }
}

std::expected<std::shared_ptr<const user_table>, std::string> user_table::make(core::auth_users users) {
    // The most common cost (ties: the first in user order); the default for an empty file.
    std::map<std::tuple<unsigned, std::uint32_t, std::uint32_t>, std::size_t> counts;
    core::scrypt_params common;
    std::size_t best = 0;
    for (std::string_view h : users.hashes()) {
        auto p = core::hash_parameters(h);
        if (!p) continue;  // auth_users::parse checked every hash
        const std::size_t n = ++counts[{p->log2_n, p->r, p->p}];
        if (n > best) {
            best = n;
            common = *p;
        }
    }
    // A random password: no one can log in as "no such user" by guessing it.
    unsigned char random[24];
    if (RAND_bytes(random, sizeof random) != 1) return std::unexpected("no random bytes for the dummy hash");
    auto dummy = core::hash_password(std::string_view(reinterpret_cast<const char*>(random), sizeof random), common);
    OPENSSL_cleanse(random, sizeof random);
    if (!dummy) return std::unexpected("cannot compute a password hash: " + dummy.error());
    auto t = std::make_shared<user_table>();
    t->users = std::move(users);
    t->dummy_hash = std::move(*dummy);
    t->costs = counts.size();
    return std::shared_ptr<const user_table>(std::move(t));
}

inbound_auth::inbound_auth(std::string path, std::shared_ptr<const user_table> users, const core::config& config)
    : _path(std::move(path)),
      _users(std::move(users)),
      _failures(config.auth_max_failures_per_ip, static_cast<std::int64_t>(config.auth_failure_window) * 1000),
      _user_failures(config.auth_max_failures_per_ip, static_cast<std::int64_t>(config.auth_failure_window) * 1000,
                     user_pace_ms),
      // One check thread per two cores, at least one: each check is 32 MiB of scrypt; more
      // threads than that would take cores from the shards under an AUTH flood. Beyond 64
      // queued checks submit() refuses and the connection waits in its shard's
      // auth_wait_queue (the pool's queue stays short: that bounds how long a shutdown
      // waits for checks in flight).
      _pool(std::max(1u, std::thread::hardware_concurrency() / 2), 64) {}

std::expected<std::unique_ptr<inbound_auth>, std::string> inbound_auth::create(const core::config& config) {
    auto users = core::auth_users::load(config.auth_users);
    if (!users) return std::unexpected("--auth-users: " + users.error());
    auto table = user_table::make(std::move(*users));
    if (!table) return std::unexpected("--auth-users: " + table.error());
    return std::make_unique<inbound_auth>(config.auth_users, std::move(*table), config);
}

std::expected<std::size_t, std::string> inbound_auth::reload() { return reload(std::string(_path)); }

std::expected<std::size_t, std::string> inbound_auth::reload(const std::string& path) {
    auto users = core::auth_users::load(path);
    if (!users) return std::unexpected(users.error());
    const std::size_t n = users->size();
    auto table = user_table::make(std::move(*users));
    if (!table) return std::unexpected(table.error());
    _users.store(std::move(*table));
    _path = path;
    return n;
}

auth_check::~auth_check() { clear(); }

void auth_check::clear() noexcept {
    OPENSSL_cleanse(_password.data(), _password.size());
    _password.clear();
}

void auth_check::prepare(const inbound_auth& auth, const protocol::auth_attempt& attempt) {
    clear();
    _users = auth.users();
    _user.assign(attempt.user);
    _password.assign(attempt.password);
    _verdict = verdict::failed;
    _error.clear();
}

void auth_check::run(unsigned) noexcept {
    const std::string* hash = _users->users.hash_of(_user);
    const bool known = hash != nullptr;
    auto match = core::verify_password(_password, known ? *hash : _users->dummy_hash);
    clear();
    if (!match) {
        _verdict = verdict::error;
        _error = "the hash of user '" + _user + "' cannot be checked: " + match.error();
    } else {
        _verdict = known && *match == core::password_match::yes ? verdict::ok : verdict::failed;
    }
    _users.reset();  // a reload may free the old table now
}

void auth_check::finish() noexcept { on_done(owner, *this); }

}  // namespace ringrelay::queue
