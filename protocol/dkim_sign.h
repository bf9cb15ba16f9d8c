// protocol/dkim_sign.h: DKIM signatures (RFC 6376 §3.5, §3.7, §5) with rsa-sha256 and
// ed25519-sha256 (RFC 8463): private keys from PEM, the header list to sign, the
// DKIM-Signature field, and the DNS TXT record that publishes a key's public half.
// The crypto is OpenSSL's (libcrypto); the tag list, folding and header hashing are here (see
// protocol/dkim_canon.h for why no DKIM library is used).
//
// Pure: no files, clocks or threads. The caller reads the key file, gives the time (t=), and
// runs sign() where it may take long: an RSA-2048 signature costs hundreds of microseconds, so
// the relay calls it on its work pool, never on a shard thread.
// SECURITY: the message comes from clients. The domain and selector come from the operator
// and are checked (valid_tag_text) before a key is accepted, so no input can add a tag.
//
// Threading: a signing_key is immutable once parsed and may be used by several threads at
// once (OpenSSL 3 allows concurrent signing with one EVP_PKEY; each call has its own context).
// A signer_cache belongs to one thread at a time (the relay's pool threads keep one each).
#pragma once
#include <cstdint>
#include <expected>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/dkim_canon.h"

struct evp_pkey_st;
struct evp_pkey_ctx_st;
struct evp_md_ctx_st;
struct evp_md_st;

namespace ringrelay::protocol::dkim {

enum class algorithm : std::uint8_t { rsa_sha256, ed25519_sha256 };
[[nodiscard]] std::string_view algorithm_name(algorithm a) noexcept;  // the a= value

enum class key_error : std::uint8_t {
    not_pem,          // no PEM private key could be read (also: an encrypted key)
    unsupported_type, // a key DKIM has no algorithm for (EC, DSA, ...)
    rsa_too_short,    // RSA under 1024 bits (RFC 8301 §3.2)
    openssl,          // OpenSSL failed otherwise (allocation)
};
[[nodiscard]] std::string_view describe(key_error e) noexcept;

struct pkey_free {
    void operator()(evp_pkey_st* key) const noexcept;
};

struct signing_key {
    std::shared_ptr<evp_pkey_st> pkey;  // shared read-only between threads and reloads
    algorithm alg = algorithm::rsa_sha256;
    unsigned bits = 0;  // RSA modulus bits; 256 for Ed25519
};

// A private key in PEM (PKCS#1 "RSA PRIVATE KEY" or PKCS#8 "PRIVATE KEY"); RSA of 1024 bits or
// more signs rsa-sha256, Ed25519 signs ed25519-sha256. An encrypted key is refused.
[[nodiscard]] std::expected<signing_key, key_error> parse_private_key(std::string_view pem);

// The TXT record's text for the key's public half: "v=DKIM1; k=rsa; p=<base64 SPKI DER>" or
// "v=DKIM1; k=ed25519; p=<base64 of the 32-octet key>" (RFC 8463 §4). Nothing on an OpenSSL
// failure.
[[nodiscard]] std::optional<std::string> dns_txt_record(const signing_key& key);

// A domain or selector safe to write in a tag: dot-separated labels of letters, digits, '-'
// and '_' (RFC 6376 §3.1 and §3.5 d=), 1..253 octets.
[[nodiscard]] bool valid_tag_text(std::string_view text) noexcept;

// Header names signed by default: RFC 6376 §5.4.1's recommended set plus Message-ID,
// MIME-Version, Content-Type and Content-Transfer-Encoding.
[[nodiscard]] std::span<const std::string_view> default_header_names() noexcept;
// Those signed once more than they occur, so that an added copy breaks the signature.
[[nodiscard]] std::span<const std::string_view> oversigned_header_names() noexcept;

// The h= list for this message: each name of `names` that is present, as many times as it
// occurs, once more if it is in `oversigned`; From always (once more than it occurs, at least
// once). Names are lower-cased; order follows `names`. Views into `names` and the static sets.
[[nodiscard]] std::vector<std::string_view> header_list(std::span<const header_field> fields,
                                                        std::span<const std::string_view> names,
                                                        std::span<const std::string_view> oversigned);

struct signature_request {
    std::string_view domain;    // d=
    std::string_view selector;  // s=
    canonicalization canon;     // c=
    std::span<const std::string_view> headers;  // h=, in order (header_list())
    std::int64_t timestamp = 0;                 // t=, seconds since the epoch
    std::optional<std::int64_t> expiration;     // x=, seconds since the epoch
    sha256_digest body_hash{};                  // bh=, from body_hasher with canon.body
};

enum class sign_error : std::uint8_t {
    bad_tag_text,  // the domain or selector is not valid_tag_text
    openssl,       // OpenSSL failed to sign
};
[[nodiscard]] std::string_view describe(sign_error e) noexcept;

// OpenSSL state kept between signatures by one thread: for each key it has signed with, a
// private copy of the key and a context set up once, so that a signature costs the private-key
// operation and little else. The copy matters for RSA: its blinding state belongs to the key
// object, and threads signing with one shared RSA key take turns on a lock and pay for a
// second blinding each (OpenSSL 3.0, crypto/rsa/rsa_ossl.c); a per-call context costs an
// algorithm fetch and a context copy besides.
// An entry holds a reference to its signing_key's EVP_PKEY, so the key it was made for stays
// alive (and its address is never another key's) while it is cached. When an entry is made,
// those whose key nobody else holds any more (a reload's old keys) are dropped; beyond
// max_keys entries the least recently added goes.
// Lifecycle: default-constructed empty; entries made at a key's first signature; freed with
// the cache. Not for two threads at once.
class signer_cache {
public:
    static constexpr std::size_t max_keys = 32;
    signer_cache() = default;
    signer_cache(const signer_cache&) = delete;
    signer_cache& operator=(const signer_cache&) = delete;
    ~signer_cache();

