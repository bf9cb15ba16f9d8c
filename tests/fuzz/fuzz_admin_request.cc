// tests/fuzz/fuzz_admin_request.cc: libFuzzer target for the queue control API's request bodies
// (queue/admin_request.h parse_admin_body; issue 18) and queue ids in paths (parse_queue_id).
// Any bytes as the body of POST /api/v1/{suspend,resume,flush,bounce}, and as the ID of GET
// /api/v1/messages/ID. Checks: no sanitizer report; the same body gives the same verdict twice;
// a refusal has a message; an accepted request is of its action, names what the action allows
// (suspend and resume a site, provider, domain or tenant; flush everything or a domain; bounce a
// domain, sender or queue id), with a non-empty lower-case value (a queue id instead for
// queue_id), a duration above 0 for suspend and a reason for bounce; a parsed queue id reads back
// from its own text. The same bytes as a body of POST and DELETE /api/v1/suppressions and as
// the query string of GET and DELETE (queue/suppression_request.h): an accepted change has a
// tenant and at least one address, each lower-case, distinct and with an '@'; a DELETE no
// reason; an accepted query a limit from 1 to the maximum; the cursor of a page made from it
// reads back as that page's last entry.
// SECURITY: the body is the HTTP client's (a client in --http-networks).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "protocol/server_session.h"
#include "queue/admin_request.h"
#include "queue/suppression_request.h"

using namespace ringrelay::queue;

namespace {

bool lower_case(std::string_view s) {
    for (const char c : s)
        if (c >= 'A' && c <= 'Z') return false;
    return true;
}

void check(admin_action action, std::string_view body) {
    const auto a = parse_admin_body(action, body);
    const auto b = parse_admin_body(action, body);
    if (a.has_value() != b.has_value()) std::abort();
    if (!a) {
        if (a.error().empty() || a.error() != b.error()) std::abort();
        return;
    }
    const admin_request& r = *a;
    if (r.action != action) std::abort();
    if (r.selector != b->selector || r.value != b->value || r.queue_id != b->queue_id) std::abort();
    switch (action) {
    case admin_action::suspend:
    case admin_action::resume:
        if (r.selector != admin_selector::site && r.selector != admin_selector::provider &&
            r.selector != admin_selector::domain && r.selector != admin_selector::tenant)
            std::abort();
        if (action == admin_action::suspend && r.duration_us == 0) std::abort();
        break;
    case admin_action::flush:
        if (r.selector != admin_selector::all && r.selector != admin_selector::domain) std::abort();
        break;
    case admin_action::bounce:
        if (r.selector != admin_selector::domain && r.selector != admin_selector::sender &&
            r.selector != admin_selector::queue_id)
            std::abort();
        if (r.reason.empty()) std::abort();
        break;
    default: std::abort();
    }
    if (r.selector == admin_selector::all) {
        if (!r.value.empty()) std::abort();
    } else if (r.selector != admin_selector::queue_id) {
        if (r.value.empty() || !lower_case(r.value)) std::abort();
    }
}

void check_change(const std::expected<suppression_change_request, std::string>& r, bool with_reason) {
    if (!r) {
        if (r.error().empty()) std::abort();
        return;
    }
    if (r->tenant.empty() || !lower_case(r->tenant) || r->addresses.empty()) std::abort();
    if (!with_reason && !r->reason.empty()) std::abort();
    for (std::size_t i = 0; i < r->addresses.size(); ++i) {
        const std::string& a = r->addresses[i];
        if (a.empty() || !lower_case(a) || a.find('@') == std::string::npos) std::abort();
        for (std::size_t j = 0; j < i; ++j)
            if (r->addresses[j] == a) std::abort();
    }
}

void check_suppressions(std::string_view in) {
    check_change(parse_suppression_add(in), true);
    check_change(parse_suppression_remove(in, ""), false);
    check_change(parse_suppression_remove("", in), false);
    const auto q = parse_suppression_query(in);
    if (!q) {
        if (q.error().empty()) std::abort();
        return;
    }
    if (q->limit < 1 || q->limit > suppression_max_limit) std::abort();
    if (!lower_case(q->tenant) || !lower_case(q->address)) std::abort();
    // Two entries matching the query's filters: a page of one gives a cursor to the second.
    std::vector<suppression_entry> entries(2);
    entries[0].tenant = q->tenant.empty() ? "t" : q->tenant;
    entries[0].address = q->address.empty() ? "a@x" : q->address;
    entries[1] = entries[0];
    entries[1].tenant += "~";
    if (!q->tenant.empty()) return;  // the second would not match
    suppression_query one;
    one.address = q->address;
    one.limit = 1;
    const auto page = select_suppressions(entries, one);
    if (!page.more || page.entries.size() != 1) std::abort();
    const auto next = parse_suppression_query("cursor=" + page.next_cursor);
    if (!next || !next->after || next->after_tenant != entries[0].tenant || next->after_address != entries[0].address)
        std::abort();
    (void)render_suppression_page(page, 1);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    for (const admin_action action : {admin_action::suspend, admin_action::resume, admin_action::flush, admin_action::bounce})
        check(action, in);
    check_suppressions(in);
    if (const auto id = parse_queue_id(in)) {
        const auto again = parse_queue_id(ringrelay::protocol::format_queue_id(*id));
        if (!again || *again != *id) std::abort();
    }
    return 0;
}
