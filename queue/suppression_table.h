// queue/suppression_table.h: the relay's suppression list in memory (issue 16): which
// (tenant, address) pairs hard-bounced, and when. One table for the whole relay, read by every
// shard at RCPT (queue/suppression.h) and written by the shard that finishes a hard bounce.
//
// Why one shared table and not one per shard: every shard checks every RCPT against the whole
// list, so per-shard tables would each hold every entry (memory times the shard count, for a
// list that reaches millions of addresses at an ESP) and need every addition broadcast. Writes
// are rare (one per hard bounce; RCPTs are thousands of times more frequent), so they take a
// mutex and reads take nothing: a lookup is a few atomic loads in an open-addressing array,
// never a lock, never a write to shared memory. The array is replaced only when it grows; the
// old one is freed once every shard has finished a loop turn since (quiescent-state-based
// reclamation, as the Linux kernel's RCU: a shard holds no pointer into the table between
// turns and says so with quiescent()).
//
// Memory: an entry is a 64-bit keyed hash of (tenant, address) and the time it was added (32-bit
// Unix seconds) in a slot of 12 bytes; the strings are only in the journal on disk
// (queue/suppression_file.h). Arrays are powers of two of at least 1024 slots, grown (and
// cleared of expired and removed entries) at 3/4 full to at least twice the entries kept, so
// a table holds at most 4 slots, 48 bytes, per entry added since the last growth, and 16-32
// bytes per entry in steady use; a replaced array lives on for about a loop turn of each
// shard. Two different pairs share a hash with probability 2^-64 per lookup and entry; the
// hash key is random per table (SipHash-2-4), so nobody can make addresses collide on purpose.
//
// Tenants and addresses are compared without ASCII case (both are lower-cased as they are
// hashed); other bytes (UTF-8) compare exactly.
//
// Threading: lookup() from the registered readers (the shards, by index) at any time, and from
// any thread while no writer runs (start-up, tests); add(), remove(), reserve() and reclaim()
// from any thread (serialised by the table's mutex); quiescent() and offline() by each reader
// for itself.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <vector>

namespace ringrelay::queue {

class suppression_table {
public:
    // readers: the threads that call lookup() concurrently with writers and report their
    // quiescent states (one per shard). ttl_s: an entry older than this is absent (0: never).
    suppression_table(unsigned readers, std::uint32_t ttl_s);
    suppression_table(const suppression_table&) = delete;
    suppression_table& operator=(const suppression_table&) = delete;
    ~suppression_table();

    // When (Unix seconds) the pair was added, if it is in the table and, at now_s, younger than
    // the TTL.
    [[nodiscard]] std::optional<std::uint32_t> lookup(std::string_view tenant, std::string_view address,
                                                      std::uint32_t now_s) const noexcept;

    // Adds the pair, added at time_s (> 0), or moves an existing entry's time to time_s if that
    // is later. now_s: for dropping expired entries when the array grows.
    void add(std::string_view tenant, std::string_view address, std::uint32_t time_s, std::uint32_t now_s);
    // Removes the pair; false if it was not there.
    bool remove(std::string_view tenant, std::string_view address);
    // Room for `entries` entries without growing (start-up, before the list is loaded).
    void reserve(std::size_t entries, std::uint32_t now_s);

    // Reader `reader` holds no pointer into the table now (the end of its loop turn): arrays
    // replaced before this call may be freed. Cheap: one store to the reader's own cache line.
    void quiescent(unsigned reader) noexcept;
    // Reader `reader` will not read again (its thread ends).
    void offline(unsigned reader) noexcept;
    // Frees replaced arrays every reader has passed a quiescent state since; does nothing if a
    // writer holds the lock (the shard tick calls it and must not wait).
    void reclaim() noexcept;

    // Entries held (live, expired and not yet dropped), slots, and replaced arrays not yet freed.
    [[nodiscard]] std::size_t size() const;
    [[nodiscard]] std::size_t capacity() const;
    [[nodiscard]] std::size_t retired_arrays() const;
    [[nodiscard]] std::uint32_t ttl() const noexcept { return _ttl_s; }

private:
    struct slots {
        explicit slots(std::size_t n);
        std::size_t mask;
        std::unique_ptr<std::atomic<std::uint64_t>[]> keys;   // 0: empty
        std::unique_ptr<std::atomic<std::uint32_t>[]> times;  // 0: removed
    };
    struct retired {
        std::unique_ptr<slots> array;
        std::vector<std::uint64_t> seen;  // each reader's quiescent count when it was replaced
    };
    struct alignas(64) reader_state {
        // Written by its reader only, read by writers: a cache line of its own.
        std::atomic<std::uint64_t> turns{0};
    };
    static constexpr std::uint64_t reader_offline = ~std::uint64_t{0};

    [[nodiscard]] std::uint64_t hash(std::string_view tenant, std::string_view address) const noexcept;
    [[nodiscard]] bool live(std::uint32_t time_s, std::uint32_t now_s) const noexcept;
    // Under _write: a new array for `entries` kept entries (and room to grow), published; the
    // old one retired.
    void rebuild(std::size_t entries, std::uint32_t now_s);
    void reclaim_locked() noexcept;

    // Fixed after construction.
    const std::uint32_t _ttl_s;
    std::uint64_t _k0 = 0, _k1 = 0;  // SipHash key, random
    const unsigned _reader_count;
    std::unique_ptr<reader_state[]> _readers;

    // Read by every reader: the array in use.
    std::atomic<slots*> _current{nullptr};

    // Writers only, under _write.
    mutable std::mutex _write;
    std::unique_ptr<slots> _owned;  // what _current points to
    std::size_t _used = 0;          // slots with a key (live, expired or removed)
    std::size_t _entries = 0;       // slots with a key and a time
    std::vector<retired> _retired;
};

}  // namespace ringrelay::queue
