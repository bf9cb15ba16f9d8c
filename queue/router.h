// queue/router.h: where a recipient's mail goes (docs/ARCHITECTURE.md "Delivery", Routing):
// for the recipient's domain (lower-cased), the first --route DOMAIN=HOST:PORT for exactly that
// domain, else the first "*" route (--smarthost is one), else its MX records (RFC 5321 §5.1).
// The route key names the destination: "ADDR:PORT" for a route, "mx:<domain>" for MX, with
// "|tls=<policy>" appended when the domain's TLS policy (core::config::tls_policy_for) is not
// --outbound-tls, so one route used under two policies is two destinations.
//
// Pure: reads the config only. Threading: any (the config is immutable).
#pragma once
#include <string>
#include <string_view>

#include "core/config.h"
#include "queue/delivery_job.h"

namespace ringrelay::queue {

// The domain of `address` (after the last '@'), ASCII lower-cased; "" if it has none.
[[nodiscard]] std::string domain_of(std::string_view address);

class router {
public:
    explicit router(const core::config& config) noexcept : _config(config) {}
    // False if the recipient cannot be routed (an address without a domain).
    [[nodiscard]] bool route_of(std::string_view rcpt, route_key& out) const;

private:
    void with_tls_policy(route_key& r, std::string_view domain) const;
    const core::config& _config;  // outlives the router
};

}  // namespace ringrelay::queue
