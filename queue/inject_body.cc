// queue/inject_body.cc: see inject_body.h.
#include "queue/inject_body.h"

#include <simdjson.h>

#include <algorithm>
#include <array>

#include "core/ascii.h"
#include "core/base64.h"
#include "core/log.h"
#include "protocol/address.h"

namespace ringrelay::queue {

namespace {

using failure = std::unexpected<std::string>;

std::string json_name(std::string_view s) {
    std::string out = "\"";
    core::append_json_escaped(out, s);
    out += '"';
    return out;
}

bool has_forbidden_octet(std::string_view s) noexcept {
    return s.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos;
}

bool is_ascii(std::string_view s) noexcept {
    return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

// RFC 5322 §3.6.8 field-name: printable ASCII but ':'.
bool is_field_name(std::string_view s) noexcept {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c > 32 && c < 127 && c != ':'; });
}

// RFC 2045 §5.1 token.
bool is_mime_token(std::string_view s) noexcept {
    constexpr std::string_view specials = "()<>@,;:\\\"/[]?=";
    return !s.empty() && std::all_of(s.begin(), s.end(), [specials](char c) {
        return c > 32 && c < 127 && specials.find(c) == std::string_view::npos;
    });
}

bool is_mime_type(std::string_view s) noexcept {
    const std::size_t slash = s.find('/');
    return slash != std::string_view::npos && is_mime_token(s.substr(0, slash)) && is_mime_token(s.substr(slash + 1));
}

// The mailbox of `address` (as written in JSON, without angle brackets), parsed as SMTP would.
std::optional<protocol::mailbox_path> parse_address(std::string_view address, protocol::path_kind kind,
                                                    std::string& buffer) {
    buffer.assign("<");
    buffer.append(address);
    buffer.append(">");
    auto path = protocol::parse_path(buffer, kind);
    if (!path || path->postmaster_only || path->source_route) return std::nullopt;
    return *path;
}

// The fields a parts object may have.
constexpr std::array<std::string_view, 6> part_fields{"from", "subject", "text_body", "html_body", "attachments",
                                                      "headers"};
// Header fields the builder writes itself (RFC 2045 §4, §5, §6) or takes from a field of "content".
constexpr std::array<std::string_view, 3> built_fields{"content-type", "content-transfer-encoding", "mime-version"};

std::expected<std::string_view, std::string> text_of(simdjson::dom::element value, std::string_view name) {
    std::string_view s;
    if (value.get_string().get(s) != simdjson::SUCCESS) return failure(json_name(name) + ": expected a string");
    return s;
}

std::expected<void, std::string> parse_attachment(simdjson::dom::element value, const std::string& name,
                                                  inject_attachment& out) {
    simdjson::dom::object object;
    if (value.get_object().get(object) != simdjson::SUCCESS) return failure(json_name(name) + ": expected an object");
    bool have_data = false;
    out.content_type = "application/octet-stream";
    for (auto field : object) {
        const std::string_view key = field.key;
        const std::string path = name + "." + std::string(key);
        auto text = text_of(field.value, path);
        if (key != "file_name" && key != "content_type" && key != "data")
            return failure(json_name(name) + ": unknown field " + json_name(key));
        if (!text) return failure(text.error());
        if (key == "file_name") {
            if (has_forbidden_octet(*text)) return failure(json_name(path) + ": CR, LF or NUL in it");
            out.file_name.assign(*text);
        } else if (key == "content_type") {
            if (!is_mime_type(*text)) return failure(json_name(path) + ": not a MIME type (type/subtype): " + json_name(*text));
            out.content_type = core::ascii_lowered(*text);
        } else {
            auto data = core::base64_decode(*text);
            if (!data) return failure(json_name(path) + ": not base64 (RFC 4648 §4, padded, no line breaks)");
            out.data = std::move(*data);
            have_data = true;
        }
    }
    if (!have_data) return failure(json_name(name + ".data") + " is required");
    return {};
}

std::expected<void, std::string> parse_parts(simdjson::dom::object object, inject_parts& out) {
    std::array<bool, part_fields.size()> seen{};
    for (auto field : object) {
        const std::string_view key = field.key;
        const auto at = std::find(part_fields.begin(), part_fields.end(), key);
        if (at == part_fields.end()) return failure("\"content\": unknown field " + json_name(key));
        const auto index = static_cast<std::size_t>(at - part_fields.begin());
        const std::string name = "content." + std::string(key);
        if (seen[index]) return failure(json_name(name) + ": given twice");
        seen[index] = true;
        if (key == "attachments") {
            simdjson::dom::array items;
            if (field.value.get_array().get(items) != simdjson::SUCCESS)
                return failure(json_name(name) + ": expected an array");
            std::size_t i = 0;
            for (auto item : items) {
                auto& a = out.attachments.emplace_back();
                if (auto ok = parse_attachment(item, name + "[" + std::to_string(i) + "]", a); !ok) return ok;
                ++i;
            }
            continue;
        }
        if (key == "headers") {
            simdjson::dom::object headers;
            if (field.value.get_object().get(headers) != simdjson::SUCCESS)
                return failure(json_name(name) + ": expected an object");
            for (auto header : headers) {
                const std::string_view hname = header.key;
                const std::string path = name + "." + std::string(hname);
                if (!is_field_name(hname)) return failure(json_name(name) + ": not a header field name: " + json_name(hname));
                if (std::any_of(built_fields.begin(), built_fields.end(),
                                [hname](std::string_view b) { return core::iequals(hname, b); }))
                    return failure(json_name(path) + ": made by the relay");
                if (core::iequals(hname, "from") || core::iequals(hname, "subject"))
                    return failure(json_name(path) + ": give it as \"content." + core::ascii_lowered(hname) + "\"");
                auto value = text_of(header.value, path);
                if (!value) return failure(value.error());
                if (has_forbidden_octet(*value)) return failure(json_name(path) + ": CR, LF or NUL in it");
                out.headers.emplace_back(hname, *value);
            }
            continue;
        }
        auto value = text_of(field.value, name);
        if (!value) return failure(value.error());
        if (key == "from" || key == "subject") {
            if (has_forbidden_octet(*value)) return failure(json_name(name) + ": CR, LF or NUL in it");
            (key == "from" ? out.from : out.subject).assign(*value);
        } else {
            if (value->find('\0') != std::string_view::npos) return failure(json_name(name) + ": a NUL in it");
            (key == "text_body" ? out.text_body : out.html_body).assign(*value);
        }
    }
    if (out.from.empty()) return failure(std::string("\"content.from\" is required"));
    // The address in "Name <a@example.org>", or the whole value.
    std::string_view address = out.from;
    if (const std::size_t open = address.rfind('<'); open != std::string_view::npos) {
        if (!address.ends_with('>')) return failure("\"content.from\": not an address: " + json_name(out.from));
        address = address.substr(open + 1, address.size() - open - 2);
    }
    std::string buffer;
    const auto path = parse_address(address, protocol::path_kind::forward_path, buffer);
    if (!path || path->mailbox.empty()) return failure("\"content.from\": not an address: " + json_name(out.from));
    if (out.text_body.empty() && out.html_body.empty() && out.attachments.empty())
        return failure(std::string("\"content\": one of \"text_body\", \"html_body\", \"attachments\" is required"));
    return {};
}

// ---- the MIME builder --------------------------------------------------------------------

// `text` with every line end CRLF (lone LF or CR included), ending in CRLF unless empty.
std::string crlf_lines(std::string_view text) {
    std::string out;
    out.reserve(text.size() + text.size() / 32 + 2);
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (c == '\r') {
            out += "\r\n";
            if (i + 1 < text.size() && text[i + 1] == '\n') ++i;
        } else if (c == '\n') {
            out += "\r\n";
        } else {
            out += c;
        }
    }
    if (!out.empty() && !out.ends_with("\r\n")) out += "\r\n";
    return out;
}

