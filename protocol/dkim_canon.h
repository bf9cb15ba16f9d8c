// protocol/dkim_canon.h: DKIM canonicalization (RFC 6376 §3.4) and the body hash (§3.7), for
// the signer. Written here rather than taken from a library: no maintained C or C++ DKIM library
// is packaged in Debian 12 that hashes a body as it streams in (OpenDKIM's libopendkim is a
// milter-oriented library with its own I/O and allocation model); the crypto itself is
// OpenSSL's (libcrypto), as for TLS.
//
// Line ends: the message is canonicalized as protocol/body_encoding.h puts it on the wire: CRLF,
// a bare CR and a bare LF each end a line (CR followed by LF is one line end), and a message not
// ending in a line end gets one. So a signature computed over the spooled bytes still verifies
// after the client normalizes them.
//
// Streaming: body_canonicalizer takes the body in pieces of any size (a piece may end inside a
// CRLF or inside a run of whitespace) and gives the same output as the whole body at once;
// empty lines are counted, not buffered, so memory is constant whatever the input. body_hash_stream
// takes the whole message (header section and body) as it arrives and hashes only the body, so a
// receiving connection can compute the body hash with no second pass.
//
// Header fields are canonicalized one at a time from views into the caller's header section.
// SECURITY: all input comes from clients; nothing reads past a view, and output is linear in
// the input (plus the deferred empty lines, which are at most the input's line ends).
//
// Threading: plain objects, used by one thread at a time.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

// OpenSSL's digest context, opaque here (protocol/dkim_canon.cc includes <openssl/evp.h>).
struct evp_md_ctx_st;

namespace ringrelay::protocol::dkim {

enum class canon : std::uint8_t { simple, relaxed };

// The c= tag: header/body. RFC 6376 §3.5: a lone "relaxed" means relaxed/simple.
struct canonicalization {
    canon header = canon::relaxed;
    canon body = canon::relaxed;
    friend bool operator==(const canonicalization&, const canonicalization&) = default;
};

// "simple", "relaxed", or either pair "a/b"; nothing for anything else (case-sensitive, as the
// tag values are in RFC 6376 §3.5).
[[nodiscard]] std::optional<canonicalization> parse_canonicalization(std::string_view text) noexcept;
[[nodiscard]] std::string_view canon_name(canon c) noexcept;
// "relaxed/relaxed" etc.: the c= tag value this signer writes (always both halves).
[[nodiscard]] std::string canonicalization_text(canonicalization c);

using sha256_digest = std::array<std::uint8_t, 32>;

// Body canonicalization (§3.4.3 simple, §3.4.4 relaxed), streaming. Output goes to `sink` in
// pieces of at most 4 KiB; `sink` is called from update() and finish() only.
class body_canonicalizer {
public:
    using sink_fn = void (*)(void* context, const char* data, std::size_t size) noexcept;

    body_canonicalizer(canon mode, sink_fn sink, void* context) noexcept;
    body_canonicalizer(const body_canonicalizer&) = delete;
    body_canonicalizer& operator=(const body_canonicalizer&) = delete;

    // The next piece of the body. Any octets; no-op once finished.
    void update(std::string_view piece) noexcept;
    // Ends the body: trailing empty lines dropped, a final CRLF added to a last line without
    // one; simple gives "\r\n" for an empty body, relaxed gives nothing (RFC 6376 erratum 1384).
    void finish() noexcept;

    // Octets given to the sink so far (the l= length a verifier would count).
    [[nodiscard]] std::uint64_t output_size() const noexcept { return _output_size; }

private:
    void line_end() noexcept;
    void content(const char* data, std::size_t size) noexcept;
    void put(const char* data, std::size_t size) noexcept;
    void flush() noexcept;

    // Fixed after construction
    canon _mode;
    sink_fn _sink;
    void* _context;
    // State between pieces
    bool _pending_cr = false;      // the last octet was CR: a line end, with the next if LF
    bool _pending_wsp = false;     // relaxed: whitespace seen in the line, not yet written
    bool _line_has_content = false;
    bool _finished = false;
    bool _any_output = false;      // simple: something other than the empty body was written
    std::uint64_t _empty_lines = 0;  // empty lines held back: written only if content follows
    std::uint64_t _output_size = 0;
    std::size_t _used = 0;
    char _buffer[4096];
};

// SHA-256 of the canonical body. Owns an OpenSSL digest context.
class body_hasher {
public:
    explicit body_hasher(canon mode) noexcept;
    ~body_hasher();
    body_hasher(const body_hasher&) = delete;
    body_hasher& operator=(const body_hasher&) = delete;

    void update(std::string_view piece) noexcept { _canonicalizer.update(piece); }
    // The digest; the hasher is spent afterwards. An OpenSSL failure (allocation) gives nothing.
    [[nodiscard]] std::optional<sha256_digest> finish() noexcept;

private:
    static void sink(void* context, const char* data, std::size_t size) noexcept;
    evp_md_ctx_st* _ctx;
    bool _failed = false;
    body_canonicalizer _canonicalizer;
};

// The whole message as it arrives, in pieces: skips the header section (up to and including
// the first empty line, with the line-end rules above) and hashes the rest as the body. A
// message without an empty line is all header section and has an empty body.
class body_hash_stream {
public:
    explicit body_hash_stream(canon mode) noexcept : _hasher(mode) {}
    void update(std::string_view piece) noexcept;
    [[nodiscard]] std::optional<sha256_digest> finish() noexcept { return _hasher.finish(); }
    // Octets of the header section, separator line included, once the body has begun.
    [[nodiscard]] bool in_body() const noexcept { return _in_body; }

private:
    body_hasher _hasher;
    bool _in_body = false;
    bool _at_line_start = true;
    bool _pending_cr = false;
};

// The canonical body of a whole message body at once, one octet at a time with no shortcuts.
// The oracle of the fuzz target and the tests; never on the signing path.
[[nodiscard]] std::string reference_canonical_body(canon mode, std::string_view body);

// One header field: views into the caller's message, valid while it is.
struct header_field {
    std::string_view name;  // as written, before the colon, without trailing whitespace; empty for a line with no colon
    std::string_view raw;   // the whole field from its first octet to the end of its last line, line end excluded
};

// Splits the header section of `message` into fields (a line starting with SP or HT continues
// the previous field). `body_offset` (if given) gets the offset where the body begins: after the
// first empty line, or message.size() if there is none.
[[nodiscard]] std::vector<header_field> split_header_fields(std::string_view message,
                                                            std::size_t* body_offset = nullptr);

// Appends the canonical form of one field (§3.4.1 simple: as sent, line ends as CRLF; §3.4.2
// relaxed: lower-case name, unfolded, whitespace runs to one SP, none around the colon or at the
// end), without a final CRLF.
void append_canonical_header(std::string& out, canon mode, std::string_view raw);

// The fields to sign for `names` (the h= list, in order), bottom-up as RFC 6376 §5.4.2 says: the
// n-th occurrence of a name in the list takes the n-th field of that name counted from the end;
// past the last, it takes none (an oversigned name). Names compare case-insensitively.
[[nodiscard]] std::vector<const header_field*> select_headers(std::span<const header_field> fields,
                                                              std::span<const std::string_view> names);

}  // namespace ringrelay::protocol::dkim
