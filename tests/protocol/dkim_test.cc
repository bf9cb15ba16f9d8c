// tests/protocol/dkim_test.cc: DKIM canonicalization, body hash and signatures
// (protocol/dkim_canon.h, protocol/dkim_sign.h).
// Anchors: RFC 6376 §3.4.5's canonicalization example, and RFC 8463 Appendix A: its message,
// its two keys and its published signatures. RSASSA-PKCS1-v1_5 and Ed25519 are deterministic, so
// the same key over the same canonical data gives the same bytes: matching the RFC's b= checks
// canonicalization, header selection and signing at once. Signatures made here are checked with
// OpenSSL's verify over the input recomputed from the emitted field (the independent verifiers,
// dkimpy and OpenDKIM, run in the integration test).
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "core/base64.h"
#include "protocol/dkim_canon.h"
#include "protocol/dkim_sign.h"

using namespace ringrelay::protocol::dkim;
using ringrelay::core::base64_decode;
using ringrelay::core::base64_encode;

namespace {

// RFC 8463 Appendix A.1/A.2 keys.
constexpr std::string_view rfc8463_rsa_pem =
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIICXQIBAAKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQi\n"
    "Y/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqM\n"
    "KrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB\n"
    "AoGAH0cxOhFZDgzXWhDhnAJDw5s4roOXN4OhjiXa8W7Y3rhX3FJqmJSPuC8N9vQm\n"
    "6SVbaLAE4SG5mLMueHlh4KXffEpuLEiNp9Ss3O4YfLiQpbRqE7Tm5SxKjvvQoZZe\n"
    "zHorimOaChRL2it47iuWxzxSiRMv4c+j70GiWdxXnxe4UoECQQDzJB/0U58W7RZy\n"
    "6enGVj2kWF732CoWFZWzi1FicudrBFoy63QwcowpoCazKtvZGMNlPWnC7x/6o8Gc\n"
    "uSe0ga2xAkEA8C7PipPm1/1fTRQvj1o/dDmZp243044ZNyxjg+/OPN0oWCbXIGxy\n"
    "WvmZbXriOWoSALJTjExEgraHEgnXssuk7QJBALl5ICsYMu6hMxO73gnfNayNgPxd\n"
    "WFV6Z7ULnKyV7HSVYF0hgYOHjeYe9gaMtiJYoo0zGN+L3AAtNP9huqkWlzECQE1a\n"
    "licIeVlo1e+qJ6Mgqr0Q7Aa7falZ448ccbSFYEPD6oFxiOl9Y9se9iYHZKKfIcst\n"
    "o7DUw1/hz2Ck4N5JrgUCQQCyKveNvjzkkd8HjYs0SwM0fPjK16//5qDZ2UiDGnOe\n"
    "uEzxBDAr518Z8VFbR41in3W4Y3yCDgQlLlcETrS+zYcL\n"
    "-----END RSA PRIVATE KEY-----\n";
constexpr std::string_view rfc8463_rsa_public =
    "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/"
    "byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+"
    "2kryOTIKT+l/K4w3QIDAQAB";
constexpr std::string_view rfc8463_ed25519_seed = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=";
constexpr std::string_view rfc8463_ed25519_public = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

// RFC 8463 Appendix A.3, the signed message's header section after its two signatures, and body.
constexpr std::string_view rfc8463_message =
    "From: Joe SixPack <joe@football.example.com>\r\n"
    "To: Suzie Q <suzie@shopping.example.net>\r\n"
    "Subject: Is dinner ready?\r\n"
    "Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    "Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
    "\r\n"
    "Hi.\r\n"
    "\r\n"
    "We lost the game.  Are you hungry yet?\r\n"
    "\r\n"
    "Joe.\r\n";
constexpr std::string_view rfc8463_body_hash = "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=";
// The two DKIM-Signature fields as published, up to and including "b=".
constexpr std::string_view rfc8463_ed25519_field =
    "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
    " d=football.example.com; i=@football.example.com;\r\n"
    " q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n"
    " subject : date : message-id : from : subject : date;\r\n"
    " bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    " b=";
constexpr std::string_view rfc8463_ed25519_b =
    "/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11BusFa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==";
constexpr std::string_view rfc8463_rsa_field =
    "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\r\n"
    " d=football.example.com; i=@football.example.com;\r\n"
    " q=dns/txt; s=test; t=1528637909; h=from : to : subject :\r\n"
    " date : message-id : from : subject : date;\r\n"
    " bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    " b=";
constexpr std::string_view rfc8463_rsa_b =
    "F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2"
    "JzdA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=";

std::string ed25519_pem_from_seed(std::string_view seed_b64) {
    const auto seed = base64_decode(seed_b64);
    EXPECT_TRUE(seed.has_value());
    EVP_PKEY* key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr,
                                                 reinterpret_cast<const unsigned char*>(seed->data()), seed->size());
    EXPECT_NE(key, nullptr);
    BIO* bio = BIO_new(BIO_s_mem());
    EXPECT_EQ(PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr), 1);
    char* data = nullptr;
    const long size = BIO_get_mem_data(bio, &data);
    std::string pem(data, static_cast<std::size_t>(size));
    BIO_free(bio);
    EVP_PKEY_free(key);
    return pem;
}

