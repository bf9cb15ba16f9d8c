// core/dns.cc: see dns.h. The lookup of one domain is a small state machine:
//   mx phase        one MX query (RFC 5321 §5.1)
//   -> addresses    A/AAAA of every usable MX host, all at once
//   -> implicit     (no MX) A/AAAA of the domain itself, preference 0
// Each (type, name) RRset is asked once however many lookups want it: from the cache, by
// joining the query in flight, or by a new ares_query().
#include "core/dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <poll.h>
#include <sys/random.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "core/clock.h"
#include "core/invariant.h"

namespace ringrelay::core {

std::string_view to_string(dns_status s) noexcept {
    switch (s) {
        case dns_status::ok: return "ok";
        case dns_status::no_such_domain: return "no_such_domain";
        case dns_status::null_mx: return "null_mx";
        case dns_status::no_address: return "no_address";
        case dns_status::temporary: return "temporary";
    }
    return "unknown";
}

// ---- dns_resolver -------------------------------------------------------------------------

namespace {

constexpr ares_socket_t bad_socket = ARES_SOCKET_BAD;
constexpr int class_in = 1;  // RFC 1035 §3.2.4
constexpr int max_poll_errors = 8;  // consecutive poll failures on one socket before giving up on it

ares_channel channel_of(void* c) noexcept { return static_cast<ares_channel>(c); }

std::string cache_key(dns_type type, std::string_view name) {
    std::string k = std::to_string(static_cast<unsigned>(type));
    k.push_back(' ');
    k.append(name);
    return k;
}

std::string_view type_name(dns_type t) noexcept {
    switch (t) {
        case dns_type::mx: return "MX";
        case dns_type::a: return "A";
        case dns_type::aaaa: return "AAAA";
        case dns_type::cname: return "CNAME";
        case dns_type::soa: return "SOA";
    }
    return "?";
}

endpoint to_endpoint(const dns_address_record& a, std::uint16_t port) noexcept {
    endpoint e;
    if (a.family == AF_INET) {
        auto* in = reinterpret_cast<sockaddr_in*>(&e.storage);
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        std::memcpy(&in->sin_addr, a.bytes, 4);
        e.length = sizeof(sockaddr_in);
    } else {
        auto* in6 = reinterpret_cast<sockaddr_in6*>(&e.storage);
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        std::memcpy(&in6->sin6_addr, a.bytes, 16);
        e.length = sizeof(sockaddr_in6);
    }
    return e;
}

}  // namespace

// One per socket c-ares asked us to watch. A one-shot poll is in flight while `in_flight`;
// after c-ares closed the socket (fd -1) the object waits for that poll's CQE, then goes
// back to the free list.
struct dns_resolver::socket_watch final : completion {
    dns_resolver* owner = nullptr;
    int fd = -1;
    unsigned wanted = 0;  // POLLIN / POLLOUT
    unsigned armed = 0;   // the mask of the poll in flight
    bool in_flight = false;
    bool cancelling = false;
    int errors = 0;
    void complete(int res, std::uint32_t) noexcept override { owner->watch_done(*this, res); }
};

// One ares_query() in flight, shared by every lookup that wants the RRset.
struct dns_resolver::query {
    dns_resolver* owner = nullptr;
    std::string key;
    dns_type type = dns_type::mx;
    std::string name;
    std::vector<std::uint64_t> lookups;  // ids; cancelled ones are skipped
};

struct dns_resolver::lookup {
    enum class phase : std::uint8_t { mx, addresses, implicit };
    struct host {
        std::string name;
        std::uint16_t preference = 0;
        std::vector<dns_address_record> v4;
        std::vector<dns_address_record> v6;
        std::string failure;  // the first temporary failure of its A/AAAA queries
    };
    std::uint64_t id = 0;
    mx_waiter* waiter = nullptr;
    std::string domain;  // normalized
    phase step = phase::mx;
    std::size_t outstanding = 0;  // answers awaited (+1 while queries are being issued)
    dns_cache_entry mx_answer;
    std::string mx_failure;
    std::vector<host> hosts;
    std::string skipped;  // MX records not used, for the detail
};

dns_resolver::dns_resolver(reactor& r, dns_config config)
    : _reactor(r), _config(std::move(config)), _cache(_config.cache_entries), _delivery(r) {}

dns_resolver::~dns_resolver() {
    _destroying = true;  // the reactor may be gone: no SQEs from here on
    _lookups.clear();
    _lookup_by_waiter.clear();
    if (_channel != nullptr) ares_destroy(channel_of(_channel));
    _channel = nullptr;
}

std::error_code dns_resolver::init() {
    _random = _config.shuffle_seed;
    if (_random == 0 && getrandom(&_random, sizeof _random, GRND_NONBLOCK) != sizeof _random)
        _random = static_cast<std::uint64_t>(unix_us()) ^ reinterpret_cast<std::uintptr_t>(this);
    _now_ms = monotonic_ms();

    ares_options opts{};
    int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_FLAGS | ARES_OPT_EDNSPSZ;
    opts.sock_state_cb = &dns_resolver::on_sock_state;
    opts.sock_state_cb_data = this;
    opts.timeout = std::max(1, _config.timeout_ms);
    opts.tries = std::max(1, _config.tries);
    // No search list, no HOSTALIASES: the domain is asked as given. EDNS0 with the
    // fragmentation-safe size (DNS flag day 2020); c-ares retries over TCP when truncated.
    opts.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES | ARES_FLAG_EDNS;
    opts.ednspsz = 1232;
    ares_channel channel = nullptr;
    const int rc = ares_init_options(&channel, &opts, mask);
    if (rc != ARES_SUCCESS) {
        return std::make_error_code(rc == ARES_ENOMEM ? std::errc::not_enough_memory : std::errc::io_error);
    }
    _channel = channel;
    if (!_config.servers.empty()) {
        std::vector<ares_addr_port_node> nodes(_config.servers.size());
        for (std::size_t i = 0; i < nodes.size(); ++i) {
            const endpoint& e = _config.servers[i];
            ares_addr_port_node& n = nodes[i];
            n.next = i + 1 < nodes.size() ? &nodes[i + 1] : nullptr;
            n.family = e.family();
            if (e.family() == AF_INET) {
                std::memcpy(&n.addr.addr4, &reinterpret_cast<const sockaddr_in*>(e.addr())->sin_addr, 4);
            } else if (e.family() == AF_INET6) {
                std::memcpy(&n.addr.addr6, &reinterpret_cast<const sockaddr_in6*>(e.addr())->sin6_addr, 16);
            } else {
                return std::make_error_code(std::errc::address_family_not_supported);
            }
            n.udp_port = n.tcp_port = e.port() == 0 ? 53 : e.port();
        }
        if (ares_set_servers_ports(channel, nodes.data()) != ARES_SUCCESS)
            return std::make_error_code(std::errc::invalid_argument);
    }
    return {};
}

// ---- sockets ---------------------------------------------------------------------------

void dns_resolver::on_sock_state(void* data, int fd, int readable, int writable) {
    static_cast<dns_resolver*>(data)->sock_state(fd, readable != 0, writable != 0);
}

void dns_resolver::sock_state(int fd, bool readable, bool writable) {
    const unsigned mask = (readable ? POLLIN : 0u) | (writable ? POLLOUT : 0u);
    const auto it = _watch_by_fd.find(fd);
    if (mask == 0) {
        // c-ares closes the socket right after this; our poll holds the file until removed.
        if (it == _watch_by_fd.end()) return;
        socket_watch* w = it->second;
        _watch_by_fd.erase(it);
        w->fd = -1;
        w->wanted = 0;
        if (!w->in_flight) {
            _free_watches.push_back(w);
        } else if (!w->cancelling && !_destroying) {
            w->cancelling = true;
            io_uring_prep_poll_remove(_reactor.sqe_ignored(), reinterpret_cast<std::uint64_t>(w));
        }
        return;
    }
    socket_watch* w = nullptr;
    if (it != _watch_by_fd.end()) {
        w = it->second;
    } else {
        if (_free_watches.empty()) {
            _watches.push_back(std::make_unique<socket_watch>());
            _watches.back()->owner = this;
            _free_watches.push_back(_watches.back().get());
        }
        w = _free_watches.back();
        _free_watches.pop_back();
        w->fd = fd;
        w->errors = 0;
        _watch_by_fd.emplace(fd, w);
    }
    w->wanted = mask;
    if (_destroying) return;
    if (!w->in_flight) {
        arm(*w);
    } else if (w->armed != mask && !w->cancelling) {
        // Re-armed with the new mask when the cancelled poll's CQE comes back.
        w->cancelling = true;
        io_uring_prep_poll_remove(_reactor.sqe_ignored(), reinterpret_cast<std::uint64_t>(w));
    }
}

void dns_resolver::arm(socket_watch& w) {
    io_uring_prep_poll_add(_reactor.sqe(&w), w.fd, w.wanted);
    w.armed = w.wanted;
    w.in_flight = true;
    ++_polls_in_flight;
}

void dns_resolver::watch_done(socket_watch& w, int res) {
    w.in_flight = false;
    w.cancelling = false;
    --_polls_in_flight;
    if (w.fd < 0) {
        _free_watches.push_back(&w);
        return;
    }
    if (res != -ECANCELED && _channel != nullptr) {
        // An error CQE is handed to c-ares as readable + writable: its recv/send sees the
        // socket error and fails the queries over to the next try.
        const unsigned events = res >= 0 ? static_cast<unsigned>(res) : POLLERR;
        w.errors = res >= 0 ? 0 : w.errors + 1;
        const ares_socket_t fd = w.fd;
        const ares_socket_t rfd = (events & (POLLIN | POLLERR | POLLHUP)) != 0 ? fd : bad_socket;
        const ares_socket_t wfd = (events & (POLLOUT | POLLERR | POLLHUP)) != 0 ? fd : bad_socket;
        // May close this socket (w detached, maybe reused for a new one) and run callbacks.
        ares_process_fd(channel_of(_channel), rfd, wfd);
    }
    if (w.fd >= 0 && !w.in_flight && w.wanted != 0 && w.errors < max_poll_errors && !_destroying) arm(w);
}

// ---- queries ---------------------------------------------------------------------------

void dns_resolver::on_query_done(void* arg, int status, int, unsigned char* abuf, int alen) {
    auto* q = static_cast<query*>(arg);
    const std::size_t len = abuf != nullptr && alen > 0 ? static_cast<std::size_t>(alen) : 0;
    q->owner->query_done(*q, status, std::span<const std::uint8_t>(abuf, len));
}

void dns_resolver::need(lookup& l, dns_type type, const std::string& name) {
    ++l.outstanding;
    if (const dns_cache_entry* hit = _cache.find(type, name, _now_ms)) {
        ++_stats.cache_hits;
        const dns_cache_entry copy = *hit;
        answer(l, type, name, &copy, {});
        return;
    }
    std::string key = cache_key(type, name);
    if (const auto it = _queries.find(key); it != _queries.end()) {
        it->second->lookups.push_back(l.id);
        return;
    }
    auto q = std::make_unique<query>();
    q->owner = this;
    q->key = key;
    q->type = type;
    q->name = name;
    q->lookups.push_back(l.id);
    query* raw = q.get();
    _queries.emplace(std::move(key), std::move(q));
    ++_stats.queries;
    // The callback may run before ares_query() returns (bad name, no memory): `raw` is not
    // used after this call. The +1 that the caller holds on l.outstanding keeps l alive.
    ares_query(channel_of(_channel), raw->name.c_str(), class_in, static_cast<int>(type), &on_query_done, raw);
}

void dns_resolver::query_done(query& q, int status, std::span<const std::uint8_t> message) {
    auto node = _queries.extract(q.key);  // owns q until the end of this function
    RR_ASSERT(!node.empty());
    if (_destroying || _stopping) return;

    dns_cache_entry entry;
    std::string failure;
    const bool negative = status == ARES_ENOTFOUND || status == ARES_ENODATA;
    if (status == ARES_SUCCESS || negative) {
        std::optional<std::uint32_t> soa_ttl;
        std::uint32_t ttl = 0;
        bool records = false;
        if (!message.empty()) {
            auto parsed = parse_dns_answer(message, q.name, q.type);
            if (!parsed) {
                failure = "malformed answer";
            } else {
                soa_ttl = parsed->negative_ttl;
                ttl = parsed->ttl;
                entry.mx = std::move(parsed->mx);
                entry.addresses = std::move(parsed->addresses);
                records = !entry.mx.empty() || !entry.addresses.empty();
            }
        } else if (status == ARES_SUCCESS) {
            failure = "empty answer";
        }
        if (failure.empty()) {
            if (status == ARES_ENOTFOUND) {
                entry.outcome = dns_outcome::no_such_domain;
            } else {
                // A CNAME without records of the type at its end is NODATA too.
                entry.outcome = records && status == ARES_SUCCESS ? dns_outcome::records : dns_outcome::no_data;
            }
            if (entry.outcome == dns_outcome::records) {
                ttl = std::min(ttl, _config.max_ttl_s);
            } else {
                entry.mx.clear();
                entry.addresses.clear();
                ttl = std::min(soa_ttl.value_or(_config.negative_ttl_s), _config.negative_ttl_s);
            }
            entry.expires_ms = _now_ms + static_cast<std::int64_t>(ttl) * 1000;
            _cache.insert(q.type, q.name, entry, _now_ms);
        }
    } else {
        failure = ares_strerror(status);
    }
    if (!failure.empty()) ++_stats.query_failures;

    for (const std::uint64_t id : q.lookups) {
        const auto it = _lookups.find(id);
        if (it == _lookups.end()) continue;  // cancelled
        answer(*it->second, q.type, q.name, failure.empty() ? &entry : nullptr, failure);
    }
}

// ---- lookups ---------------------------------------------------------------------------

void dns_resolver::resolve_mx(std::string_view domain, mx_waiter* done) {
    ++_stats.lookups;
    RR_ASSERT(done != nullptr && !_lookup_by_waiter.contains(done));
    std::string name = normalize_dns_name(domain);
    if (!valid_host_name(name)) {
        // Not echoed: the text may hold anything, and the detail ends up in logs and DSNs.
        _delivery.push(done, {dns_status::no_such_domain, {}, "not a valid domain name"});
        return;
    }
    if (_channel == nullptr || _stopping) {
        _delivery.push(done, {dns_status::temporary, {}, "resolver not running"});
        return;
    }
    const std::uint64_t id = _next_lookup_id++;
    auto owned = std::make_unique<lookup>();
    lookup& l = *owned;
    l.id = id;
    l.waiter = done;
    l.domain = std::move(name);
    _lookups.emplace(id, std::move(owned));
    _lookup_by_waiter.emplace(done, id);
    l.outstanding = 1;
    need(l, dns_type::mx, l.domain);
    if (--l.outstanding == 0) advance(l);
}

void dns_resolver::cancel(mx_waiter* done) noexcept {
    (void)_delivery.remove(done);
    const auto it = _lookup_by_waiter.find(done);
    if (it == _lookup_by_waiter.end()) return;
    _lookups.erase(it->second);
    _lookup_by_waiter.erase(it);
}

void dns_resolver::answer(lookup& l, dns_type type, const std::string& name, const dns_cache_entry* entry,
                          std::string_view failure) {
    if (l.step == lookup::phase::mx) {
        if (entry != nullptr) {
            l.mx_answer = *entry;
        } else {
            l.mx_failure = failure;
        }
    } else {
        for (lookup::host& h : l.hosts) {
            if (h.name != name) continue;
            if (entry == nullptr) {
                if (h.failure.empty()) h.failure = std::string(type_name(type)) + " lookup: " + std::string(failure);
            } else {
                auto& out = type == dns_type::a ? h.v4 : h.v6;
                out = entry->addresses;
            }
        }
    }
    if (--l.outstanding == 0) advance(l);
}

void dns_resolver::order_targets(std::vector<dns_mx_record>& mx) {
    std::stable_sort(mx.begin(), mx.end(),
                     [](const dns_mx_record& a, const dns_mx_record& b) { return a.preference < b.preference; });
    // Equal preferences in random order (RFC 5321 §5.1): Fisher-Yates within each run.
    for (std::size_t begin = 0; begin < mx.size();) {
        std::size_t end = begin + 1;
        while (end < mx.size() && mx[end].preference == mx[begin].preference) ++end;
        for (std::size_t i = end - 1; i > begin; --i) {
            const std::size_t j = begin + static_cast<std::size_t>(next_random() % (i - begin + 1));
            std::swap(mx[i], mx[j]);
        }
        begin = end;
    }
}

void dns_resolver::advance(lookup& l) {
    if (l.step == lookup::phase::mx) {
        if (!l.mx_failure.empty()) {
            finish(l, {dns_status::temporary, {}, l.domain + ": MX lookup: " + l.mx_failure});
            return;
        }
        if (l.mx_answer.outcome == dns_outcome::no_such_domain) {
            finish(l, {dns_status::no_such_domain, {}, l.domain + ": no such domain (NXDOMAIN)"});
            return;
        }
        if (l.mx_answer.outcome == dns_outcome::no_data) {
            // RFC 5321 §5.1: no MX, so the domain itself is the implicit MX, preference 0.
            l.step = lookup::phase::implicit;
            l.hosts.push_back({l.domain, 0, {}, {}, {}});
        } else {
            std::vector<dns_mx_record> mx = std::move(l.mx_answer.mx);
            const bool all_null = std::all_of(mx.begin(), mx.end(), [](const auto& r) { return r.exchange.empty(); });
            if (all_null) {
                // RFC 7505 §3: "0 ." says the domain accepts no mail.
                finish(l, {dns_status::null_mx, {}, l.domain + ": the domain accepts no mail (null MX, RFC 7505)"});
                return;
            }
            order_targets(mx);
            for (const dns_mx_record& r : mx) {
                if (r.exchange.empty()) continue;  // a null MX beside real ones is just unusable
                if (!valid_host_name(r.exchange)) {
                    if (l.skipped.size() < 512) l.skipped += "; invalid MX host name " + r.exchange.substr(0, 64);
                    continue;
                }
                const bool dup = std::any_of(l.hosts.begin(), l.hosts.end(),
                                             [&](const lookup::host& h) { return h.name == r.exchange; });
                if (dup) continue;
                if (l.hosts.size() >= _config.max_mx_hosts) {
                    l.skipped += "; more than " + std::to_string(_config.max_mx_hosts) + " MX hosts";
                    break;
                }
                l.hosts.push_back({r.exchange, r.preference, {}, {}, {}});
            }
            if (l.hosts.empty()) {
                finish(l, {dns_status::temporary, {}, l.domain + ": no usable MX host" + l.skipped});
                return;
            }
            l.step = lookup::phase::addresses;
        }
        // Issue every address query; the +1 keeps cached answers from finishing l midway.
        const bool v4 = _config.address_order != dns_address_order::ipv6_only;
        const bool v6 = _config.address_order != dns_address_order::ipv4_only;
        ++l.outstanding;
        for (std::size_t i = 0; i < l.hosts.size(); ++i) {
            const std::string name = l.hosts[i].name;
            if (v4) need(l, dns_type::a, name);
            if (v6) need(l, dns_type::aaaa, name);
        }
        if (--l.outstanding == 0) advance(l);
        return;
    }

    mx_result result;
    std::string problems;
    bool temporary = false;
    for (lookup::host& h : l.hosts) {
        mx_target t;
        t.host = h.name;
        t.preference = h.preference;
        const bool v6_first = _config.address_order == dns_address_order::ipv6_first;
        for (const auto* list : v6_first ? std::array{&h.v6, &h.v4} : std::array{&h.v4, &h.v6}) {
            for (const dns_address_record& a : *list) {
                if (t.addresses.size() >= _config.max_addresses_per_host) break;
                t.addresses.push_back(to_endpoint(a, _config.smtp_port));
            }
        }
        if (!t.addresses.empty()) {
            result.targets.push_back(std::move(t));
            continue;
        }
        // A host with no address is skipped (RFC 5321 §5.1 tries the next one).
        temporary = temporary || !h.failure.empty();
        problems += "; " + h.name + ": " + (h.failure.empty() ? std::string("no address") : h.failure);
    }
    if (!result.targets.empty()) {
        result.status = dns_status::ok;
        result.detail = l.domain + (l.step == lookup::phase::implicit ? ": implicit MX" : ": MX") + problems + l.skipped;
    } else if (l.step == lookup::phase::implicit && !temporary) {
        result.status = dns_status::no_address;
        result.detail = l.domain + ": no MX and no A/AAAA record";
    } else {
        result.status = dns_status::temporary;
        result.detail = l.domain + ": no mail exchanger resolved" + problems + l.skipped;
    }
    finish(l, std::move(result));
}

void dns_resolver::finish(lookup& l, mx_result result) {
    _delivery.push(l.waiter, std::move(result));
    _lookup_by_waiter.erase(l.waiter);
    _lookups.erase(l.id);  // destroys l
}

std::uint64_t dns_resolver::next_random() noexcept {
    // splitmix64: deterministic for a given seed, good enough to spread load over MX hosts.
    std::uint64_t z = (_random += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// ---- time and shutdown -------------------------------------------------------------------

void dns_resolver::tick(std::int64_t now_ms) {
    _now_ms = now_ms;
    if (_channel != nullptr && !_queries.empty()) ares_process_fd(channel_of(_channel), bad_socket, bad_socket);
    if (now_ms >= _next_expire_ms) {
        _cache.expire(now_ms);
        _next_expire_ms = now_ms + 1000;
    }
}

int dns_resolver::next_timeout_ms() const {
    if (_channel == nullptr || _queries.empty()) return -1;
    timeval max{1, 0};
    timeval tv{};
    const timeval* t = ares_timeout(channel_of(_channel), &max, &tv);
    if (t == nullptr) return 1000;
    return static_cast<int>(t->tv_sec * 1000 + (t->tv_usec + 999) / 1000);
}

void dns_resolver::shutdown() {
    _stopping = true;
    while (!_lookups.empty()) {
        lookup& l = *_lookups.begin()->second;
        finish(l, {dns_status::temporary, {}, l.domain + ": resolver stopped"});
    }
    // Fails the queries (ARES_EDESTRUCTION, ignored) and closes the sockets (sock_state
    // 0/0 cancels their polls).
    if (_channel != nullptr) ares_destroy(channel_of(_channel));
    _channel = nullptr;
    // c-ares reports every socket it closes; anything still watched would keep idle() false.
    while (!_watch_by_fd.empty()) sock_state(_watch_by_fd.begin()->first, false, false);
}

bool dns_resolver::idle() const noexcept {
    return _lookups.empty() && _queries.empty() && _polls_in_flight == 0 && !_delivery.posted();
}

}  // namespace ringrelay::core
