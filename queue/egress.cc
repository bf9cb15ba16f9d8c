// queue/egress.cc: see egress.h.
#include "queue/egress.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

#include "core/ascii.h"

namespace ringrelay::queue {

namespace {

std::string ascii_lowered(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = core::ascii_lower(c);
    return out;
}

// A source or pool name: what a log field and a metric label can carry unquoted.
bool valid_name(std::string_view n) noexcept {
    if (n.empty() || n.size() > 64) return false;
    for (const char c : n) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                        c == '_' || c == '.';
        if (!ok) return false;
    }
    return true;
}

// The checks a source's and a pool's name share; "" when `name` may be used.
std::string name_error(std::string_view name, std::string_view what, bool taken) {
    if (!valid_name(name)) return "the name must be 1 to 64 letters, digits, '-', '_' or '.'";
    if (taken) return "a " + std::string(what) + " named " + std::string(name) + " is given twice";
    return {};
}

// An EHLO name: a domain (letters, digits, hyphens, dots) or an address literal "[...]"
// (RFC 5321 §4.1.1.1); printable, no spaces.
bool valid_ehlo(std::string_view h) noexcept {
    if (h.empty() || h.size() > 255) return false;
    if (h.front() == '[') return h.back() == ']' && h.find_first_of(" \t\r\n") == std::string_view::npos;
    for (const char c : h) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                        c == '.';
        if (!ok) return false;
    }
    return true;
}

// A test bind of ADDRESS:0: an address this host does not have fails here, at start-up, not
// at the first delivery. The socket is closed again at once.
std::string bind_error(const core::endpoint& e) {
    const int fd = ::socket(e.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return std::strerror(errno);
    std::string err;
    if (::bind(fd, e.addr(), e.length) != 0) err = std::strerror(errno);
    ::close(fd);
    return err;
}

std::expected<std::uint32_t, std::string> parse_weight(std::string_view w) {
    std::uint32_t v = 0;
    const auto r = std::from_chars(w.data(), w.data() + w.size(), v);
    if (w.empty() || r.ec != std::errc() || r.ptr != w.data() + w.size() || v == 0 || v > 1000000)
        return std::unexpected("weight '" + std::string(w) + "' is not a positive integer (1 to 1000000)");
    return v;
}

}  // namespace

std::expected<core::endpoint, std::string> parse_bind_address(std::string_view text) {
    core::endpoint e;
    std::string_view bare = text;
    if (bare.size() >= 2 && bare.front() == '[' && bare.back() == ']') bare = bare.substr(1, bare.size() - 2);
    const std::string host(bare);  // inet_pton wants a terminated string
    auto* v4 = reinterpret_cast<sockaddr_in*>(&e.storage);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&e.storage);
    if (::inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        e.length = sizeof(sockaddr_in);
        return e;
    }
    e = core::endpoint{};
    if (::inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        e.length = sizeof(sockaddr_in6);
        return e;
    }
    std::string error = "'";  // built by appends: GCC 12 warns falsely (-Wrestrict) on "'" + std::string
    error += text;
    error += "' is not an IPv4 or IPv6 address";
    return std::unexpected(std::move(error));
}