// The longest line of CRLF text (without its CRLF).
std::size_t longest_line(std::string_view text) noexcept {
    std::size_t longest = 0;
    while (!text.empty()) {
        const std::size_t end = text.find("\r\n");
        const std::size_t len = end == std::string_view::npos ? text.size() : end;
        longest = std::max(longest, len);
        text.remove_prefix(end == std::string_view::npos ? text.size() : end + 2);
    }
    return longest;
}

// 7bit may carry it (RFC 2045 §2.7): ASCII, short lines; and it cannot hold a boundary ("=_"
// never appears in quoted-printable or base64 output, so boundaries with it are safe there).
bool seven_bit(std::string_view crlf_text) noexcept {
    return is_ascii(crlf_text) && longest_line(crlf_text) <= 76 && crlf_text.find("=_") == std::string_view::npos;
}

// RFC 2045 §6.7, for CRLF text: lines of at most 76 octets, soft breaks "=".
void append_quoted_printable(std::string& out, std::string_view crlf_text) {
    static constexpr char hex[] = "0123456789ABCDEF";
    std::size_t column = 0;
    auto put = [&](std::string_view piece) {
        if (column + piece.size() > 75) {
            out += "=\r\n";
            column = 0;
        }
        out += piece;
        column += piece.size();
    };
    for (std::size_t i = 0; i < crlf_text.size(); ++i) {
        const auto c = static_cast<unsigned char>(crlf_text[i]);
        if (c == '\r' && i + 1 < crlf_text.size() && crlf_text[i + 1] == '\n') {
            out += "\r\n";
            column = 0;
            ++i;
            continue;
        }
        const bool line_end = i + 1 == crlf_text.size() || crlf_text[i + 1] == '\r';
        if ((c >= 33 && c <= 126 && c != '=') || ((c == ' ' || c == '\t') && !line_end)) {
            const char one[1] = {static_cast<char>(c)};
            put(std::string_view(one, 1));
        } else {
            const char three[3] = {'=', hex[c >> 4], hex[c & 15]};
            put(std::string_view(three, 3));
        }
    }
}

