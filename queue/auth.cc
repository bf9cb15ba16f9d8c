// queue/auth.cc: see auth.h.
#include "queue/auth.h"

#include <arpa/inet.h>
#include <openssl/crypto.h>

#include <algorithm>
#include <thread>

#include "core/password_hash.h"

namespace ringrelay::queue {

auth_failures::auth_failures(std::uint32_t limit, std::int64_t window_ms, std::size_t max_addresses)
    : _limit(limit), _window_ms(window_ms), _max_addresses(max_addresses) {}

// IPv6 clients are counted per /64 (one customer's allocation), as --max-connections-per-ip.
std::string auth_failures::key(std::string_view address) {
    std::string text(address);
    in6_addr v6{};
    if (text.find(':') != std::string::npos && ::inet_pton(AF_INET6, text.c_str(), &v6) == 1) {
        for (int i = 8; i < 16; ++i) v6.s6_addr[i] = 0;
        char buf[INET6_ADDRSTRLEN] = {};
        if (::inet_ntop(AF_INET6, &v6, buf, sizeof buf) != nullptr) return std::string(buf) + "/64";
    }
    return text;
}

void auth_failures::prune(std::int64_t now_ms) {
    for (auto it = _table.begin(); it != _table.end();) {
        it = now_ms - it->second.window_start_ms >= _window_ms ? _table.erase(it) : std::next(it);
    }
}

bool auth_failures::blocked(std::string_view address, std::int64_t now_ms) {
    std::lock_guard lock(_mutex);
    const auto it = _table.find(key(address));
    if (it == _table.end()) return false;
    if (now_ms - it->second.window_start_ms >= _window_ms) {
        _table.erase(it);
        return false;
    }
    return it->second.failures >= _limit;
}

bool auth_failures::record(std::string_view address, std::int64_t now_ms) {
    std::lock_guard lock(_mutex);
    std::string k = key(address);
    auto it = _table.find(k);
    if (it != _table.end() && now_ms - it->second.window_start_ms >= _window_ms) {
        it->second = entry{0, now_ms};
    }
    if (it == _table.end()) {
        if (_table.size() >= _max_addresses) prune(now_ms);
        if (_table.size() >= _max_addresses) return false;  // see auth.h: not tracked
        it = _table.emplace(std::move(k), entry{0, now_ms}).first;
    }
    ++it->second.failures;
    return it->second.failures >= _limit;
}

inbound_auth::inbound_auth(std::string path, std::shared_ptr<const core::auth_users> users, std::string dummy_hash,
                           const core::config& config)
    : _path(std::move(path)),
      _users(std::move(users)),
      _dummy_hash(std::move(dummy_hash)),
      _failures(config.auth_max_failures_per_ip, static_cast<std::int64_t>(config.auth_failure_window) * 1000),
      // One check thread per two cores, at least one: each check is 32 MiB of scrypt; more
      // threads than that would take cores from the shards under an AUTH flood. Beyond 256
      // waiting checks the answer is 454 4.7.0 (try again later).
      _pool(std::max(1u, std::thread::hardware_concurrency() / 2), 256) {}

std::expected<std::unique_ptr<inbound_auth>, std::string> inbound_auth::create(const core::config& config) {
    auto users = core::auth_users::load(config.auth_users);
    if (!users) return std::unexpected("--auth-users: " + users.error());
    // A hash with default parameters of a random password: an unknown user costs the same.
    auto dummy = core::hash_password("ringrelay-no-such-user");
    if (!dummy) return std::unexpected("--auth-users: cannot compute a password hash: " + dummy.error());
    return std::make_unique<inbound_auth>(config.auth_users,
                                          std::make_shared<const core::auth_users>(std::move(*users)),
                                          std::move(*dummy), config);
}

std::expected<std::size_t, std::string> inbound_auth::reload() {
    auto users = core::auth_users::load(_path);
    if (!users) return std::unexpected(users.error());
    const std::size_t n = users->size();
    _users.store(std::make_shared<const core::auth_users>(std::move(*users)));
    return n;
}

void auth_check::prepare(const inbound_auth& auth, const protocol::auth_attempt& attempt) {
    _users = auth.users();
    _dummy_hash = &auth.dummy_hash();
    _user.assign(attempt.user);
    _password.assign(attempt.password);
    _verdict = verdict::failed;
    _error.clear();
}

void auth_check::run() noexcept {
    const std::string* hash = _users->hash_of(_user);
    const bool known = hash != nullptr;
    auto match = core::verify_password(_password, known ? *hash : *_dummy_hash);
    OPENSSL_cleanse(_password.data(), _password.size());
    _password.clear();
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
