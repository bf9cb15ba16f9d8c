// core/http_server.h: a shard's HTTP endpoint (--http, issue 18): its SO_REUSEPORT listeners
// (core::listener, multishot accept on the shard's io_uring, like SMTP's) and its connections,
// each a core::stream read by a core::http_reader. HTTP/1.1 keep-alive and pipelining: the
// requests of one connection are answered in order, each answer queued behind the one
// before and sent at the end of the loop turn with them. What a request gets is the
// http_service's (queue/http_api.h routes and checks access); this knows nothing of SMTP.
//
// Request time: a connection's deadline (the services' deadline list: --http-timeout)
// restarts when it opens and whenever a request has been read whole; when it passes with part
// of a request in, 408 and close; with none (an idle keep-alive connection), just close.
// A client that sends requests without reading the answers is paused once 1 MiB of answers
// waits, and read again as they leave; while paused, the deadline measures the answers'
// progress instead (each send that completes restarts it), and a client that takes none of
// them for a whole period is cut off (stream::abort: a send stuck on a zero window ends).
// Every error answer (4xx, 5xx) says Connection: close and the connection closes after it.
//
// Answers given later: a service may keep a request's answer for later (http_answer::defer():
// an answer that needs other shards, or a spool commit) and give it through the http_deferred
// handle when it has it, on this shard's thread. The answers after it on the same connection
// (pipelined requests) wait behind it, so that they still leave in order; at most
// max_waiting_answers requests are taken while answers wait (the connection's input is then
// not read), and the request deadline does not run while one is owed (the service bounds its
// own wait). A connection that closes or is cut off meanwhile (the client went, the shard stops)
// abandons its owed answers: their handles stay valid, and completing them does nothing.
// Closing after an answer lingers (RFC 9112 §9.6): once the answer has left, FIN
// (shutdown(SHUT_WR)), then what the client still sends is read and dropped until it closes,
// 1 MiB or one deadline period, so that no RST destroys the answer before the client read it.
// A closing connection's last answers get one more period to leave, then it is cut off.
//
// HTTPS (--http-tls): a listener opened with http_transport::tls starts each connection in
// implicit TLS (RFC 8314's way; RFC 9110 §4.2.2) with the context current at accept time
// (http_tls_source: SIGHUP's new certificate applies to the connections that open after it),
// through the same core::stream as SMTP's TLS; everything above (keep-alive, pipelining,
// limits, 408, 413, deferred answers) is the same. The request deadline runs from the accept,
// so a handshake not done within --http-timeout closes the connection; it, and a handshake
// that fails, are told to the service (http_service::tls_handshake: failed) and the
// connection closes (after OpenSSL's alert, if any). Requests say they came over TLS
// (http_request::transport), which the service's access rules may ask for.
//
// Strangers: connections from addresses the service caps (http_service::capped: outside
// --http-networks) count per address (IPv4 /32, IPv6 /64) on this shard; past
// max_http_connections_per_address they get a 503 and are closed, so one address cannot take
// every slot.
//
// Lifecycle: constructed by the shard -> listen() per endpoint -> start() -> ... -> stop()
// (listeners close, connections close once their queued answers left, or a period later are
// cut off) -> [abort_connections() when the shutdown grace period ends] -> drained().
// Destroying it deletes the connections still open (the shard's teardown).
// Threading: the shard's thread only.
// SECURITY: every byte is the client's (core::http_reader bounds it); at most
// max_http_connections per shard are open at once, more are refused with 503.
#pragma once
#include <sys/socket.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/address_counter.h"
#include "core/http_request.h"
#include "core/listener.h"
#include "core/net.h"
#include "core/stream.h"

