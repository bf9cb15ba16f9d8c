// core/redis_client.h: an asynchronous Redis client on a shard's own io_uring (issue 19, "Shared
// limits in Redis"). hiredis (0.14, Debian's libhiredis-dev) does the protocol: its async context
// formats commands and its redisReader parses RESP; this file is the event adapter hiredis asks
// for (ev.addRead/addWrite/delRead/delWrite/cleanup), as core/dns.h is c-ares's: each wanted
// direction is a one-shot IORING_OP_POLL_ADD on hiredis's socket, re-armed after every readiness
// while hiredis still wants it, and removed (IORING_OP_POLL_REMOVE) when hiredis frees its context.
//
// Batching: a command only appends to hiredis's output buffer and asks for a write; the write
// happens when the poll completes, on the next loop turn, so every command issued in one turn
// goes out in one send (Redis pipelines them); the replies come back in order.
//
// Never blocks: hiredis connects non-blocking to a numeric address (a host name in the URL is
// resolved once at start-up, off the shards: resolve_redis_host()); a request that has no reply
// after request_timeout_ms drops the connection (every request in flight fails), and so does a
// connection not made within it. Reconnects with a back-off (backoff_min_ms doubling up to
// backoff_max_ms) driven by tick(). While the connection is not up, command() refuses at once:
// the caller uses its fallback (queue/connection_leases.h); Redis is never on the critical path.
//
// State changes (up, down with the reason) are logged once each (core::diag) and counted.
//
// Lifecycle: construct -> start() -> command()/eval() and tick() (every loop turn, or at least
// every 100 ms) -> shutdown() -> run the loop until idle() -> destroy. Destroying it while
// !idle() is allowed only if the reactor will not run again. Shard-local: one per shard, used by
// that shard's thread only; its handlers are called from the reactor loop (never inside
// command()), at most once per request, unless cancel() is called first.
// SECURITY: replies come from the network (a Redis the operator trusts); hiredis's reader parses
// them with its own bounds; handlers check every reply's type before using it.
#pragma once
#include <cstdint>
#include <expected>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <map>
#include <vector>

#include "core/reactor.h"
#include "core/redis_url.h"

struct redisAsyncContext;
struct redisReply;

namespace ringrelay::core {

// Told the reply to one request. `reply` is hiredis's, valid only during the call (freed by
// hiredis after it); null when the request failed without a reply (connection lost, timeout,
// shutdown), and then `failure` says why. An error reply (REDIS_REPLY_ERROR: NOAUTH, OOM, a
// script error) is a reply: the handler decides.
class redis_handler {
public:
    virtual void redis_reply(std::uint64_t tag, const redisReply* reply, std::string_view failure) noexcept = 0;

protected:
    ~redis_handler() = default;
};

struct redis_client_config {
    int request_timeout_ms = 1000;  // also the connect timeout
    int backoff_min_ms = 100;
    int backoff_max_ms = 5000;
    std::string label = "redis";  // for the log: "redis (shard 2)"
};

enum class redis_state : std::uint8_t { idle, connecting, up, down };
[[nodiscard]] std::string_view to_string(redis_state s) noexcept;

struct redis_stats {
    std::uint64_t commands = 0;        // sent (EVAL after NOSCRIPT counts again)
    std::uint64_t replies = 0;         // replies received (error replies included)
    std::uint64_t failures = 0;        // requests that ended without a reply
    std::uint64_t connects = 0;        // connections made (up)
    std::uint64_t disconnects = 0;     // connections lost or refused
};

// A Lua script run with EVALSHA, and EVAL when Redis answers NOSCRIPT (after a restart, or a
// SCRIPT FLUSH). Fixed after construction; may be shared by every shard (const).
class redis_script {
public:
    explicit redis_script(std::string body);
    [[nodiscard]] const std::string& body() const noexcept { return _body; }
    [[nodiscard]] const std::string& sha1() const noexcept { return _sha1; }  // 40 hex digits, lower case

private:
    std::string _body;
    std::string _sha1;
};

// For a redis:// URL naming a host: its first address (getaddrinfo, blocking: call it at
// start-up, off the shards) written back into `u.host`. Numeric hosts and unix: URLs are
// returned unchanged.
[[nodiscard]] std::expected<redis_url, std::string> resolve_redis_host(redis_url u);

class redis_client {
public:
    // `url.host` must be numeric (resolve_redis_host()).
    redis_client(reactor& r, redis_url url, redis_client_config config);
    redis_client(const redis_client&) = delete;
    redis_client& operator=(const redis_client&) = delete;
    ~redis_client();