// Base64 in lines of 76 (RFC 2045 §6.8).
void append_base64_lines(std::string& out, std::string_view data) {
    const std::string encoded = core::base64_encode(data);
    for (std::size_t i = 0; i < encoded.size(); i += 76) {
        out.append(encoded, i, 76);
        out += "\r\n";
    }
}

// RFC 2047 encoded words of at most 45 octets of UTF-8 each (75 characters), folded.
void append_encoded_words(std::string& out, std::string_view text) {
    bool first = true;
    while (!text.empty()) {
        std::size_t n = std::min<std::size_t>(45, text.size());
        // Not inside a UTF-8 sequence: back up over continuation octets.
        while (n < text.size() && n > 1 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;
        if (!first) out += "\r\n ";
        out += "=?UTF-8?B?";
        out += core::base64_encode(text.substr(0, n));
        out += "?=";
        text.remove_prefix(n);
        first = false;
    }
}

// "Name: value\r\n", the value as it is when it is ASCII and fits in a line, else encoded words.
void append_header(std::string& out, std::string_view name, std::string_view value) {
    out += name;
    out += ": ";
    if (is_ascii(value) && name.size() + 2 + value.size() <= max_line_octets) {
        out += value;
    } else {
        append_encoded_words(out, value);
    }
    out += "\r\n";
}

// From: "Name <address>" with a non-ASCII name gets the name encoded; an address is kept.
void append_from(std::string& out, std::string_view from) {
    const std::size_t open = from.rfind('<');
    if (is_ascii(from) || open == std::string_view::npos) {
        out += "From: ";
        out += from;
        out += "\r\n";
        return;
    }
    std::string_view name = from.substr(0, open);
    while (name.ends_with(' ')) name.remove_suffix(1);
    out += "From: ";
    append_encoded_words(out, name);
    out += "\r\n ";
    out += from.substr(open);
    out += "\r\n";
}

void append_text_part(std::string& out, std::string_view subtype, std::string_view text) {
    const std::string lines = crlf_lines(text);
    out += "Content-Type: text/";
    out += subtype;
    out += "; charset=utf-8\r\n";
    if (seven_bit(lines)) {
        out += "Content-Transfer-Encoding: 7bit\r\n\r\n";
        out += lines;
    } else {
        out += "Content-Transfer-Encoding: quoted-printable\r\n\r\n";
        append_quoted_printable(out, lines);
        if (!out.ends_with("\r\n")) out += "\r\n";
    }
}

// Content-Disposition's filename (RFC 2183), RFC 2231 for a non-ASCII one.
void append_attachment(std::string& out, const inject_attachment& a) {
    out += "Content-Type: ";
    out += a.content_type;
    out += "\r\nContent-Disposition: attachment";
    if (!a.file_name.empty()) {
        if (is_ascii(a.file_name)) {
            out += ";\r\n filename=\"";
            for (char c : a.file_name) {
                if (c == '"' || c == '\\') out += '\\';
                out += c;
            }
            out += '"';
        } else {
            static constexpr char hex[] = "0123456789ABCDEF";
            out += ";\r\n filename*=UTF-8''";
            std::size_t column = 21;
            for (char ch : a.file_name) {
                const auto c = static_cast<unsigned char>(ch);
                if (column > 900) {  // a very long name: RFC 2231 §3 continuations would do; cut
                    break;
                }
                if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '.' || c == '-' || c == '_') {
                    out += static_cast<char>(c);
                    ++column;
                } else {
                    out += '%';
                    out += hex[c >> 4];
                    out += hex[c & 15];
                    column += 3;
                }
            }
        }
    }
    out += "\r\nContent-Transfer-Encoding: base64\r\n\r\n";
    append_base64_lines(out, a.data);
}

