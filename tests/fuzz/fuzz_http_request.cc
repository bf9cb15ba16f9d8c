// tests/fuzz/fuzz_http_request.cc: libFuzzer target for the HTTP endpoint's request reading as
// wired (core/http_request.h: Beast's request_parser fed from our buffers, a parser per
// request, our limits) and its routing (queue/http_api.h).
// Input: byte 0 picks the piece size (1..32) the input is fed in, its top bit the peer (in
// --http-networks or not), bit 6 the transport (TLS or plain); the rest is the client's bytes. Small limits (header 512, body 256)
// so the fuzzer reaches them.
// Checks: fed whole and fed in pieces, the same requests come out in the same order with the
// same end (more input needed, or the same error; not compared in chunked bodies, see below);
// an error repeats; input held unparsed while more is wanted stays within the header limit
// (chunk lines and trailers included); a target holds no CR, LF
// or NUL; a body is within the limit; every request is answered at once (no shard to fan out
// to: the queue API answers 503, or 400 for a bad body) with 200, 400, 403, 404, 405 or 503, a
// JSON error body unless 200, and the response written has the status line and a
// Content-Length equal to the body's size. A stranger gets 403 everywhere but /u/TOKEN (open to
// everyone: 404 or 405 here, without a suppression service), or over TLS 401 with a Basic
// challenge (no or bad credentials, or the fake check's verdict: wrong); a trusted client gets
// that 401 only for Basic credentials it sent to POST /api/v1/inject; an Authorization field
// that parses as Basic gives a non-empty user-id without ':' or control characters, and the
// credentials encoded again parse to the same (core::parse_basic_authorization, RFC 7617).
#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/base64.h"
#include "core/config.h"
#include "core/http_request.h"
#include "queue/http_api.h"
#include "queue/metrics.h"
#include "tests/core/http_reader_harness.h"

using namespace ringrelay;

namespace {

constexpr std::size_t max_header = 512;
constexpr std::size_t max_body = 256;

test::http_read_result read(std::string_view input, std::size_t piece) {
    test::http_read_result r = test::read_http(input, piece, max_header, max_body);
    if (!r.error_repeated) std::abort();
    if (!r.bounded) std::abort();  // unparsed input stays within the header limit
    return r;
}

// Every check says "wrong password", at once.
struct refusing_checks final : queue::http_password_checks {
    void check(core::basic_credentials&&, const sockaddr*,
               std::function<void(queue::http_check_verdict)> done) noexcept override {
        done(queue::http_check_verdict::failed);
    }
    void malformed(const sockaddr*) noexcept override {}
};

void check_basic(std::string_view value) {
    const auto parsed = core::parse_basic_authorization(value);
    if (!parsed) return;
    const std::string& user = parsed->user;
    if (user.empty() || user.find(':') != std::string::npos) std::abort();
    for (const char ch : user + parsed->password)
        if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) std::abort();
    const auto again = core::parse_basic_authorization("Basic " + core::base64_encode(user + ":" + parsed->password));
    if (!again || again->user != user || again->password != parsed->password) std::abort();
}

bool same(const core::http_request& a, const core::http_request& b) {
    return a.method == b.method && a.target == b.target && a.body == b.body && a.keep_alive == b.keep_alive;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    const std::size_t piece = (data[0] & 31) + 1;
    const bool trusted = (data[0] & 0x80) == 0;
    const auto transport = (data[0] & 0x40) != 0 ? core::http_transport::tls : core::http_transport::plain;
    const std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);

    const auto whole = read(input, input.empty() ? 1 : input.size());
    const auto pieces = read(input, piece);
    // The same requests either way, and the same end (more input needed, or the same error),
    // except in a chunked body: there Beast's chunk parser, given malformed framing, may refuse
    // it as malformed (400) in one split, as too large (413) in another, or wait for more (408):
    // the client never gets a request out of it either way.
    if (whole.requests.size() != pieces.requests.size()) std::abort();
    const bool chunked = [&] {
        std::string lower(input);
        for (char& ch : lower) ch = static_cast<char>(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
        return lower.find("chunked") != std::string::npos;
    }();
    if (!chunked && whole.error != pieces.error) std::abort();
    for (std::size_t i = 0; i < whole.requests.size(); ++i)
        if (!same(whole.requests[i], pieces.requests[i])) std::abort();

    static core::config config = [] {
        core::config c;
        c.http_cidrs.push_back(*core::parse_cidr("127.0.0.1/32"));
        return c;
    }();
    static queue::shard_counters counters;
    static queue::metrics_sources sources = [] {
        queue::metrics_sources s(1);
        s.set(0, &counters);
        return s;
    }();
    refusing_checks checks;
    queue::http_api api(config, sources, nullptr, nullptr, nullptr, &checks);  // no injector: inject is 503
    sockaddr_in peer{};
    peer.sin_family = AF_INET;
    peer.sin_addr.s_addr = htonl(trusted ? INADDR_LOOPBACK : 0x0a000001);

    for (const core::http_request& r : whole.requests) {
        if (r.target.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos) std::abort();
        if (r.body.size() > max_body) std::abort();
        check_basic(r.authorization);
        core::http_request request = r;
        request.transport = transport;
        core::http_answer answer;
        api.handle(request, reinterpret_cast<const sockaddr*>(&peer), answer);
        // Deferred only for a password check, which the fake answers at once.
        if (answer.deferred() && answer.given() == nullptr) std::abort();
        const core::http_response& response = answer.deferred() ? *answer.given() : answer.response;
        const unsigned s = response.status;
        if (s != 200 && s != 400 && s != 401 && s != 403 && s != 404 && s != 405 && s != 501 && s != 503) std::abort();
        if (s != 200 && response.body.rfind("{\"error\": \"", 0) != 0) std::abort();
        // Only /u/TOKEN (one-click unsubscribe) is open to everyone; without a suppression
        // service it is 404 (POST) or 405.
        const bool open_route = r.path().size() > 3 && r.path().starts_with("/u/");
        if (!trusted && s != 403 && s != 401 && s != 405 && !(open_route && s == 404)) std::abort();
        // A 401 always carries the challenge. A stranger gets one over TLS only; a client in
        // --http-networks only when it sent Basic credentials to the route that takes them
        // (checked, and refused by the fake).
        const bool basic_to_inject =
            core::parse_basic_authorization(r.authorization).has_value() && r.path() == "/api/v1/inject";
        if (s == 401 && (response.www_authenticate.empty() ||
                         (trusted ? !basic_to_inject : transport != core::http_transport::tls)))
            std::abort();
        if (answer.deferred() && s != 401) std::abort();
        std::string out;
        core::append_http_response(out, response, r.keep_alive, r.method == core::http_method::head);
        const std::string length = "\r\nContent-Length: " + std::to_string(response.body.size()) + "\r\n";
        if (out.rfind("HTTP/1.1 " + std::to_string(s) + " ", 0) != 0 || out.find(length) == std::string::npos)
            std::abort();
    }
    if (whole.error) {
        const core::http_response e = core::http_error_response(*whole.error);
        if (e.status != 400 && e.status != 413) std::abort();
    }
    return 0;
}
