// queue/suppression_table.cc: see suppression_table.h.
//
// Why the reclamation is safe (quiescent-state-based, as RCU): a writer publishes the new
// array (seq_cst store), then reads each reader's turn count (seq_cst loads) as `seen`; a
// reader loads the array pointer (seq_cst) during a turn and bumps its count (seq_cst store)
// after the turn. The old array is freed once every count is past its `seen`. A reader turn
// that could still hold the old array loaded the pointer before the writer's store; if that
// turn's bump came after the writer read the count, the count moves past `seen` only when the
// turn ends; if the bump came before, the reader's later pointer load comes after the bump,
// which the writer saw, so (all four operations being seq_cst: the store-buffering case) it
// sees the new array. Either way no turn that holds the old array outlives it.
#include "queue/suppression_table.h"

#include <sys/random.h>

#include <bit>
#include <chrono>

#include "core/invariant.h"

namespace ringrelay::queue {

namespace {

constexpr std::size_t min_slots = 1024;

// SipHash-2-4 (Aumasson and Bernstein, 2012) over a stream of bytes.
class siphash {
public:
    siphash(std::uint64_t k0, std::uint64_t k1) noexcept
        : _v0(k0 ^ 0x736f6d6570736575ULL),
          _v1(k1 ^ 0x646f72616e646f6dULL),
          _v2(k0 ^ 0x6c7967656e657261ULL),
          _v3(k1 ^ 0x7465646279746573ULL) {}

    void byte(std::uint8_t b) noexcept {
        _block |= static_cast<std::uint64_t>(b) << (8 * _filled);
        ++_total;
        if (++_filled == 8) {
            compress(_block);
            _block = 0;
            _filled = 0;
        }
    }
    // ASCII letters lower-cased: tenants and addresses compare without case.
    void text(std::string_view s) noexcept {
        for (const char ch : s) {
            auto b = static_cast<std::uint8_t>(ch);
            if (b >= 'A' && b <= 'Z') b = static_cast<std::uint8_t>(b + ('a' - 'A'));
            byte(b);
        }
    }
    void length(std::size_t n) noexcept {
        for (int i = 0; i < 8; ++i) byte(static_cast<std::uint8_t>(static_cast<std::uint64_t>(n) >> (8 * i)));
    }
    [[nodiscard]] std::uint64_t finish() noexcept {
        compress(_block | (static_cast<std::uint64_t>(_total & 0xFF) << 56));
        _v2 ^= 0xFF;
        for (int i = 0; i < 4; ++i) round();
        return _v0 ^ _v1 ^ _v2 ^ _v3;
    }

private:
    void round() noexcept {
        _v0 += _v1;
        _v1 = std::rotl(_v1, 13);
        _v1 ^= _v0;
        _v0 = std::rotl(_v0, 32);
        _v2 += _v3;
        _v3 = std::rotl(_v3, 16);
        _v3 ^= _v2;
        _v0 += _v3;
        _v3 = std::rotl(_v3, 21);
        _v3 ^= _v0;
        _v2 += _v1;
        _v1 = std::rotl(_v1, 17);
        _v1 ^= _v2;
        _v2 = std::rotl(_v2, 32);
    }
    void compress(std::uint64_t m) noexcept {
        _v3 ^= m;
        round();
        round();
        _v0 ^= m;
    }

