// queue/dkim_signer.h: the relay's DKIM signing (RFC 6376, RFC 8463): the keys from
// --dkim-key, which of them sign a message, and the signing job that runs on the signer's work
// pool, never on a shard thread (an RSA-2048 signature costs hundreds of microseconds).
//
// Path of a signed message (queue/connection): the body hash is computed while the message
// arrives (protocol::body_observer feeds a dkim::body_hash_stream: no second pass over the
// body); at the end of data the shard splits the header section, finds the author's domain and
// the keys (dkim_keys::select); if any apply, a dkim_job carries the header fields and the
// body hash to the pool, which makes the DKIM-Signature fields (a message signed by Ed25519
// keys alone is signed on the shard instead: see below); back on the shard the signed
// message (the fields, then the message) goes to the spool, and only then is 250 said. So the
// stored message carries its signatures and a restart never signs twice. A key that fails to
// sign leaves the message unsigned by that key; the reason goes to the log.
//
// Threading: dkim_keys is immutable and shared (std::shared_ptr<const>); dkim_signer::keys()
// and reload() are atomic swaps of the whole table (SIGHUP), so a job keeps the table it
// started with. A dkim_job belongs to its connection; see core/work_pool.h for the hand-over.
// Each pool thread signs with its own protocol::dkim::signer_cache (dkim_signer::cache(worker)):
// its own copy of every key it signs with and OpenSSL contexts made once, so the threads share
// no OpenSSL state and a signature costs little beyond the private-key operation. Signatures
// finished while more wait go back to the shard together (core/work_pool.h, gathering).
// Ed25519 on the shard: an Ed25519 signature costs about 35 µs of CPU here (openssl speed:
// 54,000 a second on two cores), about what the relay spends on the rest of a 2 KiB message,
// while the round trip through the pool (a futex wake-up of a pool thread, an eventfd write
// and read, two context switches) costs a large share of that again. So a message that only
// Ed25519 keys sign is signed inline by its shard, with the shard's own signer_cache; any RSA
// key (hundreds of microseconds) sends the whole job to the pool.
#pragma once
#include <atomic>
#include <cstdint>
#include <expected>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/config.h"
#include "core/work_pool.h"
#include "protocol/dkim_sign.h"

namespace ringrelay::queue {

struct dkim_key {
    std::string domain;    // d=, lower-case
    std::string selector;  // s=
    std::string file;      // where it was loaded from (for messages)
    protocol::dkim::signing_key key;
};

// The keys and settings in force. Built whole from the config; never changed afterwards.
class dkim_keys {
public:
    // Reads every --dkim-key file; the first that does not load (missing, not a PEM private
    // key, RSA under 1024 bits, a bad domain or selector) is the error, naming the file.
    [[nodiscard]] static std::expected<std::shared_ptr<const dkim_keys>, std::string> load(const core::config& config);

    // The keys that sign a message whose author domain is `author` (empty: none found): those
    // of the author domain, else of its nearest parent domain that has keys, then those of
    // --dkim-sign-all unless they are the same. Appends to `out` (pointers into this table).
    void select(std::string_view author, std::vector<const dkim_key*>& out) const;

    [[nodiscard]] bool empty() const noexcept { return _keys.empty(); }
    [[nodiscard]] const std::vector<dkim_key>& keys() const noexcept { return _keys; }
    [[nodiscard]] protocol::dkim::canonicalization canon() const noexcept { return _canon; }
    [[nodiscard]] std::span<const std::string_view> header_names() const noexcept { return _header_views; }
    [[nodiscard]] std::span<const std::string_view> oversigned() const noexcept { return _oversigned; }
    [[nodiscard]] std::optional<std::int64_t> expiration_s() const noexcept { return _expiration_s; }
    // One line for start-up and reload: the keys (d= s= a= bits, file), sign-all, c=, x=.
    [[nodiscard]] std::string describe() const;

private:
    std::vector<dkim_key> _keys;  // in --dkim-key order
    std::string _sign_all;        // lower-case; empty: none
    protocol::dkim::canonicalization _canon;
    std::vector<std::string> _header_names;        // --dkim-headers, lower-case (owning)
    std::vector<std::string_view> _header_views;   // the names to sign: those or the default set
    std::span<const std::string_view> _oversigned;
    std::optional<std::int64_t> _expiration_s;
};

// Owned by the relay, shared by its shards (outlives them): the table in force and the pool
// the signatures are made on (one thread per core: signing is the only work it does).
class dkim_signer {
public:
    [[nodiscard]] static std::expected<std::unique_ptr<dkim_signer>, std::string> create(const core::config& config);
    dkim_signer(const core::config& config, std::shared_ptr<const dkim_keys> keys);

