// queue/auth.h: SMTP AUTH for inbound connections (issue 5): the users file, the checks run
// on the work pool (never on a shard thread: scrypt is slow and memory-hard on purpose), and
// the per-address failure count behind "repeated failures slow down and then disconnect".
// protocol::server_session runs the SASL exchange; queue::connection drives a check per
// attempt (auth_check) and answers the session with auth_done().
//
// Threading: inbound_auth is shared by every shard (owned by the relay, outlives them):
// users() and reload() are atomic swaps of an immutable table; auth_failures is a fixed table
// of atomics (no lock, nothing allocated after construction).
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
// at once, and never more than it has failures left. The table is a fixed array of atomics
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

private:
    // A slot's failures: window start (monotonic seconds) << 32 | count.
    [[nodiscard]] std::uint32_t live_failures(std::size_t slot, std::int64_t now_ms) const noexcept;

    const std::uint32_t _limit;
    const std::int64_t _window_s;
    core::address_counter _in_flight;  // also supplies the keyed slot hash
    std::unique_ptr<std::atomic<std::uint64_t>[]> _failures;
};

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

    [[nodiscard]] std::shared_ptr<const user_table> users() const noexcept { return _users.load(); }
    [[nodiscard]] core::work_pool& pool() noexcept { return _pool; }
    [[nodiscard]] auth_failures& failures() noexcept { return _failures; }
    [[nodiscard]] const std::string& path() const noexcept { return _path; }

    inbound_auth(std::string path, std::shared_ptr<const user_table> users, const core::config& config);

private:
    const std::string _path;
    std::atomic<std::shared_ptr<const user_table>> _users;
    auth_failures _failures;
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
    void run() noexcept override;     // pool thread
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
