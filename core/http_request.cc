// core/http_request.cc: see http_request.h.
#include "core/http_request.h"

#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <openssl/crypto.h>

#include <algorithm>
#include <charconv>

#include "core/base64.h"

namespace ringrelay::core {

namespace http = boost::beast::http;

struct http_reader::parser {
    std::optional<http::request_parser<http::string_body>> p;
};

namespace {

http_method method_of(http::verb v) noexcept {
    switch (v) {
    case http::verb::get: return http_method::get;
    case http::verb::head: return http_method::head;
    case http::verb::post: return http_method::post;
    case http::verb::put: return http_method::put;
    case http::verb::delete_: return http_method::delete_method;
    default: return http_method::other;
    }
}

}  // namespace

http_reader::http_reader(std::size_t max_header, std::size_t max_body)
    : _parser(std::make_unique<parser>()), _max_header(max_header), _max_body(max_body) {}

http_reader::~http_reader() = default;

void http_reader::receive(std::string_view data) {
    if (_error) return;
    if (_pos == _input.size()) {
        _input.clear();
        _pos = 0;
        _scan = 0;
    } else if (_pos > 64 * 1024 && _pos * 2 > _input.size()) {
        _input.erase(0, _pos);
        _scan -= _pos;
        _pos = 0;
    }
    _input.append(data);
}

std::expected<std::optional<http_request>, http_read_error> http_reader::next() {
    if (_error) return std::unexpected(*_error);
    auto& p = _parser->p;
    while (_pos < _input.size()) {
        if (!p || !p->is_header_done()) {
            // Beast is given a header section only once it is whole (CRLF CRLF): given part of
            // one it may refuse a bad field at once or wait for the end, depending on where
            // the receives split it (found by fuzz_http_request); whole, the same bytes always
            // get the same answer. Bounded by the header limit meanwhile.
            // Looked for within the limit only, so that the answer does not depend on how
            // much arrived at once.
            const std::size_t from = std::max(_pos, _scan < 3 ? std::size_t{0} : _scan - 3);
            const std::size_t to = std::min(_input.size(), _pos + _max_header);
            const std::string_view window(_input.data(), to);
            if (from >= to || window.find("\r\n\r\n", from) == std::string_view::npos) {
                _scan = to;
                if (_input.size() - _pos >= _max_header) {
                    _error = http_read_error::header_too_large;
                    return std::unexpected(*_error);
                }
                return std::optional<http_request>{};
            }
        }
        if (!p) {
            p.emplace();
            p->header_limit(static_cast<std::uint32_t>(_max_header));
            p->body_limit(_max_body);
            p->eager(true);
        }
        boost::beast::error_code ec;
        const std::size_t used = p->put(boost::asio::const_buffer(_input.data() + _pos, _input.size() - _pos), ec);
        _pos += used;
        if (used > 0) _started = true;
        if (ec == http::error::need_more) {
            if (p->is_header_done()) {
                // The body's rest. Beast takes chunk data as it comes but holds back a chunk
                // line or the trailer until it is whole, with no limit of its own: a line
                // that never ends would grow _input for ever.
                if (_input.size() - _pos > _max_header) {
                    _error = http_read_error::framing_too_large;
                    return std::unexpected(*_error);
                }
                return std::optional<http_request>{};
            }
            // The whole header section was there and Beast still wants more: a start line or
            // field too short for its look-ahead ("HTTP/1.1" cut short). Given more bytes it
            // would look for a second end of header (its skip_), so it is refused here.
            _error = http_read_error::bad_request;
            return std::unexpected(*_error);
        }
        if (ec) {
            _error = ec == http::error::header_limit  ? http_read_error::header_too_large
                     : ec == http::error::body_limit ? http_read_error::body_too_large
                                                     : http_read_error::bad_request;
            return std::unexpected(*_error);
        }
        if (p->is_done()) {
            auto& m = p->get();
            http_request r;
            r.method = method_of(m.method());
            r.target.assign(m.target().data(), m.target().size());
            r.body = std::move(m.body());
            if (const auto field = m.find(http::field::authorization); field != m.end())
                r.authorization.assign(field->value().data(), field->value().size());
            r.keep_alive = m.keep_alive();
            p.reset();
            _started = false;
            _scan = _pos;
            return std::optional<http_request>{std::move(r)};
        }
        if (used == 0) return std::optional<http_request>{};  // nothing taken: wait for more
    }
    return std::optional<http_request>{};
}

std::string_view http_reason(unsigned status) noexcept {
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}

void append_http_response(std::string& out, const http_response& response, bool keep_alive, bool head) {
    char digits[24];
    out += "HTTP/1.1 ";
    auto r = std::to_chars(digits, digits + sizeof digits, response.status);
    out.append(digits, r.ptr);
    out += ' ';
    out += http_reason(response.status);
    out += "\r\nContent-Type: ";
    out += response.content_type;
    out += "\r\nContent-Length: ";
    r = std::to_chars(digits, digits + sizeof digits, response.body.size());
    out.append(digits, r.ptr);
    if (!response.allow.empty()) {
        out += "\r\nAllow: ";
        out += response.allow;
    }
    if (!response.fields.empty()) {
        out += "\r\n";
        out += response.fields;
    }
    if (!response.www_authenticate.empty()) {
        out += "\r\nWWW-Authenticate: ";
        out += response.www_authenticate;
    }
    out += keep_alive ? "\r\nConnection: keep-alive\r\n\r\n" : "\r\nConnection: close\r\n\r\n";
    if (!head) out += response.body;
}

std::string json_error(std::string_view message) {
    std::string out = "{\"error\": \"";
    for (const char ch : message) {
        const auto c = static_cast<unsigned char>(ch);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += ch;
        } else if (c < 0x20) {
            constexpr char hex[] = "0123456789abcdef";
            out += "\\u00";
            out += hex[c >> 4];
            out += hex[c & 15];
        } else {
            out += ch;
        }
    }
    out += "\"}\n";
    return out;
}

