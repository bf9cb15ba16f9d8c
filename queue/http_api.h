// queue/http_api.h: what the HTTP endpoint (--http, issue 18) answers, on the shard that
// accepted the connection: the routes, who may call each, and the handlers. The transport
// (keep-alive, pipelining, limits, 408) is core::http_server's.
//
// Routes (a table: path, methods, who may call, handler; a path ending in '/', "/" itself
// aside, takes what follows as its argument):
//   GET|HEAD /, /status/{file}      the status page (queue/status_page.h) --http-networks
//   GET|HEAD /metrics               Prometheus text (queue/metrics.h)   --http-networks
//   GET /api/v1/queue               the queue by site                    --http-networks
//   GET /api/v1/messages/{queue_id} one message                          --http-networks
//   POST /api/v1/suspend, /api/v1/resume, /api/v1/flush, /api/v1/bounce  --http-networks
//   POST /api/v1/drain              the relay drains (as SIGUSR2)        --http-networks
//   POST /api/v1/inject             a message (JSON), answered once      --http-networks, or Basic
//                                   durable                              credentials over --http-tls
//   GET|POST|DELETE /api/v1/suppressions  the suppression list           --http-networks
//                                   (queue/suppression_api.h: answered by this shard alone)
//   POST /u/TOKEN                   one-click unsubscribe (RFC 8058)     anyone
//                                   (queue/unsubscribe.h; 404 without --unsubscribe-url)
// The /api/v1 routes are the queue control API (queue/admin_request.h): the body is checked here
// (400 with the field named), then the request goes to every shard (admin_gateway: the shard's
// delivery) and is answered once all have reported (core::http_answer::defer()).
// POST /api/v1/inject: the body is parsed here (queue/inject_body.h: 400 naming the field), then
// the shard's injector (inject_gateway; queue/injector.h) checks, builds and commits the message
// and answers once the spool's commit is known.
// An unknown path is 404 to a client in --http-networks and 403 to others (the map of paths
// is not told to strangers); a known path with another method is 405 with Allow; a client
// outside the route's callers is 403. Errors are JSON: {"error": "..."}.
//
// Access is decided per route from the request and the peer (http_api::access), so routes
// open to others (POST /api/v1/inject with Basic credentials over TLS; POST /u/TOKEN for
// everyone, later) add a caller kind there, not a check in each handler.
//
// Basic credentials (http_callers::networks_or_authenticated; RFC 7617): a client outside
// --http-networks may call such a route only over --http-tls, only with --auth-users set, and
// only with an Authorization: Basic field naming a user of --auth-users and its password.
// Without the field, or with one that does not parse: 401 with WWW-Authenticate: Basic
// realm="ringrelay" (a malformed one counts as a failed AUTH attempt). With one that parses:
// the answer is deferred (core::http_answer::defer()) while the password is checked off the
// shard thread (http_password_checks: queue/http_auth.h, the same work pool, throttles, wait
// queue and counters as SMTP AUTH); a wrong password gets 401 with WWW-Authenticate, an address
// over --auth-max-failures-per-ip 429, a check that found no room in time 503; a right one runs
// the route's handler then. Over plain --http, or to a route open to --http-networks only, a
// stranger gets 403 whatever it sends.
//
// Threading: one per shard, shard-local; reads the config and every shard's counters (atomics).
#pragma once
#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <span>
#include <string_view>

#include "core/config.h"
#include "core/http_server.h"
#include "queue/admin_request.h"
#include "queue/inject_body.h"
#include "queue/metrics.h"

namespace ringrelay::queue {

// Who may call a route.
enum class http_callers : std::uint8_t {
    networks,                   // clients in --http-networks
    networks_or_authenticated,  // those, and others with Basic credentials over --http-tls
    anyone,                     // every client (POST /u/TOKEN: the one-click unsubscribe of RFC 8058)
};

// What access() decides for one request to one route.
enum class http_access : std::uint8_t {
    allowed,           // in --http-networks: call the handler
    forbidden,         // 403
    unauthenticated,   // 401 with WWW-Authenticate: credentials missing or malformed
    check_password,    // well-formed Basic credentials: the password check decides
};

// The verdict of a password check for a request (http_password_checks).
enum class http_check_verdict : std::uint8_t {
    ok,         // the handler runs
    failed,     // 401 with WWW-Authenticate (wrong password, unknown user)
    throttled,  // 429: the address failed too often (--auth-max-failures-per-ip)
    busy,       // 503: no room for the check in time (--auth-queue-size, --auth-queue-timeout)
};

// Where http_api sends Basic credentials to be checked (queue/http_auth.h: the shard's; tests: a
// fake). Shard thread only.
class http_password_checks {
public:
    // Checks `credentials` from `peer` (valid during the call) off the shard thread and calls
    // `done` with the verdict on the shard thread, once, later or before it returns; `done` is
    // not called if the shard stops first. The password is wiped once copied.
    virtual void check(core::basic_credentials&& credentials, const sockaddr* peer,
                       std::function<void(http_check_verdict)> done) noexcept = 0;
    // Credentials from `peer` that did not parse: a failed attempt (counted like SMTP's).
    virtual void malformed(const sockaddr* peer) noexcept = 0;

protected:
    ~http_password_checks() = default;
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
    // /api/v1/drain answers 503), the shard's injector (null: POST /api/v1/inject answers 503).
    // checks: where Basic credentials are checked (null: without --auth-users; then no
    // stranger may call anything).
    // counters: this shard's, where --http-tls handshakes count (null: not counted).
    // suppressions: the shard's suppression API (null: /api/v1/suppressions answers 503).
    http_api(const core::config& config, const metrics_sources& metrics, admin_gateway* admin = nullptr,
             std::atomic<bool>* drain = nullptr, inject_gateway* injector = nullptr,
             http_password_checks* checks = nullptr, shard_counters* counters = nullptr,
             suppression_service* suppressions = nullptr) noexcept
        : _config(config),
          _metrics(metrics),
          _admin(admin),
          _drain(drain),
          _injector(injector),
          _checks(checks),
          _counters(counters),
          _suppressions(suppressions) {}

