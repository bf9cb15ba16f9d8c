// queue/router.cc: see router.h.
#include "queue/router.h"

#include "core/ascii.h"

namespace ringrelay::queue {

std::string domain_of(std::string_view address) {
    const auto at = address.rfind('@');
    std::string d(at == std::string_view::npos ? std::string_view() : address.substr(at + 1));
    for (char& ch : d) ch = core::ascii_lower(ch);
    return d;
}

// The domain's outbound TLS policy; one that differs from --outbound-tls makes a destination
// of its own (its connections run under another policy).
void router::with_tls_policy(route_key& r, std::string_view domain) const {
    r.tls = _config.tls_policy_for(domain);
    if (r.tls != _config.outbound_tls_policy) {
        r.key += "|tls=";
        r.key += core::to_string(r.tls);
    }
}

bool router::route_of(std::string_view rcpt, route_key& out) const {
    const std::string domain = domain_of(rcpt);
    const core::config::route* hit = nullptr;
    for (const core::config::route& r : _config.route_table) {
        if (r.domain == domain) {
            hit = &r;
            break;
        }
    }
    if (hit == nullptr) {
        for (const core::config::route& r : _config.route_table) {
            if (r.domain == "*") {
                hit = &r;
                break;
            }
        }
    }
    if (hit == nullptr) {
        // MX delivery (RFC 5321 §5.1). An address without a domain cannot be routed.
        if (domain.empty()) return false;
        out.key = "mx:" + domain;
        out.name = domain;
        out.by_mx = true;
        with_tls_policy(out, domain);
        return true;
    }
    out.name = core::to_string(hit->next_hop);
    out.key = out.name;
    out.by_mx = false;
    out.hop = hit->next_hop;
    with_tls_policy(out, domain);
    return true;
}

}  // namespace ringrelay::queue