std::string pem_of(EVP_PKEY* key) {
    BIO* bio = BIO_new(BIO_s_mem());
    EXPECT_EQ(PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr), 1);
    char* data = nullptr;
    const long size = BIO_get_mem_data(bio, &data);
    std::string pem(data, static_cast<std::size_t>(size));
    BIO_free(bio);
    return pem;
}

std::string digest_b64(const sha256_digest& d) {
    return base64_encode(std::string_view(reinterpret_cast<const char*>(d.data()), d.size()));
}

std::string canonical_body(canon mode, std::string_view body) {
    std::string out;
    body_canonicalizer c(
        mode, [](void* ctx, const char* p, std::size_t n) noexcept { static_cast<std::string*>(ctx)->append(p, n); },
        &out);
    c.update(body);
    c.finish();
    return out;
}

std::string hash_body(canon mode, std::string_view body) {
    body_hasher h(mode);
    h.update(body);
    const auto d = h.finish();
    EXPECT_TRUE(d.has_value());
    return d ? digest_b64(*d) : "";
}

std::string sha256_b64(std::string_view data) {
    unsigned char md[32];
    unsigned int n = 0;
    EXPECT_EQ(EVP_Digest(data.data(), data.size(), md, &n, EVP_sha256(), nullptr), 1);
    return base64_encode(std::string_view(reinterpret_cast<const char*>(md), n));
}

const std::vector<std::string_view> rfc8463_h = {"from", "to", "subject", "date", "message-id", "from", "subject", "date"};

// Verifies `signature` over `input` with the key's public half, as a verifier does.
bool verifies(const signing_key& key, std::string_view input, std::string_view signature) {
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    bool ok = false;
    const auto* sig = reinterpret_cast<const unsigned char*>(signature.data());
    if (key.alg == algorithm::rsa_sha256) {
        ok = EVP_DigestVerifyInit(ctx, nullptr, EVP_sha256(), nullptr, key.pkey.get()) == 1 &&
             EVP_DigestVerify(ctx, sig, signature.size(), reinterpret_cast<const unsigned char*>(input.data()),
                              input.size()) == 1;
    } else {
        unsigned char md[32];
        unsigned int n = 0;
        ok = EVP_Digest(input.data(), input.size(), md, &n, EVP_sha256(), nullptr) == 1 &&
             EVP_DigestVerifyInit(ctx, nullptr, nullptr, nullptr, key.pkey.get()) == 1 &&
             EVP_DigestVerify(ctx, sig, signature.size(), md, n) == 1;
    }
    EVP_MD_CTX_free(ctx);
    return ok;
}

}  // namespace

// --- canonicalization -----------------------------------------------------------------------

TEST(DkimCanon, ParsesTheCTag) {
    EXPECT_EQ(parse_canonicalization("relaxed/relaxed"), (canonicalization{canon::relaxed, canon::relaxed}));
    EXPECT_EQ(parse_canonicalization("simple/relaxed"), (canonicalization{canon::simple, canon::relaxed}));
    EXPECT_EQ(parse_canonicalization("relaxed"), (canonicalization{canon::relaxed, canon::simple}));
    EXPECT_EQ(parse_canonicalization("simple"), (canonicalization{canon::simple, canon::simple}));
    EXPECT_FALSE(parse_canonicalization("Relaxed/relaxed"));
    EXPECT_FALSE(parse_canonicalization("relaxed/"));
    EXPECT_FALSE(parse_canonicalization(""));
    EXPECT_FALSE(parse_canonicalization("relaxed/relaxed/simple"));
    EXPECT_EQ(canonicalization_text({canon::relaxed, canon::simple}), "relaxed/simple");
}