std::string boundary_of(const message_stamp& stamp, int n) {
    return std::string(stamp.boundary) + "_" + std::to_string(n);
}

// The body of the text and html parts: one part, or multipart/alternative (the CRLF before each
// delimiter after a part is the delimiter's, RFC 2046 §5.1.1).
void append_body_parts(std::string& out, const inject_parts& parts, const message_stamp& stamp) {
    if (!parts.text_body.empty() && !parts.html_body.empty()) {
        const std::string b = boundary_of(stamp, 2);
        out += "Content-Type: multipart/alternative; boundary=\"" + b + "\"\r\n\r\n";
        out += "--" + b + "\r\n";
        append_text_part(out, "plain", parts.text_body);
        out += "\r\n--" + b + "\r\n";
        append_text_part(out, "html", parts.html_body);
        out += "\r\n--" + b + "--\r\n";
    } else if (!parts.html_body.empty()) {
        append_text_part(out, "html", parts.html_body);
    } else {
        append_text_part(out, "plain", parts.text_body);
    }
}

std::optional<std::string_view> given_header(const inject_parts& parts, std::string_view name) {
    for (const auto& [n, v] : parts.headers)
        if (core::iequals(n, name)) return v;
    return std::nullopt;
}

// Whether the header section of CRLF text has a field named `name`.
bool has_field(std::string_view message, std::string_view name) noexcept {
    while (!message.empty() && !message.starts_with("\r\n")) {
        const std::size_t end = message.find("\r\n");
        const std::string_view line = message.substr(0, end);
        if (line.size() > name.size() && line[name.size()] == ':' && core::iequals(line.substr(0, name.size()), name))
            return true;
        if (end == std::string_view::npos) break;
        message.remove_prefix(end + 2);
    }
    return false;
}

}  // namespace

std::expected<inject_request, std::string> parse_inject_body(std::string_view body) {
    inject_request r;
    simdjson::dom::parser parser;
    const simdjson::padded_string padded(body);
    simdjson::dom::element root;
    if (auto err = parser.parse(padded).get(root); err)
        return failure(std::string("body: not valid JSON: ") + simdjson::error_message(err));
    simdjson::dom::object top;
    if (root.get_object().get(top) != simdjson::SUCCESS) return failure(std::string("body: expected a JSON object"));
    bool have_sender = false, have_recipients = false, have_content = false;
    std::string buffer;
    for (auto field : top) {
        const std::string_view key = field.key;
        if (key == "envelope_sender") {
            if (have_sender) return failure(std::string("\"envelope_sender\": given twice"));
            have_sender = true;
            auto text = text_of(field.value, key);
            if (!text) return failure(text.error());
            const auto path = parse_address(*text, protocol::path_kind::reverse_path, buffer);
            if (!path) return failure("\"envelope_sender\": not an address: " + json_name(*text));
            r.smtputf8 |= path->non_ascii;
            r.envelope_sender.assign(path->mailbox);
        } else if (key == "recipients") {
            if (have_recipients) return failure(std::string("\"recipients\": given twice"));
            have_recipients = true;
            simdjson::dom::array items;
            if (field.value.get_array().get(items) != simdjson::SUCCESS)
                return failure(std::string("\"recipients\": expected an array"));
            std::size_t i = 0;
            for (auto item : items) {
                const std::string name = "recipients[" + std::to_string(i++) + "]";
                simdjson::dom::object object;
                if (item.get_object().get(object) != simdjson::SUCCESS)
                    return failure(json_name(name) + ": expected an object");
                bool have_email = false;
                for (auto f : object) {
                    if (std::string_view(f.key) != "email")
                        return failure(json_name(name) + ": unknown field " + json_name(f.key));
                    if (have_email) return failure(json_name(name + ".email") + ": given twice");
                    have_email = true;
                    auto text = text_of(f.value, name + ".email");
                    if (!text) return failure(text.error());
                    const auto path = parse_address(*text, protocol::path_kind::forward_path, buffer);
                    if (!path || path->mailbox.empty())
                        return failure(json_name(name + ".email") + ": not an address: " + json_name(*text));
                    r.smtputf8 |= path->non_ascii;
                    r.recipients.emplace_back(path->mailbox);
                }
                if (!have_email) return failure(json_name(name + ".email") + " is required");
            }
            if (r.recipients.empty()) return failure(std::string("\"recipients\": empty"));
        } else if (key == "content") {
            if (have_content) return failure(std::string("\"content\": given twice"));
            have_content = true;
            simdjson::dom::object object;
            std::string_view text;
            if (field.value.get_string().get(text) == simdjson::SUCCESS) {
                if (text.empty()) return failure(std::string("\"content\": empty"));
                r.raw.assign(text);
            } else if (field.value.get_object().get(object) == simdjson::SUCCESS) {
                if (auto ok = parse_parts(object, r.parts.emplace()); !ok) return failure(ok.error());
            } else {
                return failure(std::string("\"content\": expected a string or an object"));
            }
        } else {
            return failure("unknown field " + json_name(key));
        }
    }
    if (!have_sender) return failure(std::string("\"envelope_sender\" is required"));
    if (!have_recipients) return failure(std::string("\"recipients\" is required"));
    if (!have_content) return failure(std::string("\"content\" is required"));
    return r;
}

