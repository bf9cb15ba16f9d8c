// tests/core/http_reader_harness.h: feeds a core::http_reader its input in pieces, as receives
// would, and collects what comes out. Shared by http_request_test and fuzz_http_request.
#pragma once
#include <optional>
#include <string_view>
#include <vector>

#include "core/http_request.h"

namespace ringrelay::test {

struct http_read_result {
    std::vector<core::http_request> requests;
    std::optional<core::http_read_error> error;
    bool error_repeated = true;  // next() after the error gave the same error again
    // Whenever the reader asked for more input, it held at most max_header bytes unparsed.
    bool bounded = true;
};

// `input` in pieces of `piece` bytes (0: whole), every request taken as it completes.
inline http_read_result read_http(std::string_view input, std::size_t piece = 0,
                                  std::size_t max_header = core::http_max_header,
                                  std::size_t max_body = core::http_max_body) {
    core::http_reader reader(max_header, max_body);
    http_read_result out;
    if (piece == 0) piece = input.empty() ? 1 : input.size();
    for (std::size_t at = 0; at < input.size() && !out.error; at += piece) {
        reader.receive(input.substr(at, piece));
        while (true) {
            auto next = reader.next();
            if (!next) {
                out.error = next.error();
                auto again = reader.next();
                out.error_repeated = !again && again.error() == *out.error;
                break;
            }
            if (!next->has_value()) {
                if (reader.unconsumed() > max_header) out.bounded = false;
                break;
            }
            out.requests.push_back(std::move(**next));
        }
    }
    return out;
}

}  // namespace ringrelay::test