// RFC 6376 §3.4.5.
TEST(DkimCanon, Rfc6376Example) {
    const std::string_view message = "A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\nD \t E\r\n\r\n\r\n";
    std::size_t body_at = 0;
    const auto fields = split_header_fields(message, &body_at);
    ASSERT_EQ(fields.size(), 2u);
    EXPECT_EQ(fields[0].name, "A");
    EXPECT_EQ(fields[1].name, "B");
    EXPECT_EQ(fields[1].raw, "B : Y\t\r\n\tZ  ");
    const std::string_view body = message.substr(body_at);
    EXPECT_EQ(body, " C \r\nD \t E\r\n\r\n\r\n");

    std::string relaxed;
    for (const auto& f : fields) {
        append_canonical_header(relaxed, canon::relaxed, f.raw);
        relaxed += "\r\n";
    }
    EXPECT_EQ(relaxed, "a:X\r\nb:Y Z\r\n");
    EXPECT_EQ(canonical_body(canon::relaxed, body), " C\r\nD E\r\n");

    std::string simple;
    for (const auto& f : fields) {
        append_canonical_header(simple, canon::simple, f.raw);
        simple += "\r\n";
    }
    EXPECT_EQ(simple, "A: X\r\nB : Y\t\r\n\tZ  \r\n");
    EXPECT_EQ(canonical_body(canon::simple, body), " C \r\nD \t E\r\n");
}

TEST(DkimCanon, BodyEdges) {
    struct row {
        std::string_view body, simple, relaxed;
    } rows[] = {
        {"", "\r\n", ""},                          // RFC 6376 §3.4.3; erratum 1384 for relaxed
        {"\r\n", "\r\n", ""},
        {"\r\n\r\n\r\n", "\r\n", ""},
        {"no break", "no break\r\n", "no break\r\n"},  // a last line gets its CRLF
        {"a  \t\r\n", "a  \t\r\n", "a\r\n"},
        {"  \r\n", "  \r\n", ""},                   // relaxed: a line of spaces is an empty line
        {"  x  y  ", "  x  y  \r\n", " x y\r\n"},
        {"a\r\n\r\nb\r\n\r\n", "a\r\n\r\nb\r\n", "a\r\n\r\nb\r\n"},
        {"a\nb\rc\r\r\n", "a\r\nb\r\nc\r\n", "a\r\nb\r\nc\r\n"},  // bare LF and CR end lines, as sent
        {".\r\n..x\r\n", ".\r\n..x\r\n", ".\r\n..x\r\n"},          // dots are body octets (unstuffed)
        {"\xC3\xA9t\xC3\xA9 \r\n", "\xC3\xA9t\xC3\xA9 \r\n", "\xC3\xA9t\xC3\xA9\r\n"},
    };
    for (const row& r : rows) {
        EXPECT_EQ(canonical_body(canon::simple, r.body), r.simple) << "body: " << r.body;
        EXPECT_EQ(canonical_body(canon::relaxed, r.body), r.relaxed) << "body: " << r.body;
        EXPECT_EQ(reference_canonical_body(canon::simple, r.body), r.simple) << "body: " << r.body;
        EXPECT_EQ(reference_canonical_body(canon::relaxed, r.body), r.relaxed) << "body: " << r.body;
    }
}

// Any split of the body into pieces gives what the whole body gives.
TEST(DkimCanon, StreamingEqualsWholeAtEverySplit) {
    const std::string_view bodies[] = {
        "a \t b\r\n\r\n  \r\nc\r\n\r\n\r\n", "x\r\r\ny\n\n\rz  ", " \t\r\n\t \r\n", "\r\n\r\n.\r\n", "abc",
    };
    for (const std::string_view body : bodies) {
        for (const canon mode : {canon::simple, canon::relaxed}) {
            const std::string whole = reference_canonical_body(mode, body);
            for (std::size_t a = 0; a <= body.size(); ++a) {
                for (std::size_t b = a; b <= body.size(); ++b) {
                    std::string out;
                    body_canonicalizer c(
                        mode,
                        [](void* ctx, const char* p, std::size_t n) noexcept {
                            static_cast<std::string*>(ctx)->append(p, n);
                        },
                        &out);
                    c.update(body.substr(0, a));
                    c.update(body.substr(a, b - a));
                    c.update(body.substr(b));
                    c.finish();
                    ASSERT_EQ(out, whole) << canon_name(mode) << " split " << a << "," << b;
                    EXPECT_EQ(c.output_size(), whole.size());
                }
            }
        }
    }
}

