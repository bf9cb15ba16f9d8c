// protocol/dkim_sign.cc: see dkim_sign.h.
// Every OpenSSL failure path clears the thread's error queue: a stale entry there would be
// read by the next SSL_get_error() of a TLS connection on the same thread.
#include "protocol/dkim_sign.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <algorithm>
#include <array>
#include <string>

#include "core/ascii.h"
#include "core/base64.h"

namespace ringrelay::protocol::dkim {
namespace {

constexpr std::size_t fold_at = 78;  // no line of the field longer than this (RFC 5322 §2.1.1)

// Refuses any passphrase prompt: an encrypted key file does not load.
int no_passphrase(char*, int, int, void*) { return -1; }

template <typename T>
T fail(T value) noexcept {
    ERR_clear_error();
    return value;
}

// Appends `text` after a space, or after a fold if the line would grow past fold_at.
class folder {
public:
    explicit folder(std::string& out) : _out(out) { _column = out.size() - (out.rfind('\n') + 1); }
    void word(std::string_view text, std::string_view separator = " ") {
        if (_column + separator.size() + text.size() > fold_at) {
            _out += "\r\n\t";
            _column = 1;
        } else {
            _out += separator;
            _column += separator.size();
        }
        _out += text;
        _column += text.size();
    }
    void glued(std::string_view text) {  // no separator, no fold
        _out += text;
        _column += text.size();
    }
    [[nodiscard]] std::size_t column() const noexcept { return _column; }
    void fold() {
        _out += "\r\n\t";
        _column = 1;
    }

private:
    std::string& _out;
    std::size_t _column;
};

constexpr std::string_view default_names[] = {
    // RFC 6376 §5.4.1
    "from", "reply-to", "subject", "date", "to", "cc", "resent-date", "resent-from", "resent-to",
    "resent-cc", "in-reply-to", "references", "list-id", "list-help", "list-unsubscribe",
    "list-subscribe", "list-post", "list-owner", "list-archive",
    // RFC 8058 §4: one-click unsubscribe needs List-Unsubscribe-Post signed
    "list-unsubscribe-post",
    // the message's identity and how its body is to be read
    "message-id", "mime-version", "content-type", "content-transfer-encoding"};

constexpr std::string_view oversigned_names[] = {"from", "subject", "to", "date", "message-id",
                                                 "mime-version", "content-type"};

bool contains(std::span<const std::string_view> set, std::string_view name) noexcept {
    for (const std::string_view s : set)
        if (core::iequals(s, name)) return true;
    return false;
}

}  // namespace

void pkey_free::operator()(evp_pkey_st* key) const noexcept { EVP_PKEY_free(key); }

std::string_view algorithm_name(algorithm a) noexcept {
    return a == algorithm::rsa_sha256 ? "rsa-sha256" : "ed25519-sha256";
}

std::string_view describe(key_error e) noexcept {
    switch (e) {
        case key_error::not_pem: return "not a PEM private key (or an encrypted one)";
        case key_error::unsupported_type: return "not an RSA or Ed25519 key";
        case key_error::rsa_too_short: return "RSA key shorter than 1024 bits";
        case key_error::openssl: return "OpenSSL failed";
    }
    return "unknown";
}

std::string_view describe(sign_error e) noexcept {
    switch (e) {
        case sign_error::bad_tag_text: return "domain or selector not valid in a DKIM tag";
        case sign_error::openssl: return "OpenSSL failed to sign";
    }
    return "unknown";
}

std::expected<signing_key, key_error> parse_private_key(std::string_view pem) {
    BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
    if (bio == nullptr) return fail(std::unexpected(key_error::openssl));
    EVP_PKEY* raw = PEM_read_bio_PrivateKey(bio, nullptr, &no_passphrase, nullptr);
    BIO_free(bio);
    if (raw == nullptr) return fail(std::unexpected(key_error::not_pem));
    signing_key key;
    key.pkey = std::shared_ptr<evp_pkey_st>(raw, pkey_free{});
    switch (EVP_PKEY_get_base_id(raw)) {
        case EVP_PKEY_RSA:
            key.alg = algorithm::rsa_sha256;
            key.bits = static_cast<unsigned>(EVP_PKEY_get_bits(raw));
            if (key.bits < 1024) return std::unexpected(key_error::rsa_too_short);
            return key;
        case EVP_PKEY_ED25519:
            key.alg = algorithm::ed25519_sha256;
            key.bits = 256;
            return key;
        default:
            return std::unexpected(key_error::unsupported_type);
    }
}

std::optional<std::string> dns_txt_record(const signing_key& key) {
    std::string der;
    if (key.alg == algorithm::rsa_sha256) {
        unsigned char* buffer = nullptr;
        const int size = i2d_PUBKEY(key.pkey.get(), &buffer);
        if (size <= 0) return fail(std::optional<std::string>{});
        der.assign(reinterpret_cast<const char*>(buffer), static_cast<std::size_t>(size));
        OPENSSL_free(buffer);
    } else {
        std::array<unsigned char, 32> raw{};
        std::size_t size = raw.size();
        if (EVP_PKEY_get_raw_public_key(key.pkey.get(), raw.data(), &size) != 1 || size != raw.size())
            return fail(std::optional<std::string>{});
        der.assign(reinterpret_cast<const char*>(raw.data()), size);
    }
    std::string out = "v=DKIM1; k=";
    out += key.alg == algorithm::rsa_sha256 ? "rsa" : "ed25519";
    out += "; p=";
    out += core::base64_encode(der);
    return out;
}

bool valid_tag_text(std::string_view text) noexcept {
    if (text.empty() || text.size() > 253) return false;
    bool label_start = true;
    for (const char c : text) {
        const bool word = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                          c == '_';
        if (c == '.') {
            if (label_start) return false;  // empty label
            label_start = true;
            continue;
        }
        if (!word) return false;
        label_start = false;
    }
    return !label_start;
}

std::span<const std::string_view> default_header_names() noexcept { return default_names; }
std::span<const std::string_view> oversigned_header_names() noexcept { return oversigned_names; }

std::vector<std::string_view> header_list(std::span<const header_field> fields,
                                          std::span<const std::string_view> names,
                                          std::span<const std::string_view> oversigned) {
    std::vector<std::string_view> out;
    auto add = [&](std::string_view name) {
        std::size_t count = 0;
        for (const header_field& f : fields) count += core::iequals(f.name, name) ? 1 : 0;
        const bool is_from = core::iequals(name, "from");
        if (count == 0 && !is_from) return;
        if (is_from || contains(oversigned, name)) ++count;
        out.insert(out.end(), count, name);
    };
    if (!contains(names, "from")) add(default_names[0]);
    for (std::size_t i = 0; i < names.size(); ++i) {
        bool repeated = false;  // a name listed twice is added once
        for (std::size_t j = 0; j < i; ++j) repeated = repeated || core::iequals(names[j], names[i]);
        if (!repeated) add(names[i]);
    }
    return out;
}

std::string unsigned_signature_field(algorithm alg, const signature_request& request) {
    std::string out = "DKIM-Signature: v=1;";
    folder f(out);
    std::string tag;
    auto add = [&](std::string_view name, std::string_view value) {
        tag.assign(name);
        tag += '=';
        tag += value;
        tag += ';';
        f.word(tag);
    };
    add("a", algorithm_name(alg));
    add("c", canonicalization_text(request.canon));
    add("d", request.domain);
    add("s", request.selector);
    std::string number;
    core::append_decimal(number, static_cast<std::uint64_t>(request.timestamp));
    add("t", number);
    if (request.expiration) {
        number.clear();
        core::append_decimal(number, static_cast<std::uint64_t>(*request.expiration));
        add("x", number);
    }
    // h=name:name:...; folded after a colon where needed (RFC 6376 §3.5: FWS around ':').
    for (std::size_t i = 0; i < request.headers.size(); ++i) {
        tag.clear();
        if (i == 0) tag = "h=";
        tag += request.headers[i];
        tag += i + 1 == request.headers.size() ? ";" : ":";
        if (i == 0) {
            f.word(tag);
        } else if (f.column() + tag.size() > fold_at) {
            f.fold();
            f.glued(tag);
        } else {
            f.glued(tag);
        }
    }
    const std::string_view digest(reinterpret_cast<const char*>(request.body_hash.data()), request.body_hash.size());
    add("bh", core::base64_encode(digest));
    f.word("b=");
    return out;
}

std::string signing_input(const signature_request& request, std::span<const header_field> fields,
                          std::string_view unsigned_field) {
    std::string out;
    for (const header_field* field : select_headers(fields, request.headers)) {
        append_canonical_header(out, request.canon.header, field->raw);
        out += "\r\n";
    }
    append_canonical_header(out, request.canon.header, unsigned_field);
    return out;
}

std::expected<std::string, sign_error> sign_input(const signing_key& key, std::string_view input) {
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
    if (!ctx) return fail(std::unexpected(sign_error::openssl));
    std::string signature;
    std::size_t size = 0;
    if (key.alg == algorithm::rsa_sha256) {
        const auto* data = reinterpret_cast<const unsigned char*>(input.data());
        if (EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key.pkey.get()) != 1 ||
            EVP_DigestSign(ctx.get(), nullptr, &size, data, input.size()) != 1)
            return fail(std::unexpected(sign_error::openssl));
        signature.resize(size);
        if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(signature.data()), &size, data, input.size()) != 1)
            return fail(std::unexpected(sign_error::openssl));
        signature.resize(size);
    } else {
        // RFC 8463 §3: Ed25519 (PureEdDSA) signs the SHA-256 hash of the header data.
        std::array<unsigned char, 32> digest{};
        unsigned int digest_size = 0;
        if (EVP_Digest(input.data(), input.size(), digest.data(), &digest_size, EVP_sha256(), nullptr) != 1 ||
            EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key.pkey.get()) != 1)
            return fail(std::unexpected(sign_error::openssl));
        signature.resize(64);
        size = signature.size();
        if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(signature.data()), &size, digest.data(),
                           digest.size()) != 1)
            return fail(std::unexpected(sign_error::openssl));
        signature.resize(size);
    }
    return signature;
}

