// tests/fuzz/fuzz_body_encoding.cc: differential libFuzzer target for the client's body
// encoding (protocol/body_encoding.h; RFC 5321 §2.3.8 line ends, §4.5.2 dot-stuffing).
// Invariants, for both dot_stuffing::off (BDAT) and on (DATA): the bulk walker's output equals
// the one-octet-at-a-time reference's; normalized_body_size() equals the unstuffed output's
// length; the output has only CRLF line ends, ends in CRLF unless empty, and keeps what `out`
// already held; stuffed, no line is a lone "." and removing one leading '.' from every line
// gives the unstuffed output back. Round trip: the server's DATA reader (data_reader), fed the
// stuffed output and "." CRLF split where the cut byte says, completes exactly at the end and
// stores the unstuffed output, with no bare CR or LF seen. Pieces (body_encoder, a large body
// streamed from the spool): the body cut into pieces of 0..64 octets (lengths drawn from a
// generator seeded by the cut byte and the size) and encoded piece by piece gives exactly the
// whole body's output, stuffed and not, and the pieces' size_of() add up to
// normalized_body_size().
// Input layout: [cut byte] body...
// SECURITY: bodies come from clients through the spool; this is every body the relay may send.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "protocol/body_encoding.h"
#include "protocol/data_reader.h"

using namespace ringrelay::protocol;

namespace {

// Only CRLF line ends; the last line ended.
void check_lines(std::string_view out) {
    for (std::size_t i = 0; i < out.size(); ++i) {
        if (out[i] == '\r' && (i + 1 == out.size() || out[i + 1] != '\n')) std::abort();
        if (out[i] == '\n' && (i == 0 || out[i - 1] != '\r')) std::abort();
    }
    if (!out.empty() && !out.ends_with("\r\n")) std::abort();
}

// One leading '.' removed from every line (out is made of CRLF lines: check_lines).
std::string unstuff(std::string_view stuffed) {
    std::string plain;
    std::size_t start = 0;
    while (start < stuffed.size()) {
        const std::size_t end = stuffed.find("\r\n", start) + 2;
        std::string_view line = stuffed.substr(start, end - start);
        if (line == ".\r\n") std::abort();  // a lone "." would end the DATA early
        if (line.front() == '.') {
            if (line.size() < 2 || line[1] != '.') std::abort();  // every leading dot is doubled
            line.remove_prefix(1);
        }
        plain.append(line);
        start = end;
    }
    return plain;
}

// The body in pieces through one body_encoder; `sizes` gets the sum of size_of().
std::string encode_pieces(std::string_view body, dot_stuffing stuffing, std::uint32_t seed, std::uint64_t& sizes) {
    body_encoder encoder(stuffing);
    std::string out;
    sizes = 0;
    std::uint32_t x = seed | 1;
    do {
        x ^= x << 13;  // xorshift32
        x ^= x >> 17;
        x ^= x << 5;
        const std::size_t n = std::min<std::size_t>(x % 65, body.size());
        const body_piece which = n == body.size() ? body_piece::last : body_piece::more;
        const std::string_view piece = body.substr(0, n);
        const std::uint64_t predicted = encoder.size_of(piece, which);
        const std::size_t before = out.size();
        encoder.append(out, piece, which);
        if (stuffing == dot_stuffing::off && out.size() - before != predicted) std::abort();
        sizes += predicted;
        body.remove_prefix(n);
        if (which == body_piece::last) break;
    } while (true);
    return out;
}

std::string encode(std::string_view prefix, std::string_view body, dot_stuffing stuffing) {
    std::string out(prefix);
    append_normalized_body(out, body, stuffing);
    if (!std::string_view(out).starts_with(prefix)) std::abort();
    return out.substr(prefix.size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);

    const std::string bdat = encode("BDAT 1 LAST\r\n", body, dot_stuffing::off);
    const std::string stuffed = encode("DATA\r\n", body, dot_stuffing::on);
    std::string ref_bdat;
    std::string ref_stuffed;
    reference_append_normalized_body(ref_bdat, body, dot_stuffing::off);
    reference_append_normalized_body(ref_stuffed, body, dot_stuffing::on);
    if (bdat != ref_bdat || stuffed != ref_stuffed) std::abort();
    if (normalized_body_size(body) != bdat.size()) std::abort();
    check_lines(bdat);
    check_lines(stuffed);
    if (unstuff(stuffed) != bdat) std::abort();

    // In pieces: the same octets, however the body is cut.
    const std::uint32_t seed = static_cast<std::uint32_t>(data[0]) * 2654435761u ^ static_cast<std::uint32_t>(size);
    std::uint64_t sizes = 0;
    if (encode_pieces(body, dot_stuffing::off, seed, sizes) != bdat || sizes != bdat.size()) std::abort();
    if (encode_pieces(body, dot_stuffing::on, seed, sizes) != stuffed) std::abort();

    // What a server's DATA reader makes of it: exactly the unstuffed octets, ending at the end.
    const std::string wire = stuffed + ".\r\n";
    const std::size_t cut = static_cast<std::size_t>(data[0]) * wire.size() / 256;
    data_reader reader;
    reader.reset(data_framing::dot_stuffed, 0);
    std::string received;
    const data_progress first = reader.feed(std::string_view(wire).substr(0, cut), received);
    if (first.complete || first.consumed != cut) std::abort();  // the terminator is only at the end
    const data_progress second = reader.feed(std::string_view(wire).substr(cut), received);
    if (!second.complete || second.consumed != wire.size() - cut) std::abort();
    if (received != bdat || reader.bare_cr() || reader.bare_lf()) std::abort();
    return 0;
}
