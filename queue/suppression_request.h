// queue/suppression_request.h: the vocabulary of /api/v1/suppressions (issue 18; the route is
// queue/http_api.h's, the work queue/suppression_api.h's): the POST and DELETE bodies and the
// GET query read and checked, a page of the list chosen from the whole (sorted) list, and the
// JSON answers. Pure: no clocks (the caller gives the time), no I/O.
//
//   GET    /api/v1/suppressions?tenant=T&address=A&limit=N&cursor=C
//          every parameter optional; tenant and address match exactly (without ASCII case);
//          limit 1..suppression_max_limit (default suppression_default_limit); cursor: the
//          "next_cursor" of the previous page (opaque). Unknown parameters are refused.
//   POST   {"tenant": T, "address": A | "addresses": [A, ...], "reason": R}   reason optional
//   DELETE {"tenant": T, "address": A | "addresses": [A, ...]}, or ?tenant=T&address=A
//
// SECURITY: bodies and query strings are the client's (a client in --http-networks; at most
// core::http_max_body): simdjson bounds the parse, every field is checked for its type and
// size, unknown fields and parameters are refused, percent-escapes are checked.
#pragma once
#include <cstddef>
#include <cstdint>
#include <expected>
#include <string>
#include <string_view>
#include <vector>

#include "queue/suppression_file.h"

namespace ringrelay::queue {

inline constexpr std::size_t suppression_default_limit = 100;
inline constexpr std::size_t suppression_max_limit = 1000;
inline constexpr std::size_t suppression_max_addresses = 1000;  // per POST or DELETE
inline constexpr std::size_t suppression_max_field = 320;       // tenant, address (RFC 5321 §4.5.3.1)
inline constexpr std::size_t suppression_max_reason = 500;

// GET: which entries, and which page of them.
struct suppression_query {
    std::string tenant;   // lower-cased; "" for every tenant
    std::string address;  // lower-cased; "" for every address
    std::size_t limit = suppression_default_limit;
    bool after = false;   // a cursor was given: only pairs after (after_tenant, after_address)
    std::string after_tenant;
    std::string after_address;
};

// POST (reason allowed) and DELETE (no reason): one tenant, one or more addresses, each once.
struct suppression_change_request {
    std::string tenant;                  // lower-cased
    std::vector<std::string> addresses;  // lower-cased, distinct, in the order given
    std::string reason;                  // POST only; "" if none
};

// The query string of a GET (the target's text after '?', "" if none). The error names the
// parameter: `"limit": not a number from 1 to 1000`, `unknown parameter "foo"`.
[[nodiscard]] std::expected<suppression_query, std::string> parse_suppression_query(std::string_view query);

// The body of a POST. The error names the field.
[[nodiscard]] std::expected<suppression_change_request, std::string> parse_suppression_add(std::string_view body);

// A DELETE: its body, or (when the body is empty) its query string's tenant and address.
[[nodiscard]] std::expected<suppression_change_request, std::string> parse_suppression_remove(std::string_view body,
                                                                                              std::string_view query);

// The query part of a request target ("" if it has none).
[[nodiscard]] std::string_view target_query(std::string_view target) noexcept;

// One page of `entries` (sorted by tenant then address, as load_suppressions gives them, none
// expired): those matching `q` after its cursor, at most q.limit, and whether more follow.
struct suppression_page {
    std::vector<const suppression_entry*> entries;  // point into the vector given
    std::size_t matched = 0;                        // every entry matching q's filters
    bool more = false;
    std::string next_cursor;  // "" if !more
};
[[nodiscard]] suppression_page select_suppressions(const std::vector<suppression_entry>& entries,
                                                   const suppression_query& q);

// The GET answer: {"suppressions": [{"tenant", "address", "added", "expires" (null with ttl_s
// 0), "source", "reason" (null if none), "queue_id" (null if none)}, ...], "count", "matched",
// "next_cursor" (null on the last page)}.
[[nodiscard]] std::string render_suppression_page(const suppression_page& page, std::uint32_t ttl_s);

}  // namespace ringrelay::queue
