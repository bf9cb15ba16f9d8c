// core/dns.h: finding the mail exchangers of a domain (RFC 5321 §5.1) for delivery: MX
// records by preference, equal preferences shuffled, the domain's own A/AAAA when it has no
// MX (the implicit MX), null MX (RFC 7505) and NXDOMAIN as permanent failures, SERVFAIL,
// REFUSED and timeouts as temporary ones; every target comes with its addresses.
//
// mx_resolver is the seam the delivery code uses. Two implementations:
//  - dns_resolver: c-ares (1.18) driven by the shard's io_uring. c-ares reports the sockets
//    it wants watched through ARES_OPT_SOCK_STATE_CB; each gets a one-shot IORING_OP_POLL_ADD
//    (re-armed after every readiness, so polling stays level-triggered: c-ares 1.18 reads one
//    TCP length prefix or body per ares_process_fd call, and a multishot poll would not fire
//    again for bytes already queued). Timeouts are driven by tick(). No thread, no blocking
//    call after init() (which reads /etc/resolv.conf once). Answers are cached per RRset for
//    their TTL (core/dns_cache.h), positive and negative.
//  - static_mx_resolver: a fixed map domain -> result, for tests of other units.
// Both deliver results from the reactor loop (reactor::post), never inside resolve_mx().
//
// SECURITY: DNS answers come from the network. They are parsed by core/dns_message.h (every
// length and pointer checked); MX host names must pass valid_host_name() or are skipped; at
// most max_mx_hosts targets with max_addresses_per_host addresses each are kept.
#pragma once
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/dns_cache.h"
#include "core/net.h"
#include "core/reactor.h"

namespace ringrelay::core {

enum class dns_status : std::uint8_t {
    ok,
    no_such_domain,  // NXDOMAIN for the domain (or a syntactically impossible name): bounce
    null_mx,         // the domain's only MX is "0 ." (RFC 7505 §3): bounce at once
    no_address,      // the domain exists, has no MX and no A/AAAA (RFC 5321 §5.1): bounce
    temporary,       // SERVFAIL, REFUSED, timeout, malformed answer, no MX host resolved: defer
};

[[nodiscard]] std::string_view to_string(dns_status s) noexcept;

struct mx_target {
    std::string host;                   // valid_host_name(), lower case, no trailing dot
    std::uint16_t preference = 0;       // 0 for the implicit MX
    std::vector<endpoint> addresses;    // in dns_config::address_order, port dns_config::smtp_port
};

struct mx_result {
    dns_status status = dns_status::temporary;
    std::vector<mx_target> targets;     // status ok only: by preference, equal ones shuffled
    std::string detail;                 // for logs and DSNs: "mx2.example.test: timeout"
};

// Told the outcome of one resolve_mx(). The waiter must outlive the call to resolved() or
// be cancelled first.
class mx_waiter {
public:
    virtual void resolved(mx_result result) noexcept = 0;

protected:
    ~mx_waiter() = default;
};

// The seam between delivery and DNS. Shard-local.
class mx_resolver {
public:
    virtual ~mx_resolver() = default;
    // Resolves the mail exchangers of `domain` (copied; any case, trailing dot allowed).
    // `done` is called later on this shard, from the reactor loop (never inside
    // resolve_mx()), exactly once, unless cancel(done) is called first. One lookup per
    // waiter at a time.
    virtual void resolve_mx(std::string_view domain, mx_waiter* done) = 0;
    // Forgets `done`'s lookup; it will not be called. A no-op if it has none.
    virtual void cancel(mx_waiter* done) noexcept = 0;
};

namespace detail {

// Results waiting to be handed to their waiters: one reactor::post() for all of them,
// delivered in order, at most the ones present when the turn starts (a waiter that looks up
// again is answered next turn). Shard-local; must not be destroyed while posted() unless
// the reactor will not run again.
class mx_delivery final : public completion {
public:
    explicit mx_delivery(reactor& r) noexcept : _reactor(r) {}
    void push(mx_waiter* w, mx_result result);
    // Removes `w`'s result; true if it had one.
    bool remove(mx_waiter* w) noexcept;
    [[nodiscard]] bool posted() const noexcept { return _posted; }
    void complete(int res, std::uint32_t flags) noexcept override;

private:
    reactor& _reactor;
    std::deque<std::pair<mx_waiter*, mx_result>> _ready;
    bool _posted = false;
};

}  // namespace detail

// For tests of other units: answers from a fixed table. Unknown domains get
// dns_status::no_such_domain.
class static_mx_resolver final : public mx_resolver {
public:
    explicit static_mx_resolver(reactor& r) : _delivery(r) {}
    // Domain in any case, with or without the trailing dot.
    void set(std::string_view domain, mx_result result);
    void resolve_mx(std::string_view domain, mx_waiter* done) override;
    void cancel(mx_waiter* done) noexcept override { (void)_delivery.remove(done); }
    [[nodiscard]] std::size_t lookups() const noexcept { return _lookups; }
    [[nodiscard]] bool idle() const noexcept { return !_delivery.posted(); }

private:
    detail::mx_delivery _delivery;
    std::unordered_map<std::string, mx_result> _table;
    std::size_t _lookups = 0;
};

// Which address families the targets get, and in which order.
enum class dns_address_order : std::uint8_t { ipv4_first, ipv6_first, ipv4_only, ipv6_only };

struct dns_config {
    std::vector<endpoint> servers;      // --dns-server; empty: the nameservers of /etc/resolv.conf
    int timeout_ms = 2000;              // per try (c-ares ARES_OPT_TIMEOUTMS)
    int tries = 3;                      // per server (ARES_OPT_TRIES)
    std::uint16_t smtp_port = 25;       // port of every target address
    dns_address_order address_order = dns_address_order::ipv4_first;
    std::size_t max_mx_hosts = 10;
    std::size_t max_addresses_per_host = 8;
    std::size_t cache_entries = 10000;  // RRsets
    std::uint32_t max_ttl_s = 86400;    // longer TTLs are cut to this
    std::uint32_t negative_ttl_s = 300; // NXDOMAIN/NODATA without an SOA; also caps the SOA's
    std::uint64_t shuffle_seed = 0;     // equal-preference shuffle; 0: seeded from getrandom()
};

struct dns_stats {
    std::uint64_t lookups = 0;        // resolve_mx() calls
    std::uint64_t queries = 0;        // ares_query() calls (one per RRset not cached/in flight)
    std::uint64_t cache_hits = 0;     // RRsets answered from the cache
    std::uint64_t query_failures = 0; // queries that ended temporary
};

// The c-ares resolver. Lifecycle: construct -> init() -> resolve_mx()/cancel() and tick()
// (every loop turn, or at least every 100 ms) -> shutdown() -> run the loop until idle() ->
// destroy. Destroying it while !idle() is allowed only if the reactor will not run again
// (its polls and posted delivery point at this object). Shard-local: one per shard, used by
// that shard's thread only.
class dns_resolver final : public mx_resolver {
public:
    dns_resolver(reactor& r, dns_config config);
    dns_resolver(const dns_resolver&) = delete;
    dns_resolver& operator=(const dns_resolver&) = delete;
    ~dns_resolver() override;

