// queue/proxy_stage.h: the first bytes of a connection from a trusted load balancer
// (--proxy-protocol-from, issue 19): its PROXY protocol header (protocol/proxy_header.h,
// version 1 or 2 as HAProxy's send-proxy / send-proxy-v2 send it), read before the connection
// becomes an SMTP session, so that the session, the per-IP limits, the relay networks, AUTH
// throttles, Received: and the log all see the client's address instead of the balancer's.
//
// The stage never reads past the header, so whatever follows it stays in the socket for the
// connection: a client's TLS ClientHello on an implicit-TLS port (which HAProxy may send in the
// same segment as a v2 header), or an early talker's SMTP, which the session then sees as any
// early talker's (queue/server_connection.h). Each io_uring receive peeks (MSG_PEEK: it waits
// for data, takes none) into a buffer of its own (256 bytes, grown to
// protocol::proxy_v2_max_length only for a version 2 header with long TLVs); everything read
// so far is parsed after each one, byte by byte or in one piece alike, and only the header's
// bytes are then taken from the socket (a non-blocking recv of bytes already queued). It ends
// in one of:
//   - header: a whole header; `header()` says what it carries;
//   - malformed: not a PROXY header, or a bad one (`error()` says why);
//   - closed: the balancer closed (or reset) before the header was whole;
//   - timed_out: no whole header within the deadline (--proxy-protocol-timeout);
//   - stopped: the server stops.
// It then tells its owner (proxy_stage_owner::on_proxy_stage_end), which takes the socket
// (take_fd) or lets the stage close it when destroyed.
//
// Lifecycle: made by the shard's server_front when a balancer's connection is accepted ->
// start() -> receives ... -> ended (the owner is told once; no operation is in flight any
// more) -> destroyed by the owner at the end of the turn. A deadline or a stop shuts the socket
// down, which ends the receive in flight; the stage ends on its completion. Owned by its
// shard's server_front; shard-local.
// SECURITY: every byte is the network's; the parser bounds the header (107 bytes for v1,
// 4096 for v2), so the stage never buffers more.
#pragma once
#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <string>

#include "core/deadline_list.h"
#include "core/net.h"
#include "core/reactor.h"
#include "protocol/proxy_header.h"

namespace ringrelay::queue {

class proxy_stage;

enum class proxy_outcome : std::uint8_t { reading, header, malformed, closed, timed_out, stopped };

class proxy_stage_owner {
public:
    // `stage` has ended (its outcome is not `reading`); called once, never from inside start().
    virtual void on_proxy_stage_end(proxy_stage& stage) noexcept = 0;

protected:
    ~proxy_stage_owner() = default;
};

class proxy_stage final : public core::deadline_entry {
public:
    // fd: the accepted socket, the stage's until take_fd(). balancer: the socket's peer.
    // deadlines: the --proxy-protocol-timeout list, which outlives the stage. tag: the
    // owner's (the listener's kind), kept for it.
    proxy_stage(core::reactor& ring, proxy_stage_owner& owner, core::deadline_list& deadlines, int fd,
                const sockaddr* balancer, std::uint8_t tag);
    proxy_stage(const proxy_stage&) = delete;
    proxy_stage& operator=(const proxy_stage&) = delete;
    ~proxy_stage() override;  // closes the socket unless taken; no receive may be in flight

    // Starts the deadline and the first receive.
    void start() noexcept;
    // The server stops: the stage ends (stopped) once its receive is gone.
    void stop() noexcept;

    [[nodiscard]] proxy_outcome outcome() const noexcept { return _outcome; }
    // outcome header: what it carries.
    [[nodiscard]] const protocol::proxy_header& header() const noexcept { return _header; }
    // outcome malformed: the parser's reason.
    [[nodiscard]] const std::string& error() const noexcept { return _header.error; }
    [[nodiscard]] const sockaddr* balancer() const noexcept { return _balancer.addr(); }
    // Bytes of the header taken from the socket so far (all of it once ended with `header`).
    [[nodiscard]] std::size_t bytes_read() const noexcept { return _used; }
    [[nodiscard]] std::uint8_t tag() const noexcept { return _tag; }
    // The socket becomes the caller's (only once the stage has ended).
    [[nodiscard]] int take_fd() noexcept;

    std::size_t front_slot = 0;  // index in the owner's list

private:
    void on_deadline() noexcept override;
    void on_receive(int res, std::uint32_t flags) noexcept;
    // Takes `n` peeked bytes out of the socket; false if it did not give them all.
    [[nodiscard]] bool consume(std::size_t n) noexcept;
    void arm() noexcept;
    void end(proxy_outcome outcome) noexcept;

    core::reactor& _ring;
    proxy_stage_owner& _owner;
    core::deadline_list& _deadlines;
    int _fd;
    const core::endpoint _balancer;
    const std::uint8_t _tag;
    std::unique_ptr<char[]> _buffer;
    std::size_t _capacity = 0;
    std::size_t _used = 0;
    protocol::proxy_header _header;
    core::operation<&proxy_stage::on_receive> _receive{*this};
    proxy_outcome _outcome = proxy_outcome::reading;
    proxy_outcome _shut_why = proxy_outcome::reading;  // timed_out or stopped once shut down
    bool _in_flight = false;
};

}  // namespace ringrelay::queue
