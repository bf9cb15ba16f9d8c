// core/listener.h: one SO_REUSEPORT listening socket of a shard with a multishot accept on the
// shard's io_uring, re-armed when the kernel ends it, and admission against connection
// limits shared by every shard: a total (--max-connections) and a count per client address
// (core::address_counter: IPv4 /32, IPv6 /64). A connection over a limit gets its refusal
// line before any banner (RFC 5321 §3.1 allows a 421 greeting) and is closed; nothing else is
// read from it. Knows nothing of SMTP beyond the refusal text its owner gives it.
//
// A connection from a load balancer given to the listener (set_balancers: --proxy-protocol-from)
// carries its client's address in its first bytes (a PROXY protocol header), so its client is
// not known at accept: it is counted against the total only and handed to
// listener_owner::on_balancer_accepted(); the owner reads the header and counts the real
// client with connection_limits::admit_address(). The balancer's own address is never counted
// per address (every client behind it would share its slot).
//
// Lifecycle: open() on the shard thread -> start() -> accepts ... -> stop() (the socket leaves
// LISTEN at once; closed once the accept is gone) -> closed(). An accept that fails (EMFILE,
// ENFILE) is said once per streak and retried at the next tick() instead of spinning.
// Threading: shard-local; the limits' counts are atomics shared with the other shards.
// SECURITY: the peer address comes from the kernel; limits are checked before any byte is
// read from the client.
#pragma once
#include <sys/socket.h>

#include <cstdint>
#include <expected>
#include <span>
#include <string>
#include <string_view>
#include <system_error>

#include "core/address_counter.h"
#include "core/net.h"
#include "core/reactor.h"

namespace ringrelay::core {

class listener;

// Which limit refused a connection.
enum class refusal : std::uint8_t { total, per_address };

// Admission for every listener of a shard: counts shared by all shards, limits and refusal
// lines fixed. Outlives the connections it admitted.
class connection_limits {
public:
    // total may be null (no total); max_* 0 = no limit. The refusal texts are whole reply
    // lines with CRLF and must outlive the object.
    connection_limits(shared_limit* total, std::uint32_t max_total, address_counter& per_address,
                      std::uint32_t max_per_address, std::string_view refuse_total,
                      std::string_view refuse_per_address) noexcept
        : _total(total),
          _max_total(max_total),
          _per_address(per_address),
          _max_per_address(max_per_address),
          _refuse_total(refuse_total),
          _refuse_per_address(refuse_per_address) {}

    // Counts `peer` in: its per-address slot, or which limit refused it.
    [[nodiscard]] std::expected<std::size_t, refusal> admit(const sockaddr* peer) noexcept;
    // Gives back one admit() (or admit_total() then admit_address()) that succeeded.
    void release(std::size_t address_slot) noexcept;
    // Counts a connection against the total only: a balancer's, whose client is not known yet.
    [[nodiscard]] std::expected<void, refusal> admit_total() noexcept;
    // Counts the client of a connection taken by admit_total() in its address's slot. On
    // refusal the total is still held: give it back with release_total().
    [[nodiscard]] std::expected<std::size_t, refusal> admit_address(const sockaddr* client) noexcept;
    // Gives back an admit_total() whose client was never admitted.
    void release_total() noexcept;
    [[nodiscard]] std::string_view refusal_text(refusal why) const noexcept {
        return why == refusal::total ? _refuse_total : _refuse_per_address;
    }
    [[nodiscard]] const address_counter& per_address() const noexcept { return _per_address; }

private:
    shared_limit* const _total;
    const std::uint32_t _max_total;
    address_counter& _per_address;
    const std::uint32_t _max_per_address;
    const std::string_view _refuse_total;
    const std::string_view _refuse_per_address;
};

// Sends a refusal line to a connection not yet read from and closes it. A fresh socket's send
// buffer is empty, so the non-blocking send of the short line completes at once (or fails if
// the client already reset); the fd is closed on every path.
void send_refusal(int fd, std::string_view line) noexcept;

// What a listener tells its shard.
class listener_owner {
public:
    // An admitted connection: `fd` (non-blocking, close-on-exec) is the owner's now; `peer` is
    // valid during the call; `address_slot` goes back through connection_limits::release()
    // when the connection ends.
    virtual void on_accepted(listener& from, int fd, const sockaddr* peer, std::size_t address_slot) noexcept = 0;
    // A connection was refused before its banner (the refusal line sent, the socket closed).
    virtual void on_refused(listener& from, const sockaddr* peer, refusal why) noexcept = 0;
    // A connection from one of the listener's balancers (set_balancers), counted against the
    // total only (connection_limits::admit_total): `fd` is the owner's now, and so is the
    // total's count (admit_address() then release(), or release_total()). `balancer` is valid
    // during the call. Only listeners given balancers call it.
    virtual void on_balancer_accepted(listener& from, int fd, const sockaddr* balancer) noexcept;

protected:
    ~listener_owner() = default;
};

class listener final {
public:
    // name: how stderr names the shard ("shard 2"); tag: the owner's (what the port speaks).
    listener(reactor& ring, listener_owner& owner, connection_limits& limits, std::string name,
             std::uint8_t tag = 0) noexcept;
    listener(const listener&) = delete;
    listener& operator=(const listener&) = delete;
    ~listener();  // closes the socket; no accept may be in flight (the shard has drained)

    // Connections from these networks start with a PROXY header (the owner reads it). The
    // networks must outlive the listener.
    void set_balancers(std::span<const cidr> balancers) noexcept { _balancers = balancers; }
    // Binds `at` (SO_REUSEPORT; port 0 picks one).
    [[nodiscard]] std::expected<void, std::error_code> open(const endpoint& at, int backlog) noexcept;
    // The endpoint really bound.
    [[nodiscard]] std::expected<endpoint, std::error_code> bound() const noexcept { return local_endpoint(_fd); }
    // Arms the multishot accept.
    void start() noexcept;
    // Stops listening now: shutdown() moves a listening TCP socket out of LISTEN at once (new
    // SYNs are refused), while the cancelled accept still holds the file; connections
    // accepted meanwhile are closed.
    void stop() noexcept;
    // Once a second: re-arms an accept that failed.
    void tick() noexcept;
    // The socket is closed (after stop(), once the accept is gone).
    [[nodiscard]] bool closed() const noexcept { return _fd < 0; }
    [[nodiscard]] std::uint8_t tag() const noexcept { return _tag; }

private:
    void on_accept(int res, std::uint32_t flags) noexcept;
    void admit(int fd) noexcept;
    void refuse(int fd, const sockaddr* peer, refusal why) noexcept;
    void arm() noexcept;

    reactor& _ring;
    listener_owner& _owner;
    connection_limits& _limits;
    const std::string _name;
    const std::uint8_t _tag;
    std::span<const cidr> _balancers;
    int _fd = -1;
    operation<&listener::on_accept> _accept{*this};
    bool _armed = false;
    bool _failing = false;        // the last accept failed (said once)
    bool _rearm_on_tick = false;  // re-arm at the next tick, after a failure
    bool _stopped = false;
};

}  // namespace ringrelay::core
