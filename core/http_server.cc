// core/http_server.cc: see http_server.h.
#include "core/http_server.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "core/clock.h"
#include "core/invariant.h"

namespace ringrelay::core {

namespace {
constexpr int listen_backlog = 1024;
// Answers queued behind a client that does not read them, beyond which it is not read.
constexpr std::size_t max_pending_output = 1024 * 1024;
// The listener's refusal (over max_http_connections), sent before anything is read.
constexpr std::string_view too_many_connections =
    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 34\r\n"
    "Connection: close\r\n\r\n{\"error\": \"too many connections\"}\n";
// A connection closing after an answer reads and drops at most this much of what the client
// still sends (RFC 9112 §9.6), then closes anyway.
constexpr std::size_t max_linger_bytes = 1024 * 1024;
// The mark on a closing connection's last answer (stream::mark).
constexpr std::uint8_t last_answer_mark = 1;
// Over max_http_connections_per_address, sent before anything is read.
constexpr std::string_view too_many_from_address =
    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 47\r\n"
    "Connection: close\r\n\r\n{\"error\": \"too many connections from address\"}\n";
}  // namespace

http_connection::http_connection(http_server& server, int fd, const sockaddr* peer, http_transport transport)
    : _server(server), _transport(transport), _stream(server._services, *this) {
    const socklen_t length = peer->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
    std::memcpy(&_peer.storage, peer, length);
    _peer.length = length;
    _stream.adopt(fd);
}

http_connection::~http_connection() { abandon_owed(); }

void http_connection::abandon_owed() noexcept {
    for (const auto& owed : _owed) {
        owed->connection = nullptr;
        owed->abandoned = true;
    }
    _owed.clear();
}

void http_connection::start() noexcept {
    _stream.touch_deadline(monotonic_ms());
    if (_transport == http_transport::tls) {
        const tls_context* context = _server._tls != nullptr ? _server._tls->http_tls_context() : nullptr;
        if (context == nullptr || !_stream.start_tls_server(*context, tls_start::now, _server._tls->http_tls_engine())) {
            tls_failed();
            abort();
            return;
        }
    }
    _stream.start_receiving();
}

void http_connection::tls_failed() noexcept {
    if (_tls_told) return;
    _tls_told = true;
    _server._service.tls_handshake(http_tls_outcome::failed);
}

void http_connection::on_stream_tls_ready() noexcept {
    if (_tls_told) return;
    _tls_told = true;
    _server._service.tls_handshake(http_tls_outcome::completed);
}

void http_connection::refuse(std::string_view line) noexcept {
    _stream.out().append(line);
    _stream.want_flush();
    close();
}

void http_connection::close() noexcept {
    if (_closing) return;
    _closing = true;
    abandon_owed();
    // The last answers get one more period to leave; a client that does not read them is
    // then cut off (on_stream_timeout), or the shard's shutdown does it (abort_connections).
    _stream.touch_deadline(monotonic_ms());
    _stream.close();
}

void http_connection::abort() noexcept {
    _closing = true;
    abandon_owed();
    if (!_stream.finished()) _stream.abort();
}

void http_connection::linger() noexcept {
    _lingering = true;
    _stream.mark(last_answer_mark);
    _stream.touch_deadline(monotonic_ms());
    if (_stream.paused()) _stream.resume_receive();
}

void http_connection::on_stream_data(std::string_view data) noexcept {
    if (_closing) return;
    if (_lingering) {
        _discarded += data.size();
        if (_discarded > max_linger_bytes) close();
        return;
    }
    _reader.receive(data);
    serve();
}

void http_connection::serve() noexcept {
    _serving = true;
    while (!_closing && !_lingering && !_read_stopped && _stream.unsent() < max_pending_output && _owed.size() < max_waiting_answers) {
        auto next = _reader.next();
        if (!next) {
            if (_owed.empty()) {
                answer(http_error_response(next.error()), false, false);
            } else {
                // After the answers owed before it (it closes); nothing more is read.
                _owed.push_back(std::make_shared<http_owed>(http_owed{this, http_error_response(next.error()), false, false}));
                _read_stopped = true;
                send_owed();
            }
            break;
        }
        if (!next->has_value()) break;
        (*next)->transport = _transport;
        const http_request& request = **next;
        http_answer reply;
        _server._service.handle(request, _peer.addr(), reply);
        const bool head = request.method == http_method::head;
        if (const bool deferred = reply.deferred(); deferred || !_owed.empty()) {
            // Owed, or behind an answer owed: it leaves in its turn (send_owed).
            std::shared_ptr<http_owed> owed = deferred ? std::move(reply._owed) : std::make_shared<http_owed>();
            owed->connection = this;
            owed->keep_alive = request.keep_alive;
            owed->head = head;
            if (!deferred) owed->response = std::move(reply.response);
            // Nothing after a refused request is read (see below).
            if (owed->response && owed->response->status >= 400) _read_stopped = true;
            _owed.push_back(std::move(owed));
            send_owed();
            continue;
        }
        // An error closes: a stranger's 403 holds no slot, and nothing after a refused
        // request is read (RFC 9112 §9.6 lets a server close after any response).
        const bool keep_alive = request.keep_alive && !_server._stopping && reply.response.status < 400;
        answer(reply.response, keep_alive, head);
        if (!_closing && !_lingering) _stream.touch_deadline(monotonic_ms());
    }
    _serving = false;
    if (_closing || _lingering) return;
    if (_stream.unsent() >= max_pending_output || _owed.size() >= max_waiting_answers) {
        // From now on the deadline measures the answers' progress (on_stream_sent/progress).
        if (!_stream.paused()) _stream.touch_deadline(monotonic_ms());
        _stream.pause_receive();
    } else if (_stream.paused()) {
        _stream.resume_receive();
    }
}

void http_connection::send_owed() noexcept {
    while (!_owed.empty() && _owed.front()->response && !_closing && !_lingering) {
        const std::shared_ptr<http_owed> owed = std::move(_owed.front());
        _owed.pop_front();
        owed->connection = nullptr;
        const bool keep_alive = owed->keep_alive && !_server._stopping && owed->response->status < 400;
        answer(*owed->response, keep_alive, owed->head);
        if (_lingering) {
            abandon_owed();  // that answer closes the connection: none after it is sent
            return;
        }
        _stream.touch_deadline(monotonic_ms());
    }
}

void http_connection::owed_ready() noexcept {
    if (_closing) return;
    send_owed();
    if (!_serving && !_closing && !_lingering) serve();
}

void http_connection::answer(const http_response& response, bool keep_alive, bool head) noexcept {
    append_http_response(_stream.out(), response, keep_alive, head);
    _stream.want_flush();
    if (!keep_alive) linger();
}

void http_connection::on_stream_sent(std::uint8_t marks) noexcept {
    if ((marks & last_answer_mark) != 0 && _lingering && !_closing) {
        // The last answer has left: FIN after it, and go on reading until the client closes
        // (on_stream_end), so that what it sent meanwhile is read, not met by a RST that could
        // destroy the answer in its receive buffer. The stream sends nothing more.
        (void)::shutdown(_stream.fd(), SHUT_WR);
        return;
    }
    if (_closing || _lingering || !_stream.paused()) return;
    _stream.touch_deadline(monotonic_ms());  // answers are leaving: the client reads
    serve();
}

void http_connection::on_stream_progress() noexcept {
    if (!_closing && !_lingering && _stream.paused()) _stream.touch_deadline(monotonic_ms());
}

void http_connection::on_stream_timeout() noexcept {
    if (_transport == http_transport::tls && !_tls_told && !_closing) {
        // No handshake within --http-timeout: nothing can be answered (no 408 in plaintext).
        tls_failed();
        abort();
        return;
    }
    if (!_owed.empty() && !_closing && _stream.unsent() < max_pending_output) {
        // An answer is owed: the service bounds that wait (and the shutdown cuts it off).
        _stream.touch_deadline(monotonic_ms());
        return;
    }
    if (_lingering && !_closing) {
        close();  // the client had a whole period to take its last answer
        return;
    }
    if (_closing || _stream.paused()) {
        // Answers have not left for a whole period: the client does not read them.
        abort();
        return;
    }
    if (_reader.partial()) {
        answer(http_json_error(408, "request not received in time (--http-timeout)"), false, false);
    } else {
        close();
    }
}

void http_connection::on_stream_end(stream_end why, std::string_view) noexcept {
    if (why == stream_end::tls_failed || why == stream_end::tls_record) {
        // As SMTP counts them: a failed handshake, or a bad record after it. Nothing more can be
        // sent but OpenSSL's alert.
        _tls_told = false;
        tls_failed();
        _stream.out().clear();
    }
    // Output still queued may leave (the peer only shut its side) or not: close() bounds it.
    close();
}

void http_connection::on_stream_finished() noexcept { _server.retire(*this); }

http_server::http_server(const stream_services& services, http_service& service, std::string name,
                         http_tls_source* tls)
    : _services(services),
      _service(service),
      _name(std::move(name)),
      _tls(tls),
      _limits(&_open, max_http_connections, _addresses, 0, too_many_connections, too_many_connections) {}

http_server::~http_server() {
    for (http_connection* c : _connections) delete c;
}

std::string http_server::listen(const endpoint& at, http_transport transport) {
    if (transport == http_transport::tls && _tls == nullptr)
        return "cannot listen for HTTPS on " + to_string(at) + ": no certificate";
    auto l = std::make_unique<listener>(_services.ring, *this, _limits, _name);
    if (auto ok = l->open(at, listen_backlog); !ok)
        return std::string(transport == http_transport::tls ? "cannot listen for HTTPS on " : "cannot listen for HTTP on ") +
               to_string(at) + ": " + ok.error().message();
    _listeners.push_back(std::move(l));
    _transports.push_back(transport);
    return {};
}

std::vector<endpoint> http_server::bound() const {
    std::vector<endpoint> out;
    for (const auto& l : _listeners)
        if (auto e = l->bound()) out.push_back(*e);
    return out;
}

void http_server::start() noexcept {
    for (auto& l : _listeners) l->start();
}

void http_server::stop() noexcept {
    _stopping = true;
    for (auto& l : _listeners) l->stop();
    for (http_connection* c : _connections) c->close();
}

void http_server::abort_connections() noexcept {
    for (http_connection* c : _connections) c->abort();
}

void http_server::tick() noexcept {
    for (auto& l : _listeners) l->tick();
}

bool http_server::adopt(int fd, const sockaddr* peer, http_transport transport) noexcept {
    auto admitted = _limits.admit(peer);
    if (!admitted) {
        ::close(fd);
        return false;
    }
    add(fd, peer, *admitted, transport);
    return true;
}

void http_server::on_accepted(listener& from, int fd, const sockaddr* peer, std::size_t address_slot) noexcept {
    http_transport transport = http_transport::plain;
    for (std::size_t i = 0; i < _listeners.size(); ++i)
        if (_listeners[i].get() == &from) transport = _transports[i];
    add(fd, peer, address_slot, transport);
}

void http_server::add(int fd, const sockaddr* peer, std::size_t address_slot, http_transport transport) noexcept {
    auto* c = new http_connection(*this, fd, peer, transport);
    c->address_slot = address_slot;
    c->server_slot = _connections.size();
    _connections.push_back(c);
    bool over = false;
    if (_service.capped(peer)) {
        const std::size_t slot = _capped.slot_of(peer);
        if (_capped.acquire(slot, max_http_connections_per_address)) {
            c->capped_slot = slot;
        } else {
            over = true;
        }
    }
    if (over) {
        // A TLS client could not read a plaintext 503: it is just closed.
        if (transport == http_transport::tls) {
            c->abort();
        } else {
            c->refuse(too_many_from_address);
        }
        return;
    }
    c->start();
    if (_stopping) c->close();
}

void http_server::on_refused(listener&, const sockaddr*, refusal) noexcept {}

void http_server::end_turn() noexcept {
    if (_graveyard.empty()) return;
    std::sort(_graveyard.begin(), _graveyard.end());
    _graveyard.erase(std::unique(_graveyard.begin(), _graveyard.end()), _graveyard.end());
    for (http_connection* c : _graveyard) {
        const std::size_t slot = c->server_slot;
        RR_ASSERT(slot < _connections.size() && _connections[slot] == c);
        _connections[slot] = _connections.back();
        _connections[slot]->server_slot = slot;
        _connections.pop_back();
        _limits.release(c->address_slot);
        if (c->capped_slot) _capped.release(*c->capped_slot);
        delete c;
    }
    _graveyard.clear();
}

bool http_server::drained() const noexcept {
    return _connections.empty() &&
           std::all_of(_listeners.begin(), _listeners.end(), [](const auto& l) { return l->closed(); });
}

}  // namespace ringrelay::core
