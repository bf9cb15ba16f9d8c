// queue/auth.cc: see auth.h.
#include "queue/auth.h"

#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <algorithm>
#include <map>
#include <tuple>
#include <cstring>
#include <thread>

#include "core/password_hash.h"

namespace ringrelay::queue {

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
    const std::uint64_t v = _failures[slot].load(std::memory_order_acquire);
    const auto start = static_cast<std::int64_t>(v >> 32);
    if (now_ms / 1000 - start >= _window_s) return 0;
    return static_cast<std::uint32_t>(v);
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
    const auto now_s = static_cast<std::uint64_t>(now_ms / 1000);
    std::uint64_t v = _failures[slot].load(std::memory_order_acquire);
    std::uint64_t next = 0;
    do {
        const std::uint64_t start = v >> 32;
        const auto count = static_cast<std::uint32_t>(v);
        const bool expired = static_cast<std::int64_t>(now_s - start) >= _window_s || v == 0;
        next = expired ? (now_s << 32 | 1u)
                       : (start << 32 | (count == UINT32_MAX ? count : count + 1));
    } while (!_failures[slot].compare_exchange_weak(v, next, std::memory_order_acq_rel, std::memory_order_acquire));
    return static_cast<std::uint32_t>(next) >= _limit;
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
      // One check thread per two cores, at least one: each check is 32 MiB of scrypt; more
      // threads than that would take cores from the shards under an AUTH flood. Beyond 64
      // waiting checks the answer is 454 4.7.0 (try again later); that also bounds how long
      // a shutdown waits for checks in flight.
      _pool(std::max(1u, std::thread::hardware_concurrency() / 2), 64) {}

std::expected<std::unique_ptr<inbound_auth>, std::string> inbound_auth::create(const core::config& config) {
    auto users = core::auth_users::load(config.auth_users);
    if (!users) return std::unexpected("--auth-users: " + users.error());
    auto table = user_table::make(std::move(*users));
    if (!table) return std::unexpected("--auth-users: " + table.error());
    return std::make_unique<inbound_auth>(config.auth_users, std::move(*table), config);
}

std::expected<std::size_t, std::string> inbound_auth::reload() {
    auto users = core::auth_users::load(_path);
    if (!users) return std::unexpected(users.error());
    const std::size_t n = users->size();
    auto table = user_table::make(std::move(*users));
    if (!table) return std::unexpected(table.error());
    _users.store(std::move(*table));
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

void auth_check::run() noexcept {
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