void signer_cache::entry::free() noexcept {
    EVP_PKEY_CTX_free(rsa);
    EVP_MD_CTX_free(ed25519);
    EVP_MD_CTX_free(ed25519_work);
    EVP_PKEY_free(own);
    rsa = nullptr;
    ed25519 = nullptr;
    ed25519_work = nullptr;
    own = nullptr;
    key.reset();
}

signer_cache::~signer_cache() {
    for (entry& e : _entries) e.free();
    EVP_MD_free(_sha256);
}

signer_cache::entry* signer_cache::find_or_make(const signing_key& key) noexcept {
    for (entry& e : _entries)
        if (e.key == key.pkey && e.alg == key.alg) return &e;
    if (_sha256 == nullptr) _sha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    if (_sha256 == nullptr || !key.pkey) return nullptr;
    entry e;
    e.own = EVP_PKEY_dup(key.pkey.get());
    bool ok = e.own != nullptr;
    if (ok && key.alg == algorithm::rsa_sha256) {
        e.rsa = EVP_PKEY_CTX_new_from_pkey(nullptr, e.own, nullptr);
        ok = e.rsa != nullptr && EVP_PKEY_sign_init(e.rsa) == 1 &&
             EVP_PKEY_CTX_set_rsa_padding(e.rsa, RSA_PKCS1_PADDING) == 1 &&
             EVP_PKEY_CTX_set_signature_md(e.rsa, _sha256) == 1;
    } else if (ok) {
        e.ed25519 = EVP_MD_CTX_new();
        e.ed25519_work = EVP_MD_CTX_new();
        ok = e.ed25519 != nullptr && e.ed25519_work != nullptr && EVP_DigestSignInit_ex(e.ed25519, nullptr, nullptr, nullptr, nullptr, e.own,
                                                           nullptr) == 1;
    }
    if (!ok) {
        e.free();
        return nullptr;
    }
    e.key = key.pkey;
    e.alg = key.alg;
    // Entries whose key only this cache still holds (a reload dropped its table) go first: no
    // private key is kept alive for longer than the next new key's first signature.
    std::erase_if(_entries, [](entry& old) {
        if (old.key.use_count() != 1) return false;
        old.free();
        return true;
    });
    if (_entries.size() >= max_keys) {
        _entries.front().free();
        _entries.erase(_entries.begin());
    }
    _entries.push_back(e);  // capacity reserved by sign_input(): no allocation here
    return &_entries.back();
}

