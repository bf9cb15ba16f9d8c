// queue/auth.h: SMTP AUTH for inbound connections (issue 5): the users file, the checks run
// on the work pool (never on a shard thread: scrypt is slow and memory-hard on purpose), and
// the per-address failure count behind "repeated failures slow down and then disconnect".
// protocol::server_session runs the SASL exchange; queue::connection drives a check per
// attempt (auth_check) and answers the session with auth_done().
//
// Threading: inbound_auth is shared by every shard (owned by the relay, outlives them):
// users() and reload() are atomic swaps of an immutable table; auth_failures takes a mutex
// (only failed AUTH attempts and AUTH commands reach it, never the mail path).
// SECURITY: credentials come from the network. The password is wiped once checked; an
// unknown user is checked against a dummy hash so that timing does not reveal which users
// exist.
#pragma once
#include <atomic>
#include <cstdint>
#include <expected>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "core/auth_users.h"
#include "core/config.h"
#include "core/work_pool.h"
#include "protocol/server_session.h"

namespace ringrelay::queue {

// Failed AUTH attempts per client address (IPv4 address, IPv6 /64) within a fixed window:
// once an address reaches `limit`, its AUTH commands are refused (421 4.7.0) until the
// window that began with its first failure has passed. The table is bounded: when it is full
// and nothing has expired, new addresses are not tracked (each connection still has its own
// limit), so a flood of addresses cannot push a failing one out or grow memory.
class auth_failures {
public:
    auth_failures(std::uint32_t limit, std::int64_t window_ms, std::size_t max_addresses = 65536);

    [[nodiscard]] bool blocked(std::string_view address, std::int64_t now_ms);
    // Counts a failure; returns whether the address is blocked now.
    bool record(std::string_view address, std::int64_t now_ms);

private:
    struct entry {
        std::uint32_t failures = 0;
        std::int64_t window_start_ms = 0;
    };
    [[nodiscard]] static std::string key(std::string_view address);
    void prune(std::int64_t now_ms);

    const std::uint32_t _limit;
    const std::int64_t _window_ms;
    const std::size_t _max_addresses;
    std::mutex _mutex;
    std::unordered_map<std::string, entry> _table;  // guarded by _mutex
};

class inbound_auth {
public:
    // Loads --auth-users and starts the check threads; an error names the file and line.
    [[nodiscard]] static std::expected<std::unique_ptr<inbound_auth>, std::string> create(const core::config& config);

    // Re-reads the users file (SIGHUP); on an error the table in use stays.
    [[nodiscard]] std::expected<std::size_t, std::string> reload();

    [[nodiscard]] std::shared_ptr<const core::auth_users> users() const noexcept { return _users.load(); }
    [[nodiscard]] const std::string& dummy_hash() const noexcept { return _dummy_hash; }
    [[nodiscard]] core::work_pool& pool() noexcept { return _pool; }
    [[nodiscard]] auth_failures& failures() noexcept { return _failures; }
    [[nodiscard]] const std::string& path() const noexcept { return _path; }

    inbound_auth(std::string path, std::shared_ptr<const core::auth_users> users, std::string dummy_hash,
                 const core::config& config);

private:
    const std::string _path;
    std::atomic<std::shared_ptr<const core::auth_users>> _users;
    const std::string _dummy_hash;
    auth_failures _failures;
    core::work_pool _pool;  // last: its threads stop first
};

// One password check, owned by the connection that asked for it.
class auth_check final : public core::work_item {
public:
    enum class verdict : std::uint8_t { ok, failed, error };

    // Shard thread: copies the attempt (the session's views die with auth_done()).
    void prepare(const inbound_auth& auth, const protocol::auth_attempt& attempt);
    void run() noexcept override;     // pool thread
    void finish() noexcept override;  // shard thread: tells the owner

    [[nodiscard]] verdict result() const noexcept { return _verdict; }
    [[nodiscard]] const std::string& error() const noexcept { return _error; }
    [[nodiscard]] const std::string& user() const noexcept { return _user; }

    // Called by finish(): the connection's handler.
    void (*on_done)(void* owner, auth_check& check) noexcept = nullptr;
    void* owner = nullptr;

private:
    std::shared_ptr<const core::auth_users> _users;
    const std::string* _dummy_hash = nullptr;
    std::string _user;
    std::string _password;
    verdict _verdict = verdict::failed;
    std::string _error;
};

}  // namespace ringrelay::queue