// A large body in random pieces (runs longer than the 4 KiB output buffer, many empty lines).
TEST(DkimCanon, LargeBodyInRandomPieces) {
    std::mt19937 rng(1234);
    std::string body;
    const char alphabet[] = "ab \t\r\n.";
    for (int i = 0; i < 200000; ++i) body += alphabet[rng() % (sizeof alphabet - 1)];
    body += std::string(10000, 'x');  // a run longer than the buffer
    body += std::string(3000, '\n');  // many trailing empty lines
    for (const canon mode : {canon::simple, canon::relaxed}) {
        const std::string whole = reference_canonical_body(mode, body);
        std::string out;
        body_canonicalizer c(
            mode, [](void* ctx, const char* p, std::size_t n) noexcept { static_cast<std::string*>(ctx)->append(p, n); },
            &out);
        std::size_t at = 0;
        while (at < body.size()) {
            const std::size_t n = std::min<std::size_t>(rng() % 9000, body.size() - at);
            c.update(std::string_view(body).substr(at, n));
            at += n;
        }
        c.finish();
        EXPECT_EQ(out, whole) << canon_name(mode);
        EXPECT_EQ(hash_body(mode, body), sha256_b64(whole));
    }
}

TEST(DkimCanon, HeaderFields) {
    const std::string_view message =
        "Received: from a\r\n\tby b\r\nSubject:  Hello \r\n   World\t\r\nX-Empty:\r\nno colon line\r\n"
        "FROM :a@example.org\nTo: b\rSubject: second\r\n\r\nbody";
    std::size_t body_at = 0;
    const auto fields = split_header_fields(message, &body_at);
    ASSERT_EQ(fields.size(), 7u);
    EXPECT_EQ(fields[0].raw, "Received: from a\r\n\tby b");
    EXPECT_EQ(fields[1].name, "Subject");
    EXPECT_EQ(fields[3].name, "");  // no colon: not a field any name selects
    EXPECT_EQ(fields[4].name, "FROM");
    EXPECT_EQ(fields[5].raw, "To: b");
    EXPECT_EQ(message.substr(body_at), "body");

    std::string out;
    append_canonical_header(out, canon::relaxed, fields[1].raw);
    EXPECT_EQ(out, "subject:Hello World");
    out.clear();
    append_canonical_header(out, canon::relaxed, fields[2].raw);
    EXPECT_EQ(out, "x-empty:");
    out.clear();
    append_canonical_header(out, canon::relaxed, fields[4].raw);
    EXPECT_EQ(out, "from:a@example.org");
    out.clear();
    append_canonical_header(out, canon::simple, "A: b\nc\rd");  // line ends as sent: CRLF
    EXPECT_EQ(out, "A: b\r\nc\r\nd");

    // No empty line: all header section, empty body.
    std::size_t at = 0;
    EXPECT_EQ(split_header_fields("A: 1\r\nB: 2", &at).size(), 2u);
    EXPECT_EQ(at, 10u);
    // An empty header section.
    EXPECT_TRUE(split_header_fields("\r\nbody", &at).empty());
    EXPECT_EQ(at, 2u);
}

// RFC 6376 §5.4.2: bottom-up, and an oversigned name selects nothing.
TEST(DkimCanon, SelectsBottomUp) {
    const auto fields = split_header_fields("A: 1\r\nB: 2\r\na: 3\r\n\r\n");
    const std::vector<std::string_view> names = {"a", "a", "a", "b", "c"};
    const auto selected = select_headers(fields, names);
    ASSERT_EQ(selected.size(), 3u);
    EXPECT_EQ(selected[0]->raw, "a: 3");
    EXPECT_EQ(selected[1]->raw, "A: 1");
    EXPECT_EQ(selected[2]->raw, "B: 2");
}