    void handle(const core::http_request& request, const sockaddr* peer, core::http_answer& answer) noexcept override;
    // Outside --http-networks: a few connections per address (core::max_http_connections_per_
    // address) for the routes open to them (POST /api/v1/inject with credentials; POST /u/TOKEN,
    // which a mailbox provider sends once per click).
    [[nodiscard]] bool capped(const sockaddr* peer) const noexcept override;
    // Counted with SMTP's (ringrelay_tls_handshakes_total, ringrelay_tls_failures_total).
    void tls_handshake(core::http_tls_outcome outcome) noexcept override;

    // Who `peer` is to a route open to `callers`, from the request's transport and its
    // Authorization field (parsed, not checked: check_password says the check must decide).
    [[nodiscard]] http_access access(http_callers callers, const core::http_request& request,
                                     const sockaddr* peer) const noexcept;
    // Whether `peer` may call a route open to `callers` without a password check.
    [[nodiscard]] bool may_call(http_callers callers, const core::http_request& request, const sockaddr* peer) const noexcept {
        return access(callers, request, peer) == http_access::allowed;
    }

private:
    [[nodiscard]] bool in_networks(const sockaddr* peer) const noexcept;
    void status_page(const core::http_request& request, core::http_answer& answer) noexcept;
    void metrics(const core::http_request& request, core::http_answer& answer) noexcept;
    void queue(const core::http_request& request, core::http_answer& answer) noexcept;
    void message(const core::http_request& request, core::http_answer& answer) noexcept;
    void suspend(const core::http_request& request, core::http_answer& answer) noexcept;
    void resume(const core::http_request& request, core::http_answer& answer) noexcept;
    void flush(const core::http_request& request, core::http_answer& answer) noexcept;
    void bounce(const core::http_request& request, core::http_answer& answer) noexcept;
    void drain(const core::http_request& request, core::http_answer& answer) noexcept;
    void inject(const core::http_request& request, core::http_answer& answer) noexcept;
    void suppressions(const core::http_request& request, core::http_answer& answer) noexcept;
    void unsubscribe(const core::http_request& request, core::http_answer& answer) noexcept;
    void control(admin_action action, const core::http_request& request, core::http_answer& answer) noexcept;
    // Runs `request` on every shard; the answer once all have reported.
    void administer(admin_request&& request, core::http_answer& answer) noexcept;

    struct route;
    using handler_fn = void (http_api::*)(const core::http_request&, core::http_answer&) noexcept;
    // Runs `handler` for `request` from `peer` (valid during the call): at once, or after a
    // password check (then `peer` is the copy the check kept). The one place handlers are run.
    // `auth_user`: the user whose Basic credentials passed (empty: none were needed).
    void call(handler_fn handler, const core::http_request& request, const sockaddr* peer,
              core::http_answer& answer, std::string_view auth_user = {}) noexcept;
    // Basic credentials parsed: the answer is deferred while the password is checked; the
    // handler of `r` runs once it passed.
    void check_then_call(const route& r, const core::http_request& request, const sockaddr* peer,
                         core::http_answer& answer) noexcept;

    struct route {
        std::string_view path;
        std::span<const core::http_method> methods;
        std::string_view allow;  // the methods as a 405's Allow field
        http_callers callers;
        handler_fn handler;
    };
    static const route routes[];

    const core::config& _config;
    const metrics_sources& _metrics;
    admin_gateway* const _admin;
    std::atomic<bool>* const _drain;
    inject_gateway* const _injector;
    http_password_checks* const _checks;
    shard_counters* const _counters;
    // The caller's address, and the user its Basic credentials named (empty: none), during
    // call() only (the inject handler reads them).
    const sockaddr* _peer = nullptr;
    std::string_view _auth_user;
    suppression_service* const _suppressions;
};

}  // namespace ringrelay::queue
