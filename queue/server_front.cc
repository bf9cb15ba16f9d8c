// queue/server_front.cc: see server_front.h.
#include "queue/server_front.h"

#include <algorithm>
#include <utility>

#include "core/clock.h"
#include "core/invariant.h"

namespace ringrelay::queue {

namespace {
constexpr int listen_backlog = 4096;
}  // namespace

server_front::server_front(core::reactor& ring, front_owner& owner, const core::connection_limits& limits,
                           std::string name, front_proxies proxies)
    : _ring(ring),
      _owner(owner),
      _limits(limits),
      _name(std::move(name)),
      _proxies(std::move(proxies)),
      _header_deadlines(_proxies.header_timeout_ms) {}

server_front::~server_front() {
    for (server_connection* c : _connections) destroy(c);
    // Stages still reading (a shard torn down without draining) give their count back.
    for (proxy_stage* s : _stages) {
        if (s->outcome() == proxy_outcome::reading) _limits.release_total();
        delete s;
    }
    for (proxy_stage* s : _ended_stages) delete s;
}

std::string server_front::listen(const core::endpoint& at, listener_kind kind) {
    auto l = std::make_unique<core::listener>(_ring, *this, _limits, _name, static_cast<std::uint8_t>(kind));
    l->set_balancers(_proxies.balancers);
    if (auto ok = l->open(at, listen_backlog); !ok)
        return "cannot listen on " + core::to_string(at) + ": " + ok.error().message();
    _listeners.push_back(std::move(l));
    return {};
}

std::vector<core::endpoint> server_front::bound() const {
    std::vector<core::endpoint> out;
    for (const auto& l : _listeners)
        if (auto e = l->bound()) out.push_back(*e);
    return out;
}

void server_front::start() noexcept {
    for (auto& l : _listeners) l->start();
}

void server_front::stop() noexcept {
    for (auto& l : _listeners) l->stop();
}

void server_front::stop_connections(bool force) noexcept {
    // on_stop may retire connections, which edits _connections only at the turn's end.
    for (server_connection* c : _connections) c->on_stop(force);
    // A header still being read: no session yet, nothing to say; closed.
    for (proxy_stage* s : _stages) s->stop();
}

void server_front::tick() noexcept {
    for (auto& l : _listeners) l->tick();
    _header_deadlines.expire(core::monotonic_ms());
}

void server_front::on_accepted(core::listener& from, int fd, const sockaddr* peer, std::size_t address_slot) noexcept {
    add(_owner.make_connection(fd, inbound_peer{.client = peer}, static_cast<listener_kind>(from.tag())),
        address_slot);
}

void server_front::add(server_connection* c, std::size_t address_slot) noexcept {
    c->address_slot = address_slot;
    c->shard_slot = _connections.size();
    _connections.push_back(c);
    c->start();
}

void server_front::on_balancer_accepted(core::listener& from, int fd, const sockaddr* balancer) noexcept {
    auto* stage = new proxy_stage(_ring, *this, _header_deadlines, fd, balancer, from.tag());
    stage->front_slot = _stages.size();
    _stages.push_back(stage);
    stage->start();
}

void server_front::on_proxy_stage_end(proxy_stage& stage) noexcept {
    // Out of the list of stages reading; destroyed at the turn's end (this runs inside its
    // completion).
    const std::size_t slot = stage.front_slot;
    RR_ASSERT(slot < _stages.size() && _stages[slot] == &stage);
    _stages[slot] = _stages.back();
    _stages[slot]->front_slot = slot;
    _stages.pop_back();
    _ended_stages.push_back(&stage);
    switch (stage.outcome()) {
    case proxy_outcome::header:
        admit_proxied(stage);
        return;
    case proxy_outcome::malformed:
        _owner.on_proxy_failed(stage.balancer(), stage.outcome(), "malformed PROXY header: " + stage.error());
        break;
    case proxy_outcome::closed:
        // A balancer's TCP health check without the header opens and closes: not worth a word.
        if (stage.bytes_read() != 0)
            _owner.on_proxy_failed(stage.balancer(), stage.outcome(),
                                   "closed after " + std::to_string(stage.bytes_read()) +
                                       " byte(s), before the PROXY header was whole");
        break;
    case proxy_outcome::timed_out:
        _owner.on_proxy_failed(stage.balancer(), stage.outcome(),
                               "no whole PROXY header within " + std::to_string(_proxies.header_timeout_ms / 1000) +
                                   " s (--proxy-protocol-timeout; " + std::to_string(stage.bytes_read()) +
                                   " byte(s) read)");
        break;
    case proxy_outcome::stopped:
    case proxy_outcome::reading:
        break;
    }
    _limits.release_total();  // the stage closes the socket when destroyed
}

void server_front::admit_proxied(proxy_stage& stage) noexcept {
    const protocol::proxy_header& h = stage.header();
    // No client in the header (LOCAL, UNKNOWN, AF_UNSPEC/AF_UNIX): the balancer's own connection.
    const bool has_client = h.has_addresses && !h.local;
    const sockaddr* client = has_client ? h.source.addr() : stage.balancer();
    const int fd = stage.take_fd();
    auto admitted = _limits.admit_address(client);
    if (!admitted) {
        _limits.release_total();
        core::send_refusal(fd, _limits.refusal_text(admitted.error()));
        _owner.on_refused(client, admitted.error(), _limits.refusal_text(admitted.error()));
        return;
    }
    server_connection* c = _owner.make_connection(
        fd, inbound_peer{.client = client, .proxy = has_client ? stage.balancer() : nullptr},
        static_cast<listener_kind>(stage.tag()));
    add(c, *admitted);
}

void server_front::on_refused(core::listener&, const sockaddr* peer, core::refusal why) noexcept {
    _owner.on_refused(peer, why, _limits.refusal_text(why));
}

void server_front::end_turn() noexcept {
    for (proxy_stage* s : _ended_stages) delete s;
    _ended_stages.clear();
    if (_graveyard.empty()) return;
    std::sort(_graveyard.begin(), _graveyard.end());
    _graveyard.erase(std::unique(_graveyard.begin(), _graveyard.end()), _graveyard.end());
    for (server_connection* c : _graveyard) {
        const std::size_t slot = c->shard_slot;
        RR_ASSERT(slot < _connections.size() && _connections[slot] == c);
        _connections[slot] = _connections.back();
        _connections[slot]->shard_slot = slot;
        _connections.pop_back();
        destroy(c);
    }
    _graveyard.clear();
}

void server_front::destroy(server_connection* c) noexcept {
    _limits.release(c->address_slot);
    delete c;
    _owner.on_connection_gone();
}

bool server_front::drained() const noexcept {
    return _connections.empty() && _stages.empty() && _ended_stages.empty() &&
           std::all_of(_listeners.begin(), _listeners.end(), [](const auto& l) { return l->closed(); });
}

}  // namespace ringrelay::queue
