// queue/http_api.h: what the HTTP endpoint (--http, issue 18) answers, on the shard that
// accepted the connection: the routes, who may call each, and the handlers. The transport
// (keep-alive, pipelining, limits, 408) is core::http_server's.
//
// Routes (a table: path, methods, who may call, handler; a path ending in '/' takes what
// follows as its argument):
//   GET|HEAD /metrics               Prometheus text (queue/metrics.h)   --http-networks
//   GET /api/v1/queue               the queue by site                    --http-networks
//   GET /api/v1/messages/{queue_id} one message                          --http-networks
//   POST /api/v1/suspend, /api/v1/resume, /api/v1/flush, /api/v1/bounce  --http-networks
//   POST /api/v1/drain              the relay drains (as SIGUSR2)        --http-networks
//   GET|POST|DELETE /api/v1/suppressions  the suppression list           --http-networks
//                                   (queue/suppression_api.h: answered by this shard alone)
//   POST /u/TOKEN                   one-click unsubscribe (RFC 8058)     anyone
//                                   (queue/unsubscribe.h; 404 without --unsubscribe-url)
// The /api/v1 routes are the queue control API (queue/admin_request.h): the body is checked here
// (400 with the field named), then the request goes to every shard (admin_gateway: the shard's
// delivery) and is answered once all have reported (core::http_answer::defer()).
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

#include <atomic>
#include <cstdint>
#include <span>
#include <string_view>

#include "core/config.h"
#include "core/http_server.h"
#include "queue/admin_request.h"
#include "queue/metrics.h"

namespace ringrelay::queue {

// Who may call a route.
enum class http_callers : std::uint8_t {
    networks,  // clients in --http-networks
    anyone,    // every client (POST /u/TOKEN: the one-click unsubscribe of RFC 8058)
};

// What serves /api/v1/suppressions and /u/TOKEN (queue/suppression_api.h), behind an interface so that the
// routes (and tests/fuzz/fuzz_http_request) do not link the suppression list.
class suppression_service {
public:
    virtual void suppressions(const core::http_request& request, core::http_answer& answer) noexcept = 0;
    virtual void unsubscribe(const core::http_request& request, core::http_answer& answer) noexcept = 0;

protected:
    ~suppression_service() = default;
};

class http_api final : public core::http_service {
public:
    // All outlive the api: the config's http_cidrs, the shards' counters, the shard's delivery
    // (null: the /api/v1 routes answer 503), the relay's drain request (null: POST
    // /api/v1/drain answers 503), the shard's suppression API (null: /api/v1/suppressions
    // answers 503).
    http_api(const core::config& config, const metrics_sources& metrics, admin_gateway* admin = nullptr,
             std::atomic<bool>* drain = nullptr, suppression_service* suppressions = nullptr) noexcept
        : _config(config), _metrics(metrics), _admin(admin), _drain(drain), _suppressions(suppressions) {}

    void handle(const core::http_request& request, const sockaddr* peer, core::http_answer& answer) noexcept override;
    // Outside --http-networks: a few connections per address (core::max_http_connections_per_
    // address); enough for POST /u/TOKEN, which a mailbox provider sends once per click.
    [[nodiscard]] bool capped(const sockaddr* peer) const noexcept override;

    // Whether `peer` may call a route open to `callers`.
    [[nodiscard]] bool may_call(http_callers callers, const core::http_request& request, const sockaddr* peer) const noexcept;

private:
    [[nodiscard]] bool in_networks(const sockaddr* peer) const noexcept;
    void metrics(const core::http_request& request, core::http_answer& answer) noexcept;
    void queue(const core::http_request& request, core::http_answer& answer) noexcept;
    void message(const core::http_request& request, core::http_answer& answer) noexcept;
    void suspend(const core::http_request& request, core::http_answer& answer) noexcept;
    void resume(const core::http_request& request, core::http_answer& answer) noexcept;
    void flush(const core::http_request& request, core::http_answer& answer) noexcept;
    void bounce(const core::http_request& request, core::http_answer& answer) noexcept;
    void drain(const core::http_request& request, core::http_answer& answer) noexcept;
    void suppressions(const core::http_request& request, core::http_answer& answer) noexcept;
    void unsubscribe(const core::http_request& request, core::http_answer& answer) noexcept;
    void control(admin_action action, const core::http_request& request, core::http_answer& answer) noexcept;
    // Runs `request` on every shard; the answer once all have reported.
    void administer(admin_request&& request, core::http_answer& answer) noexcept;

    struct route {
        std::string_view path;
        std::span<const core::http_method> methods;
        std::string_view allow;  // the methods as a 405's Allow field
        http_callers callers;
        void (http_api::*handler)(const core::http_request&, core::http_answer&) noexcept;
    };
    static const route routes[];

    const core::config& _config;
    const metrics_sources& _metrics;
    admin_gateway* const _admin;
    std::atomic<bool>* const _drain;
    suppression_service* const _suppressions;
};

}  // namespace ringrelay::queue