    // Connects (non-blocking); later connections are made by tick().
    void start(std::int64_t now_ms);

    // Sends one command (the arguments copied into hiredis's buffer) if the connection is up;
    // false when it is not (nothing is sent, `h` is not called). `h` is called later with `tag`.
    [[nodiscard]] bool command(std::span<const std::string_view> argv, redis_handler* h, std::uint64_t tag);
    // EVALSHA script.sha1 numkeys keys... args...; on a NOSCRIPT error reply the same request is
    // sent again as EVAL with the body, and `h` sees that reply. `script` must outlive the request.
    [[nodiscard]] bool eval(const redis_script& script, std::span<const std::string_view> keys,
                            std::span<const std::string_view> args, redis_handler* h, std::uint64_t tag);
    // Forgets every request of `h`: it will not be called again.
    void cancel(redis_handler* h) noexcept;

    // Reconnects when the back-off has run out, and drops a connection whose oldest request (or
    // whose connect) has waited request_timeout_ms.
    void tick(std::int64_t now_ms);

    // Closes the connection (requests in flight fail) and stops reconnecting.
    void shutdown();
    [[nodiscard]] bool idle() const noexcept { return _context == nullptr && !_read.armed && !_write.armed && _cancels == 0; }

    [[nodiscard]] redis_state state() const noexcept { return _state; }
    // Requests sent and not yet answered (cancelled ones included).
    [[nodiscard]] std::size_t in_flight() const noexcept { return _requests.size(); }
    [[nodiscard]] bool up() const noexcept { return _state == redis_state::up; }
    [[nodiscard]] const redis_stats& stats() const noexcept { return _stats; }
    [[nodiscard]] const redis_url& url() const noexcept { return _url; }
    // The reason of the last failure ("Connection refused", "timeout", ...); empty if none.
    [[nodiscard]] const std::string& last_error() const noexcept { return _last_error; }

private:
    struct request {
        redis_handler* handler = nullptr;  // null: cancelled
        std::uint64_t tag = 0;
        std::int64_t sent_ms = 0;
        const redis_script* script = nullptr;  // EVALSHA: re-sent as EVAL on NOSCRIPT
        std::vector<std::string> args;         // EVALSHA's arguments after the sha (for the EVAL)
    };
    struct watch {
        bool wanted = false;
        bool armed = false;
    };

    static void on_add_read(void* self);
    static void on_del_read(void* self);
    static void on_add_write(void* self);
    static void on_del_write(void* self);
    static void on_cleanup(void* self);
    static void on_connect(const redisAsyncContext* ac, int status);
    static void on_disconnect(const redisAsyncContext* ac, int status);
    static void on_reply(redisAsyncContext* ac, void* reply, void* privdata);

    void connect();
    void arm(watch& w, unsigned poll_mask, completion* op);
    void read_ready(int res, std::uint32_t flags) noexcept;
    void write_ready(int res, std::uint32_t flags) noexcept;
    void cancel_done(int res, std::uint32_t flags) noexcept;
    void set_state(redis_state s, std::string_view reason);
    void lost(std::string_view reason);
    [[nodiscard]] bool send(std::span<const std::string_view> argv, std::uint64_t id);
    void reply(std::uint64_t id, const redisReply* r);

    // Fixed after construction.
    reactor& _reactor;
    const redis_url _url;
    const redis_client_config _config;

    // Shard-local.
    redisAsyncContext* _context = nullptr;
    int _fd = -1;
    watch _read;
    watch _write;
    operation<&redis_client::read_ready> _read_op{*this};
    operation<&redis_client::write_ready> _write_op{*this};
    operation<&redis_client::cancel_done> _cancel_op{*this};
    redis_state _state = redis_state::idle;
    std::map<std::uint64_t, request> _requests;  // by id (the order sent), in flight
    std::uint64_t _next_id = 1;
    std::int64_t _now_ms = 0;
    std::int64_t _connect_started_ms = 0;
    std::int64_t _reconnect_at_ms = 0;
    int _backoff_ms = 0;
    int _cancels = 0;              // POLL_REMOVEs in flight
    bool _started = false;
    bool _stopping = false;
    bool _destroying = false;
    bool _reported_up = false;     // what the log last said
    bool _reported = false;        // whether it said anything yet
    std::uint64_t _select_id = 0;  // the SELECT sent after connecting; 0: none in flight
    std::string _last_error;
    redis_stats _stats;
};

}  // namespace ringrelay::core
