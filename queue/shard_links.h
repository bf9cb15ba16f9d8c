// queue/shard_links.h: the owner hop between shards' deliveries (docs/ARCHITECTURE.md "The
// path of one message", step 7): a job goes to the shard that owns its destination,
// hash(route key) % shards, and its outcome comes back to the message's shard, each through a
// core::mailbox<cross_message> (SPSC ring + MSG_RING wake-up), one per ordered pair of shards.
//
// shard_links is the table of those mailboxes. The relay makes it before the shards (each
// delivery is given it in its constructor) and fills it once every shard's reactor exists;
// that happens before the relay lets the shards run (the go signal orders the writes before
// every read), and the table does not change afterwards.
//
// shard_hop is one shard's side of it: sends (a value that finds the target's ring full waits
// here and is sent again at the end of the turn), and drains the incoming mailboxes on every
// tick as well, so a MSG_RING wake-up that failed (the target's CQ overflowed) delays a value
// by a second instead of losing it.
//
// Threading: shard_links: written by the relay's thread before the shards run, read-only
// after. shard_hop: shard-local.
#pragma once
#include <atomic>
#include <deque>
#include <memory>
#include <vector>

#include "core/mailbox.h"
#include "core/reactor.h"
#include "queue/delivery_job.h"

namespace ringrelay::queue {

// Takes what arrives in a shard's incoming mailboxes (the shard's delivery), on that shard.
class cross_consumer {
public:
    virtual void handle(cross_message&& msg) noexcept = 0;

protected:
    ~cross_consumer() = default;
};

class shard_links {
public:
    explicit shard_links(unsigned shards);
    shard_links(const shard_links&) = delete;
    shard_links& operator=(const shard_links&) = delete;
    ~shard_links();

    // The mailbox from shard `from` to shard `to` (from != to), consumed by `consumer` on the
    // shard whose io_uring is consumer_ring_fd. Relay only, before the shards run.
    void connect(unsigned from, unsigned to, int consumer_ring_fd, cross_consumer& consumer);

    [[nodiscard]] unsigned shards() const noexcept { return _shards; }
    // Null for from == to, and before connect().
    [[nodiscard]] core::mailbox<cross_message>* outgoing(unsigned from, unsigned to) const noexcept {
        return _boxes[static_cast<std::size_t>(from) * _shards + to].get();
    }
    // The mailboxes shard `to` consumes.
    [[nodiscard]] const std::vector<core::mailbox<cross_message>*>& incoming(unsigned to) const noexcept {
        return _incoming[to];
    }

    // Shutdown (queue/shard.cc, shard::may_exit): how many shards are settled: stopping, with
    // nothing of their own in flight, nothing waiting to cross and nothing unread in their
    // incoming mailboxes. A shard leaves its loop only once all of them are, so that no job's
    // outcome is sent to a shard that has already gone (a message delivered by another shard's
    // connection would then never be journaled as delivered, and go again after a restart).
    // Any shard thread.
    void settle(bool settled) const noexcept {
        if (settled) {
            _settled.fetch_add(1, std::memory_order_seq_cst);
        } else {
            _settled.fetch_sub(1, std::memory_order_seq_cst);
        }
    }
    [[nodiscard]] unsigned settled() const noexcept { return _settled.load(std::memory_order_seq_cst); }

private:
    const unsigned _shards;
    mutable std::atomic<unsigned> _settled{0};  // see settle()
    std::vector<std::unique_ptr<core::mailbox<cross_message>>> _boxes;  // [from * shards + to]
    std::vector<std::vector<core::mailbox<cross_message>*>> _incoming;  // [to]
};

class shard_hop {
public:
    shard_hop(core::reactor& r, const shard_links& links, unsigned shard)
        : _reactor(r), _links(links), _shard(shard), _pending(links.shards()) {}

    // The shard that owns the destination `route_key` (hash % shards).
    [[nodiscard]] unsigned owner_of(const std::string& route_key) const noexcept;
    // True if values for `shard` cannot cross (it is this shard, or no mailbox leads there):
    // the caller handles them here.
    [[nodiscard]] bool local(unsigned shard) const noexcept {
        return shard == _shard || _links.outgoing(_shard, shard) == nullptr;
    }
    void send(unsigned shard, cross_message&& msg) noexcept;
    // End of the turn: values that found a ring full, again.
    void flush() noexcept;
    // The tick: everything in the incoming mailboxes, to their consumer.
    void drain() noexcept;
    // Nothing waits here for room in a ring.
    [[nodiscard]] bool idle() const noexcept {
        for (const auto& p : _pending)
            if (!p.empty()) return false;
        return true;
    }

private:
    core::reactor& _reactor;
    const shard_links& _links;
    const unsigned _shard;
    std::vector<std::deque<cross_message>> _pending;  // per target: its ring was full
};

}  // namespace ringrelay::queue