std::expected<std::shared_ptr<const egress_table>, std::string> egress_table::load(
    const std::vector<std::string>& egress_sources, const std::vector<std::string>& egress_pools,
    const std::vector<std::string>& pool_for, std::string_view default_ehlo) {
    auto t = std::make_shared<egress_table>();
    auto find_source = [&](std::string_view name) -> std::int64_t {
        for (std::size_t i = 0; i < t->_sources.size(); ++i)
            if (t->_sources[i].name == name) return static_cast<std::int64_t>(i);
        return -1;
    };
    auto find_pool = [&](std::string_view name) -> std::int64_t {
        for (std::size_t i = 0; i < t->_pools.size(); ++i)
            if (t->_pools[i].name == name) return static_cast<std::int64_t>(i);
        return -1;
    };

    for (const std::string& spec : egress_sources) {
        const std::string flag = "--egress-source '" + spec + "': ";
        const auto eq = spec.find('=');
        if (eq == std::string::npos) return std::unexpected(flag + "expected NAME=ADDRESS[,ehlo=HOSTNAME]");
        egress_source s;
        s.name = spec.substr(0, eq);
        if (std::string bad = name_error(s.name, "source", find_source(s.name) >= 0); !bad.empty())
            return std::unexpected(flag + bad);
        std::string_view rest = std::string_view(spec).substr(eq + 1);
        const auto comma = rest.find(',');
        s.address_text = std::string(rest.substr(0, comma));
        auto address = parse_bind_address(s.address_text);
        if (!address) return std::unexpected(flag + address.error());
        s.address = *address;
        s.ehlo = std::string(default_ehlo);
        if (comma != std::string_view::npos) {
            const std::string_view option = rest.substr(comma + 1);
            if (!core::istarts_with(option, "ehlo="))
                return std::unexpected(flag + "unknown option '" + std::string(option) + "' (expected ehlo=HOSTNAME)");
            s.ehlo = std::string(option.substr(5));
            if (!valid_ehlo(s.ehlo))
                return std::unexpected(flag + "ehlo '" + s.ehlo + "' is not a host name or address literal");
        }
        if (std::string err = bind_error(s.address); !err.empty())
            return std::unexpected(flag + "cannot bind " + s.address_text + ": " + err);
        t->_sources.push_back(std::move(s));
    }

    for (const std::string& spec : egress_pools) {
        const std::string flag = "--egress-pool '" + spec + "': ";
        const auto eq = spec.find('=');
        if (eq == std::string::npos || eq + 1 == spec.size())
            return std::unexpected(flag + "expected NAME=SOURCE[:WEIGHT],...");
        egress_pool p;
        p.name = spec.substr(0, eq);
        if (std::string bad = name_error(p.name, "pool", find_pool(p.name) >= 0); !bad.empty())
            return std::unexpected(flag + bad);
        std::string_view rest = std::string_view(spec).substr(eq + 1);
        while (true) {
            const auto comma = rest.find(',');
            const std::string_view item = rest.substr(0, comma);
            const auto colon = item.find(':');
            const std::string_view source = item.substr(0, colon);
            const std::int64_t index = find_source(source);
            if (index < 0) return std::unexpected(flag + "no --egress-source named '" + std::string(source) + "'");
            egress_pool::member m{static_cast<std::uint32_t>(index), 1};
            if (colon != std::string_view::npos) {
                auto w = parse_weight(item.substr(colon + 1));
                if (!w) return std::unexpected(flag + w.error());
                m.weight = *w;
            }
            for (const egress_pool::member& other : p.members)
                if (other.source == m.source)
                    return std::unexpected(flag + "source " + std::string(source) + " is named twice");
            p.members.push_back(m);
            p.total_weight += m.weight;
            if (comma == std::string_view::npos) break;
            rest = rest.substr(comma + 1);
        }
        t->_pools.push_back(std::move(p));
    }

    for (const std::string& spec : pool_for) {
        const std::string flag = "--pool-for '" + spec + "': ";
        const auto eq = spec.rfind('=');
        if (eq == std::string::npos || eq == 0)
            return std::unexpected(flag + "expected SELECTOR=POOL (sender-domain:DOMAIN, auth-user:USER or *)");
        const std::string_view sel = std::string_view(spec).substr(0, eq);
        const std::int64_t pool = find_pool(std::string_view(spec).substr(eq + 1));
        if (pool < 0) return std::unexpected(flag + "no --egress-pool named '" + spec.substr(eq + 1) + "'");
        selector s;
        s.pool = static_cast<std::uint32_t>(pool);
        if (sel == "*") {
            s.what = selector::kind::any;
        } else if (core::istarts_with(sel, "sender-domain:") && sel.size() > 14) {
            s.what = selector::kind::sender_domain;
            s.value = ascii_lowered(sel.substr(14));
        } else if (core::istarts_with(sel, "auth-user:") && sel.size() > 10) {
            s.what = selector::kind::auth_user;
            s.value = ascii_lowered(sel.substr(10));
        } else {
            return std::unexpected(flag + "unknown selector '" + std::string(sel) +
                                   "' (expected sender-domain:DOMAIN, auth-user:USER or *)");
        }
        t->_selectors.push_back(std::move(s));
    }
    return std::shared_ptr<const egress_table>(std::move(t));
}

const egress_pool* egress_table::pool_for(std::string_view sender_domain, std::string_view auth_user) const noexcept {
    for (const selector& s : _selectors) {
        switch (s.what) {
        case selector::kind::any: return &_pools[s.pool];
        case selector::kind::sender_domain:
            if (core::iequals(sender_domain, s.value)) return &_pools[s.pool];
            break;
        case selector::kind::auth_user:
            if (!auth_user.empty() && core::iequals(auth_user, s.value)) return &_pools[s.pool];
            break;
        }
    }
    return nullptr;
}

std::string egress_table::describe() const {
    std::string out = "egress: " + std::to_string(_sources.size()) + " source(s)";
    for (std::size_t i = 0; i < _sources.size(); ++i)
        out += (i == 0 ? " (" : ", ") + _sources[i].name + "=" + _sources[i].address_text + " ehlo " + _sources[i].ehlo;
    if (!_sources.empty()) out += ")";
    out += ", " + std::to_string(_pools.size()) + " pool(s), " + std::to_string(_selectors.size()) + " selector(s)";
    if (_selectors.empty()) out += "; outbound connections use the system-chosen address";
    return out;
}

egress_chooser::egress_chooser(const egress_table& table) : _table(table) {
    _current.reserve(table.pools().size());
    for (const egress_pool& p : table.pools()) _current.emplace_back(p.members.size(), 0);
}

std::uint32_t egress_chooser::next(const egress_pool& pool) noexcept {
    // Each member gains its weight; the largest is chosen and pays the total back.
    return *next_eligible(pool, [](std::uint32_t) { return true; });
}

}  // namespace ringrelay::queue