namespace ringrelay::core {

inline constexpr std::uint32_t max_http_connections = 256;  // per shard
// Per shard, from one address the service caps (http_service::capped).
inline constexpr std::uint32_t max_http_connections_per_address = 16;

// At most this many answers owed (deferred, or waiting behind one that is) per connection.
inline constexpr std::size_t max_waiting_answers = 16;

class http_connection;

enum class http_tls_outcome : std::uint8_t { completed, failed };

// Where --http-tls connections get their server context (the shard's, rebuilt when SIGHUP
// loads a new certificate: a connection takes the one current when it opens). Shard-local.
class http_tls_source {
public:
    // Null: TLS is unavailable (the connection is closed).
    [[nodiscard]] virtual const tls_context* http_tls_context() noexcept = 0;
    // Where the record layer runs (kTLS when the start-up probe passed, as for SMTP).
    [[nodiscard]] virtual tls_engine http_tls_engine() const noexcept = 0;

protected:
    ~http_tls_source() = default;
};

// Told when an answer it waits for is given (core::http_connection). An interface, so that the
// answer handles (core/http_answer.cc) do not depend on the connection's code.
class http_owed_waiter {
public:
    virtual void owed_ready() noexcept = 0;

protected:
    ~http_owed_waiter() = default;
};

// The connection's side of an answer given later (see above). Shard-local.
struct http_owed {
    http_owed_waiter* connection = nullptr;  // null once the connection is gone or closing (or sent it)
    std::optional<http_response> response;  // set: the answer is there
    bool keep_alive = true;                 // the request's
    bool head = false;                      // a HEAD request: the header only
    bool abandoned = false;                 // the connection went or closed before sending it
};

// A handle on an answer owed (http_answer::defer()). Copyable (a callback may hold it); complete
// it once, on the shard thread that made it. It may outlive its connection (then completing it
// does nothing) and the server.
class http_deferred {
public:
    http_deferred() = default;
    // The answer: sent once the answers before it on its connection have been. Nothing if the
    // connection is gone, or if the handle is empty or was completed already.
    void complete(http_response&& response) noexcept;
    // The client will not see the answer (the connection is gone or closing). A handle made
    // without a connection (a service's tests) is not abandoned.
    [[nodiscard]] bool abandoned() const noexcept { return !_owed || _owed->abandoned; }

private:
    friend class http_answer;
    explicit http_deferred(std::shared_ptr<http_owed> owed) noexcept : _owed(std::move(owed)) {}
    std::shared_ptr<http_owed> _owed;
};

// What http_service::handle() gives a request: `response` now, or defer() and the answer later.
class http_answer {
public:
    http_answer() = default;
    // The answer to a request already deferred (`owed`), given by a handler that runs later
    // (after a password check): defer() returns that same handle; if the handler does not
    // defer, the caller completes `owed` with `response`.
    explicit http_answer(http_deferred owed) noexcept : _owed(std::move(owed._owed)) {}
    http_response response;
    // The answer comes later, through the handle returned (at most once per request); `response`
    // is then not used.
    [[nodiscard]] http_deferred defer() noexcept;
    [[nodiscard]] bool deferred() const noexcept { return _deferred; }
    // The answer given later through the handle, once given; null before (tests: a service
    // called without a connection).
    [[nodiscard]] const http_response* given() const noexcept {
        return _owed && _owed->response ? &*_owed->response : nullptr;
    }

private:
    friend class http_connection;
    std::shared_ptr<http_owed> _owed;
    bool _deferred = false;  // defer() was called
};

// What serves the requests (the shard's queue::http_api).
class http_service {
public:
    // Answers `request` from `peer` (valid during the call) on the shard thread: at once
    // (answer.response), or later (answer.defer()); nothing may block.
    virtual void handle(const http_request& request, const sockaddr* peer, http_answer& answer) noexcept = 0;
    // Whether connections from `peer` (valid during the call) count against
    // max_http_connections_per_address (strangers: no route of theirs needs many).
    [[nodiscard]] virtual bool capped(const sockaddr* peer) const noexcept = 0;
    // A --http-tls connection's handshake completed, or TLS failed (a failed handshake, one not
    // done within --http-timeout, a bad record after it: as SMTP counts them); for the metrics.
    virtual void tls_handshake(http_tls_outcome outcome) noexcept { (void)outcome; }

protected:
    ~http_service() = default;
};

class http_server;

// One accepted HTTP connection. Owned by its http_server; shard-local.
class http_connection final : public stream_owner, public http_owed_waiter {
public:
    http_connection(http_server& server, int fd, const sockaddr* peer, http_transport transport);
    http_connection(const http_connection&) = delete;
    http_connection& operator=(const http_connection&) = delete;
    ~http_connection();

    void start() noexcept;
    // Sends `line` (a whole response) before reading anything, then closes.
    void refuse(std::string_view line) noexcept;
    // Closes once the answers queued have left; if they have not within one more deadline
    // period, abort().
    void close() noexcept;
    // Cut off now: queued answers dropped, a send in flight ended (stream::abort).
    void abort() noexcept;
    [[nodiscard]] bool finished() const noexcept { return _stream.finished(); }

