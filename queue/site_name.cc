// queue/site_name.cc: see site_name.h.
#include "queue/site_name.h"

#include <algorithm>
#include <vector>

#include "core/ascii.h"

namespace ringrelay::queue {

std::string normalize_host(std::string_view host) {
    while (!host.empty() && host.back() == '.') host.remove_suffix(1);
    std::string out(host);
    for (char& c : out) c = core::ascii_lower(c);
    return out;
}

std::string site_name_of_mx(std::span<const std::string_view> mx_hosts) {
    std::vector<std::string> names;
    names.reserve(mx_hosts.size());
    for (const std::string_view h : mx_hosts) {
        std::string n = normalize_host(h);
        if (!n.empty()) names.push_back(std::move(n));
    }
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
    std::string out;
    for (const std::string& n : names) {
        if (!out.empty()) out.push_back(',');
        out += n;
    }
    return out;
}

std::string site_name_of_mx(std::span<const std::string> mx_hosts) {
    std::vector<std::string_view> views(mx_hosts.begin(), mx_hosts.end());
    return site_name_of_mx(std::span<const std::string_view>(views));
}

std::string site_name_of_route(std::string_view host, std::uint16_t port) {
    std::string h = normalize_host(host);
    const bool v6 = h.find(':') != std::string::npos && !(h.starts_with('[') && h.ends_with(']'));
    std::string out = v6 ? "[" + h + "]" : h;
    out.push_back(':');
    out += std::to_string(port);
    return out;
}

}  // namespace ringrelay::queue