std::expected<std::string, sign_error> signer_cache::sign_input(const signing_key& key, std::string_view input) {
    if (_entries.capacity() < max_keys) _entries.reserve(max_keys);
    entry* e = find_or_make(key);
    if (e == nullptr) return fail(std::unexpected(sign_error::openssl));
    // Both algorithms sign the SHA-256 of the input: RSA as PKCS#1 v1.5's DigestInfo (the
    // context knows the digest is SHA-256), Ed25519 as PureEdDSA over those 32 octets (RFC 8463 §3).
    std::array<unsigned char, 32> digest{};
    unsigned int digest_size = 0;
    if (EVP_Digest(input.data(), input.size(), digest.data(), &digest_size, _sha256, nullptr) != 1)
        return fail(std::unexpected(sign_error::openssl));
    std::string signature;
    std::size_t size = 0;
    if (e->rsa != nullptr) {
        signature.resize(static_cast<std::size_t>(EVP_PKEY_get_size(e->own)));
        size = signature.size();
        if (EVP_PKEY_sign(e->rsa, reinterpret_cast<unsigned char*>(signature.data()), &size, digest.data(),
                          digest.size()) != 1)
            return fail(std::unexpected(sign_error::openssl));
    } else {
        // A one-shot EVP_DigestSign may finalise its context (OpenSSL 3.2 and later refuse a
        // second one): each signature works on a copy of the context set up once.
        signature.resize(64);
        size = signature.size();
        if (EVP_MD_CTX_copy_ex(e->ed25519_work, e->ed25519) != 1 ||
            EVP_DigestSign(e->ed25519_work, reinterpret_cast<unsigned char*>(signature.data()), &size, digest.data(),
                           digest.size()) != 1)
            return fail(std::unexpected(sign_error::openssl));
    }
    signature.resize(size);
    return signature;
}

