// queue/http_api.cc: see http_api.h.
#include "queue/http_api.h"

#include <openssl/crypto.h>

#include <netinet/in.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <utility>

#include "core/clock.h"
#include "protocol/server_session.h"
#include "queue/status_page.h"

namespace ringrelay::queue {

namespace {
constexpr core::http_method get_or_head[] = {core::http_method::get, core::http_method::head};
constexpr core::http_method get_only[] = {core::http_method::get};
constexpr core::http_method post_only[] = {core::http_method::post};
constexpr core::http_method get_post_delete[] = {core::http_method::get, core::http_method::post,
                                                 core::http_method::delete_method};

// The route's path matches: whole, or as a prefix ending in '/' (other than "/" itself) with
// an argument after it.
bool path_matches(std::string_view route, std::string_view path) noexcept {
    if (route.size() > 1 && route.ends_with('/')) return path.size() > route.size() && path.starts_with(route);
    return path == route;
}

// RFC 9110 §11.6.1; RFC 7617 §2.1: the charset the credentials are read in.
constexpr std::string_view basic_challenge = R"(Basic realm="ringrelay", charset="UTF-8")";

core::http_response unauthorized(std::string_view message) {
    core::http_response r = core::http_json_error(401, message);
    r.www_authenticate = basic_challenge;
    return r;
}
}  // namespace

const http_api::route http_api::routes[] = {
    {"/", get_or_head, "GET, HEAD", http_callers::networks, &http_api::status_page},
    {"/status/", get_or_head, "GET, HEAD", http_callers::networks, &http_api::status_page},
    {"/metrics", get_or_head, "GET, HEAD", http_callers::networks, &http_api::metrics},
    {"/api/v1/queue", get_only, "GET", http_callers::networks, &http_api::queue},
    {"/api/v1/messages/", get_only, "GET", http_callers::networks, &http_api::message},
    {"/api/v1/suspend", post_only, "POST", http_callers::networks, &http_api::suspend},
    {"/api/v1/resume", post_only, "POST", http_callers::networks, &http_api::resume},
    {"/api/v1/flush", post_only, "POST", http_callers::networks, &http_api::flush},
    {"/api/v1/bounce", post_only, "POST", http_callers::networks, &http_api::bounce},
    {"/api/v1/drain", post_only, "POST", http_callers::networks, &http_api::drain},
    {"/api/v1/inject", post_only, "POST", http_callers::networks_or_authenticated, &http_api::inject},
    {"/api/v1/suppressions", get_post_delete, "GET, POST, DELETE", http_callers::networks, &http_api::suppressions},
    {"/u/", post_only, "POST", http_callers::anyone, &http_api::unsubscribe},
};

bool http_api::in_networks(const sockaddr* peer) const noexcept {
    return std::any_of(_config.http_cidrs.begin(), _config.http_cidrs.end(),
                       [peer](const core::cidr& net) { return net.contains(peer); });
}

http_access http_api::access(http_callers callers, const core::http_request& request,
                             const sockaddr* peer) const noexcept {
    if (in_networks(peer)) {
        // A network client that sends Basic credentials to a route that takes them is checked
        // and served as that user (its tenant), as anyone else would be; other Authorization
        // fields are ignored.
        if (callers == http_callers::networks_or_authenticated && _checks != nullptr && !request.authorization.empty()) {
            auto credentials = core::parse_basic_authorization(request.authorization);
            if (credentials) {
                OPENSSL_cleanse(credentials->password.data(), credentials->password.size());
                return http_access::check_password;
            }
        }
        return http_access::allowed;
    }
    switch (callers) {
    case http_callers::networks: return http_access::forbidden;
    case http_callers::networks_or_authenticated: {
        if (request.transport != core::http_transport::tls || _checks == nullptr) return http_access::forbidden;
        auto credentials = core::parse_basic_authorization(request.authorization);
        if (!credentials) return http_access::unauthenticated;
        OPENSSL_cleanse(credentials->password.data(), credentials->password.size());
        return http_access::check_password;
    }
    case http_callers::anyone: return http_access::allowed;
    }
    return http_access::forbidden;
}

bool http_api::capped(const sockaddr* peer) const noexcept { return !in_networks(peer); }

void http_api::tls_handshake(core::http_tls_outcome outcome) noexcept {
    if (_counters == nullptr) return;
    (outcome == core::http_tls_outcome::completed ? _counters->tls_handshakes : _counters->tls_failures)
        .fetch_add(1, std::memory_order_relaxed);
}

void http_api::handle(const core::http_request& request, const sockaddr* peer, core::http_answer& answer) noexcept {
    const std::string_view path = request.path();
    const auto r = std::find_if(std::begin(routes), std::end(routes),
                                [path](const route& x) { return path_matches(x.path, path); });
    if (r == std::end(routes)) {
        if (may_call(http_callers::networks, request, peer)) {
            answer.response = core::http_json_error(404, "no such path");
        } else {
            answer.response = core::http_json_error(403, "forbidden");
        }
        return;
    }
    const http_access access = this->access(r->callers, request, peer);
    if (access == http_access::forbidden) {
        answer.response = core::http_json_error(403, "forbidden");
        return;
    }
    if (access == http_access::unauthenticated) {
        if (!request.authorization.empty() && _checks != nullptr) _checks->malformed(peer);
        answer.response = unauthorized(request.authorization.empty() ? "credentials needed (HTTP Basic)"
                                                                     : "malformed credentials (HTTP Basic)");
        return;
    }
    if (std::find(r->methods.begin(), r->methods.end(), request.method) == r->methods.end()) {
        answer.response = core::http_json_error(405, "method not allowed");
        answer.response.allow = r->allow;
        return;
    }
    if (access == http_access::check_password) return check_then_call(*r, request, peer, answer);
    call(r->handler, request, peer, answer);
}

void http_api::call(handler_fn handler, const core::http_request& request, const sockaddr* peer,
                    core::http_answer& answer, std::string_view auth_user) noexcept {
    // Restored after, not cleared: a handler's answer given at once may let the connection serve
    // its next request inside this call.
    const sockaddr* const outer_peer = std::exchange(_peer, peer);
    const std::string_view outer_user = std::exchange(_auth_user, auth_user);
    (this->*handler)(request, answer);
    _peer = outer_peer;
    _auth_user = outer_user;
}

void http_api::check_then_call(const route& r, const core::http_request& request, const sockaddr* peer,
                               core::http_answer& answer) noexcept {
    auto credentials = core::parse_basic_authorization(request.authorization);
    if (!credentials) {  // access() parsed it already
        answer.response = unauthorized("malformed credentials (HTTP Basic)");
        return;
    }
    // The handler runs after the check, when `request` and `peer` are gone: it gets copies (the
    // request without the credentials).
    std::shared_ptr<core::http_request> saved;
    try {
        saved = std::make_shared<core::http_request>(request);
    } catch (const std::bad_alloc&) {
        OPENSSL_cleanse(credentials->password.data(), credentials->password.size());
        answer.response = core::http_json_error(503, "out of memory: try again later");
        return;
    }
    core::endpoint from;
    from.length = peer->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
    std::memcpy(&from.storage, peer, from.length);
    OPENSSL_cleanse(saved->authorization.data(), saved->authorization.size());
    saved->authorization.clear();
    std::string user = credentials->user;  // before the credentials move into the check
    _checks->check(std::move(*credentials), peer,
                   [this, handler = r.handler, saved, from, user = std::move(user),
                    later = answer.defer()](http_check_verdict verdict) mutable {
                       switch (verdict) {
                       case http_check_verdict::ok: {
                           if (later.abandoned()) return;  // the client is gone: nothing is done for it
                           core::http_answer inner(later);
                           call(handler, *saved, from.addr(), inner, user);
                           if (!inner.deferred()) later.complete(std::move(inner.response));
                           return;
                       }
                       case http_check_verdict::failed: later.complete(unauthorized("wrong credentials")); return;
                       case http_check_verdict::throttled:
                           later.complete(core::http_json_error(
                               429, "too many failed attempts from this address (--auth-max-failures-per-ip)"));
                           return;
                       case http_check_verdict::busy:
                           later.complete(core::http_json_error(503, "no room to check the credentials now; try again"));
                           return;
                       }
                   });
}

void http_api::metrics(const core::http_request&, core::http_answer& answer) noexcept {
    answer.response.status = 200;
    answer.response.content_type = metrics_content_type;
    render_metrics(_metrics, answer.response.body);
}

void http_api::status_page(const core::http_request& request, core::http_answer& answer) noexcept {
    const auto asset = status_page_asset(request.path());
    if (!asset) {
        answer.response = core::http_json_error(404, "no such path");
        return;
    }
    answer.response.status = 200;
    answer.response.content_type = asset->content_type;
    answer.response.body = asset->body;
    answer.response.fields = status_page_fields;
}

void http_api::queue(const core::http_request&, core::http_answer& answer) noexcept {
    admin_request r;
    r.action = admin_action::queue;
    administer(std::move(r), answer);
}

void http_api::message(const core::http_request& request, core::http_answer& answer) noexcept {
    const std::string_view id = request.path().substr(std::string_view("/api/v1/messages/").size());
    const auto queue_id = parse_queue_id(id);
    if (!queue_id) {
        answer.response = core::http_json_error(400, "queue_id: not a queue id (16 hex digits)");
        return;
    }
    admin_request r;
    r.action = admin_action::message;
    r.selector = admin_selector::queue_id;
    r.queue_id = *queue_id;
    administer(std::move(r), answer);
}

void http_api::suspend(const core::http_request& request, core::http_answer& answer) noexcept {
    control(admin_action::suspend, request, answer);
}
void http_api::resume(const core::http_request& request, core::http_answer& answer) noexcept {
    control(admin_action::resume, request, answer);
}
void http_api::flush(const core::http_request& request, core::http_answer& answer) noexcept {
    control(admin_action::flush, request, answer);
}
void http_api::bounce(const core::http_request& request, core::http_answer& answer) noexcept {
    control(admin_action::bounce, request, answer);
}

// The relay drains (as --drain or SIGUSR2 do): every shard closes its SMTP listeners at its
// next tick; the relay exits 0 once nothing is left. The body is empty or {}.
void http_api::drain(const core::http_request& request, core::http_answer& answer) noexcept {
    std::string_view body = request.body;
    while (!body.empty() && (body.front() == ' ' || body.front() == '\t' || body.front() == '\r' || body.front() == '\n'))
        body.remove_prefix(1);
    while (!body.empty() && (body.back() == ' ' || body.back() == '\t' || body.back() == '\r' || body.back() == '\n'))
        body.remove_suffix(1);
    if (!body.empty() && body != "{}") {
        answer.response = core::http_json_error(400, "drain takes no fields: send an empty body or {}");
        return;
    }
    if (_drain == nullptr) {
        answer.response = core::http_json_error(503, "draining is not served here");
        return;
    }
    const bool already = _drain->exchange(true, std::memory_order_acq_rel);
    answer.response.status = 200;
    answer.response.content_type = "application/json";
    answer.response.body = already ? R"({"draining":true,"already":true})" "\n" : R"({"draining":true,"already":false})" "\n";
}

// The message goes to this shard's injector once its body parsed (queue/injector.h answers).
void http_api::inject(const core::http_request& request, core::http_answer& answer) noexcept {
    if (_injector == nullptr) {
        answer.response = core::http_json_error(503, "injection is not served here");
        return;
    }
    try {
        auto parsed = parse_inject_body(request.body);
        if (!parsed) {
            answer.response = core::http_json_error(400, parsed.error());
            return;
        }
        parsed->auth_user = std::string(_auth_user);
        _injector->inject(std::move(*parsed), _peer, answer);
    } catch (const std::bad_alloc&) {
        answer.response = core::http_json_error(503, "out of memory: nothing queued; try again later");
    }
}

void http_api::suppressions(const core::http_request& request, core::http_answer& answer) noexcept {
    if (_suppressions == nullptr) {
        answer.response = core::http_json_error(503, "the suppression list is not served here");
        return;
    }
    _suppressions->suppressions(request, answer);
}

void http_api::unsubscribe(const core::http_request& request, core::http_answer& answer) noexcept {
    if (_suppressions == nullptr) {
        answer.response = core::http_json_error(404, "no such path");
        return;
    }
    _suppressions->unsubscribe(request, answer);
}

void http_api::control(admin_action action, const core::http_request& request, core::http_answer& answer) noexcept {
    auto parsed = parse_admin_body(action, request.body);
    if (!parsed) {
        answer.response = core::http_json_error(400, parsed.error());
        return;
    }
    administer(std::move(*parsed), answer);
}

void http_api::administer(admin_request&& request, core::http_answer& answer) noexcept {
    if (_admin == nullptr) {
        answer.response = core::http_json_error(503, "the queue is not served here");
        return;
    }
    auto shared = std::make_shared<const admin_request>(std::move(request));
    _admin->administer_all(shared, [shared, later = answer.defer()](admin_report&& report) mutable {
        core::http_response response;
        response.body = render_admin_report(*shared, report, static_cast<std::uint64_t>(core::unix_us()));
        if (response.body.empty()) {  // GET /api/v1/messages/ID: no shard has it
            response = core::http_json_error(404, "no message " + protocol::format_queue_id(shared->queue_id) + " in the queue");
        }
        later.complete(std::move(response));
    });
}

}  // namespace ringrelay::queue
