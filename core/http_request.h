// core/http_request.h: HTTP/1.1 requests read from a connection's bytes (RFC 9112) with
// Boost.Beast's http::request_parser fed from our own buffers (no Asio sockets), and responses
// written into a send buffer. Knows nothing of what is served (queue/http_api.h routes).
//
// Reading: receive() copies what arrives (a request may straddle receives; the endpoint
// serves operators and Prometheus, not the mail path), next() hands out each whole request
// in order, so a pipelined run of requests in one receive comes out one by one. A fresh
// parser per request: keep-alive and pipelining. Limits: the header section (413), the
// body (413, told as soon as Content-Length or the chunks pass it), and the chunk framing
// (413: a chunk-size line, its extensions or the trailer fields Beast is still waiting to see
// whole may not pass the header limit; Beast 1.74 bounds none of them). After an error
// nothing more is read: the connection answers and closes.
//
// Ownership: one connection's, on its shard thread.
// SECURITY: every byte is the client's; Beast bounds the header and the body, and rejects
// what RFC 9112 does not allow (bad start line, bad header field, bad chunk framing).
#pragma once
#include <cstddef>
#include <cstdint>
#include <expected>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace ringrelay::core {

inline constexpr std::size_t http_max_header = 16 * 1024;  // request line and header fields
inline constexpr std::size_t http_max_body = 1024 * 1024;

enum class http_method : std::uint8_t { get, head, post, put, delete_method, other };

// What a request came over (--http or --http-tls); set by the connection, not the reader.
enum class http_transport : std::uint8_t { plain, tls };

// One whole request. Owned by the caller of next().
struct http_request {
    http_method method = http_method::other;
    std::string target;  // as sent: "/metrics?x=1"
    std::string body;
    // The Authorization field's value as sent (RFC 9110 §11.6.2; the first one if repeated);
    // empty without one. parse_basic_authorization() reads it.
    std::string authorization;
    // HTTP/1.1 without "Connection: close", or HTTP/1.0 with "Connection: keep-alive".
    bool keep_alive = true;
    http_transport transport = http_transport::plain;
    // The path part of the target (before '?'), a view into `target`.
    [[nodiscard]] std::string_view path() const noexcept {
        const std::string_view t = target;
        return t.substr(0, t.find('?'));
    }
};

enum class http_read_error : std::uint8_t {
    bad_request,       // 400: not a request RFC 9112 allows
    header_too_large,  // 413: over the header limit
    body_too_large,    // 413: over the body limit
    framing_too_large, // 413: a chunk line or the trailer not whole within the header limit
};

class http_reader {
public:
    explicit http_reader(std::size_t max_header = http_max_header, std::size_t max_body = http_max_body);
    http_reader(const http_reader&) = delete;
    http_reader& operator=(const http_reader&) = delete;
    ~http_reader();

    // More input (valid during the call only: copied).
    void receive(std::string_view data);
    // The next whole request in the input so far; nullopt: more input is needed. After an
    // error it returns the same error again.
    [[nodiscard]] std::expected<std::optional<http_request>, http_read_error> next();
    // Bytes of a request not yet whole have arrived (a 408 is owed if time runs out).
    [[nodiscard]] bool partial() const noexcept { return _pos < _input.size() || _started; }
    // Input received and not yet taken by the parser (bounded: header limit, or a request
    // whole in it; tests/fuzz check it).
    [[nodiscard]] std::size_t unconsumed() const noexcept { return _input.size() - _pos; }

private:
    struct parser;  // Beast's, kept out of this header
    std::unique_ptr<parser> _parser;
    const std::size_t _max_header;
    const std::size_t _max_body;
    std::string _input;
    std::size_t _pos = 0;   // first byte of _input not given to the parser
    std::size_t _scan = 0;  // the end of the header section was looked for up to here
    bool _started = false;  // the parser has taken bytes of the request in progress
    std::optional<http_read_error> _error;
};

// What a handler answers. The connection adds the status line, Content-Length and Connection.
struct http_response {
    std::uint16_t status = 200;
    std::string_view content_type = "application/json";  // a literal: outlives the response
    std::string body;
    std::string_view allow;  // the Allow field of a 405 (RFC 9110 §15.5.6); a literal
    // More header fields, "Name: value" lines joined by CRLF, none after the last; a literal.
    std::string_view fields;
    // The WWW-Authenticate field of a 401 (RFC 9110 §11.6.1); a literal.
    std::string_view www_authenticate;
};

// HTTP Basic credentials (RFC 7617) from an Authorization field's value.
struct basic_credentials {
    std::string user;
    std::string password;  // the caller wipes it once used (OPENSSL_cleanse)
};

enum class basic_auth_error : std::uint8_t {
    missing,         // no Authorization field
    other_scheme,    // not "Basic" (RFC 9110 §11.1: the scheme is case-insensitive)
    bad_base64,      // the token is not canonical padded base64 (RFC 4648 §4)
    missing_colon,   // the decoded credentials have no ':' between user-id and password
    bad_characters,  // an empty user-id, or a control character in either (RFC 7617 §2)
};

// "Basic dXNlcjpwYXNz" -> {"user", "pass"}: the scheme, one or more spaces, the token68, and
// nothing else but trailing spaces; the user-id ends at the first ':' (RFC 7617 §2).
// SECURITY: `value` is the client's; nothing reads past it.
[[nodiscard]] std::expected<basic_credentials, basic_auth_error> parse_basic_authorization(std::string_view value);

// "Not Found" for 404; "Unknown" for a status it does not know.
[[nodiscard]] std::string_view http_reason(unsigned status) noexcept;
// Appends the whole response to `out`; `head`: the header only (a HEAD request).
void append_http_response(std::string& out, const http_response& response, bool keep_alive, bool head);
// {"error": "<message>"} with the message escaped as a JSON string (RFC 8259 §7).
[[nodiscard]] std::string json_error(std::string_view message);
// `status` with {"error": message} as its body.
[[nodiscard]] http_response http_json_error(std::uint16_t status, std::string_view message);
// The response to a read error (400 or 413).
[[nodiscard]] http_response http_error_response(http_read_error error);

}  // namespace ringrelay::core