TEST(DkimCanon, BodyHashStreamSkipsTheHeaderSection) {
    const std::string_view body = rfc8463_message.substr(rfc8463_message.find("\r\n\r\n") + 4);
    EXPECT_EQ(hash_body(canon::relaxed, body), rfc8463_body_hash);
    for (std::size_t split = 0; split <= rfc8463_message.size(); ++split) {
        body_hash_stream s(canon::relaxed);
        s.update(rfc8463_message.substr(0, split));
        s.update(rfc8463_message.substr(split));
        const auto d = s.finish();
        ASSERT_TRUE(d);
        ASSERT_EQ(digest_b64(*d), rfc8463_body_hash) << "split at " << split;
    }
    // Bare LF and bare CR line ends, a CR LF split between pieces, an empty header section.
    const std::string_view bodies[][2] = {
        {"A: 1\n\nbody\n", "body\r\n"}, {"A: 1\r\r\nbody", "body"}, {"\r\nonly body", "only body"},
        {"A: 1\r\n", ""}, {"A: 1\r\n\r\n", ""}};
    for (const auto& [message, expected_body] : bodies) {
        for (std::size_t split = 0; split <= message.size(); ++split) {
            body_hash_stream s(canon::simple);
            s.update(message.substr(0, split));
            s.update(message.substr(split));
            const auto d = s.finish();
            ASSERT_TRUE(d);
            EXPECT_EQ(digest_b64(*d), hash_body(canon::simple, expected_body)) << message << " split " << split;
        }
    }
}

// --- keys -------------------------------------------------------------------------------------

TEST(DkimKeys, ParsesRsaAndEd25519AndPublishesTheirPublicHalf) {
    const auto rsa = parse_private_key(rfc8463_rsa_pem);
    ASSERT_TRUE(rsa) << describe(rsa.error());
    EXPECT_EQ(rsa->alg, algorithm::rsa_sha256);
    EXPECT_EQ(rsa->bits, 1024u);
    EXPECT_EQ(dns_txt_record(*rsa), "v=DKIM1; k=rsa; p=" + std::string(rfc8463_rsa_public));

    const auto ed = parse_private_key(ed25519_pem_from_seed(rfc8463_ed25519_seed));
    ASSERT_TRUE(ed) << describe(ed.error());
    EXPECT_EQ(ed->alg, algorithm::ed25519_sha256);
    EXPECT_EQ(dns_txt_record(*ed), "v=DKIM1; k=ed25519; p=" + std::string(rfc8463_ed25519_public));
}

TEST(DkimKeys, RefusesWhatCannotSign) {
    EXPECT_EQ(parse_private_key("not a key").error(), key_error::not_pem);
    EXPECT_EQ(parse_private_key("").error(), key_error::not_pem);

    EVP_PKEY* short_rsa = EVP_RSA_gen(512);
    ASSERT_NE(short_rsa, nullptr);
    EXPECT_EQ(parse_private_key(pem_of(short_rsa)).error(), key_error::rsa_too_short);

    // The same 1024-bit RSA key, encrypted: no passphrase is ever asked for.
    const auto rsa = parse_private_key(rfc8463_rsa_pem);
    ASSERT_TRUE(rsa);
    BIO* bio = BIO_new(BIO_s_mem());
    static char pass[] = "secret";
    ASSERT_EQ(PEM_write_bio_PrivateKey(bio, rsa->pkey.get(), EVP_aes_128_cbc(), nullptr, 0, nullptr, pass), 1);
    char* data = nullptr;
    const long size = BIO_get_mem_data(bio, &data);
    EXPECT_EQ(parse_private_key(std::string_view(data, static_cast<std::size_t>(size))).error(), key_error::not_pem);
    BIO_free(bio);

    EVP_PKEY* ec = EVP_EC_gen("P-256");
    ASSERT_NE(ec, nullptr);
    EXPECT_EQ(parse_private_key(pem_of(ec)).error(), key_error::unsupported_type);
    EVP_PKEY_free(short_rsa);
    EVP_PKEY_free(ec);
}

TEST(DkimKeys, TagText) {
    EXPECT_TRUE(valid_tag_text("example.org"));
    EXPECT_TRUE(valid_tag_text("sel_2024-a"));
    EXPECT_TRUE(valid_tag_text("xn--bcher-kva.example"));
    EXPECT_FALSE(valid_tag_text(""));
    EXPECT_FALSE(valid_tag_text("exa mple.org"));
    EXPECT_FALSE(valid_tag_text("s;x=1"));
    EXPECT_FALSE(valid_tag_text("a..b"));
    EXPECT_FALSE(valid_tag_text(".a"));
    EXPECT_FALSE(valid_tag_text("a."));
    EXPECT_FALSE(valid_tag_text("b\xC3\xBC" "cher.example"));
    EXPECT_FALSE(valid_tag_text(std::string(254, 'a')));
}

