// core/redis_client.cc: see redis_client.h. hiredis 0.14's async context calls us back:
//   ev.addRead/addWrite    want a direction: a one-shot POLL_ADD, re-armed while wanted
//   ev.delRead/delWrite    stop wanting it (an armed poll's completion is then ignored)
//   ev.cleanup             the context is being freed: armed polls are removed (POLL_REMOVE; a
//                          poll holds its own reference to the file, so close() would not end it)
//   onConnect(ERR)         the connect failed; hiredis frees the context next (cleanup)
//   onDisconnect           a connected context was freed
//   reply callbacks        with the reply, or null when the context is freed with them pending
#include "core/redis_client.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>

#include <openssl/sha.h>

#include <cstdio>
#include <cstring>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "core/log.h"

namespace ringrelay::core {

std::string_view to_string(redis_state s) noexcept {
    switch (s) {
    case redis_state::idle: return "idle";
    case redis_state::connecting: return "connecting";
    case redis_state::up: return "up";
    case redis_state::down: return "down";
    }
    return "?";
}

redis_script::redis_script(std::string body) : _body(std::move(body)) {
    unsigned char digest[SHA_DIGEST_LENGTH];
    SHA1(reinterpret_cast<const unsigned char*>(_body.data()), _body.size(), digest);
    static constexpr char hex[] = "0123456789abcdef";
    for (unsigned char b : digest) {
        _sha1 += hex[b >> 4];
        _sha1 += hex[b & 15];
    }
}

std::expected<redis_url, std::string> resolve_redis_host(redis_url u) {
    if (u.transport != redis_url::kind::tcp) return u;
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST;
    addrinfo* res = nullptr;
    if (getaddrinfo(u.host.c_str(), nullptr, &hints, &res) == 0) {
        freeaddrinfo(res);
        return u;
    }
    hints.ai_flags = AI_ADDRCONFIG;
    if (const int rc = getaddrinfo(u.host.c_str(), nullptr, &hints, &res); rc != 0 || res == nullptr)
        return std::unexpected("cannot resolve " + u.host + ": " + gai_strerror(rc));
    char text[INET6_ADDRSTRLEN] = {};
    const void* addr = res->ai_family == AF_INET6
                           ? static_cast<const void*>(&reinterpret_cast<const sockaddr_in6*>(res->ai_addr)->sin6_addr)
                           : static_cast<const void*>(&reinterpret_cast<const sockaddr_in*>(res->ai_addr)->sin_addr);
    inet_ntop(res->ai_family, addr, text, sizeof text);
    freeaddrinfo(res);
    u.host = text;
    return u;
}

redis_client::redis_client(reactor& r, redis_url url, redis_client_config config)
    : _reactor(r), _url(std::move(url)), _config(std::move(config)) {}

redis_client::~redis_client() {
    _destroying = true;
    _stopping = true;
    if (_context != nullptr) redisAsyncFree(_context);
}

void redis_client::start(std::int64_t now_ms) {
    _now_ms = now_ms;
    _started = true;
    connect();
}

void redis_client::connect() {
    _backoff_ms = _backoff_ms == 0 ? _config.backoff_min_ms : std::min(_backoff_ms * 2, _config.backoff_max_ms);
    _reconnect_at_ms = _now_ms + _backoff_ms;  // if this one fails
    redisAsyncContext* ac = _url.transport == redis_url::kind::unix_socket
                                ? redisAsyncConnectUnix(_url.path.c_str())
                                : redisAsyncConnect(_url.host.c_str(), _url.port);
    if (ac == nullptr || ac->err != 0) {
        _last_error = ac == nullptr ? std::string("out of memory") : std::string(ac->errstr);
        if (ac != nullptr) redisAsyncFree(ac);  // no hooks attached yet
        ++_stats.disconnects;
        set_state(redis_state::down, _last_error);
        return;
    }
    _context = ac;
    _fd = ac->c.fd;
    ac->data = this;
    ac->ev.data = this;
    ac->ev.addRead = &redis_client::on_add_read;
    ac->ev.delRead = &redis_client::on_del_read;
    ac->ev.addWrite = &redis_client::on_add_write;
    ac->ev.delWrite = &redis_client::on_del_write;
    ac->ev.cleanup = &redis_client::on_cleanup;
    redisAsyncSetConnectCallback(ac, &redis_client::on_connect);
    redisAsyncSetDisconnectCallback(ac, &redis_client::on_disconnect);
    _connect_started_ms = _now_ms;
    _state = redis_state::connecting;
    if (_url.transport == redis_url::kind::tcp && _url.db != 0) {
        const std::string db = std::to_string(_url.db);
        const std::string_view argv[] = {"SELECT", db};
        _select_id = _next_id++;
        _requests[_select_id] = request{.sent_ms = _now_ms, .args = {}};
        if (!send(argv, _select_id)) _requests.erase(_select_id);
    }
    on_add_write(this);  // the connect's end is a write readiness
}

void redis_client::on_add_read(void* self) {
    auto* c = static_cast<redis_client*>(self);
    c->_read.wanted = true;
    c->arm(c->_read, POLLIN, &c->_read_op);
}

void redis_client::on_del_read(void* self) { static_cast<redis_client*>(self)->_read.wanted = false; }

void redis_client::on_add_write(void* self) {
    auto* c = static_cast<redis_client*>(self);
    c->_write.wanted = true;
    c->arm(c->_write, POLLOUT, &c->_write_op);
}

void redis_client::on_del_write(void* self) { static_cast<redis_client*>(self)->_write.wanted = false; }

void redis_client::arm(watch& w, unsigned poll_mask, completion* op) {
    if (w.armed || _context == nullptr || _destroying) return;
    io_uring_sqe* sqe = _reactor.sqe(op);
    io_uring_prep_poll_add(sqe, _fd, poll_mask);
    w.armed = true;
}

void redis_client::on_cleanup(void* self) {
    auto* c = static_cast<redis_client*>(self);
    c->_context = nullptr;
    c->_read.wanted = false;
    c->_write.wanted = false;
    if (!c->_destroying) {
        for (auto [w, op] : {std::pair<watch*, completion*>{&c->_read, &c->_read_op}, {&c->_write, &c->_write_op}}) {
            if (!w->armed) continue;
            io_uring_sqe* sqe = c->_reactor.sqe(&c->_cancel_op);
            io_uring_prep_poll_remove(sqe, reinterpret_cast<std::uint64_t>(op));
            ++c->_cancels;
        }
    }
    c->_fd = -1;
    c->_select_id = 0;
    ++c->_stats.disconnects;
    if (c->_stopping) {
        c->_state = redis_state::idle;
        return;
    }
    if (c->_last_error.empty()) c->_last_error = "connection closed";
    c->set_state(redis_state::down, c->_last_error);
}

void redis_client::on_connect(const redisAsyncContext* ac, int status) {
    auto* c = static_cast<redis_client*>(ac->data);
    if (status != REDIS_OK) {
        c->_last_error = ac->errstr;
        return;  // hiredis frees the context next: on_cleanup
    }
    ++c->_stats.connects;
    if (c->_select_id == 0) {
        c->_backoff_ms = 0;
        c->_last_error.clear();
        c->set_state(redis_state::up, "");
    }
    // else up once SELECT is answered (reply())
}

void redis_client::on_disconnect(const redisAsyncContext* ac, int status) {
    auto* c = static_cast<redis_client*>(ac->data);
    if (status != REDIS_OK && ac->errstr[0] != '\0') c->_last_error = ac->errstr;
}

void redis_client::read_ready(int res, std::uint32_t) noexcept {
    _read.armed = false;
    if (res == -ECANCELED || _context == nullptr || !_read.wanted) return;
    redisAsyncHandleRead(_context);
    if (_context != nullptr && _read.wanted) arm(_read, POLLIN, &_read_op);
}

void redis_client::write_ready(int res, std::uint32_t) noexcept {
    _write.armed = false;
    if (res == -ECANCELED || _context == nullptr || !_write.wanted) return;
    redisAsyncHandleWrite(_context);
    if (_context != nullptr && _write.wanted) arm(_write, POLLOUT, &_write_op);
}

void redis_client::cancel_done(int, std::uint32_t) noexcept { --_cancels; }

void redis_client::set_state(redis_state s, std::string_view reason) {
    _state = s;
    const bool up = s == redis_state::up;
    if (s != redis_state::up && s != redis_state::down) return;
    if (_reported && _reported_up == up) return;
    _reported = true;
    _reported_up = up;
    if (up) {
        diag(_config.label + ": up (" + to_string(_url) + "): shared counting");
    } else {
        diag(_config.label + ": down (" + to_string(_url) + ": " + std::string(reason) +
             "): each node keeps its fallback share; reconnecting");
    }
}

bool redis_client::send(std::span<const std::string_view> argv, std::uint64_t id) {
    if (_context == nullptr) return false;
    std::vector<const char*> ptrs;
    std::vector<std::size_t> lens;
    ptrs.reserve(argv.size());
    lens.reserve(argv.size());
    for (std::string_view a : argv) {
        ptrs.push_back(a.data());
        lens.push_back(a.size());
    }
    const int rc = redisAsyncCommandArgv(_context, &redis_client::on_reply, reinterpret_cast<void*>(id),
                                         static_cast<int>(argv.size()), ptrs.data(), lens.data());
    if (rc != REDIS_OK) return false;
    ++_stats.commands;
    return true;
}

bool redis_client::command(std::span<const std::string_view> argv, redis_handler* h, std::uint64_t tag) {
    if (_state != redis_state::up) return false;
    const std::uint64_t id = _next_id++;
    _requests[id] = request{.handler = h, .tag = tag, .sent_ms = _now_ms, .args = {}};
    if (!send(argv, id)) {
        _requests.erase(id);
        return false;
    }
    return true;
}

bool redis_client::eval(const redis_script& script, std::span<const std::string_view> keys,
                        std::span<const std::string_view> args, redis_handler* h, std::uint64_t tag) {
    if (_state != redis_state::up) return false;
    request r{.handler = h, .tag = tag, .sent_ms = _now_ms, .script = &script, .args = {}};
    r.args.reserve(1 + keys.size() + args.size());
    r.args.push_back(std::to_string(keys.size()));
    for (std::string_view k : keys) r.args.emplace_back(k);
    for (std::string_view a : args) r.args.emplace_back(a);
    std::vector<std::string_view> argv{"EVALSHA", script.sha1()};
    for (const std::string& a : r.args) argv.push_back(a);
    const std::uint64_t id = _next_id++;
    auto& stored = _requests[id] = std::move(r);
    (void)stored;
    if (!send(argv, id)) {
        _requests.erase(id);
        return false;
    }
    return true;
}

void redis_client::cancel(redis_handler* h) noexcept {
    for (auto& [id, r] : _requests)
        if (r.handler == h) r.handler = nullptr;
}

void redis_client::on_reply(redisAsyncContext* ac, void* reply, void* privdata) {
    auto* c = static_cast<redis_client*>(ac->data);
    if (reply == nullptr && ac->err != 0 && c->_last_error.empty()) c->_last_error = ac->errstr;
    c->reply(reinterpret_cast<std::uint64_t>(privdata), static_cast<const redisReply*>(reply));
}

void redis_client::reply(std::uint64_t id, const redisReply* r) {
    const auto it = _requests.find(id);
    if (it == _requests.end()) return;
    request req = std::move(it->second);
    _requests.erase(it);
    if (r != nullptr) {
        ++_stats.replies;
    } else {
        ++_stats.failures;
    }
    if (id == _select_id) {
        _select_id = 0;
        if (r == nullptr) return;  // the connection is going: on_cleanup
        if (r->type == REDIS_REPLY_ERROR) {
            _last_error = "SELECT " + std::to_string(_url.db) + ": " + std::string(r->str, r->len);
            redisAsyncDisconnect(_context);  // freed after this callback: on_cleanup
            return;
        }
        _backoff_ms = 0;
        _last_error.clear();
        set_state(redis_state::up, "");
        return;
    }
    if (r != nullptr && req.script != nullptr && r->type == REDIS_REPLY_ERROR &&
        std::string_view(r->str, r->len).starts_with("NOSCRIPT") && _context != nullptr) {
        std::vector<std::string_view> argv{"EVAL", req.script->body()};
        for (const std::string& a : req.args) argv.push_back(a);
        const std::uint64_t again = _next_id++;
        req.script = nullptr;
        req.sent_ms = _now_ms;
        auto& stored = _requests[again] = std::move(req);
        if (send(argv, again)) return;
        req = std::move(stored);
        _requests.erase(again);
        r = nullptr;
        ++_stats.failures;
    }
    if (req.handler == nullptr) return;
    if (r == nullptr) {
        req.handler->redis_reply(req.tag, nullptr, _last_error.empty() ? "connection lost" : _last_error);
    } else {
        req.handler->redis_reply(req.tag, r, {});
    }
}

void redis_client::lost(std::string_view reason) {
    if (_context == nullptr) return;
    _last_error = std::string(reason);
    redisAsyncFree(_context);  // pending requests fail, then on_cleanup
}

void redis_client::tick(std::int64_t now_ms) {
    _now_ms = now_ms;
    if (_stopping || !_started) return;
    if (_context == nullptr) {
        if (now_ms >= _reconnect_at_ms && !_read.armed && !_write.armed && _cancels == 0) connect();
        return;
    }
    if (_state == redis_state::connecting && now_ms - _connect_started_ms >= _config.request_timeout_ms) {
        lost("no connection within " + std::to_string(_config.request_timeout_ms) + " ms");
    } else if (!_requests.empty() && now_ms - _requests.begin()->second.sent_ms >= _config.request_timeout_ms) {
        lost("no reply within " + std::to_string(_config.request_timeout_ms) + " ms");
    }
}

void redis_client::shutdown() {
    _stopping = true;
    if (_context != nullptr) {
        _last_error = "shutting down";
        redisAsyncFree(_context);
    }
    _state = redis_state::idle;
}

}  // namespace ringrelay::core
