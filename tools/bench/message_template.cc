// tools/bench/message_template.cc: see message_template.h.
#include "tools/bench/message_template.h"

#include <charconv>
#include <cstring>

#include "core/clock.h"

namespace ringrelay::bench {
namespace {

constexpr std::string_view placeholder_from = "bench@ringrelay-bench.invalid";
constexpr std::size_t date_length = 31;  // "Sat, 28 Nov 2026 03:35:26 +0000"
constexpr std::size_t run_id_digits = 16;
constexpr std::string_view seq_field = "X-Bench-Seq: ";
// Body text: printable, no '.', cycled with a shift per line so lines differ.
constexpr std::string_view alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

void format_fixed(char* out, std::uint64_t n, std::size_t digits) noexcept {
    for (std::size_t i = digits; i-- > 0;) {
        out[i] = static_cast<char>('0' + n % 10);
        n /= 10;
    }
}

struct header_layout {
    std::string text;
    std::size_t seq_offset = 0;
    std::size_t message_id_offset = 0;
};

header_layout build_header(std::string_view from, std::string_view date, std::uint64_t run_id) {
    header_layout h;
    std::string& t = h.text;
    t.append("From: ringrelay-bench <").append(from.empty() ? placeholder_from : from).append(">\r\n");
    t.append("To: undisclosed-recipients:;\r\n");
    t.append("Subject: ringrelay-bench test message\r\n");
    t.append("Date: ").append(date).append("\r\n");
    t.append("Message-ID: <");
    h.message_id_offset = t.size();
    t.append(message_template::seq_digits, '0').append(".");
    char id[run_id_digits];
    static constexpr char hex[] = "0123456789abcdef";
    for (std::size_t i = 0; i < run_id_digits; ++i) id[i] = hex[(run_id >> (4 * (run_id_digits - 1 - i))) & 0xf];
    t.append(id, run_id_digits).append("@ringrelay-bench>\r\n");
    t.append(seq_field);
    h.seq_offset = t.size();
    t.append(message_template::seq_digits, '0').append("\r\n");
    t.append("MIME-Version: 1.0\r\n");
    t.append("Content-Type: text/plain; charset=us-ascii\r\n");
    t.append("\r\n");
    return h;
}

}  // namespace

std::size_t message_template::header_size(std::string_view from) {
    return build_header(from, std::string(date_length, 'x'), 0).text.size();
}

std::expected<message_template, std::string> message_template::make(std::uint64_t size, std::string_view from,
                                                                    std::int64_t unix_seconds, std::uint64_t run_id) {
    const std::string date = core::rfc5322_date(unix_seconds);
    if (date.size() != date_length) return std::unexpected("unexpected date format: " + date);
    header_layout h = build_header(from, date, run_id);
    if (size < h.text.size() + 2) {
        return std::unexpected("--size " + std::to_string(size) + " is below the smallest message, " +
                               std::to_string(h.text.size() + 2) + " octets (header and one empty line)");
    }
    message_template m;
    m._seq_offset = h.seq_offset;
    m._message_id_offset = h.message_id_offset;
    m._text = std::move(h.text);
    m._text.reserve(size);
    // Body lines of line_length octets; the last one takes the rest. A rest of one octet cannot
    // be a line (CRLF alone is two), so the line before it gives up one character: at the
    // start of every line at least two octets are left.
    std::size_t line = 0;
    while (m._text.size() < size) {
        const std::size_t left = size - m._text.size();
        std::size_t len = left <= line_length ? left : line_length;
        if (left > line_length && left - line_length < 2) len = line_length - 1;
        const std::size_t chars = len - 2;
        for (std::size_t i = 0; i < chars; ++i) m._text.push_back(alphabet[(line + i) % alphabet.size()]);
        m._text.append("\r\n");
        ++line;
    }
    return m;
}

void message_template::stamp(std::string& copy, std::uint64_t seq) const noexcept {
    char digits[seq_digits];
    format_fixed(digits, seq, seq_digits);
    std::memcpy(copy.data() + _seq_offset, digits, seq_digits);
    std::memcpy(copy.data() + _message_id_offset, digits, seq_digits);
}

std::expected<std::uint64_t, std::string> read_bench_seq(std::string_view message) {
    const std::size_t header_end = message.find("\r\n\r\n");
    const std::string_view header = message.substr(0, header_end);
    std::size_t at = 0;
    while (true) {
        at = header.find(seq_field, at);
        if (at == std::string_view::npos) return std::unexpected("no X-Bench-Seq header");
        if (at == 0 || header[at - 1] == '\n') break;
        ++at;
    }
    const std::string_view rest = header.substr(at + seq_field.size());
    std::uint64_t n = 0;
    const auto r = std::from_chars(rest.data(), rest.data() + rest.size(), n);
    if (r.ec != std::errc{} || r.ptr == rest.data()) return std::unexpected("malformed X-Bench-Seq header");
    if (r.ptr != rest.data() + rest.size() && *r.ptr != '\r') return std::unexpected("malformed X-Bench-Seq header");
    return n;
}

}  // namespace ringrelay::bench
