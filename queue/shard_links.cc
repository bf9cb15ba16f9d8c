// queue/shard_links.cc: see shard_links.h.
#include "queue/shard_links.h"

#include <functional>
#include <string>

#include "core/invariant.h"

namespace ringrelay::queue {

shard_links::shard_links(unsigned shards)
    : _shards(shards), _boxes(static_cast<std::size_t>(shards) * shards), _incoming(shards) {}

shard_links::~shard_links() = default;

void shard_links::connect(unsigned from, unsigned to, int consumer_ring_fd, cross_consumer& consumer) {
    RR_ASSERT(from != to && from < _shards && to < _shards);
    auto box = std::make_unique<core::mailbox<cross_message>>(4096, consumer_ring_fd, &consumer);
    _incoming[to].push_back(box.get());
    _boxes[static_cast<std::size_t>(from) * _shards + to] = std::move(box);
}

unsigned shard_hop::owner_of(const std::string& route_key) const noexcept {
    return static_cast<unsigned>(std::hash<std::string>{}(route_key) % _links.shards());
}

void shard_hop::send(unsigned shard, cross_message&& msg) noexcept {
    auto& pending = _pending[shard];
    if (pending.empty() && _links.outgoing(_shard, shard)->send(_reactor, msg)) return;
    pending.push_back(std::move(msg));  // the ring is full: try again at the end of the turn
}

void shard_hop::flush() noexcept {
    for (unsigned s = 0; s < _pending.size(); ++s) {
        auto& pending = _pending[s];
        while (!pending.empty() && _links.outgoing(_shard, s)->send(_reactor, pending.front())) pending.pop_front();
    }
}

void shard_hop::drain() noexcept {
    for (core::mailbox<cross_message>* box : _links.incoming(_shard)) box->drain();
}

}  // namespace ringrelay::queue