std::string build_mime_message(const inject_parts& parts, const message_stamp& stamp) {
    std::string out;
    out.reserve(1024 + parts.text_body.size() * 2 + parts.html_body.size() * 2 + parts.attachments.size() * 64);
    const std::optional<std::string_view> date = given_header(parts, "Date");
    const std::optional<std::string_view> id = given_header(parts, "Message-ID");
    if (!date) append_header(out, "Date", stamp.date);
    append_from(out, parts.from);
    if (!parts.subject.empty()) append_header(out, "Subject", parts.subject);
    if (!id) append_header(out, "Message-ID", stamp.message_id);
    out += "MIME-Version: 1.0\r\n";
    for (const auto& [name, value] : parts.headers) append_header(out, name, value);
    if (parts.attachments.empty()) {
        append_body_parts(out, parts, stamp);
        return out;
    }
    const std::string b = boundary_of(stamp, 1);
    out += "Content-Type: multipart/mixed; boundary=\"" + b + "\"\r\n\r\n";
    // The CRLF before a delimiter belongs to it (RFC 2046 §5.1.1): each part's own last line
    // end is kept by writing one more.
    bool first = true;
    auto delimiter = [&] {
        out += first ? "--" : "\r\n--";
        out += b;
        out += "\r\n";
        first = false;
    };
    if (!parts.text_body.empty() || !parts.html_body.empty()) {
        delimiter();
        append_body_parts(out, parts, stamp);
    }
    for (const inject_attachment& a : parts.attachments) {
        delimiter();
        append_attachment(out, a);
    }
    out += "\r\n--" + b + "--\r\n";
    return out;
}

std::expected<std::string, std::string> prepare_raw_message(std::string_view content, const message_stamp& stamp) {
    if (content.find('\0') != std::string_view::npos) return failure(std::string("\"content\": a NUL in it"));
    std::string lines = crlf_lines(content);
    std::size_t number = 1;
    for (std::string_view rest = lines; !rest.empty(); ++number) {
        const std::size_t end = rest.find("\r\n");
        if (end > max_line_octets)
            return failure("\"content\": line " + std::to_string(number) + " is longer than 998 octets");
        rest.remove_prefix(end + 2);
    }
    const std::size_t first_end = lines.find("\r\n");
    const std::string_view first(lines.data(), first_end);
    const std::size_t colon = first.find(':');
    if (colon == std::string_view::npos || !is_field_name(first.substr(0, colon)))
        return failure(std::string("\"content\": does not start with a header field (RFC 5322 §2.2)"));
    std::string added;
    if (!has_field(lines, "Date")) append_header(added, "Date", stamp.date);
    if (!has_field(lines, "Message-ID")) append_header(added, "Message-ID", stamp.message_id);
    if (added.empty()) return lines;
    return added + lines;
}

}  // namespace ringrelay::queue
