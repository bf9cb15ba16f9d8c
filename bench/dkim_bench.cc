// bench/dkim_bench.cc: DKIM costs (protocol/dkim_canon.h, protocol/dkim_sign.h): body
// canonicalization + SHA-256 in bytes/s (simple and relaxed, 76-column text in 64 KiB pieces as
// a connection receives it), SHA-256 alone over the same bytes (the floor), and whole
// signatures per second (header selection, canonicalization, hashing and the RSA-2048 or
// Ed25519 signature) beside the bare private-key operation. Each case checks its output before
// timing: the streamed canonical body against the reference, signatures against OpenSSL verify.
#include <benchmark/benchmark.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "protocol/dkim_canon.h"
#include "protocol/dkim_sign.h"

namespace {

using namespace ringrelay::protocol::dkim;

std::string make_body() {
    std::string s;
    std::size_t line = 0;
    while (s.size() < (1U << 20)) {
        for (std::size_t i = 0; i < 76; ++i) s.push_back(i % 7 == 6 ? ' ' : static_cast<char>('a' + (i + line) % 26));
        if (line % 11 == 0) s += "  \t";  // trailing whitespace now and then
        s += "\r\n";
        ++line;
    }
    return s;
}

const std::string& body() {
    static const std::string b = make_body();
    return b;
}

void require(bool ok, const char* what) {
    if (!ok) {
        std::fprintf(stderr, "dkim_bench: check failed: %s\n", what);
        std::abort();
    }
}

void BM_Dkim_BodyHash(benchmark::State& state) {
    const canon mode = state.range(0) == 0 ? canon::simple : canon::relaxed;
    const std::string& b = body();
    {  // the streamed canonical form is the reference's
        std::string out;
        body_canonicalizer c(
            mode, [](void* ctx, const char* p, std::size_t n) noexcept { static_cast<std::string*>(ctx)->append(p, n); },
            &out);
        for (std::size_t at = 0; at < b.size(); at += 65536) c.update(std::string_view(b).substr(at, 65536));
        c.finish();
        require(out == reference_canonical_body(mode, b), "streamed canonical body equals the reference");
    }
    for (auto _ : state) {
        body_hasher h(mode);
        for (std::size_t at = 0; at < b.size(); at += 65536) h.update(std::string_view(b).substr(at, 65536));
        auto d = h.finish();
        benchmark::DoNotOptimize(d);
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * b.size()));
    state.SetLabel(std::string(canon_name(mode)));
}
BENCHMARK(BM_Dkim_BodyHash)->Arg(0)->Arg(1);

void BM_Dkim_Sha256Only(benchmark::State& state) {
    const std::string& b = body();
    unsigned char md[32];
    unsigned int n = 0;
    for (auto _ : state) {
        EVP_Digest(b.data(), b.size(), md, &n, EVP_sha256(), nullptr);
        benchmark::DoNotOptimize(md);
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * b.size()));
}
BENCHMARK(BM_Dkim_Sha256Only);

signing_key make_key(bool rsa) {
    EVP_PKEY* raw = rsa ? EVP_RSA_gen(2048) : EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
    require(raw != nullptr, "key generation");
    BIO* bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(bio, raw, nullptr, nullptr, 0, nullptr, nullptr);
    char* data = nullptr;
    const long size = BIO_get_mem_data(bio, &data);
    auto key = parse_private_key(std::string_view(data, static_cast<std::size_t>(size)));
    BIO_free(bio);
    EVP_PKEY_free(raw);
    require(key.has_value(), "key parses");
    return *key;
}

constexpr std::string_view message =
    "From: Joe SixPack <joe@football.example.com>\r\n"
    "To: Suzie Q <suzie@shopping.example.net>\r\n"
    "Subject: Is dinner ready?\r\n"
    "Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    "Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "Hi.\r\n";

// One RSA-2048 and one Ed25519 key for every case and thread (as the relay's pool threads
// share the parsed keys).
const signing_key& shared_key(bool rsa) {
    static const signing_key rsa_key = make_key(true);
    static const signing_key ed_key = make_key(false);
    return rsa ? rsa_key : ed_key;
}

// A whole DKIM-Signature field (what the relay's work pool does per message and key): Arg 0
// RSA-2048 or Ed25519; Arg 1: 0 with state made for each signature, 1 with a signer_cache of
// the thread's own (the relay's pool threads since issue 16's performance work). ->Threads(2):
// both cores signing with the one shared key, as the pool does.
void BM_Dkim_Sign(benchmark::State& state) {
    const signing_key& key = shared_key(state.range(0) == 0);
    const bool cached = state.range(1) == 1;
    signer_cache cache;
    const auto fields = split_header_fields(message);
    const auto names = header_list(fields, default_header_names(), oversigned_header_names());
    signature_request request;
    request.domain = "football.example.com";
    request.selector = "bench";
    request.canon = {canon::relaxed, canon::relaxed};
    request.headers = names;
    request.timestamp = 1528637909;
    const auto reference = sign(key, request, fields);
    require(reference.has_value(), "signs");
    require(sign(key, request, fields, &cache) == reference, "the cached state signs alike");
    for (auto _ : state) {
        auto field = sign(key, request, fields, cached ? &cache : nullptr);
        benchmark::DoNotOptimize(field);
    }
    state.SetItemsProcessed(state.iterations());
    state.SetLabel(std::string(algorithm_name(key.alg)) + (cached ? " cached" : " per call"));
}
BENCHMARK(BM_Dkim_Sign)
    ->ArgsProduct({{0, 1}, {0, 1}})
    ->Unit(benchmark::kMicrosecond)
    ->Threads(1)
    ->Threads(2)
    ->UseRealTime();

// The private-key operation alone over 300 octets: the floor under BM_Dkim_Sign.
void BM_Dkim_SignInputOnly(benchmark::State& state) {
    const signing_key key = make_key(state.range(0) == 0);
    const std::string input(300, 'h');
    for (auto _ : state) {
        auto s = sign_input(key, input);
        benchmark::DoNotOptimize(s);
    }
    state.SetItemsProcessed(state.iterations());
    state.SetLabel(std::string(algorithm_name(key.alg)));
}
BENCHMARK(BM_Dkim_SignInputOnly)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
