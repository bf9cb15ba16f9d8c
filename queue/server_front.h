// queue/server_front.h: a shard's front door, the part of the shard wiring the relay's shard
// and ringrelay-sink's have in common: its core::listeners (what each port speaks first), the
// admission they share, the inbound connections it owns (made by the shard, which picks the
// subclass of server_connection), their retirement at the end of the turn, and stop.
//
// Behind a load balancer (issue 19, --proxy-protocol-from): a connection from one of the
// `balancers` is counted against the total only (core::listener) and first goes through a
// proxy_stage that reads its PROXY header within the header timeout. Then its client, the
// header's source address, is counted per address (a refusal gets the refusal line, as at
// accept), and the connection is made with the client's address and the balancer's. A version
// 2 LOCAL header (a health check), a v1 UNKNOWN line and a v2 header without an IP address
// (AF_UNSPEC, AF_UNIX) carry no client: the connection is the balancer's own and is served as
// such (the specification's rule; HAProxy's `option smtpchk` checks then get their greeting,
// and a plain TCP check closes without a word). A malformed header, a timeout or a balancer
// that closes mid-header is reported to the owner (on_proxy_failed) and closed without a reply;
// no other connection is affected.
//
// Lifecycle: constructed by the shard -> listen() per endpoint at init -> start() -> ...
// -> stop() (no new connections) -> stop_connections() (421 to idle sessions, later forced)
// -> drained(). Destroying it deletes the connections still open (the shard's teardown).
// Threading: the shard's thread; the limits' counts are shared atomics.
#pragma once
#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/listener.h"
#include "core/net.h"
#include "core/deadline_list.h"
#include "core/reactor.h"
#include "queue/proxy_stage.h"
#include "queue/server_connection.h"

namespace ringrelay::queue {

// The io_uring and receive buffer ring of a server shard (the relay's, ringrelay-sink's).
inline constexpr unsigned server_ring_entries = 4096;
inline constexpr unsigned server_receive_buffers = 1024;  // power of two
inline constexpr unsigned server_receive_buffer_size = 16 * 1024;
inline constexpr std::uint16_t server_receive_group = 1;

// Who a new connection is from. Both pointers are valid during the call they are given to.
struct inbound_peer {
    const sockaddr* client = nullptr;  // the socket's peer, or the address a PROXY header gave
    const sockaddr* proxy = nullptr;   // the balancer that sent that header; null for none
};

// The load balancers whose connections start with a PROXY header (--proxy-protocol-from).
struct front_proxies {
    std::vector<core::cidr> balancers;  // none: no connection is read as one
    std::int64_t header_timeout_ms = 5000;
};

// The shard's part.
class front_owner {
public:
    // A new admitted connection on a `kind` port: the shard makes it (not started yet) and
    // counts it.
    [[nodiscard]] virtual server_connection* make_connection(int fd, const inbound_peer& from,
                                                             listener_kind kind) noexcept = 0;
    // A balancer's connection ended without a usable PROXY header (`outcome`: malformed,
    // closed after some bytes, timed_out); `why` says what happened, for the operator.
    virtual void on_proxy_failed(const sockaddr* balancer, proxy_outcome outcome, std::string_view why) noexcept {
        (void)balancer, (void)outcome, (void)why;
    }
    // A connection refused before its banner (counted, maybe reported).
    virtual void on_refused(const sockaddr* peer, core::refusal why, std::string_view refusal_line) noexcept = 0;
    // A connection is being destroyed (its admission already given back).
    virtual void on_connection_gone() noexcept = 0;

protected:
    ~front_owner() = default;
};

class server_front final : public core::listener_owner, public proxy_stage_owner {
public:
    // name: how stderr names the shard ("shard 2").
    server_front(core::reactor& ring, front_owner& owner, const core::connection_limits& limits, std::string name,
                 front_proxies proxies = {});
    server_front(const server_front&) = delete;
    server_front& operator=(const server_front&) = delete;
    ~server_front();

    // Binds one endpoint; an error names it ("cannot listen on ADDR: reason").
    [[nodiscard]] std::string listen(const core::endpoint& at, listener_kind kind);
    // The endpoints really bound (port 0 resolved), in listen order.
    [[nodiscard]] std::vector<core::endpoint> bound() const;
    void start() noexcept;
    // Stops listening (connections accepted meanwhile are closed).
    void stop() noexcept;
    // Tells every connection the server stops (queue::server_connection::on_stop).
    void stop_connections(bool force) noexcept;
    // Once a second: listeners whose accept failed are re-armed; PROXY headers past their
    // deadline end.
    void tick() noexcept;
    // server_host::retire: `c` is destroyed at the next end_turn().
    void retire(server_connection& c) noexcept { _graveyard.push_back(&c); }
    // The end of the loop turn, after the sends: destroys the retired connections.
    void end_turn() noexcept;

    [[nodiscard]] std::size_t connections() const noexcept { return _connections.size(); }
    // Balancers' connections whose PROXY header is still being read.
    [[nodiscard]] std::size_t pending_headers() const noexcept { return _stages.size(); }
    // No connection left and every listener closed.
    [[nodiscard]] bool drained() const noexcept;

private:
    // core::listener_owner
    void on_accepted(core::listener& from, int fd, const sockaddr* peer, std::size_t address_slot) noexcept override;
    void on_refused(core::listener& from, const sockaddr* peer, core::refusal why) noexcept override;
    void on_balancer_accepted(core::listener& from, int fd, const sockaddr* balancer) noexcept override;
    // proxy_stage_owner
    void on_proxy_stage_end(proxy_stage& stage) noexcept override;
    // Counts the client in, makes its connection and starts it; the total is already held.
    void admit_proxied(proxy_stage& stage) noexcept;
    void add(server_connection* c, std::size_t address_slot) noexcept;
    void destroy(server_connection* c) noexcept;

    core::reactor& _ring;
    front_owner& _owner;
    core::connection_limits _limits;
    const std::string _name;
    std::vector<std::unique_ptr<core::listener>> _listeners;
    std::vector<server_connection*> _connections;  // owned; index kept in each connection
    std::vector<server_connection*> _graveyard;
    const front_proxies _proxies;
    core::deadline_list _header_deadlines;
    std::vector<proxy_stage*> _stages;  // owned; index kept in each stage
    std::vector<proxy_stage*> _ended_stages;  // destroyed at the end of the turn
};

}  // namespace ringrelay::queue