std::expected<std::string, sign_error> sign(const signing_key& key, const signature_request& request,
                                            std::span<const header_field> fields, signer_cache* cache) {
    if (!valid_tag_text(request.domain) || !valid_tag_text(request.selector))
        return std::unexpected(sign_error::bad_tag_text);
    std::string field = unsigned_signature_field(key.alg, request);
    const std::string input = signing_input(request, fields, field);

    const auto signature = cache != nullptr ? cache->sign_input(key, input) : sign_input(key, input);
    if (!signature) return std::unexpected(signature.error());
    const std::string b64 = core::base64_encode(*signature);
    // b= folded: FWS may appear anywhere in its value (RFC 6376 §3.5).
    folder f(field);
    std::size_t at = 0;
    while (at < b64.size()) {
        const std::size_t room = f.column() < fold_at ? fold_at - f.column() : 0;
        if (room == 0) {
            f.fold();
            continue;
        }
        const std::size_t take = std::min(room, b64.size() - at);
        f.glued(std::string_view(b64).substr(at, take));
        at += take;
    }
    field += "\r\n";
    return field;
}

// Hand-written: no Debian library parses RFC 5322 address lists without a whole MIME stack,
// and only the first mailbox's domain is needed. One pass drops comments (nested, with
// quoted-pairs) and folding, and stands one '"' in for each quoted string, so that the
// structure characters left ('<', '>', ',', ';', ':', '@') are the real ones.
std::optional<std::string> author_domain(std::span<const header_field> fields) {
    const header_field* from = nullptr;
    for (const header_field& f : fields)
        if (core::iequals(f.name, "from")) {
            from = &f;
            break;
        }
    if (from == nullptr) return std::nullopt;
    std::string_view value = from->raw.substr(std::min(from->raw.size(), from->raw.find(':') + 1));
    std::string clean;
    clean.reserve(value.size());
    int depth = 0;        // comment nesting
    bool quoted = false;  // inside "..."
    for (std::size_t i = 0; i < value.size(); ++i) {
        const char c = value[i];
        if ((quoted || depth > 0) && c == '\\') {
            ++i;  // a quoted-pair: the next octet is literal
            continue;
        }
        if (quoted) {
            if (c == '"') quoted = false;
            continue;
        }
        if (depth > 0) {
            if (c == '(') ++depth;
            if (c == ')') --depth;
            continue;
        }
        if (c == '(') {
            depth = 1;
            clean += ' ';  // a comment separates what surrounds it: "exa(x)mple" is no domain
        } else if (c == '"') {
            quoted = true;
            clean += '"';  // one octet for the whole string: no label, so no domain, may hold it
        } else if (c != '\r' && c != '\n') {
            clean += c;
        }
    }
    std::string_view rest(clean);
    // A group: its display name ends at the first ':' that comes before any '<' or '@'.
    if (const std::size_t colon = rest.find(':'); colon != std::string_view::npos && colon < rest.find_first_of("<@"))
        rest.remove_prefix(colon + 1);
    std::string_view address;
    const std::size_t end_of_first = rest.find_first_of(",;");
    const std::size_t angle = rest.find('<');
    if (angle != std::string_view::npos && angle < end_of_first) {
        address = rest.substr(angle + 1);
        address = address.substr(0, address.find('>'));
    } else {
        address = rest.substr(0, end_of_first);
    }
    const std::size_t at = address.rfind('@');
    if (at == std::string_view::npos) return std::nullopt;
    std::string_view domain = address.substr(at + 1);
    while (!domain.empty() && (domain.front() == ' ' || domain.front() == '\t')) domain.remove_prefix(1);
    while (!domain.empty() && (domain.back() == ' ' || domain.back() == '\t')) domain.remove_suffix(1);
    if (!domain.empty() && domain.back() == '.') domain.remove_suffix(1);
    if (!valid_tag_text(domain)) return std::nullopt;
    std::string out(domain);
    for (char& c : out) c = core::ascii_lower(c);
    return out;
}

std::string summary(algorithm alg, std::string_view domain, std::string_view selector) {
    std::string out = "d=";
    out += domain;
    out += " s=";
    out += selector;
    out += " a=";
    out += algorithm_name(alg);
    return out;
}

}  // namespace ringrelay::protocol::dkim