http_response http_json_error(std::uint16_t status, std::string_view message) {
    http_response r;
    r.status = status;
    r.body = json_error(message);
    return r;
}

http_response http_error_response(http_read_error error) {
    switch (error) {
    case http_read_error::header_too_large:
        return http_json_error(413, "request header too large");
    case http_read_error::body_too_large:
        return http_json_error(413, "request body too large");
    case http_read_error::framing_too_large:
        return http_json_error(413, "chunk framing too large");
    case http_read_error::bad_request: break;
    }
    return http_json_error(400, "malformed HTTP request");
}


std::expected<basic_credentials, basic_auth_error> parse_basic_authorization(std::string_view value) {
    if (value.empty()) return std::unexpected(basic_auth_error::missing);
    constexpr std::string_view scheme = "basic";
    if (value.size() <= scheme.size() || value[scheme.size()] != ' ')
        return std::unexpected(basic_auth_error::other_scheme);
    for (std::size_t i = 0; i < scheme.size(); ++i)
        if ((value[i] | 0x20) != scheme[i]) return std::unexpected(basic_auth_error::other_scheme);
    value.remove_prefix(scheme.size());
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    while (!value.empty() && value.back() == ' ') value.remove_suffix(1);
    auto decoded = base64_decode(value, base64_padding::required);
    if (!decoded || value.empty()) return std::unexpected(basic_auth_error::bad_base64);
    const std::size_t colon = decoded->find(':');
    if (colon == std::string::npos) {
        OPENSSL_cleanse(decoded->data(), decoded->size());
        return std::unexpected(basic_auth_error::missing_colon);
    }
    const auto control = [](char ch) {
        const auto c = static_cast<unsigned char>(ch);
        return c < 0x20 || c == 0x7f;
    };
    if (colon == 0 || std::any_of(decoded->begin(), decoded->end(), control)) {
        OPENSSL_cleanse(decoded->data(), decoded->size());
        return std::unexpected(basic_auth_error::bad_characters);
    }
    basic_credentials out;
    out.user.assign(*decoded, 0, colon);
    out.password.assign(*decoded, colon + 1);
    OPENSSL_cleanse(decoded->data(), decoded->size());
    return out;
}

}  // namespace ringrelay::core
