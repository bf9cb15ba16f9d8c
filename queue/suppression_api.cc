// queue/suppression_api.cc: see suppression_api.h.
#include "queue/suppression_api.h"

#include <utility>

#include "core/clock.h"
#include "queue/suppression_file.h"
#include "queue/suppression_request.h"

namespace ringrelay::queue {

namespace {

// One GET: the files read and the page chosen on a pool thread, answered on the shard's.
class listing final : public core::work_item {
public:
    listing(std::string dir, std::uint32_t ttl_s, suppression_query query, core::http_deferred later)
        : _dir(std::move(dir)), _ttl_s(ttl_s), _query(std::move(query)), _later(std::move(later)) {}

    void run(unsigned) noexcept override {
        auto state = load_suppressions(_dir);
        if (!state) {
            _response = core::http_json_error(500, "suppression list: " + state.error());
            return;
        }
        drop_expired(state->entries, static_cast<std::uint64_t>(core::unix_us()), _ttl_s);
        _response.status = 200;
        _response.content_type = "application/json";
        _response.body = render_suppression_page(select_suppressions(state->entries, _query), _ttl_s);
    }
    void finish() noexcept override {
        _later.complete(std::move(_response));
        delete this;
    }
    // The pool's queue is full: 503 now, and the item is gone.
    void refuse() noexcept {
        _response = core::http_json_error(503, "too many listings at once; try again");
        finish();
    }

private:
    const std::string _dir;
    const std::uint32_t _ttl_s;
    const suppression_query _query;
    core::http_deferred _later;
    core::http_response _response;
};

}  // namespace

void suppression_api::suppressions(const core::http_request& request, core::http_answer& answer) noexcept {
    if (_list == nullptr) {
        answer.response = core::http_json_error(503, "the suppression list is off (--no-suppression)");
        return;
    }
    switch (request.method) {
    case core::http_method::get: return list(request, answer);
    case core::http_method::post: return add(request, answer);
    case core::http_method::delete_method: return remove(request, answer);
    default: answer.response = core::http_json_error(405, "method not allowed");
    }
}

void suppression_api::list(const core::http_request& request, core::http_answer& answer) noexcept {
    auto query = parse_suppression_query(target_query(request.target));
    if (!query) {
        answer.response = core::http_json_error(400, query.error());
        return;
    }
    if (_pool == nullptr || _back == nullptr) {
        answer.response = core::http_json_error(503, "listing the suppression list is not served here");
        return;
    }
    auto* item = new listing(_dir, _ttl_s, std::move(*query), answer.defer());
    if (!_pool->submit(*item, *_back)) item->refuse();
}

void suppression_api::add(const core::http_request& request, core::http_answer& answer) noexcept {
    auto parsed = parse_suppression_add(request.body);
    if (!parsed) {
        answer.response = core::http_json_error(400, parsed.error());
        return;
    }
    const auto now_us = static_cast<std::uint64_t>(core::unix_us());
    const auto now_s = static_cast<std::uint32_t>(now_us / 1000000);
    std::uint64_t added = 0, already = 0;
    for (const std::string& address : parsed->addresses) {
        (_list->lookup(parsed->tenant, address, now_s) ? already : added) += 1;
        _list->add(parsed->tenant, address, suppression_source::api, 0, now_us, parsed->reason);
    }
    _list->note_api(added, 0);
    answer_when_durable("{\"added\": " + std::to_string(added) + ", \"already\": " + std::to_string(already) + "}\n",
                        answer);
}

void suppression_api::remove(const core::http_request& request, core::http_answer& answer) noexcept {
    auto parsed = parse_suppression_remove(request.body, target_query(request.target));
    if (!parsed) {
        answer.response = core::http_json_error(400, parsed.error());
        return;
    }
    const auto now_us = static_cast<std::uint64_t>(core::unix_us());
    std::uint64_t removed = 0;
    for (const std::string& address : parsed->addresses)
        if (_list->remove(parsed->tenant, address, suppression_source::api, now_us)) ++removed;
    if (removed == 0) {
        answer.response = core::http_json_error(404, parsed->addresses.size() == 1
                                                         ? "not on " + parsed->tenant + "'s suppression list"
                                                         : "none of them is on " + parsed->tenant + "'s suppression list");
        return;
    }
    _list->note_api(0, removed);
    answer_when_durable("{\"removed\": " + std::to_string(removed) + "}\n", answer);
}

void suppression_api::unsubscribe(const core::http_request& request, core::http_answer& answer) noexcept {
    if (_links == nullptr || _list == nullptr) {
        answer.response = core::http_json_error(404, "no such path");
        return;
    }
    const std::string_view token = request.path().substr(std::string_view("/u/").size());
    auto target = _links->verify(token);
    if (!target) {
        answer.response = core::http_json_error(400, "not a valid unsubscribe link");
        return;
    }
    const auto now_us = static_cast<std::uint64_t>(core::unix_us());
    const bool already = _list->lookup(target->tenant, target->recipient, static_cast<std::uint32_t>(now_us / 1000000)).has_value();
    _list->add(target->tenant, target->recipient, suppression_source::unsubscribe, 0, now_us);
    _list->note_api(already ? 0 : 1, 0);
    answer_when_durable("{\"unsubscribed\": true}\n", answer);
}

void suppression_api::answer_when_durable(std::string body, core::http_answer& answer) noexcept {
    _list->when_durable([body = std::move(body), later = answer.defer()](bool ok) mutable {
        if (!ok) {
            later.complete(core::http_json_error(
                503, "the suppression journal could not be written: the change is in effect, kept in memory and "
                     "written again every second, but not yet durable"));
            return;
        }
        core::http_response r;
        r.status = 200;
        r.content_type = "application/json";
        r.body = std::move(body);
        later.complete(std::move(r));
    });
}

}  // namespace ringrelay::queue
