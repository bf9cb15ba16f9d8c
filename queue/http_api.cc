// queue/http_api.cc: see http_api.h.
#include "queue/http_api.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "core/clock.h"
#include "protocol/server_session.h"

namespace ringrelay::queue {

namespace {
constexpr core::http_method get_or_head[] = {core::http_method::get, core::http_method::head};
constexpr core::http_method get_only[] = {core::http_method::get};
constexpr core::http_method post_only[] = {core::http_method::post};
constexpr core::http_method get_post_delete[] = {core::http_method::get, core::http_method::post,
                                                 core::http_method::delete_method};

// The route's path matches: whole, or as a prefix ending in '/' with an argument after it.
bool path_matches(std::string_view route, std::string_view path) noexcept {
    if (route.ends_with('/')) return path.size() > route.size() && path.starts_with(route);
    return path == route;
}
}  // namespace

const http_api::route http_api::routes[] = {
    {"/metrics", get_or_head, "GET, HEAD", http_callers::networks, &http_api::metrics},
    {"/api/v1/queue", get_only, "GET", http_callers::networks, &http_api::queue},
    {"/api/v1/messages/", get_only, "GET", http_callers::networks, &http_api::message},
    {"/api/v1/suspend", post_only, "POST", http_callers::networks, &http_api::suspend},
    {"/api/v1/resume", post_only, "POST", http_callers::networks, &http_api::resume},
    {"/api/v1/flush", post_only, "POST", http_callers::networks, &http_api::flush},
    {"/api/v1/bounce", post_only, "POST", http_callers::networks, &http_api::bounce},
    {"/api/v1/drain", post_only, "POST", http_callers::networks, &http_api::drain},
    {"/api/v1/suppressions", get_post_delete, "GET, POST, DELETE", http_callers::networks, &http_api::suppressions},
    {"/u/", post_only, "POST", http_callers::anyone, &http_api::unsubscribe},
};

bool http_api::in_networks(const sockaddr* peer) const noexcept {
    return std::any_of(_config.http_cidrs.begin(), _config.http_cidrs.end(),
                       [peer](const core::cidr& net) { return net.contains(peer); });
}

bool http_api::may_call(http_callers callers, const core::http_request&, const sockaddr* peer) const noexcept {
    switch (callers) {
    case http_callers::networks: return in_networks(peer);
    case http_callers::anyone: return true;
    }
    return false;
}

bool http_api::capped(const sockaddr* peer) const noexcept { return !in_networks(peer); }

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
    if (!may_call(r->callers, request, peer)) {
        answer.response = core::http_json_error(403, "forbidden");
        return;
    }
    if (std::find(r->methods.begin(), r->methods.end(), request.method) == r->methods.end()) {
        answer.response = core::http_json_error(405, "method not allowed");
        answer.response.allow = r->allow;
        return;
    }
    (this->*(r->handler))(request, answer);
}

void http_api::metrics(const core::http_request&, core::http_answer& answer) noexcept {
    answer.response.status = 200;
    answer.response.content_type = metrics_content_type;
    render_metrics(_metrics, answer.response.body);
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
