// tests/fuzz/fuzz_ehlo_reply.cc: libFuzzer target for reading a next hop's EHLO reply
// (protocol/ehlo_reply.h, RFC 5321 §4.1.1.1). The text is given directly (any octets, any
// length) or, when the mode byte's bit 0 is set, as server bytes through reply_parser, as the
// client session does (every complete reply's text is parsed).
// Invariants: parse_ehlo_reply() equals a simple reference written from the header's contract
// (split into lines, upper-case, tokenize); it does not depend on ASCII case (the text upper- and
// lower-cased parses the same); it is line-local (each line after the first, parsed alone
// behind a server name, gives flags whose union is the whole result, and the last SIZE line
// gives the size); a size limit implies SIZE was declared.
// Input layout: [mode byte] text...
// SECURITY: every octet comes from the next hop.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/ehlo_reply.h"
#include "protocol/reply_parser.h"

using namespace ringrelay::protocol;

namespace {

std::vector<std::string_view> split(std::string_view s, char sep) {
    std::vector<std::string_view> parts;
    while (true) {
        const std::size_t at = s.find(sep);
        parts.push_back(s.substr(0, at));
        if (at == std::string_view::npos) return parts;
        s.remove_prefix(at + 1);
    }
}

std::string upper(std::string_view s) {
    std::string u(s);
    for (char& c : u) {
        if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    }
    return u;
}

std::string lower(std::string_view s) {
    std::string l(s);
    for (char& c : l) {
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    return l;
}

void reference_mechanisms(std::string_view list, peer_extensions& x) {
    for (const std::string_view m : split(list, ' ')) {
        if (m == "PLAIN") x.auth_plain = true;
        if (m == "LOGIN") x.auth_login = true;
    }
}

// The header's contract, the obvious way.
peer_extensions reference(std::string_view text) {
    peer_extensions x;
    const std::vector<std::string_view> lines = split(text, '\n');
    for (std::size_t i = 1; i < lines.size(); ++i) {
        const std::string line = upper(lines[i]);
        const std::size_t sp = line.find(' ');
        const std::string keyword = line.substr(0, sp);
        const std::string param = sp == std::string::npos ? std::string() : line.substr(sp + 1);
        if (keyword == "PIPELINING") x.pipelining = true;
        if (keyword == "CHUNKING") x.chunking = true;
        if (keyword == "8BITMIME") x.eight_bit_mime = true;
        if (keyword == "SMTPUTF8") x.smtputf8 = true;
        if (keyword == "ENHANCEDSTATUSCODES") x.enhanced_status_codes = true;
        if (keyword == "STARTTLS") x.starttls = true;
        if (keyword == "AUTH") reference_mechanisms(param, x);
        if (keyword.size() > 5 && keyword.starts_with("AUTH=")) reference_mechanisms(std::string_view(line).substr(5), x);
        if (keyword == "SIZE") {
            x.size_declared = true;
            x.size_limit = 0;
            std::uint64_t n = 0;
            bool ok = !param.empty();
            for (const char c : param) {
                const auto d = static_cast<std::uint64_t>(c - '0');
                if (c < '0' || c > '9' || n > (UINT64_MAX - d) / 10) {
                    ok = false;
                    break;
                }
                n = n * 10 + d;
            }
            if (ok) x.size_limit = n;
        }
    }
    return x;
}

// Each line on its own behind a server name: flags add up, the last SIZE line counts.
peer_extensions line_by_line(std::string_view text) {
    peer_extensions all;
    const std::vector<std::string_view> lines = split(text, '\n');
    for (std::size_t i = 1; i < lines.size(); ++i) {
        const peer_extensions x = parse_ehlo_reply("mx\n" + std::string(lines[i]));
        all.pipelining |= x.pipelining;
        all.chunking |= x.chunking;
        all.eight_bit_mime |= x.eight_bit_mime;
        all.smtputf8 |= x.smtputf8;
        all.enhanced_status_codes |= x.enhanced_status_codes;
        all.starttls |= x.starttls;
        all.auth_plain |= x.auth_plain;
        all.auth_login |= x.auth_login;
        if (x.size_declared) {
            all.size_declared = true;
            all.size_limit = x.size_limit;
        }
    }
    return all;
}

void check(std::string_view text) {
    const peer_extensions x = parse_ehlo_reply(text);
    if (x != reference(text)) std::abort();
    if (x != parse_ehlo_reply(upper(text)) || x != parse_ehlo_reply(lower(text))) std::abort();
    if (x != line_by_line(text)) std::abort();
    if (x.size_limit != 0 && !x.size_declared) std::abort();
    if (text.find('\n') == std::string_view::npos && x != peer_extensions{}) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
    if ((data[0] & 1) == 0) {
        check(in);
        return 0;
    }
    reply_parser parser;
    while (!in.empty()) {
        const auto progress = parser.feed(in);
        if (!progress) return 0;  // the session would close on it
        in.remove_prefix(progress->consumed);
        if (progress->complete) check(parser.reply().text);
    }
    return 0;
}