    std::size_t server_slot = 0;   // index in the server's connection list
    std::size_t address_slot = 0;  // its count in the server's connection_limits
    // Its count in the server's per-address cap of strangers; nullopt: not capped.
    std::optional<std::size_t> capped_slot;

private:
    // stream_owner
    void on_stream_data(std::string_view data) noexcept override;
    void on_stream_end(stream_end why, std::string_view detail) noexcept override;
    void on_stream_finished() noexcept override;
    void on_stream_sent(std::uint8_t marks) noexcept override;
    void on_stream_progress() noexcept override;
    void on_stream_timeout() noexcept override;
    void on_stream_tls_ready() noexcept override;

    friend class http_deferred;
    // Answers every whole request received, in order, while the queued answers allow.
    void serve() noexcept;
    // An owed answer was completed: the answers now at the front of _owed go out, then more
    // requests are served.
    void owed_ready() noexcept override;
    // Sends the answers at the front of _owed that are there, in order.
    void send_owed() noexcept;
    // The connection will not send the owed answers: their handles are told (abandoned()).
    void abandon_owed() noexcept;
    void answer(const http_response& response, bool keep_alive, bool head) noexcept;
    // After the last answer: FIN once it left, then read and drop until the client closes.
    void linger() noexcept;
    // The TLS handshake failed or will not happen: told to the service once.
    void tls_failed() noexcept;

    http_server& _server;
    endpoint _peer;
    const http_transport _transport;
    bool _tls_told = false;  // the handshake's outcome was told to the service
    stream _stream;
    http_reader _reader;
    bool _lingering = false;     // the last answer is queued; input is dropped
    std::size_t _discarded = 0;  // bytes dropped while lingering
    bool _closing = false;
    bool _read_stopped = false;  // an error answer is owed: no request after it is read
    bool _serving = false;  // inside serve(): an answer completed meanwhile is sent by serve()
    std::deque<std::shared_ptr<http_owed>> _owed;  // in request order
};

class http_server final : public listener_owner {
public:
    // services.deadlines: the request deadline (--http-timeout); name: how stderr names the
    // shard ("shard 2"); tls: the context of --http-tls listeners (null: none may be opened).
    http_server(const stream_services& services, http_service& service, std::string name,
                http_tls_source* tls = nullptr);
    http_server(const http_server&) = delete;
    http_server& operator=(const http_server&) = delete;
    ~http_server();

    // Binds one endpoint; an error names it ("cannot listen for HTTP on ADDR: reason").
    [[nodiscard]] std::string listen(const endpoint& at, http_transport transport = http_transport::plain);
    // The endpoints really bound (port 0 resolved), in listen order.
    [[nodiscard]] std::vector<endpoint> bound() const;
    void start() noexcept;
    // Listeners close; every connection closes once its queued answers have left.
    void stop() noexcept;
    // The shutdown grace period is over: every connection still open is cut off (abort()).
    void abort_connections() noexcept;
    // Once a second: listeners whose accept failed are re-armed.
    void tick() noexcept;
    // A connected socket accepted elsewhere (tests: one end of a socketpair; `peer` is the
    // address it stands for, valid during the call), admitted like a listener's: false when
    // refused (fd closed).
    bool adopt(int fd, const sockaddr* peer, http_transport transport = http_transport::plain) noexcept;
    // The end of the loop turn: destroys the connections that finished.
    void end_turn() noexcept;
    [[nodiscard]] std::size_t connections() const noexcept { return _connections.size(); }
    // No connection left and every listener closed.
    [[nodiscard]] bool drained() const noexcept;

private:
    friend class http_connection;
    void retire(http_connection& c) noexcept { _graveyard.push_back(&c); }

    // listener_owner
    void on_accepted(listener& from, int fd, const sockaddr* peer, std::size_t address_slot) noexcept override;
    void on_refused(listener& from, const sockaddr* peer, refusal why) noexcept override;
    void add(int fd, const sockaddr* peer, std::size_t address_slot, http_transport transport) noexcept;

    // Fixed after construction.
    const stream_services _services;
    http_service& _service;
    const std::string _name;
    http_tls_source* const _tls;
    // Shard-local: this shard's HTTP connections only (no per-address limit: one slot).
    shared_limit _open;
    address_counter _addresses{1};
    connection_limits _limits;
    address_counter _capped{4096};  // strangers' connections per address on this shard
    std::vector<std::unique_ptr<listener>> _listeners;
    std::vector<http_transport> _transports;  // of each listener
    std::vector<http_connection*> _connections;  // owned; index kept in each connection
    std::vector<http_connection*> _graveyard;
    bool _stopping = false;
};

}  // namespace ringrelay::core
