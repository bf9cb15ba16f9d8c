// queue/http_api.cc: see http_api.h.
#include "queue/http_api.h"

#include <algorithm>

namespace ringrelay::queue {

namespace {
constexpr core::http_method get_or_head[] = {core::http_method::get, core::http_method::head};
}  // namespace

const http_api::route http_api::routes[] = {
    {"/metrics", get_or_head, "GET, HEAD", http_callers::networks, &http_api::metrics},
};

bool http_api::in_networks(const sockaddr* peer) const noexcept {
    return std::any_of(_config.http_cidrs.begin(), _config.http_cidrs.end(),
                       [peer](const core::cidr& net) { return net.contains(peer); });
}

bool http_api::may_call(http_callers callers, const core::http_request&, const sockaddr* peer) const noexcept {
    switch (callers) {
    case http_callers::networks: return in_networks(peer);
    }
    return false;
}

bool http_api::capped(const sockaddr* peer) const noexcept { return !in_networks(peer); }

void http_api::handle(const core::http_request& request, const sockaddr* peer, core::http_response& response) noexcept {
    const std::string_view path = request.path();
    const auto r = std::find_if(std::begin(routes), std::end(routes), [path](const route& x) { return x.path == path; });
    if (r == std::end(routes)) {
        if (may_call(http_callers::networks, request, peer)) {
            response = core::http_json_error(404, "no such path");
        } else {
            response = core::http_json_error(403, "forbidden");
        }
        return;
    }
    if (!may_call(r->callers, request, peer)) {
        response = core::http_json_error(403, "forbidden");
        return;
    }
    if (std::find(r->methods.begin(), r->methods.end(), request.method) == r->methods.end()) {
        response = core::http_json_error(405, "method not allowed");
        response.allow = r->allow;
        return;
    }
    (this->*(r->handler))(request, response);
}

void http_api::metrics(const core::http_request&, core::http_response& response) noexcept {
    response.status = 200;
    response.content_type = metrics_content_type;
    render_metrics(_metrics, response.body);
}

}  // namespace ringrelay::queue