    // Any thread.
    [[nodiscard]] std::shared_ptr<const dkim_keys> keys() const noexcept { return _keys.load(); }
    // SIGHUP: re-reads every key file; all of them load, or the table in use stays. The text
    // says which happened.
    [[nodiscard]] std::expected<std::string, std::string> reload();
    // The same from `config`'s --dkim-* flags (a SIGHUP that read the config again).
    [[nodiscard]] std::expected<std::string, std::string> reload(const core::config& config);
    [[nodiscard]] core::work_pool& pool() noexcept { return _pool; }
    // Pool thread `worker` only (work_item::run's argument): that thread's OpenSSL state.
    [[nodiscard]] protocol::dkim::signer_cache& cache(unsigned worker) noexcept { return *_caches[worker]; }

private:
    const core::config _config;
    std::atomic<std::shared_ptr<const dkim_keys>> _keys;
    // One per pool thread, each touched by its thread alone (a separate allocation each, so
    // two threads never write one cache line). Before _pool: they outlive its threads.
    std::vector<std::unique_ptr<protocol::dkim::signer_cache>> _caches;
    core::work_pool _pool;  // last: its threads stop first
};

// One message's signatures, owned by the connection that asked for them (one at a time).
class dkim_job final : public core::work_item {
public:
    using done_fn = void (*)(void* owner, dkim_job& job) noexcept;
    // `signer`: whose pool runs the job (its per-thread OpenSSL state signs); none (tests):
    // each signature makes its own.
    dkim_job(void* owner, done_fn done, dkim_signer* signer = nullptr) noexcept
        : _owner(owner), _done(done), _signer(signer) {}

    // Shard thread. `message` (the whole message as stored: the relay's Received: field, the
    // client's header section and body) must stay unchanged until finish(); `fields` are its
    // header fields; `keys` the ones that sign (from `table`, which the job keeps alive).
    void prepare(std::shared_ptr<const dkim_keys> table, std::vector<const dkim_key*> keys,
                 std::vector<protocol::dkim::header_field> fields, const protocol::dkim::sha256_digest& body_hash,
                 std::int64_t now_s);
    void run(unsigned worker) noexcept override;  // pool thread: makes the signatures
    // Makes the signatures on the calling thread with `cache` (null: state made per call); a
    // shard signs an Ed25519-only message this way (connection::begin_commit), then calls
    // finish() itself.
    void sign_with(protocol::dkim::signer_cache* cache) noexcept;
    // True when every key the job signs with is Ed25519 (prepare() first).
    [[nodiscard]] bool ed25519_only() const noexcept;
    void finish() noexcept override;  // shard thread: tells the owner

    // After finish(): the DKIM-Signature fields to put in front of the message (may be empty),
    // a summary per signature made ("d=... s=... a=..."), and why a key did not sign.
    [[nodiscard]] const std::string& fields() const noexcept { return _signature_fields; }
    [[nodiscard]] const std::vector<std::string>& summaries() const noexcept { return _summaries; }
    [[nodiscard]] const std::vector<std::string>& errors() const noexcept { return _errors; }
    // Drops what the last message left (keeps capacity).
    void clear() noexcept;

private:
    void* _owner;
    done_fn _done;
    dkim_signer* _signer;
    std::shared_ptr<const dkim_keys> _table;
    std::vector<const dkim_key*> _keys;
    std::vector<protocol::dkim::header_field> _fields;
    protocol::dkim::sha256_digest _body_hash{};
    std::int64_t _now_s = 0;
    std::string _signature_fields;
    std::vector<std::string> _summaries;
    std::vector<std::string> _errors;
};

// Shard thread, at the end of data: the keys that sign `message` (none: empty), with its header
// fields. A helper so that connection and tests decide alike.
struct dkim_plan {
    std::vector<protocol::dkim::header_field> fields;
    std::vector<const dkim_key*> keys;
};
[[nodiscard]] dkim_plan plan_signatures(const dkim_keys& table, std::string_view message);

}  // namespace ringrelay::queue