// --- signatures -------------------------------------------------------------------------------

// RFC 8463 A.3, byte for byte: the header data of each published field, signed with the RFC's
// key, gives the published b=.
namespace {
// RFC 8463 A.3's header data for one of its two signature fields (relaxed/relaxed).
std::string rfc8463_input(std::string_view signature_field) {
    const auto fields = split_header_fields(rfc8463_message);
    signature_request request;
    request.canon = {canon::relaxed, canon::relaxed};
    request.headers = rfc8463_h;
    return signing_input(request, fields, signature_field);
}
}  // namespace

TEST(DkimSign, ReproducesRfc8463RsaSignature) {
    const auto key = parse_private_key(rfc8463_rsa_pem);
    ASSERT_TRUE(key);
    const std::string input = rfc8463_input(rfc8463_rsa_field);
    const auto signature = sign_input(*key, input);
    ASSERT_TRUE(signature);
    EXPECT_EQ(base64_encode(*signature), rfc8463_rsa_b);
}

// The same for Ed25519 (RFC 8463 §3: Ed25519 over the SHA-256 of the header data). Some
// implementations report that the RFC's printed Ed25519 signature does not verify; over this
// canonical data it is reproduced exactly, and it verifies with the RFC's public key.
TEST(DkimSign, ReproducesRfc8463Ed25519Signature) {
    const auto key = parse_private_key(ed25519_pem_from_seed(rfc8463_ed25519_seed));
    ASSERT_TRUE(key);
    const std::string input = rfc8463_input(rfc8463_ed25519_field);
    const auto ours = sign_input(*key, input);
    ASSERT_TRUE(ours);
    EXPECT_EQ(base64_encode(*ours), rfc8463_ed25519_b);
    EXPECT_TRUE(verifies(*key, input, *ours));
    // One header octet changed: the signature no longer verifies.
    std::string changed = input;
    changed[changed.find("dinner")] = 'D';
    EXPECT_FALSE(verifies(*key, changed, *ours));
}

// The signer cache (what the relay's pool threads sign with) gives the RFC's signatures too,
// again and again from the same cached state, both keys in turn, and a key said to have the
// other algorithm fails rather than signing with the cached state of the real one.
TEST(DkimSign, SignerCacheReproducesRfc8463SignaturesEveryTime) {
    const auto rsa = parse_private_key(rfc8463_rsa_pem);
    const auto ed = parse_private_key(ed25519_pem_from_seed(rfc8463_ed25519_seed));
    ASSERT_TRUE(rsa);
    ASSERT_TRUE(ed);
    const std::string rsa_input = rfc8463_input(rfc8463_rsa_field);
    const std::string ed_input = rfc8463_input(rfc8463_ed25519_field);
    signer_cache cache;
    for (int i = 0; i < 3; ++i) {
        const auto r = cache.sign_input(*rsa, rsa_input);
        ASSERT_TRUE(r) << "round " << i;
        EXPECT_EQ(base64_encode(*r), rfc8463_rsa_b) << "round " << i;
        const auto e = cache.sign_input(*ed, ed_input);
        ASSERT_TRUE(e) << "round " << i;
        EXPECT_EQ(base64_encode(*e), rfc8463_ed25519_b) << "round " << i;
    }
    EXPECT_EQ(cache.size(), 2U);
    // Another input through the same state: what a fresh context gives.
    const std::string other = ed_input + "x";
    EXPECT_EQ(cache.sign_input(*ed, other), sign_input(*ed, other));
    EXPECT_EQ(cache.sign_input(*rsa, other), sign_input(*rsa, other));
    signing_key mislabelled = *ed;
    mislabelled.alg = algorithm::rsa_sha256;
    EXPECT_FALSE(cache.sign_input(mislabelled, rsa_input));
}

// Past max_keys keys the oldest entry goes; signing goes on (a reload's keys replace old ones).
TEST(DkimSign, SignerCacheIsBounded) {
    signer_cache cache;
    std::vector<signing_key> keys;
    for (std::size_t i = 0; i <= signer_cache::max_keys; ++i) {
        std::string seed(32, '\0');
        seed[0] = static_cast<char>(i + 1);
        auto k = parse_private_key(ed25519_pem_from_seed(base64_encode(seed)));
        ASSERT_TRUE(k);
        keys.push_back(*k);
        const auto sig = cache.sign_input(keys.back(), "input");
        ASSERT_TRUE(sig);
        EXPECT_EQ(*sig, sign_input(keys.back(), "input").value_or(""));
    }
    EXPECT_EQ(cache.size(), signer_cache::max_keys);
    EXPECT_EQ(cache.sign_input(keys.front(), "input"), sign_input(keys.front(), "input"));
}