    // Creates the c-ares channel (reads /etc/resolv.conf when config.servers is empty).
    [[nodiscard]] std::error_code init();

    void resolve_mx(std::string_view domain, mx_waiter* done) override;
    void cancel(mx_waiter* done) noexcept override;

    // Drives c-ares timeouts and expires the cache. `now_ms` (monotonic) is also the clock of
    // the cache until the next tick.
    void tick(std::int64_t now_ms);
    // How long the loop may sleep before tick() is due again (c-ares's next timeout, at most
    // 1000; -1 when nothing is in flight).
    [[nodiscard]] int next_timeout_ms() const;

    // Fails every lookup (waiters get temporary "resolver stopped"), closes c-ares's sockets
    // and cancels their polls.
    void shutdown();
    // No lookup, poll or delivery in flight.
    [[nodiscard]] bool idle() const noexcept;

    [[nodiscard]] const dns_stats& stats() const noexcept { return _stats; }
    [[nodiscard]] std::size_t cache_size() const noexcept { return _cache.size(); }

private:
    struct socket_watch;
    struct query;
    struct lookup;
    friend struct socket_watch;

    static void on_sock_state(void* data, int fd, int readable, int writable);
    static void on_query_done(void* arg, int status, int timeouts, unsigned char* abuf, int alen);
    void sock_state(int fd, bool readable, bool writable);
    void arm(socket_watch& w);
    void watch_done(socket_watch& w, int res);
    void need(lookup& l, dns_type type, const std::string& name);
    void query_done(query& q, int status, std::span<const std::uint8_t> answer);
    void answer(lookup& l, dns_type type, const std::string& name, const dns_cache_entry* entry,
                std::string_view failure);
    void advance(lookup& l);
    void finish(lookup& l, mx_result result);
    void order_targets(std::vector<dns_mx_record>& mx);
    [[nodiscard]] std::uint64_t next_random() noexcept;

    // Fixed after construction.
    reactor& _reactor;
    const dns_config _config;

    // Shard-local.
    void* _channel = nullptr;  // ares_channel
    dns_cache _cache;
    detail::mx_delivery _delivery;
    std::vector<std::unique_ptr<socket_watch>> _watches;         // all ever made
    std::vector<socket_watch*> _free_watches;
    std::unordered_map<int, socket_watch*> _watch_by_fd;
    std::unordered_map<std::string, std::unique_ptr<query>> _queries;  // in flight, by cache key
    std::unordered_map<std::uint64_t, std::unique_ptr<lookup>> _lookups;
    std::unordered_map<mx_waiter*, std::uint64_t> _lookup_by_waiter;
    std::uint64_t _next_lookup_id = 1;
    std::uint64_t _random = 0;
    std::int64_t _now_ms = 0;
    std::int64_t _next_expire_ms = 0;
    std::size_t _polls_in_flight = 0;
    bool _stopping = false;
    bool _destroying = false;
    dns_stats _stats;
};

}  // namespace ringrelay::core
