// queue/json_body.h: an HTTP request's JSON body read as an object with simdjson, for the API's
// parsers (queue/admin_request.cc, queue/suppression_request.cc): one wording of the two errors
// every body can have.
// SECURITY: the body is the client's; simdjson bounds the parse (and copies it into its own
// padded buffer).
#pragma once
#include <simdjson.h>

#include <expected>
#include <string>
#include <string_view>

namespace ringrelay::queue {

// `top` is the body's object; it points into `parser`'s memory (valid until its next parse).
// Errors: "body: not valid JSON: ..." and "body: expected a JSON object".
[[nodiscard]] inline std::expected<void, std::string> parse_json_body(simdjson::dom::parser& parser,
                                                                      std::string_view body,
                                                                      simdjson::dom::object& top) {
    simdjson::dom::element root;
    if (auto err = parser.parse(body.data(), body.size(), true).get(root); err)
        return std::unexpected(std::string("body: not valid JSON: ") + simdjson::error_message(err));
    if (root.get_object().get(top) != simdjson::SUCCESS) return std::unexpected(std::string("body: expected a JSON object"));
    return {};
}

}  // namespace ringrelay::queue
