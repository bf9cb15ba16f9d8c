// queue/server_front.cc: see server_front.h.
#include "queue/server_front.h"

#include <algorithm>
#include <utility>

#include "core/invariant.h"

namespace ringrelay::queue {

namespace {
constexpr int listen_backlog = 4096;
}  // namespace

server_front::server_front(core::reactor& ring, front_owner& owner, const core::connection_limits& limits,
                           std::string name)
    : _ring(ring), _owner(owner), _limits(limits), _name(std::move(name)) {}

server_front::~server_front() {
    for (server_connection* c : _connections) destroy(c);
}

std::string server_front::listen(const core::endpoint& at, listener_kind kind) {
    auto l = std::make_unique<core::listener>(_ring, *this, _limits, _name, static_cast<std::uint8_t>(kind));
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
}

void server_front::tick() noexcept {
    for (auto& l : _listeners) l->tick();
}

void server_front::on_accepted(core::listener& from, int fd, const sockaddr* peer, std::size_t address_slot) noexcept {
    server_connection* c = _owner.make_connection(fd, peer, static_cast<listener_kind>(from.tag()));
    c->address_slot = address_slot;
    c->shard_slot = _connections.size();
    _connections.push_back(c);
    c->start();
}

void server_front::on_refused(core::listener&, const sockaddr* peer, core::refusal why) noexcept {
    _owner.on_refused(peer, why, _limits.refusal_text(why));
}

void server_front::end_turn() noexcept {
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
    return _connections.empty() &&
           std::all_of(_listeners.begin(), _listeners.end(), [](const auto& l) { return l->closed(); });
}

}  // namespace ringrelay::queue