    // As sign_input() below, with the cached state for `key` (made now if it is new).
    [[nodiscard]] std::expected<std::string, sign_error> sign_input(const signing_key& key, std::string_view input);
    [[nodiscard]] std::size_t size() const noexcept { return _entries.size(); }

private:
    struct entry {
        std::shared_ptr<evp_pkey_st> key;  // the signing_key's (kept alive; with alg, identifies the entry)
        algorithm alg = algorithm::rsa_sha256;
        evp_pkey_st* own = nullptr;        // this cache's copy
        evp_pkey_ctx_st* rsa = nullptr;    // RSA: sign_init'ed, PKCS#1 v1.5, SHA-256
        evp_md_ctx_st* ed25519 = nullptr;  // Ed25519: DigestSignInit'ed once (a template)
        evp_md_ctx_st* ed25519_work = nullptr;  // each signature's copy of it
        void free() noexcept;
    };
    [[nodiscard]] entry* find_or_make(const signing_key& key) noexcept;
    std::vector<entry> _entries;
    evp_md_st* _sha256 = nullptr;  // fetched once
};

// The complete DKIM-Signature field, folded under 80 octets per line, ending in CRLF, to be
// put in front of the message whose header section `fields` came from. With `cache`, the
// signature is made with its state for the key (the pool threads' way); without, with state
// made for this call alone.
[[nodiscard]] std::expected<std::string, sign_error> sign(const signing_key& key,
                                                          const signature_request& request,
                                                          std::span<const header_field> fields,
                                                          signer_cache* cache = nullptr);

// The raw signature of `input` (b='s value before base64): RSASSA-PKCS1-v1_5 with SHA-256, or
// Ed25519 over the SHA-256 of `input` (RFC 8463 §3). Exposed for tests and the benchmark.
[[nodiscard]] std::expected<std::string, sign_error> sign_input(const signing_key& key, std::string_view input);

// What sign() hashes and signs, exposed for tests: the selected canonical headers, each with
// CRLF, then the canonical DKIM-Signature field (b= empty) without CRLF. `unsigned_field` is
// that field as it will be written before b='s value.
[[nodiscard]] std::string signing_input(const signature_request& request,
                                        std::span<const header_field> fields,
                                        std::string_view unsigned_field);
// The field up to and including "b=", folded; exposed for tests.
[[nodiscard]] std::string unsigned_signature_field(algorithm alg, const signature_request& request);

// The signing domain a message asks for: the domain of the first mailbox of its first From:
// field (RFC 5322 §3.6.2), lower-cased, without a final dot. Comments and quoted strings are
// skipped ('@' or '<' inside them do not count); a group ("list: a@b, c@d;") gives its first
// member. Nothing when there is no From field, no address, or the domain is not plain
// dot-separated labels (a domain literal, 8-bit text): such a message is not signed for its
// author (a --dkim-sign-all signature still applies).
[[nodiscard]] std::optional<std::string> author_domain(std::span<const header_field> fields);

// A one-line summary for the log: "d=example.org s=sel a=rsa-sha256".
[[nodiscard]] std::string summary(algorithm alg, std::string_view domain, std::string_view selector);

}  // namespace ringrelay::protocol::dkim