    std::uint64_t _v0, _v1, _v2, _v3;
    std::uint64_t _block = 0;
    unsigned _filled = 0;
    std::uint64_t _total = 0;
};

}  // namespace

suppression_table::slots::slots(std::size_t n)
    : mask(n - 1),
      keys(std::make_unique<std::atomic<std::uint64_t>[]>(n)),
      times(std::make_unique<std::atomic<std::uint32_t>[]>(n)) {
    RR_ASSERT(std::has_single_bit(n));
}

suppression_table::suppression_table(unsigned readers, std::uint32_t ttl_s)
    : _ttl_s(ttl_s), _reader_count(readers), _readers(std::make_unique<reader_state[]>(readers == 0 ? 1 : readers)) {
    // The key must be unknown to clients (they choose addresses); getrandom(2) fails only
    // before the kernel's pool is ready, when the clock is as unknown to them.
    std::uint64_t key[2] = {0, 0};
    if (::getrandom(key, sizeof key, 0) != static_cast<ssize_t>(sizeof key)) {
        const auto now = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
        key[0] = now * 0x9e3779b97f4a7c15ULL;
        key[1] = reinterpret_cast<std::uintptr_t>(this) ^ now;
    }
    _k0 = key[0];
    _k1 = key[1];
    _owned = std::make_unique<slots>(min_slots);
    _current.store(_owned.get(), std::memory_order_seq_cst);
}

suppression_table::~suppression_table() = default;

std::uint64_t suppression_table::hash(std::string_view tenant, std::string_view address) const noexcept {
    siphash h(_k0, _k1);
    h.length(tenant.size());  // the boundary between the two is unambiguous
    h.text(tenant);
    h.text(address);
    const std::uint64_t v = h.finish();
    return v == 0 ? 1 : v;  // 0 marks an empty slot
}

bool suppression_table::live(std::uint32_t time_s, std::uint32_t now_s) const noexcept {
    if (time_s == 0) return false;  // removed
    return _ttl_s == 0 || now_s < time_s || now_s - time_s < _ttl_s;
}

std::optional<std::uint32_t> suppression_table::lookup(std::string_view tenant, std::string_view address,
                                                       std::uint32_t now_s) const noexcept {
    const std::uint64_t key = hash(tenant, address);
    const slots* s = _current.load(std::memory_order_seq_cst);
    for (std::size_t i = key & s->mask;; i = (i + 1) & s->mask) {
        // The acquire pairs with the writer's release of the key, after it stored the time.
        const std::uint64_t k = s->keys[i].load(std::memory_order_acquire);
        if (k == 0) return std::nullopt;
        if (k != key) continue;
        const std::uint32_t t = s->times[i].load(std::memory_order_relaxed);
        if (!live(t, now_s)) return std::nullopt;
        return t;
    }
}

void suppression_table::add(std::string_view tenant, std::string_view address, std::uint32_t time_s,
                            std::uint32_t now_s) {
    RR_ASSERT(time_s != 0);
    const std::uint64_t key = hash(tenant, address);
    std::lock_guard lock(_write);
    // At 3/4 full the array is replaced (probes stay short): expired and removed entries are
    // dropped, and the rest get room to double.
    if ((_used + 1) * 4 > (_owned->mask + 1) * 3) rebuild(_entries + 1, now_s);
    slots& s = *_owned;
    for (std::size_t i = key & s.mask;; i = (i + 1) & s.mask) {
        const std::uint64_t k = s.keys[i].load(std::memory_order_relaxed);
        if (k == key) {
            const std::uint32_t old = s.times[i].load(std::memory_order_relaxed);
            if (old == 0) ++_entries;
            if (time_s > old) s.times[i].store(time_s, std::memory_order_relaxed);
            return;
        }
        if (k != 0) continue;
        s.times[i].store(time_s, std::memory_order_relaxed);
        s.keys[i].store(key, std::memory_order_release);  // readers see the time with the key
        ++_used;
        ++_entries;
        return;
    }
}

bool suppression_table::remove(std::string_view tenant, std::string_view address) {
    const std::uint64_t key = hash(tenant, address);
    std::lock_guard lock(_write);
    slots& s = *_owned;
    for (std::size_t i = key & s.mask;; i = (i + 1) & s.mask) {
        const std::uint64_t k = s.keys[i].load(std::memory_order_relaxed);
        if (k == 0) return false;
        if (k != key) continue;
        // The key stays (a tombstone: later keys of its probe run stay reachable); time 0 is
        // "absent" to readers.
        if (s.times[i].exchange(0, std::memory_order_relaxed) == 0) return false;
        --_entries;
        return true;
    }
}

void suppression_table::reserve(std::size_t entries, std::uint32_t now_s) {
    std::lock_guard lock(_write);
    if ((_used + entries) * 4 <= (_owned->mask + 1) * 3) return;
    rebuild(_entries + entries, now_s);
}

void suppression_table::rebuild(std::size_t entries, std::uint32_t now_s) {
    const slots& old = *_owned;
    std::size_t kept = 0;
    for (std::size_t i = 0; i <= old.mask; ++i)
        if (old.keys[i].load(std::memory_order_relaxed) != 0 && live(old.times[i].load(std::memory_order_relaxed), now_s))
            ++kept;
    const std::size_t want = std::max(entries, kept + 1);
    std::size_t n = min_slots;
    while (n < 2 * want) n *= 2;
    auto fresh = std::make_unique<slots>(n);
    std::size_t used = 0;
    for (std::size_t i = 0; i <= old.mask; ++i) {
        const std::uint64_t k = old.keys[i].load(std::memory_order_relaxed);
        const std::uint32_t t = old.times[i].load(std::memory_order_relaxed);
        if (k == 0 || !live(t, now_s)) continue;
        std::size_t j = k & fresh->mask;
        while (fresh->keys[j].load(std::memory_order_relaxed) != 0) j = (j + 1) & fresh->mask;
        fresh->times[j].store(t, std::memory_order_relaxed);
        fresh->keys[j].store(k, std::memory_order_relaxed);
        ++used;
    }
    // Publish (the seq_cst store also publishes the plain stores above to whoever loads the
    // pointer), then note where each reader is: the old array is freed once each has moved on.
    _current.store(fresh.get(), std::memory_order_seq_cst);
    retired r;
    r.seen.resize(_reader_count);
    for (unsigned i = 0; i < _reader_count; ++i) r.seen[i] = _readers[i].turns.load(std::memory_order_seq_cst);
    r.array = std::move(_owned);
    _retired.push_back(std::move(r));
    _owned = std::move(fresh);
    _used = used;
    _entries = used;
    reclaim_locked();
}

void suppression_table::quiescent(unsigned reader) noexcept {
    RR_DEBUG_ASSERT(reader < _reader_count);
    std::atomic<std::uint64_t>& turns = _readers[reader].turns;
    // Only this reader writes its count: a load and a store, no read-modify-write.
    turns.store(turns.load(std::memory_order_relaxed) + 1, std::memory_order_seq_cst);
}

void suppression_table::offline(unsigned reader) noexcept {
    RR_DEBUG_ASSERT(reader < _reader_count);
    _readers[reader].turns.store(reader_offline, std::memory_order_seq_cst);
}

void suppression_table::reclaim() noexcept {
    std::unique_lock lock(_write, std::try_to_lock);
    if (lock.owns_lock()) reclaim_locked();
}

void suppression_table::reclaim_locked() noexcept {
    std::erase_if(_retired, [this](const retired& r) {
        for (unsigned i = 0; i < _reader_count; ++i) {
            const std::uint64_t now = _readers[i].turns.load(std::memory_order_seq_cst);
            if (now != reader_offline && now <= r.seen[i]) return false;
        }
        return true;
    });
}

std::size_t suppression_table::size() const {
    std::lock_guard lock(_write);
    return _entries;
}

std::size_t suppression_table::capacity() const {
    std::lock_guard lock(_write);
    return _owned->mask + 1;
}

std::size_t suppression_table::retired_arrays() const {
    std::lock_guard lock(_write);
    return _retired.size();
}

}  // namespace ringrelay::queue
