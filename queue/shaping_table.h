// queue/shaping_table.h: the shaping rules a relay runs with (issue 17), shared by every shard:
// the table queue/shaping_rules.h loads, held immutable behind a shared pointer that a reload
// (SIGHUP) replaces whole, and a generation every replacement bumps. A shard reads the
// generation (one atomic load) once a tick and takes the new table only when it changed, so
// the pointer's own synchronisation is met once per reload, never on the delivery path.
//
// Lifecycle: made by the relay with its rules before the shards run; replace() on the relay's
// thread. Threading: current() and generation() from any thread.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <utility>

#include "queue/shaping_rules.h"

namespace ringrelay::queue {

class shaping_table {
public:
    shaping_table() : _rules(std::make_shared<const shaping_rules>()) {}
    explicit shaping_table(shaping_rules rules) : _rules(std::make_shared<const shaping_rules>(std::move(rules))) {}
    shaping_table(const shaping_table&) = delete;
    shaping_table& operator=(const shaping_table&) = delete;

    [[nodiscard]] std::shared_ptr<const shaping_rules> current() const noexcept {
        return _rules.load(std::memory_order_acquire);
    }
    [[nodiscard]] std::uint64_t generation() const noexcept { return _generation.load(std::memory_order_acquire); }
    // A new table; shards take it at their next tick. The old one is freed by its last reader.
    void replace(shaping_rules rules) {
        _rules.store(std::make_shared<const shaping_rules>(std::move(rules)), std::memory_order_release);
        _generation.fetch_add(1, std::memory_order_acq_rel);
    }

private:
    std::atomic<std::shared_ptr<const shaping_rules>> _rules;
    // Read by every shard once a tick, written on a reload: its own cache line.
    alignas(64) std::atomic<std::uint64_t> _generation{0};
};

}  // namespace ringrelay::queue