// A key nobody holds any more (its table was reloaded away) leaves the cache at the next new
// key: the private key is not kept alive by the cache.
TEST(DkimSign, SignerCacheDropsKeysNobodyElseHolds) {
    signer_cache cache;
    std::weak_ptr<evp_pkey_st> gone;
    {
        auto old = parse_private_key(ed25519_pem_from_seed(rfc8463_ed25519_seed));
        ASSERT_TRUE(old);
        gone = old->pkey;
        ASSERT_TRUE(cache.sign_input(*old, "input"));
    }
    EXPECT_FALSE(gone.expired()) << "cached";
    const auto rsa = parse_private_key(rfc8463_rsa_pem);
    ASSERT_TRUE(rsa);
    ASSERT_TRUE(cache.sign_input(*rsa, "input"));
    EXPECT_TRUE(gone.expired());
    EXPECT_EQ(cache.size(), 1U);
}

// A signature made here, read back as a verifier would (b= value removed, the field
// canonicalized), verifies; it fails when a signed header or the body changes.
TEST(DkimSign, SignedFieldVerifies) {
    const auto rsa = parse_private_key(rfc8463_rsa_pem);
    const auto ed = parse_private_key(ed25519_pem_from_seed(rfc8463_ed25519_seed));
    ASSERT_TRUE(rsa && ed);
    const auto fields = split_header_fields(rfc8463_message);
    for (const auto mode : {canonicalization{canon::relaxed, canon::relaxed}, canonicalization{canon::simple, canon::simple},
                            canonicalization{canon::simple, canon::relaxed}}) {
        for (const signing_key* key : {&*rsa, &*ed}) {
            const auto names = header_list(fields, default_header_names(), oversigned_header_names());
            body_hash_stream bh(mode.body);
            bh.update(rfc8463_message);
            signature_request request;
            request.domain = "football.example.com";
            request.selector = "brisbane";
            request.canon = mode;
            request.headers = names;
            request.timestamp = 1528637909;
            request.expiration = 1528637909 + 86400;
            request.body_hash = *bh.finish();
            const auto field = sign(*key, request, fields);
            ASSERT_TRUE(field) << describe(field.error());
            // Lines under 80 octets, CRLF-terminated, folded with a tab.
            std::size_t start = 0;
            while (start < field->size()) {
                const std::size_t end = field->find("\r\n", start);
                ASSERT_NE(end, std::string::npos);
                EXPECT_LE(end - start, 78u) << *field;
                start = end + 2;
            }
            EXPECT_NE(field->find(" a=" + std::string(algorithm_name(key->alg)) + ";"), std::string::npos);
            EXPECT_NE(field->find("c=" + canonicalization_text(mode) + ";"), std::string::npos);
            EXPECT_NE(field->find("t=1528637909;"), std::string::npos);
            EXPECT_NE(field->find("x=1528724309;"), std::string::npos);
            // Read back: remove b='s value, recompute the input over the message's fields.
            const std::size_t b = field->rfind("b=");
            const std::string unsigned_field = field->substr(0, b + 2);
            std::string value = field->substr(b + 2);
            std::erase_if(value, [](char c) { return c == '\r' || c == '\n' || c == '\t' || c == ' '; });
            const auto signature = base64_decode(value);
            ASSERT_TRUE(signature);
            EXPECT_TRUE(verifies(*key, signing_input(request, fields, unsigned_field), *signature));
            // h= covers From twice (oversigned) and the present recommended fields, in the
            // default list's order.
            const std::vector<std::string_view> expected_h = {"from", "from", "subject", "subject", "date",
                                                              "date", "to", "to", "message-id", "message-id"};
            EXPECT_EQ(names, expected_h);
            // A second From added below the others breaks it (the oversigned slot now selects it).
            std::string tampered(rfc8463_message);
            tampered.insert(tampered.find("\r\n\r\n") + 2, "From: Mallory <m@evil.example>\r\n");
            const auto tampered_fields = split_header_fields(tampered);
            EXPECT_FALSE(verifies(*key, signing_input(request, tampered_fields, unsigned_field), *signature));
            // A Received field added above does not (it is not signed).
            const std::string relayed = "Received: from x by y; Sat, 5 Dec 2026 00:00:00 +0000\r\n" + std::string(rfc8463_message);
            const auto relayed_fields = split_header_fields(relayed);
            EXPECT_TRUE(verifies(*key, signing_input(request, relayed_fields, unsigned_field), *signature));
        }
    }
}

