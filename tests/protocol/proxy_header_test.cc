// tests/protocol/proxy_header_test.cc: the PROXY protocol header parser (issue 19): versions 1
// and 2 as HAProxy sends them, every prefix of a valid header (byte by byte), and a table of
// malformed headers, each with the reason the log gets.
#include "protocol/proxy_header.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

using namespace ringrelay::protocol;

namespace {

// "ADDR:PORT" / "[ADDR]:PORT" of an endpoint the parser made.
std::string text_of(const ringrelay::core::endpoint& e) {
    char buf[INET6_ADDRSTRLEN] = {};
    if (e.family() == AF_INET) {
        const auto* sa = reinterpret_cast<const sockaddr_in*>(&e.storage);
        inet_ntop(AF_INET, &sa->sin_addr, buf, sizeof buf);
        return std::string(buf) + ":" + std::to_string(ntohs(sa->sin_port));
    }
    if (e.family() == AF_INET6) {
        const auto* sa = reinterpret_cast<const sockaddr_in6*>(&e.storage);
        inet_ntop(AF_INET6, &sa->sin6_addr, buf, sizeof buf);
        return "[" + std::string(buf) + "]:" + std::to_string(ntohs(sa->sin6_port));
    }
    return "?";
}

const std::string v2_sig("\r\n\r\n\0\r\nQUIT\n", 12);

// A version 2 header: signature, version/command byte, family byte, the body's length, body.
std::string v2(unsigned char ver_cmd, unsigned char fam, const std::string& body) {
    std::string h = v2_sig;
    h += static_cast<char>(ver_cmd);
    h += static_cast<char>(fam);
    h += static_cast<char>(body.size() >> 8);
    h += static_cast<char>(body.size() & 0xFF);
    return h + body;
}

// 192.0.2.1:56324 -> 198.51.100.1:25, as version 2's INET body.
std::string inet_body() {
    return std::string("\xC0\x00\x02\x01\xC6\x33\x64\x01\xDC\x04\x00\x19", 12);
}

// 2001:db8::1 port 40000 -> 2001:db8::2 port 587.
std::string inet6_body() {
    std::string b(36, '\0');
    const unsigned char src[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    const unsigned char dst[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2};
    for (int i = 0; i < 16; ++i) {
        b[i] = static_cast<char>(src[i]);
        b[16 + i] = static_cast<char>(dst[i]);
    }
    b[32] = static_cast<char>(40000 >> 8);
    b[33] = static_cast<char>(40000 & 0xFF);
    b[34] = 0x02;
    b[35] = 0x4B;
    return b;
}

// Every proper prefix needs more; the whole, followed by SMTP bytes, is done and consumes
// exactly the header.
proxy_header parse_in_pieces(const std::string& header) {
    for (std::size_t n = 0; n < header.size(); ++n) {
        const proxy_header h = parse_proxy_header(std::string_view(header).substr(0, n));
        EXPECT_EQ(h.status, proxy_status::need_more) << "prefix of " << n << " bytes: " << h.error;
    }
    const std::string with_smtp = header + "EHLO client.example\r\n";
    proxy_header h = parse_proxy_header(with_smtp);
    EXPECT_EQ(h.status, proxy_status::done) << h.error;
    EXPECT_EQ(h.consumed, header.size());
    return h;
}

TEST(ProxyHeader, Version1Tcp4GivesTheClientAndTheBalancerAddresses) {
    const proxy_header h = parse_in_pieces("PROXY TCP4 192.0.2.1 198.51.100.1 56324 25\r\n");
    EXPECT_EQ(h.version, 1);
    EXPECT_FALSE(h.local);
    ASSERT_TRUE(h.has_addresses);
    EXPECT_EQ(text_of(h.source), "192.0.2.1:56324");
    EXPECT_EQ(text_of(h.destination), "198.51.100.1:25");
}

TEST(ProxyHeader, Version1Tcp6) {
    const proxy_header h = parse_in_pieces("PROXY TCP6 2001:db8::1 2001:db8::2 40000 587\r\n");
    ASSERT_TRUE(h.has_addresses);
    EXPECT_EQ(text_of(h.source), "[2001:db8::1]:40000");
    EXPECT_EQ(text_of(h.destination), "[2001:db8::2]:587");
}

TEST(ProxyHeader, Version1UnknownCarriesNoAddress) {
    for (const char* line : {"PROXY UNKNOWN\r\n", "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"}) {
        const proxy_header h = parse_in_pieces(line);
        EXPECT_FALSE(h.has_addresses) << line;
        EXPECT_FALSE(h.local) << line;
    }
}

TEST(ProxyHeader, Version1LongestLinesAreAccepted) {
    // The specification's worst case (§2.1): UNKNOWN with the longest TCP6 fields, 107 bytes.
    const std::string f = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    const std::string unknown = "PROXY UNKNOWN " + f + " " + f + " 65535 65535\r\n";
    ASSERT_EQ(unknown.size(), proxy_v1_max_length);
    EXPECT_FALSE(parse_in_pieces(unknown).has_addresses);
    const proxy_header h = parse_in_pieces("PROXY TCP6 " + f + " " + f + " 65535 65535\r\n");
    EXPECT_EQ(text_of(h.source), "[" + f + "]:65535");
}

TEST(ProxyHeader, Version2ProxyInetAndInet6) {
    proxy_header h = parse_in_pieces(v2(0x21, 0x11, inet_body()));
    EXPECT_EQ(h.version, 2);
    ASSERT_TRUE(h.has_addresses);
    EXPECT_EQ(text_of(h.source), "192.0.2.1:56324");
    EXPECT_EQ(text_of(h.destination), "198.51.100.1:25");
    h = parse_in_pieces(v2(0x21, 0x21, inet6_body()));
    ASSERT_TRUE(h.has_addresses);
    EXPECT_EQ(text_of(h.source), "[2001:db8::1]:40000");
    EXPECT_EQ(text_of(h.destination), "[2001:db8::2]:587");
}

TEST(ProxyHeader, Version2LocalIsTheBalancersOwnConnection) {
    // HAProxy's health checks with send-proxy-v2: LOCAL, family UNSPEC, no body; a body, if
    // any, is ignored.
    proxy_header h = parse_in_pieces(v2(0x20, 0x00, ""));
    EXPECT_TRUE(h.local);
    EXPECT_FALSE(h.has_addresses);
    h = parse_in_pieces(v2(0x20, 0x11, inet_body()));
    EXPECT_TRUE(h.local);
    EXPECT_FALSE(h.has_addresses);
}

TEST(ProxyHeader, Version2UnspecAndUnixCarryNoAddress) {
    proxy_header h = parse_in_pieces(v2(0x21, 0x00, ""));
    EXPECT_FALSE(h.local);
    EXPECT_FALSE(h.has_addresses);
    h = parse_in_pieces(v2(0x21, 0x31, std::string(216, 'x')));
    EXPECT_FALSE(h.has_addresses);
}

TEST(ProxyHeader, Version2TlvsAreSkipped) {
    // PP2_TYPE_ALPN "smtp", PP2_TYPE_NOOP of 0 bytes, PP2_TYPE_AUTHORITY "mx.example".
    const std::string tlvs = std::string("\x01\x00\x04smtp", 7) + std::string("\x04\x00\x00", 3) +
                             std::string("\x02\x00\x0Amx.example", 13);
    const proxy_header h = parse_in_pieces(v2(0x21, 0x11, inet_body() + tlvs));
    ASSERT_TRUE(h.has_addresses);
    EXPECT_EQ(text_of(h.source), "192.0.2.1:56324");
}

struct bad_case {
    const char* label;
    std::string input;
    const char* reason;  // a part of the error
};

TEST(ProxyHeader, MalformedHeadersAreErrorsWithTheReason) {
    const std::string line_too_long = "PROXY UNKNOWN " + std::string(100, 'a');
    const std::vector<bad_case> cases = {
        {"SMTP first", "EHLO client.example\r\n", "not a PROXY header"},
        {"SMTP first, one byte", "E", "not a PROXY header"},
        {"lower case", "proxy TCP4 192.0.2.1 198.51.100.1 1 25\r\n", "not a PROXY header"},
        {"PROXY without its space", "PROXYTCP4", "not a PROXY header"},
        {"v1 unknown protocol", "PROXY TCP5 192.0.2.1 198.51.100.1 1 25\r\n", "unknown protocol"},
        {"v1 bare LF", "PROXY TCP4 192.0.2.1 198.51.100.1 1 25\n", "CRLF"},
        {"v1 CR then other", "PROXY TCP4 192.0.2.1\rX", "CR not followed by LF"},
        {"v1 no CRLF in 107 bytes", line_too_long, "107"},
        {"v1 CRLF after 107 bytes", line_too_long + "\r\n", "107"},
        {"v1 leading zero port", "PROXY TCP4 192.0.2.1 198.51.100.1 01 25\r\n", "bad port"},
        {"v1 port over 65535", "PROXY TCP4 192.0.2.1 198.51.100.1 65536 25\r\n", "bad port"},
        {"v1 signed port", "PROXY TCP4 192.0.2.1 198.51.100.1 +1 25\r\n", "bad port"},
        {"v1 short address", "PROXY TCP4 192.0.2 198.51.100.1 1 25\r\n", "bad source"},
        {"v1 IPv6 as TCP4", "PROXY TCP4 2001:db8::1 198.51.100.1 1 25\r\n", "bad source"},
        {"v1 IPv4 as TCP6", "PROXY TCP6 2001:db8::1 198.51.100.1 1 25\r\n", "bad destination"},
        {"v1 two spaces", "PROXY TCP4 192.0.2.1  198.51.100.1 1 25\r\n", "empty field"},
        {"v1 four fields", "PROXY TCP4 192.0.2.1 198.51.100.1 1\r\n", "5 fields"},
        {"v1 six fields", "PROXY TCP4 192.0.2.1 198.51.100.1 1 25 9\r\n", "more than 5"},
        {"v1 control byte", std::string("PROXY TCP4 192.0.2.1 198.51.100.1 1 2") + '\0' + "5\r\n", "control"},
        {"v2 bad signature byte", std::string("\r\n\r\n\0\r\nQUIX", 11), "not a PROXY header"},
        {"v2 version 1", v2(0x11, 0x11, inet_body()), "version"},
        {"v2 command 2", v2(0x22, 0x11, inet_body()), "command"},
        {"v2 family 4", v2(0x21, 0x41, inet_body()), "family"},
        {"v2 datagram", v2(0x21, 0x12, inet_body()), "STREAM"},
        {"v2 INET body too short", v2(0x21, 0x11, inet_body().substr(0, 11)), "addresses"},
        {"v2 INET6 body too short", v2(0x21, 0x21, inet_body()), "addresses"},
        {"v2 truncated TLV", v2(0x21, 0x11, inet_body() + std::string("\x01\x00", 2)), "truncated TLV"},
        {"v2 TLV past the end", v2(0x21, 0x11, inet_body() + std::string("\x01\x00\x05smtp", 7)), "TLV longer"},
        // Too long is known from the prefix: no need to wait for 65,535 bytes.
        {"v2 too long", v2_sig + std::string("\x21\x11\xFF\xFF", 4), "4096"},
    };
    for (const bad_case& c : cases) {
        const proxy_header h = parse_proxy_header(c.input);
        EXPECT_EQ(h.status, proxy_status::error) << c.label;
        EXPECT_NE(h.error.find(c.reason), std::string::npos) << c.label << ": " << h.error;
    }
}

TEST(ProxyHeader, AnEmptyInputNeedsMore) {
    EXPECT_EQ(parse_proxy_header("").status, proxy_status::need_more);
    // The longest v2 header accepted, whole: done.
    const std::string body = inet_body() + std::string("\x04\x0F\xE1", 3) +
                             std::string(proxy_v2_max_length - proxy_v2_prefix_length - 12 - 3, 'z');
    const proxy_header h = parse_proxy_header(v2(0x21, 0x11, body));
    EXPECT_EQ(h.status, proxy_status::done) << h.error;
    EXPECT_EQ(h.consumed, proxy_v2_max_length);
}

}  // namespace
