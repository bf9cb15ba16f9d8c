// queue/http_api.h: what the HTTP endpoint (--http, issue 18) answers, on the shard that
// accepted the connection: the routes, who may call each, and the handlers. The transport
// (keep-alive, pipelining, limits, 408) is core::http_server's.
//
// Routes (a table: path, methods, who may call, handler):
//   GET|HEAD /metrics   Prometheus text (queue/metrics.h)       --http-networks
// An unknown path is 404 to a client in --http-networks and 403 to others (the map of paths
// is not told to strangers); a known path with another method is 405 with Allow; a client
// outside the route's callers is 403. Errors are JSON: {"error": "..."}.
//
// Access is decided per route from the request and the peer (http_api::may_call), so routes
// open to others later (POST /api/v1/inject with Basic credentials over TLS; POST /u/TOKEN for
// everyone) add a caller kind there, not a check in each handler.
//
// Threading: one per shard, shard-local; reads the config and every shard's counters (atomics).
#pragma once
#include <sys/socket.h>

#include <cstdint>
#include <span>
#include <string_view>

#include "core/config.h"
#include "core/http_server.h"
#include "queue/metrics.h"

namespace ringrelay::queue {

// Who may call a route.
enum class http_callers : std::uint8_t {
    networks,  // clients in --http-networks
};

class http_api final : public core::http_service {
public:
    // Both outlive the api: the config's http_cidrs, and the shards' counters.
    http_api(const core::config& config, const metrics_sources& metrics) noexcept
        : _config(config), _metrics(metrics) {}

    void handle(const core::http_request& request, const sockaddr* peer, core::http_response& response) noexcept override;
    // Outside --http-networks: no route is theirs yet, so a few connections per address do.
    [[nodiscard]] bool capped(const sockaddr* peer) const noexcept override;

    // Whether `peer` may call a route open to `callers`.
    [[nodiscard]] bool may_call(http_callers callers, const core::http_request& request, const sockaddr* peer) const noexcept;

private:
    [[nodiscard]] bool in_networks(const sockaddr* peer) const noexcept;
    void metrics(const core::http_request& request, core::http_response& response) noexcept;

    struct route {
        std::string_view path;
        std::span<const core::http_method> methods;
        std::string_view allow;  // the methods as a 405's Allow field
        http_callers callers;
        void (http_api::*handler)(const core::http_request&, core::http_response&) noexcept;
    };
    static const route routes[];

    const core::config& _config;
    const metrics_sources& _metrics;
};

}  // namespace ringrelay::queue