TEST(DkimSign, RefusesTagInjection) {
    const auto key = parse_private_key(rfc8463_rsa_pem);
    ASSERT_TRUE(key);
    signature_request request;
    request.domain = "example.org; x=1";
    request.selector = "s";
    EXPECT_EQ(sign(*key, request, {}).error(), sign_error::bad_tag_text);
    request.domain = "example.org";
    request.selector = "";
    EXPECT_EQ(sign(*key, request, {}).error(), sign_error::bad_tag_text);
}

TEST(DkimSign, HeaderList) {
    const auto fields = split_header_fields(
        "Received: x\r\nFrom: a\r\nTo: b\r\nCc: c\r\nCc: d\r\nX-Campaign: 7\r\nList-Unsubscribe: <u>\r\n\r\n");
    const auto names = header_list(fields, default_header_names(), oversigned_header_names());
    const std::vector<std::string_view> expected = {"from", "from", "to", "to", "cc", "cc", "list-unsubscribe"};
    EXPECT_EQ(names, expected);
    // From is signed even when absent (once) and when not listed.
    const auto none = split_header_fields("Subject: s\r\n\r\n");
    const std::vector<std::string_view> only_subject = {"subject"};
    const std::vector<std::string_view> expected2 = {"from", "subject"};
    EXPECT_EQ(header_list(none, only_subject, {}), expected2);
}

TEST(DkimSign, Summary) {
    EXPECT_EQ(summary(algorithm::ed25519_sha256, "example.org", "sel"), "d=example.org s=sel a=ed25519-sha256");
}

// The author's domain: the first mailbox of the first From field, whatever surrounds it.
std::optional<std::string> author_of(const std::string& header_section) {
    const std::string message = header_section + "\r\nbody\r\n";
    return author_domain(split_header_fields(message));
}

TEST(DkimSign, AuthorDomain) {
    EXPECT_EQ(author_of("From: joe@Example.ORG\r\n"), "example.org");
    EXPECT_EQ(author_of("Subject: x\r\nfrom: \"Joe\" <joe@mail.example.org>\r\n"), "mail.example.org");
    EXPECT_EQ(author_of("From: \"a@evil.example <x@evil.example>\" <joe@example.org>\r\n"), "example.org");
    EXPECT_EQ(author_of("From: Joe (at work@evil.example <x@evil.example>) <joe@example.org>\r\n"), "example.org");
    EXPECT_EQ(author_of("From: joe@example.org (Joe (the boss))\r\n"), "example.org");
    EXPECT_EQ(author_of("From: Joe\r\n <joe@\r\n\texample.org.>\r\n"), "example.org");
    EXPECT_EQ(author_of("From: a@first.example, b@second.example\r\n"), "first.example");
    EXPECT_EQ(author_of("From: Team: a@team.example, b@other.example;\r\n"), "team.example");
    EXPECT_EQ(author_of("From: \"q\\\"@x\" <joe@example.org>\r\n"), "example.org");
    EXPECT_EQ(author_of("From: <@route.example:joe@example.org>\r\n"), "example.org");
    EXPECT_EQ(author_of("From: a@one.example\r\nFrom: b@two.example\r\n"), "one.example");
    // No author domain to sign for.
    EXPECT_EQ(author_of("Subject: no from\r\n"), std::nullopt);
    EXPECT_EQ(author_of("From: undisclosed\r\n"), std::nullopt);
    EXPECT_EQ(author_of("From: joe@[192.0.2.1]\r\n"), std::nullopt);
    EXPECT_EQ(author_of("From: joe@b\xC3\xBC" "cher.example\r\n"), std::nullopt);
    EXPECT_EQ(author_of("From: <joe@>\r\n"), std::nullopt);
    EXPECT_EQ(author_of("From: joe@exa(comment)mple.org\r\n"), std::nullopt);
    EXPECT_EQ(author_of("From: (unterminated <joe@example.org>\r\n"), std::nullopt);
}
